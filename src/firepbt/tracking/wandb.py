"""A Weights & Biases tracker (``--log wandb:PROJECT``; ``pip install 'firepbt[wandb]'``).

**One W&B run per experiment**, not one per worker: a worker is not a lineage (every copy moves
a network from one worker to another, so a per-worker run would mix several networks' pasts),
a population of 22-200 per-worker runs swamps W&B's run table, and one run resumes as one
(its id is kept in the store; ``resume="allow"``). Workers are keys inside the run
(``objective/w03``, ``hparams/lambda/w03``; names as :func:`firepbt.tracking.scalars` gives
them), logged at the training step; hyperparameters are metrics, so nothing needs W&B's
``allow_val_change`` (wandb#7062). The configuration goes into the run's config once.
W&B's own settings apply: ``WANDB_MODE=offline`` writes the run locally (``wandb sync`` uploads
it later), ``WANDB_DIR`` chooses where.

**Nothing lost to a kill.** ``run.log`` hands a record to W&B's service process, which writes
it a little later: a ``SIGKILL`` (an out-of-memory kill, a power cut) can lose the last rounds
after firepbt counted them as given. So on ``start`` the tracker reads back what W&B really
holds for the run - offline, the run's earlier ``.wandb`` files (their history records'
``_step``); online, the step W&B resumed the run at - and says it (:meth:`WandbTracker.kept`):
the rounds after it are given again, and steps W&B already holds are not logged twice.
"""

from __future__ import annotations

import json
import secrets
import struct
from itertools import groupby
from pathlib import Path
from typing import Any

from ..errors import require_extra
from ._base import RoundReport, RunInfo
from ._scalars import scalars


class WandbTracker:
    """Logs a run's rounds to W&B (see the module docstring)."""

    def __init__(self, project: str, **init_kwargs: Any) -> None:
        require_extra("wandb", "the Weights & Biases tracker", "the 'wandb' package", "wandb")
        self.project = project
        self.init_kwargs = init_kwargs
        self.key = f"wandb:{project}"
        self.run: Any = None
        self.held = -1  # the last step W&B holds for this run (-1: none)

    def start(self, info: RunInfo) -> None:
        import wandb

        run_id = info.saved.get("run_id")
        if run_id is None:
            run_id = secrets.token_hex(4)  # (W&B's own id maker moved between versions)
            info.save("run_id", run_id)
        self.run = wandb.init(project=self.project, name=info.name, id=str(run_id),
                              resume="allow", config=dict(info.config),
                              **self.init_kwargs)
        self.held = self._held(str(run_id))

    def kept(self, info: RunInfo) -> int:
        """The last round whose every record W&B holds (its last step is the round's)."""
        return max(0, self.held) // info.ready_interval

    def _held(self, run_id: str) -> int:
        settings = self.run.settings
        if str(getattr(settings, "mode", "")) != "offline":
            return int(self.run.step) - 1  # online: the step W&B resumed the run at
        current = Path(str(settings.sync_file)).resolve()
        held = -1
        for f in Path(str(settings.wandb_dir)).glob(f"*run-*-{run_id}/run-{run_id}.wandb"):
            if f.resolve() != current:
                held = max(held, max(history_steps(f), default=-1))
        return held

    def on_round(self, report: RoundReport) -> None:
        if self.run is None:
            raise RuntimeError("start() was not called")
        for step, items in groupby(scalars(report), key=lambda x: x[1]):
            if step <= self.held:  # W&B holds it already (a round given again after a kill)
                continue
            self.run.log({tag: value for tag, _s, value in items}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def history_steps(path: Path) -> list[int]:
    """The ``_step`` of every history record in a W&B run file (``run-ID.wandb``: a 7-byte
    header, then LevelDB-log records in 32 KiB blocks - crc32c, length, type - each W&B's own
    protobuf ``Record``); a record cut short by a kill ends the scan."""
    import importlib

    pb: Any = importlib.import_module("wandb.proto.wandb_internal_pb2")  # (generated code)
    data = path.read_bytes()
    pos, block, out, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length or (kind == 0 and length == 0):
            break
        pos += 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            rec = pb.Record()
            try:
                rec.ParseFromString(partial)
            except Exception:  # noqa: BLE001 - a torn record: what follows it is not there
                break
            partial = b""
            if rec.WhichOneof("record_type") == "history":
                for item in rec.history.item:
                    if (item.key or "/".join(item.nested_key)) == "_step":
                        out.append(int(json.loads(item.value_json)))
    return out
