"""The runner end to end on fast tasks: decisions applied, rounds stored, resume exact."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from firepbt.config import ExperimentConfig
from firepbt.records import EvaluatorSuccess, Exploit
from firepbt.runner import resume, run
from firepbt.space import LogUniform, Space
from firepbt.store import Store
from firepbt.trainable import function_trainable


def nqm_config(method, **kw):
    base = dict(task="nqm", method=method, workers=11 if method == "fire" else 8, steps=400,
                ready_interval=50, eval_interval=10, seed=7, task_options={"dims": 300})
    base.update(kw)
    return ExperimentConfig(**base)


def everything(path):
    st = Store.open(path, readonly=True)
    try:
        evals = st.evaluations()
        decisions = [(r, s, d) for r, s, d in st.decisions()]
        final = st.meta("final")
    finally:
        st.close()
    return evals, decisions, final


@pytest.mark.parametrize("method", ["pbt", "random", "fire"])
def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path, method):
    cfg = nqm_config(method)
    full = run(cfg, tmp_path / "full")
    part = run(cfg, tmp_path / "part", max_rounds=3)
    assert not part.finished and part.steps_done == 150
    again = resume(tmp_path / "part")
    assert again.finished and full.finished
    assert (again.best_worker, again.best_value) == (full.best_worker, full.best_value)
    a, b = everything(tmp_path / "full"), everything(tmp_path / "part")
    assert a[0] == b[0] or all(x[:3] == y[:3] and (x[3] == y[3] or math.isnan(x[3]) and math.isnan(y[3]))
                               for x, y in zip(a[0], b[0], strict=True))
    assert a[1] == b[1] and a[2] == b[2]


def _toy_factory():
    """w starts at seed % 97 and grows by lr per step; evaluate returns w (higher is better).
    Whose weights a worker holds is readable from its evaluations."""

    def init(seed):
        return {"w": torch.tensor([float(seed % 97)], dtype=torch.float64)}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    return function_trainable(init, train, lambda st: float(st["w"][0]))


def test_decisions_are_applied_exploit_copies_weights_and_sets_hparams(tmp_path):
    space = Space({"lr": LogUniform(1e-3, 1e-2)})
    cfg = ExperimentConfig(task="toy", method="pbt", workers=8, steps=60, ready_interval=20,
                           eval_interval=10, seed=2)
    run(cfg, tmp_path / "s", factory=_toy_factory(), space=space)
    st = Store.open(tmp_path / "s")
    evals = {(w, s): v for _r, w, s, v in st.evaluations()}
    exploits = [(s, d) for _r, s, d in st.decisions(["exploit"])]
    assert len(exploits) == 3 * 2  # two losers (25% of 8) in each of the three rounds
    for s, d in exploits:
        if s + 10 > cfg.steps:
            continue
        assert isinstance(d, Exploit)
        # next evaluation = the source's weights at s, trained 10 steps with the new lr
        expected = evals[(d.source, s)] + d.new_hparams["lr"] * 10
        assert evals[(d.worker, s + 10)] == pytest.approx(expected, abs=1e-12)
    st.close()


def test_fire_run_records_evaluator_decisions_with_evidence(tmp_path):
    run(nqm_config("fire", steps=600), tmp_path / "f")
    st = Store.open(tmp_path / "f")
    kinds = {d.kind for _r, _s, d in st.decisions()}
    assert {"fitness", "exploit", "assign_evaluator"} <= kinds
    assert kinds & {"stop_evaluator", "evaluator_success"}
    for _r, _s, d in st.decisions(["evaluator_success"]):
        assert isinstance(d, EvaluatorSuccess) and d.score_diff > 0 and d.p_value < 0.01
    st.close()


def test_store_round_trips_non_finite_values(tmp_path):
    st = Store.create(tmp_path / "s", {"task": "x"})
    from firepbt.store import RoundRow

    row = RoundRow(1, 10, 0.0, 0.0, 0.0, 0.0, {}, {"workers": {}, "best_score": -math.inf}, None)
    st.commit_round(row, [(0, 10, math.nan), (1, 10, math.inf), (2, 10, -math.inf), (3, 10, 0.5)],
                    [], [])
    st.close()
    st = Store.open(tmp_path / "s")
    vals = [v for _r, _w, _s, v in st.evaluations()]
    assert math.isnan(vals[0]) and vals[1] == math.inf and vals[2] == -math.inf and vals[3] == 0.5
    assert st.last_round().runner_state["best_score"] == -math.inf
    st.close()


def test_store_refuses_what_is_not_ours(tmp_path):
    from firepbt.errors import StoreError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("hi")
    with pytest.raises(StoreError, match="new or empty folder"):
        Store.create(tmp_path / "full", {})
    with pytest.raises(StoreError, match="made by 'firepbt run'"):
        Store.open(tmp_path / "full")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "experiment.sqlite").write_text("not a database")
    with pytest.raises(StoreError, match="must be a firepbt store"):
        Store.open(tmp_path / "bad")


def test_custom_function_trainable_through_the_python_api(tmp_path):
    def init(seed):
        g = torch.Generator().manual_seed(seed)
        return {"w": torch.zeros(3), "gen": g}

    def train(state, hparams, steps):
        for _ in range(steps):
            noise = torch.randn(3, generator=state["gen"]) * 0.01
            state["w"] += hparams["lr"] * (torch.ones(3) - state["w"]) + noise

    def evaluate(state):
        return float(((state["w"] - 1) ** 2).sum())

    factory = function_trainable(init, train, evaluate, mode="min")
    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    cfg = ExperimentConfig(task="custom", method="pbt", workers=4, steps=100, ready_interval=20,
                           eval_interval=10, seed=1)
    s1 = run(cfg, tmp_path / "a", factory=factory, space=space)
    s2 = run(cfg, tmp_path / "b", factory=factory, space=space, max_rounds=2)
    s2 = resume(tmp_path / "b", factory=factory, space=space)
    assert s1.best_value == s2.best_value and s1.best_value < 1.0
    st = Store.open(tmp_path / "a")
    assert st.meta("mode") == "min"
    st.close()


def _committed_rounds(path: Path) -> int:
    db = path / "experiment.sqlite"
    if not db.exists():
        return 0
    try:
        st = Store.open(path, readonly=True)
        n = len(st.rounds())
        st.close()
        return n
    except Exception:
        return 0


def test_sigkill_mid_run_then_resume_gives_the_same_result(tmp_path):
    """A real SIGKILL of a subprocess mid-experiment; the resumed run must match."""
    args = ["mnist1d", "--method", "fire", "--workers", "11", "--steps", "400",
            "--ready-interval", "50", "--eval-interval", "10", "--seed", "3", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "firepbt", "run", *args]
    ref = subprocess.run(cmd + ["--store", str(tmp_path / "ref")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(cmd + ["--store", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _committed_rounds(tmp_path / "killed") < 3 and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _committed_rounds(tmp_path / "killed")
    assert 3 <= done < 8
    res = subprocess.run([sys.executable, "-m", "firepbt", "resume", str(tmp_path / "killed"),
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    status = [json.loads(subprocess.run(
        [sys.executable, "-m", "firepbt", "status", str(tmp_path / name), "--json"], env=env,
        capture_output=True, text=True, check=True).stdout) for name in ("ref", "killed")]
    assert status[0]["finished"] and status[1]["finished"]
    assert status[0]["best"] == status[1]["best"]
    assert status[0]["top"] == status[1]["top"]
    a, b = everything(tmp_path / "ref"), everything(tmp_path / "killed")
    assert a[0] == b[0] and a[1] == b[1]
