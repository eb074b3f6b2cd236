"""Store integrity: atomic creation, one writer, checkpoints bound to their rounds, damaged
files noticed, states that a checkpoint could not read back refused before any round."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tree

from firepbt.api import resume, run
from firepbt.cli import main
from firepbt.config import ExperimentConfig
from firepbt.errors import StoreError
from firepbt.space import LogUniform, Space
from firepbt.store import Store
from firepbt.trainable import function_trainable

NQM = ["nqm", "--method", "fire", "--workers", "12", "--steps", "400", "--ready-interval", "50",
       "--eval-interval", "10", "--seed", "5", "--no-progress"]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def everything(path):
    st = Store.open(path, readonly=True)
    try:
        return (st.evaluations(), [(r, s, d) for r, s, d in st.decisions()], st.meta("final"),
                [(r.round, r.controller_state, r.workers, r.best_score) for r in st.rounds()])
    finally:
        st.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run and a copy stopped after 5 of 8 rounds (with the nqm task's
    small dims through the Python API, to be quick)."""
    base = tmp_path_factory.mktemp("ref")
    cfg = ExperimentConfig(task="nqm", method="fire", workers=12, steps=400, ready_interval=50,
                           eval_interval=10, seed=5, task_options={"dims": 300})
    run(cfg, base / "full")
    run(cfg, base / "part", max_rounds=5)
    return base


def stopped_copy(reference, tmp_path) -> Path:
    dst = tmp_path / "s"
    shutil.copytree(reference / "part", dst)
    return dst


def checkpoints(path: Path) -> list[Path]:
    return sorted((path / "checkpoints").glob("round-*.pt"))


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "copied_previous"])
def test_a_damaged_last_checkpoint_falls_back_on_the_previous_round(reference, tmp_path,
                                                                    damage, caplog):
    path = stopped_copy(reference, tmp_path)
    prev, last = checkpoints(path)
    if damage == "missing":
        last.unlink()
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:100])
    elif damage == "garbage":
        last.write_bytes(os.urandom(4096))
    else:  # the previous round's file in its place: a stale checkpoint
        shutil.copy(prev, last)
    with caplog.at_level("WARNING", logger="firepbt"):
        resume(path)
    assert "resuming from round 4" in caplog.text
    assert everything(path) == everything(reference / "full")  # the same run, bit for bit


