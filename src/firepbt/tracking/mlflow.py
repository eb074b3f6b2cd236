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
    """A tracking URI as given, or a folder's SQLite store (the folder made if need be). An
    SQLite URI must name a file in a folder that exists, and not a file that is something else
    than an SQLite database (SQLite would take a short one for an empty database and write over
    it)."""
    from ..errors import ConfigError

    if not arg.strip():
        raise ConfigError("--log", "mlflow:URI with a tracking URI or a folder", f"mlflow:{arg}")
    if arg.startswith("sqlite:///"):
        db = Path(arg[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise ConfigError("--log", "mlflow:sqlite:///FILE in a folder that exists (or "
                              "mlflow:FOLDER, which firepbt makes)", f"mlflow:{arg}")
        if db.is_file() and db.stat().st_size and db.read_bytes()[:16] != b"SQLite format 3\0":
            raise ConfigError("--log", "mlflow:sqlite:///FILE naming an SQLite database or a "
                              "new file", f"mlflow:{arg} (a file that is not a database)")
        return arg
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


def _database(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _reachable(uri: str, timeout: float = 3.0) -> None:
    """An MLflow server is there: one connection, at most ``timeout`` seconds (MLflow's own
    client retries for minutes). Raises ``ConnectionError`` naming it otherwise."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no MLflow server answers at {parts.hostname}:{port} "
                              f"({exc.strerror or exc})") from None


def _forget(uri: str) -> None:
    """Let go of the database engine MLflow keeps for ``uri`` (it keeps one per URI for the
    process: after a database is renamed, a kept one would still reach the old file)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    except ImportError:  # pragma: no cover - an MLflow without its SQL store
        return
    engines = getattr(SqlAlchemyStore, "_engine_map", None)
    engine = engines.pop(uri, None) if isinstance(engines, dict) else None
    if engine is not None:
        engine.dispose()


def _created(db: Path) -> None:
    """MLflow's SQLite store made under a temporary name and renamed into place once MLflow has
    created all its tables (it takes seconds): a kill while it is made leaves no database that
    MLflow can no longer open."""
    import os
    import secrets

    from mlflow.tracking import MlflowClient

    for stale in db.parent.glob(f"{db.name}.creating-*"):
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f"{db.name}.creating-{os.getpid()}-{secrets.token_hex(4)}")
    MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
    _forget(f"sqlite:///{tmp}")
    os.replace(tmp, db)
    _forget(f"sqlite:///{db}")


class MLflowTracker:
    """Logs a run's rounds to MLflow (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        require_extra("mlflow.tracking", "the MLflow tracker", "the 'mlflow' package", "mlflow")
        self.uri = tracking_uri(uri)
        self.key = f"mlflow:{self.uri}"
        self.client: Any = None
        self.run_id: str | None = None
        self.given = 0  # the last round this run holds
        self.rounds = 0

    def start(self, info: RunInfo) -> None:
        import logging
        import os

        from mlflow.tracking import MlflowClient

        # a server that goes away mid-run costs seconds, not MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        _reachable(self.uri)
        db = _database(self.uri)
        if db is not None and not db.exists():
            _created(db)
        run_id = info.saved.get("run_id")
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(EXPERIMENT)
        except Exception as exc:
            if db is None or run_id is not None:
                raise
            # a database MLflow cannot open, which this experiment never logged to: one whose
            # making was cut short before firepbt made it atomically; put aside, made again
            aside = db.with_name(f"{db.name}.broken-{int(time.time())}")
            os.replace(db, aside)
            logging.getLogger("firepbt").warning(
                "MLflow cannot open %s (%s: %s), which this experiment never logged to; it "
                "was put aside as %s and made again", db, type(exc).__name__,
                str(exc).splitlines()[0][:120] if str(exc) else "", aside.name)
            _created(db)
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(EXPERIMENT)
        self.given, self.rounds = info.last_given, info.rounds
        if run_id is None and exp is not None:  # made, then killed before its id was kept
            found = self.client.search_runs(
                [exp.experiment_id], f"tags.`firepbt.store` = '{info.store}'", max_results=1)
            run_id = found[0].info.run_id if found else None
            if run_id is not None:
                info.save("run_id", run_id)
        if run_id is not None:
            self.run_id = str(run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            return
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
        # the round's commit time as every metric's timestamp: a round given again after a
        # kill writes the same rows, which MLflow keeps once
        when = int(report.finished_at * 1000)
        metrics = [Metric(tag, value, when, step) for tag, step, value in scalars(report)]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])
        words = [text for _w, text in report.events()]
        if words:
            self.client.log_text(self.run_id, "\n".join(words),
                                 f"events/round-{report.round:05d}.txt")
        self.given = report.round
        if report.round == report.rounds:
            self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        if self.client is not None and self.run_id is not None and self.rounds and \
                self.given >= self.rounds:  # (a finished experiment resumed: nothing to give)
            self.client.set_terminated(self.run_id, "FINISHED")
        self.client = None
