"""An MLflow tracker (``--log mlflow:URI``; ``pip install 'firepbt[mlflow]'``).

One MLflow run per experiment, in the MLflow experiment ``firepbt``, named after the store
folder. MLflow's parameters are write-once (mlflow#890), so a schedule cannot live in them:
the configuration is logged as parameters once, and everything that changes - the objective per
worker, each hyperparameter per worker, the sub-populations' medians, the top so far, the
events - is logged as *metrics* with the training step (names as
:func:`firepbt.tracking.scalars` gives them). The run's id is kept in the store, so a resumed
experiment goes on in the same MLflow run. ``URI`` is a tracking URI (``sqlite:///mlflow.db``,
``http://host:5000``) or a folder, which gets an SQLite store ``mlflow.db`` inside.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import require_extra
from ._base import RoundReport, RunInfo
from ._scalars import scalars

EXPERIMENT = "firepbt"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def tracking_uri(arg: str) -> str:
    """A tracking URI as given, or a folder's SQLite store."""
    if "://" in arg or arg.startswith(("databricks", "file:")):
        return arg
    folder = Path(arg).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of an SQLite store go into ``artifacts/`` next to its database (MLflow's
    default, ``./mlruns``, would be wherever the run was started); a server decides itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


class MLflowTracker:
    """Logs a run's rounds to MLflow (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        require_extra("mlflow.tracking", "the MLflow tracker", "the 'mlflow' package", "mlflow")
        self.uri = tracking_uri(uri)
        self.key = f"mlflow:{self.uri}"
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, info: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        run_id = info.saved.get("run_id")
        if run_id is not None:
            self.run_id = str(run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            EXPERIMENT, artifact_location=artifact_location(self.uri))
        run = self.client.create_run(exp_id, run_name=info.name,
                                     tags={"firepbt.store": str(info.store)})
        self.run_id = run.info.run_id
        info.save("run_id", self.run_id)
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in sorted(info.config.items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def on_round(self, report: RoundReport) -> None:
        from mlflow.entities import Metric

        if self.client is None or self.run_id is None:
            raise RuntimeError("start() was not called")
        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, step, value in scalars(report)]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])
        words = [text for _w, text in report.events()]
        if words:
            self.client.log_text(self.run_id, "\n".join(words),
                                 f"events/round-{report.round:05d}.txt")
        if report.round == report.rounds:
            self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        self.client = None
