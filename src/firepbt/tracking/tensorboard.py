"""A TensorBoard tracker (``--log tensorboard:DIR``; ``pip install 'firepbt[tensorboard]'``).

Each experiment writes its event files into ``DIR/<store folder name>``, so that one
``tensorboard --logdir DIR`` shows several experiments side by side. Scalars as
:func:`firepbt.tracking.scalars` names them (``objective/w03``, ``hparams/lambda/w03``,
``subpop/P2/lambda``, ``best/objective``, ``events/...``); the round's decisions in words as
text (tag ``events``, one entry per round that had any). A resumed run appends to the same
folder; events at or after the first step it had not logged are purged by TensorBoard
(``purge_step``, given on every start: 0 before any round), so a round a crash left
half-written is not shown twice, by TensorBoard's own loader either.

**When values are logged.** Objectives at every evaluation step; a worker's hyperparameters
at each round's step, as they are *after* the round's decisions (the values it trains with from
that step on), in round 1 also every worker's initial values at step 0, and where a schedule
changes them inside a round (random search's warm-up and decays) at the step of each change.
PBT and FIRE PBT change hyperparameters only at round steps, so their values are exact there.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from ..errors import require_extra
from ._base import RoundReport, RunInfo
from ._scalars import scalars


class TensorBoardTracker:
    """Writes a run's rounds as TensorBoard events (see the module docstring)."""

    def __init__(self, logdir: str | Path) -> None:
        # (PyTorch's writer needs the tensorboard package)
        self._writer_cls = require_extra("torch.utils.tensorboard", "the TensorBoard tracker",
                                         "the 'tensorboard' package", "tensorboard").SummaryWriter
        self.logdir = Path(logdir)
        self.key = f"tensorboard:{self.logdir.resolve()}"
        self.writer: Any = None
        self.folder: Path | None = None

    def start(self, info: RunInfo) -> None:
        _quiet_writer_threads()
        self.folder = self.logdir / info.name
        # always a purge step (0 before any round was given): every event file then begins
        # with a session START, which TensorBoard's loaders read as a restart on a resume and
        # purge what a killed run wrote past the rounds it was given
        purge = info.last_given * info.ready_interval + 1 if info.last_given > 0 else 0
        self.writer = self._writer_cls(log_dir=str(self.folder), purge_step=purge)
        if info.last_given == 0:  # (purged from 0 on: written again with the rounds)
            cfg = info.config
            self.writer.add_text("experiment", f"{cfg.get('method')} on {cfg.get('task')}: "
                                 f"{cfg.get('workers')} workers, {cfg.get('steps')} steps, "
                                 f"store {info.store}", 0)

    def on_round(self, report: RoundReport) -> None:
        if self.writer is None:
            raise RuntimeError("start() was not called")
        from tensorboard.compat.proto.summary_pb2 import Summary

        # one event per step holding all of that step's scalars (add_scalar writes an event
        # per value: ten times slower at 200 workers); TensorBoard reads both alike
        files = self.writer._get_file_writer()
        for step, items in groupby(scalars(report), key=lambda x: x[1]):
            files.add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=value)
                                             for tag, _s, value in items]), step)
        words = [text for _w, text in report.events()]
        if words:
            self.writer.add_text("events", "  \n".join(words), report.step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread keeps a write error (a full disk) for the writer, whose
    next call raises it here - where the tracker set says it in one line and goes on without
    the tracker - and then raises it again in the thread, which Python prints as a traceback.
    That second report is dropped (``threading.excepthook``, for that thread class and
    ``OSError`` only; every other thread's exceptions go to the hook that was there)."""
    import threading

    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # pragma: no cover - a TensorBoard without it: nothing to quiet
        return
    previous = threading.excepthook
    if getattr(previous, "_firepbt_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook._firepbt_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook
