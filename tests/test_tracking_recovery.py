"""Trackers after a crash: every round exactly once, read back with each tracker's own reader,
whatever point a kill lands on - between a tracker's hand-off and the store's bookkeeping, after
W&B's service lost what it had not written, while MLflow makes its database - and a resume
needs nothing but the store (it remembers --factory and --log)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import wandb_files

from firepbt import ExperimentConfig, resume, run
from firepbt.store import TRACKING, Store

CFG = dict(task="nqm", method="pbt", workers=4, steps=300, ready_interval=30, eval_interval=10,
           seed=3, task_options={"dims": 50}, executor="local", threads=1)


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs (trackers are not closed cleanly either)."""


def _kill_after_hand_off(monkeypatch, at_round):
    """The process dies after the trackers were given ``at_round``, before the store records
    that they were (the bookkeeping write)."""
    import firepbt.tracking._set as set_module

    real = Store.set_meta

    def set_meta(self, key, value):
        if key == TRACKING and json.loads(value) and min(
                e["round"] for e in json.loads(value).values()) >= at_round:
            raise Killed
        return real(self, key, value)

    monkeypatch.setattr(Store, "set_meta", set_meta)
    # a killed process closes nothing: the trackers' close() is not called either
    monkeypatch.setattr(set_module.TrackerSet, "close", lambda self: None)


def _tensorboard_steps(folder: Path) -> Counter:
    """(tag, step) -> how often TensorBoard's own loader (the one its server uses) shows it."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    out: Counter = Counter()
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            out[tag, event.step] += 1
    return out


@pytest.mark.parametrize("at_round", [1, 4])
def test_tensorboard_shows_each_round_once_after_a_kill_between_hand_off_and_bookkeeping(
        tmp_path, monkeypatch, at_round):
    pytest.importorskip("tensorboard")
    spec = f"tensorboard:{tmp_path / 'tb'}"
    run(ExperimentConfig(**CFG), tmp_path / "ref", callbacks=[f"tensorboard:{tmp_path / 'tbr'}"],
        progress=False)
    with monkeypatch.context() as m:
        _kill_after_hand_off(m, at_round)
        with pytest.raises(Killed):
            run(ExperimentConfig(**CFG), tmp_path / "s", callbacks=[spec], progress=False)
    resume(tmp_path / "s", progress=False)  # the --log spec: remembered
    got = _tensorboard_steps(tmp_path / "tb" / "s")
    want = _tensorboard_steps(tmp_path / "tbr" / "ref")
    assert {k: n for k, n in got.items() if n > 1} == {}  # nothing twice
    assert set(got) == set(want)  # nothing missing


def _wandb_history(folder: Path) -> Counter:
    """(key, step) -> how often it is in the run's offline files."""
    out: Counter = Counter()
    for path in folder.glob("wandb/offline-run-*/run-*.wandb"):
        for rec, _end in wandb_files.records(path):
            row = wandb_files.history_row(rec)
            if row is not None:
                out.update((k, row["_step"]) for k in row if not k.startswith("_"))
    return out


def _cut_after_step(path: Path, last_step: int) -> None:
    """What W&B's service had written of a run file when the process died: the records up to
    the history record of ``last_step`` (the rest never reached the file)."""
    ends = [end for rec, end in wandb_files.records(path)
            if (wandb_files.history_row(rec) or {}).get("_step") == last_step]
    assert ends
    path.write_bytes(path.read_bytes()[:ends[-1]])


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "firepbt", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, cwd=cwd)


