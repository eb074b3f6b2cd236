"""A TensorBoard tracker (``--log tensorboard:DIR``; ``pip install 'firepbt[tensorboard]'``).

Each experiment writes its event files into ``DIR/<store folder name>``, so that one
``tensorboard --logdir DIR`` shows several experiments side by side. Scalars as
:func:`firepbt.tracking.scalars` names them (``objective/w03``, ``hparams/lambda/w03``,
``subpop/P2/lambda``, ``best/objective``, ``events/...``); the round's decisions in words as
text (tag ``events``, one entry per round that had any). A resumed run appends to the same
folder; events at or after the first step it had not logged are purged by TensorBoard
(``purge_step``), so a round a crash left half-written is not shown twice.
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
        self.folder = self.logdir / info.name
        purge = info.last_given * info.ready_interval + 1 if info.last_given > 0 else None
        self.writer = self._writer_cls(log_dir=str(self.folder), purge_step=purge)
        if info.start_round == 0:
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