@pytest.mark.parametrize("damage", ["both_garbage", "renamed_previous"])
def test_no_usable_checkpoint_is_refused_in_one_line(reference, tmp_path, capsys, damage):
    path = stopped_copy(reference, tmp_path)
    prev, last = checkpoints(path)
    if damage == "both_garbage":
        prev.write_bytes(b"x" * 50)
        last.write_bytes(b"y" * 50)
    else:  # the previous round's file renamed as the last one: stale, and none before it
        last.unlink()
        prev.rename(last)
    before = tree(path)
    code, _, err = cli(capsys, "resume", path, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no usable checkpoint" in err
    assert "does not match the digest recorded for its round" in err
    assert tree(path) == before


def test_a_damaged_database_is_noticed_before_anything_is_written(reference, tmp_path, capsys):
    path = stopped_copy(reference, tmp_path)
    db = path / "experiment.sqlite"
    data = bytearray(db.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8192] = os.urandom(min(8192, len(data) - mid))
    db.write_bytes(bytes(data))
    before = tree(path)
    for verb in (["resume", path, "--no-progress"], ["status", path], ["lineage", path],
                 ["report", path, "--out", tmp_path / "r"]):
        code, _, err = cli(capsys, *verb)
        assert code == 2 and len(err.strip().splitlines()) == 1, (verb, err)
        assert "damaged" in err or "must be a firepbt store" in err, (verb, err)
    assert tree(path) == before


def test_one_writer_at_a_time_and_status_tells_running_from_stopped(reference, tmp_path,
                                                                   capsys):
    path = stopped_copy(reference, tmp_path)
    code, out, _ = cli(capsys, "status", path)
    assert "stopped" in out
    holder = Store.open(path)  # a writer holds the store
    try:
        before = tree(path)
        code, _, err = cli(capsys, "resume", path, "--no-progress")
        assert code == 2 and "being written by another firepbt process" in err
        assert f"pid {os.getpid()}" in err and len(err.strip().splitlines()) == 1
        assert tree(path) == before
        code, out, _ = cli(capsys, "status", path, "--json")
        assert json.loads(out)["state"] == "running"
        assert json.loads(out)["writer_pid"] == os.getpid()
    finally:
        holder.close()
    code, out, _ = cli(capsys, "status", path, "--json")
    assert json.loads(out)["state"] == "stopped" and json.loads(out)["writer_pid"] is None


def test_a_folder_left_by_a_killed_creation_counts_as_new(tmp_path, capsys):
    path = tmp_path / "s"
    (path / "checkpoints").mkdir(parents=True)
    (path / "experiment.sqlite.tmp").write_bytes(b"half a database")
    code, _, err = cli(capsys, "resume", path, "--no-progress")
    assert code == 2 and "stopped while creating it: run it again" in err
    code, out, err = cli(capsys, "run", *NQM, "--store", path)
    assert code == 0, err
    assert not (path / "experiment.sqlite.tmp").exists()


def test_orphan_temporary_checkpoints_are_removed(reference, tmp_path):
    path = stopped_copy(reference, tmp_path)
    (path / "checkpoints" / "round-000006.tmp").write_bytes(b"killed mid-write")
    Store.open(path).close()
    assert not (path / "checkpoints" / "round-000006.tmp").exists()


# -- states a checkpoint can hold ---------------------------------------------------------------

def _factory(extra):
    def init(seed):
        return {"w": torch.zeros(2, dtype=torch.float64), "gen": torch.Generator().manual_seed(seed),
                "extra": extra(seed)}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps + 1e-3 * torch.rand(2, generator=state["gen"],
                                                                  dtype=torch.float64)
        if isinstance(state["extra"], np.ndarray):
            state["extra"] += 1

    return function_trainable(init, train, lambda st: float(st["w"].sum()))


SPACE = Space({"lr": LogUniform(1e-3, 1e-1)})
CFG = ExperimentConfig(task="toy", method="pbt", workers=4, steps=60, ready_interval=20,
                       eval_interval=10, seed=1)


def test_numpy_arrays_in_a_state_are_checkpointed_and_resume_exactly(tmp_path):
    factory = _factory(lambda seed: np.arange(3, dtype=np.int64) + seed)
    full = run(CFG, tmp_path / "a", factory=factory, space=SPACE)
    run(CFG, tmp_path / "b", factory=factory, space=SPACE, max_rounds=1)
    again = resume(tmp_path / "b", factory=factory, space=SPACE)
    assert (full.best_worker, full.best_value) == (again.best_worker, again.best_value)
    st = Store.open(tmp_path / "b", readonly=True)
    state = st.read_checkpoint(st.last_round().checkpoint)
    st.close()
    assert isinstance(state[0]["extra"], np.ndarray) and state[0]["extra"].dtype == np.int64


def test_a_state_a_checkpoint_cannot_hold_is_refused_naming_the_key(tmp_path):
    factory = _factory(lambda seed: (lambda x: x))
    with pytest.raises(StoreError, match=r"state of worker 0\['extra'\] must hold tensors"):
        run(CFG, tmp_path / "c", factory=factory, space=SPACE)
    assert not (tmp_path / "c").exists()  # nothing written


# -- a real SIGKILL at many points, store creation included -------------------------------------

def test_sigkill_at_many_points_then_resume_gives_identical_stores(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "firepbt", "run", *NQM]
    ref = tmp_path / "ref"
    subprocess.run(cmd + ["--store", str(ref)], env=env, check=True, capture_output=True,
                   timeout=300)
    expected = everything(ref)
    # delays after the store folder appears: during creation, the first rounds, the last ones
    for i, delay in enumerate([0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]):
        path = tmp_path / f"k{i}"
        proc = subprocess.Popen(cmd + ["--store", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not path.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.0005)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (path / "experiment.sqlite").exists():
            again = [sys.executable, "-m", "firepbt", "resume", str(path), "--no-progress"]
        else:  # killed while creating it: the folder counts as new
            again = cmd + ["--store", str(path)]
        res = subprocess.run(again, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (delay, res.stderr)
        assert everything(path) == expected, delay


def test_non_finite_values_print_as_json_null(tmp_path, capsys):
    factory = function_trainable(lambda seed: {"w": torch.zeros(1)},
                                 lambda st, hp, n: None, lambda st: math.nan)
    run(CFG, tmp_path / "n", factory=factory, space=SPACE)
    code, out, _ = cli(capsys, "status", tmp_path / "n", "--json")

    def refuse(name):
        raise AssertionError(f"bare {name} is not JSON")

    d = json.loads(out, parse_constant=refuse)
    assert code == 0 and d["top"]["value"] is None


def test_database_errors_never_escape_as_tracebacks(tmp_path, capsys):
    path = tmp_path / "x"
    path.mkdir()
    conn = sqlite3.connect(path / "experiment.sqlite")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('format', 'firepbt'), ('schema_version', '1')")
    conn.commit()
    conn.close()
    code, _, err = cli(capsys, "status", path)
    assert code == 2 and len(err.strip().splitlines()) == 1
