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
"""

from __future__ import annotations

import secrets
from itertools import groupby
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

    def start(self, info: RunInfo) -> None:
        import wandb

        run_id = info.saved.get("run_id")
        if run_id is None:
            run_id = secrets.token_hex(4)  # (W&B's own id maker moved between versions)
            info.save("run_id", run_id)
        self.run = wandb.init(project=self.project, name=info.name, id=str(run_id),
                              resume="allow", config=dict(info.config),
                              **self.init_kwargs)

    def on_round(self, report: RoundReport) -> None:
        if self.run is None:
            raise RuntimeError("start() was not called")
        for step, items in groupby(scalars(report), key=lambda x: x[1]):
            self.run.log({tag: value for tag, _s, value in items}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