def test_wandb_is_given_again_what_its_service_had_not_written_when_the_run_was_killed(
        tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true"}
    base = ["nqm", "--method", "pbt", "--workers", "4", "--steps", "300", "--ready-interval",
            "30", "--eval-interval", "10", "--seed", "3", "--executor", "local", "--threads",
            "1", "--no-progress", "--log", "wandb:recovery"]
    out = cli("run", *base, "--store", str(tmp_path / "s"), env=env)
    assert out.returncode == 0, out.stderr
    full = _wandb_history(tmp_path)
    (f,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    _cut_after_step(f, 150)  # rounds 6-10 lost after the store counted them as given
    assert max(s for _k, s in _wandb_history(tmp_path)) == 150
    out = cli("resume", str(tmp_path / "s"), env=env)  # the --log spec: remembered
    assert out.returncode == 0, out.stderr
    assert "giving the trackers (wandb:recovery) the rounds they have not seen" in out.stdout
    got = _wandb_history(tmp_path)
    assert {k: n for k, n in got.items() if n > 1} == {}  # nothing twice, across both files
    assert set(got) == set(full)  # nothing missing


def _mlflow_points(db: Path) -> tuple[Counter, list[str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("firepbt").experiment_id])
    points: Counter = Counter()
    for r in runs:
        for key in r.data.metrics:
            points.update((key, m.step, m.value) for m in
                          client.get_metric_history(r.info.run_id, key))
    return points, [r.info.status for r in runs]


def test_an_mlflow_database_half_made_is_put_aside_and_made_again(tmp_path, caplog):
    pytest.importorskip("mlflow")
    folder = tmp_path / "ml"
    folder.mkdir()
    # what a kill while MLflow made its tables left (before firepbt made it atomically)
    import sqlite3

    db = sqlite3.connect(folder / "mlflow.db")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    db.execute("INSERT INTO alembic_version VALUES ('0a8213491aaa')")
    db.execute("CREATE TABLE experiments (experiment_id INTEGER)")
    db.commit()
    db.close()
    run(ExperimentConfig(**CFG), tmp_path / "s", callbacks=[f"mlflow:{folder}"], progress=False)
    points, status = _mlflow_points(folder / "mlflow.db")
    assert status == ["FINISHED"] and max(s for _k, s, _v in points) == 300
    assert list(folder.glob("mlflow.db.broken-*"))  # kept, not deleted
    assert any("put aside" in r.message for r in caplog.records)


def test_an_mlflow_database_is_made_whole_or_not_at_all(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from firepbt.tracking.mlflow import MLflowTracker

    folder = tmp_path / "ml"
    real = MlflowClient.search_experiments

    def killed(self, *a, **k):
        raise Killed  # MLflow is making its tables when the process dies

    monkeypatch.setattr(MlflowClient, "search_experiments", killed)
    with pytest.raises(Killed):
        run(ExperimentConfig(**CFG), tmp_path / "s", callbacks=[MLflowTracker(str(folder))],
            progress=False)
    assert not (folder / "mlflow.db").exists()  # only the temporary one
    monkeypatch.setattr(MlflowClient, "search_experiments", real)
    resume(tmp_path / "s", callbacks=[MLflowTracker(str(folder))], progress=False)
    points, status = _mlflow_points(folder / "mlflow.db")
    assert status == ["FINISHED"] and not list(folder.glob("mlflow.db.creating-*"))
    assert {k: n for k, n in points.items() if n > 1} == {}


def test_mlflow_rounds_given_again_are_kept_once_and_a_resumed_finished_run_is_finished(
        tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    spec = f"mlflow:{tmp_path / 'ml'}"
    with monkeypatch.context() as m:
        _kill_after_hand_off(m, 4)
        with pytest.raises(Killed):
            run(ExperimentConfig(**CFG), tmp_path / "s", callbacks=[spec], progress=False)
    resume(tmp_path / "s", progress=False)
    points, status = _mlflow_points(tmp_path / "ml" / "mlflow.db")
    assert {k: n for k, n in points.items() if n > 1} == {} and status == ["FINISHED"]
    assert max(s for _k, s, _v in points) == 300
    # a finished experiment resumed with its tracker: the run stays FINISHED
    out = cli("resume", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("firepbt").experiment_id])
    assert r.info.status == "FINISHED"


def test_an_mlflow_server_that_is_not_there_is_found_out_by_one_connection(tmp_path, caplog):
    """One connection with a 3 s timeout, not MLflow's retries for minutes (what was measured
    before; no test here times the machine)."""
    from firepbt.errors import ConfigError

    pytest.importorskip("mlflow")
    # a new run does not begin without it: one line, no store left behind
    with pytest.raises(ConfigError, match="no MLflow server answers at 127.0.0.1:9"):
        run(ExperimentConfig(**CFG), tmp_path / "s", callbacks=["mlflow:http://127.0.0.1:9"],
            progress=False)
    assert not (tmp_path / "s").exists()
    # a resume goes on without it, says so, and a later resume catches it up
    run(ExperimentConfig(**CFG), tmp_path / "s", progress=False, max_rounds=2)
    s = resume(tmp_path / "s", callbacks=["mlflow:http://127.0.0.1:9"], progress=False)
    assert s.finished
    assert any("no MLflow server answers at 127.0.0.1:9" in r.message for r in caplog.records)


def test_resume_needs_only_the_store_and_says_when_a_tracker_is_left_out(tmp_path):
    pytest.importorskip("tensorboard")
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "from firepbt import LogUniform, Space, function_trainable\n"
        "SPACE = Space({'lr': LogUniform(1e-3, 1e-1)})\n"
        "make = function_trainable(lambda seed: {'w': torch.zeros(1) + seed % 5},\n"
        "                          lambda st, hp, n: st['w'].add_(hp['lr'] * n),\n"
        "                          lambda st: float(st['w'][0]))\n")
    args = ["mine", "--factory", "mine:make", "--method", "pbt", "--workers", "4", "--steps",
            "60", "--ready-interval", "20", "--eval-interval", "10", "--no-progress",
            "--store", "s", "--log", "tensorboard:tb"]
    out = cli("run", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shutil.rmtree(tmp_path / "tb")  # lost: the remembered --log catches it up
    out = cli("resume", "s", cwd=tmp_path)  # no --factory, no --log
    assert out.returncode == 0, out.stderr
    assert "logging to tensorboard:tb, as the run was started" in out.stdout
    assert list((tmp_path / "tb" / "s").glob("events.out.tfevents.*"))
    # an explicit --log that leaves the remembered one out: said in one line
    out = cli("resume", "s", "--log", "tensorboard:other", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    warned = [ln for ln in out.stderr.splitlines() if "was started with --log tensorboard:tb"]
    assert len(warned) == 1 and "which this resume does not log to" in warned[0]


FULL_DISK = """
import sys
from tensorboard.summary.writer import record_writer
from firepbt.cli import main

real, written = record_writer.RecordWriter.write, []

def write(self, data):  # the disk fills up after the experiment text and round 1
    written.append(1)
    if len(written) > 3:
        raise OSError(28, "No space left on device")
    return real(self, data)

record_writer.RecordWriter.write = write
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_tensorboard_disk_is_one_line_and_the_run_goes_on(tmp_path):
    # reliability R12: TensorBoard's writer thread printed its own traceback besides the
    # tracker set's one-line warning
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "run", "nqm", "--method", "pbt", "--workers", "4",
         "--steps", "120", "--ready-interval", "30", "--eval-interval", "10", "--no-progress",
         "--store", str(tmp_path / "s"), "--log", f"tensorboard:{tmp_path / 'tb'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Experiment finished: 120/120 steps" in out.stdout
    assert "Traceback" not in out.stderr and "Exception in thread" not in out.stderr, out.stderr
    warned = [x for x in out.stderr.splitlines() if "tensorboard" in x.lower()]
    assert len(warned) == 1 and "No space left on device" in warned[0], out.stderr
