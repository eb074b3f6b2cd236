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

from firepbt.api import resume, run
from firepbt.build import ResolvedTask
from firepbt.config import ExperimentConfig
from firepbt.executors import LocalExecutor
from firepbt.records import EvaluatorSuccess, Exploit
from firepbt.results import summarize
from firepbt.space import LogUniform, Space
from firepbt.store import Store
from firepbt.trainable import function_trainable


def nqm_config(method, **kw):
    base = dict(task="nqm", method=method, workers=12 if method == "fire" else 8, steps=400,
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
    assert {"fitness", "exploit", "assign_evaluator", "stop_evaluator"} <= kinds
    successes = [d for _r, _s, d in st.decisions(["evaluator_success"])]
    assert successes, "the smallest FIRE PBT run (12 workers) must hand weights down"
    for d in successes:
        assert isinstance(d, EvaluatorSuccess) and d.score_diff > 0 and d.p_value < 0.01
        assert d.target in range(4)  # into P1
    st.close()


@pytest.mark.parametrize(("workers", "n_sub", "size"), [(22, 2, 8), (36, 3, 8), (8, 2, 3)])
def test_fire_evolves_every_subpopulation_and_hands_weights_down(tmp_path, workers, n_sub,
                                                                  size):
    """The paper's 22 (2 x 8 + 6) and 36 (3 x 8 + 12) workers, and the PBT-Zoo benchmark's 8
    (3 + 3 + 2), on the NQM: every parent sub-population evolves, and evaluators succeed."""
    # the paper's 12 evaluations per ready interval (as the built-in protocols): at 8 workers a
    # success needs it (each round one of P2's two evaluated members loses, which ends its
    # evaluation: most evaluations last one or two rounds)
    cfg = nqm_config("fire", workers=workers, steps=2400 if workers > 8 else 4800, seed=0,
                     ready_interval=60, eval_interval=5)
    summary = run(cfg, tmp_path / "f")
    act = summary.activity
    assert sorted(act.exploits) == list(range(n_sub))
    assert all(act.exploits[i] > 0 for i in range(1, n_sub))
    assert act.successes > 0
    st = Store.open(tmp_path / "f")
    assert st.config["workers"] == workers
    subs = {d.target // size for _r, _s, d in st.decisions(["evaluator_success"])}
    st.close()
    assert 0 in subs  # weights reach P1, the best-effort sub-population


def test_fire_with_min_steps_before_eval_per_subpopulation(tmp_path):
    cfg = nqm_config("fire", workers=20, n_subpopulations=3, steps=400,
                     min_steps_before_eval=[0, 100, 250])
    run(cfg, tmp_path / "f")
    st = Store.open(tmp_path / "f")
    assert st.config["min_steps_before_eval"] == [0, 100, 250]
    first = {}
    for _r, step, d in st.decisions(["assign_evaluator"]):
        first.setdefault(d.parent_subpopulation, step)
    st.close()
    assert first == {1: 100, 2: 250}


def test_the_final_member_is_tested_on_the_network_evaluated_at_the_last_step(tmp_path):
    """The last round's copies come after its evaluations: the final test must be taken
    before them (a scripted controller copies into the final best member in the last round)."""
    from firepbt.controllers.base import Controller
    from firepbt.records import FitnessRecord, WorkerState
    from firepbt.runner import Runner

    class CopyIntoTheBest(Controller):
        method = "pbt"

        def start(self):
            return [WorkerState(w, "member", 0, {"lr": lr}) for w, lr in ((0, 1.0), (1, 0.1))]

        def decide(self, step, observations):
            out = [FitnessRecord(0, {})]
            if step == 40:  # the last round: worker 0 (the best) receives worker 1's network
                out.append(Exploit(0, 1, 0, {"lr": 1.0}, {"lr": 0.1}, {"lr": 0.1}, 0.0, 0.0))
            return out

        def state_dict(self):
            return {}

        def load_state_dict(self, state, history=None):
            pass

        def best_candidates(self):
            return [0, 1]

        @property
        def n_workers(self):
            return 2

    def init(seed):
        return {"w": torch.tensor([0.0], dtype=torch.float64)}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    factory = function_trainable(init, train, lambda st: float(st["w"][0]),
                                 test=lambda st: 1000 + float(st["w"][0]))
    space = Space({"lr": LogUniform(1e-3, 1.0)})
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10)
    st = Store.create(tmp_path / "s", cfg.to_dict())
    runner = Runner(cfg, ResolvedTask(factory, space), st, executor=LocalExecutor(factory))
    runner.controller = CopyIntoTheBest()
    runner.start_new()
    runner.run()
    summary = summarize(st)
    st.close()
    assert (summary.best_worker, summary.best_value) == (0, 40.0)
    assert summary.best_test == 1040.0  # its own network, not worker 1's (1004)


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
    assert st.run_facts.mode == "min"
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
    args = ["mnist1d", "--method", "fire", "--workers", "12", "--steps", "400",
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


def test_the_auto_executor_builds_each_custom_trainable_once(tmp_path):
    calls = []

    def init(seed):
        calls.append(seed)
        return {"w": torch.zeros(1)}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    factory = function_trainable(init, train, lambda st: float(st["w"][0]))
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10)  # executor "auto": not vectorizable -> local
    run(cfg, tmp_path / "s", factory=factory, space=Space({"lr": LogUniform(1e-3, 1e-1)}))
    assert len(calls) == 4


@pytest.mark.parametrize(("threads", "omp", "load", "expected"), [
    (2, None, 0.0, 2),  # as asked
    (0, None, 0.0, 3),  # PyTorch's own setting (3, set below)
    (None, "1", 0.0, 3),  # OMP_NUM_THREADS set: an explicit choice, left alone
    (None, None, 0.0, "cpus"),  # auto on an idle machine: every core
    (None, None, 1000.0, 1),  # auto on a busy machine: one thread
    (None, None, 1.0, "cpus-1"),  # one core busy elsewhere: the others
])
def test_training_runs_with_the_configured_threads_and_restores_them(tmp_path, monkeypatch,
                                                                      threads, omp, load,
                                                                      expected):
    import os

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    from firepbt import threads as threads_module

    monkeypatch.setattr(threads_module, "_busy_cores", lambda window: load)
    if expected == "cpus":
        expected = len(os.sched_getaffinity(0))
    elif expected == "cpus-1":
        expected = max(1, len(os.sched_getaffinity(0)) - 1)
    seen = []

    def train(state, hparams, steps):
        seen.append(torch.get_num_threads())
        state["w"] += hparams["lr"] * steps

    factory = function_trainable(lambda seed: {"w": torch.zeros(1)}, train,
                                 lambda st: float(st["w"][0]))
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10, threads=threads)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        run(cfg, tmp_path / "s", factory=factory, space=Space({"lr": LogUniform(1e-3, 1e-1)}))
        assert set(seen) == {expected}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_python_api_shows_progress_when_asked(tmp_path, capsys):
    factory = function_trainable(lambda seed: {"w": torch.zeros(1)},
                                 lambda st, hp, n: None, lambda st: 0.5)
    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10)
    run(cfg, tmp_path / "a", factory=factory, space=space)  # not a terminal: silent
    assert capsys.readouterr().out == ""
    run(cfg, tmp_path / "b", factory=factory, space=space, progress=True)
    assert "steps" in capsys.readouterr().out
    calls = []
    run(cfg, tmp_path / "c", factory=factory, space=space,
        progress=lambda step, total, info: calls.append((step, total)))
    assert calls and calls[-1] == (20, 20) and capsys.readouterr().out == ""


def test_busy_cores_reads_the_machine():
    import os

    from firepbt.threads import _busy_cores

    busy = _busy_cores(0.05)
    if not os.path.exists("/proc/stat"):
        assert busy is None
    else:
        assert busy is not None and -0.01 <= busy <= (os.cpu_count() or 1) + 0.01


def test_a_checkpoint_interval_loses_at_most_that_many_rounds_and_resume_is_exact(tmp_path):
    """Checkpoints every 3 rounds: a run stopped after round 5 (checkpoint at 3) resumes from
    round 3, trains 4 and 5 again, and ends exactly as an uninterrupted run with a checkpoint
    every round."""
    from firepbt.store import Store

    base = dict(task="nqm", method="fire", workers=12, steps=500, ready_interval=50,
                eval_interval=10, seed=2, task_options={"dims": 200}, executor="local")
    run(ExperimentConfig(**base), tmp_path / "every", progress=False)
    cfg = ExperimentConfig(**base, checkpoint_interval=3)
    run(cfg, tmp_path / "part", progress=False, max_rounds=5)
    st = Store.open(tmp_path / "part", readonly=True)
    assert [r.round for r in st.rounds()] == [1, 2, 3, 4, 5]
    assert [r.round for r in st.rounds() if r.checkpoint] == [3]
    st.close()
    resume(tmp_path / "part", progress=False)
    a, b = Store.open(tmp_path / "every", readonly=True), Store.open(tmp_path / "part",
                                                                       readonly=True)
    assert a.evaluations() == b.evaluations() and a.decisions() == b.decisions()
    assert [r.round for r in b.rounds() if r.checkpoint] == [3, 6, 9, 10]
    assert sorted(p.name for p in (tmp_path / "part" / "checkpoints").glob("*.pt")) == [
        "round-000009.pt", "round-000010.pt"]  # the last two kept
    a.close()
    b.close()
    # killed before its first checkpoint: starts again
    run(cfg, tmp_path / "early", progress=False, max_rounds=2)
    resume(tmp_path / "early", progress=False)
    c = Store.open(tmp_path / "early", readonly=True)
    a = Store.open(tmp_path / "every", readonly=True)
    assert a.evaluations() == c.evaluations()
    a.close()
    c.close()


class LateCheckpoints(LocalExecutor):
    """The local executor with the Ray executor's late checkpoints (``begin_checkpoint``):
    the states are taken when asked, written when the runner waits for them (after the next
    round trained) and bound then; the checkpoint of round ``fail_at`` cannot be finished."""

    def __init__(self, factory, fail_at=None):
        super().__init__(factory)
        self.fail_at = fail_at

    def begin_checkpoint(self, store, r):
        states = self.states()

        def wait():
            if r == self.fail_at:
                raise OSError("No space left on device")
            return store.write_checkpoint(r, states)

        return wait


def _late(tmp_path, name, fail_at=None, commit_fails_at=None, monkeypatch=None):
    from firepbt.runner import Runner
    from firepbt.tasks.nqm import SPACE, NQMTrainable

    cfg = ExperimentConfig(task="nqm", method="pbt", workers=4, steps=250, ready_interval=50,
                           eval_interval=10, seed=2, task_options={"dims": 200})

    def make(seed):
        return NQMTrainable(seed, dims=200)

    st = Store.create(tmp_path / name, cfg.to_dict())
    if commit_fails_at is not None:
        import sqlite3

        commit = st.commit_round

        def failing(row, *a, **k):
            if row.round == commit_fails_at:
                raise sqlite3.OperationalError("database or disk is full")
            return commit(row, *a, **k)

        monkeypatch.setattr(st, "commit_round", failing)
    runner = Runner(cfg, ResolvedTask(make, SPACE), st, executor=LateCheckpoints(make, fail_at))
    runner.start_new()
    try:
        runner.run()
    finally:
        st.close()


def test_a_checkpoint_bound_late_resumes_exactly_when_it_could_not_be_finished(tmp_path):
    """Round 3 is committed, its checkpoint fails while round 4 trains: the run stops with that
    error, round 3 stays without a checkpoint, and resume (from round 2) ends as a run that
    never failed."""
    from firepbt.tasks.nqm import SPACE, NQMTrainable

    _late(tmp_path, "ref")
    with pytest.raises(OSError, match="No space left"):
        _late(tmp_path, "s", fail_at=3)
    st = Store.open(tmp_path / "s", readonly=True)
    assert [(r.round, r.checkpoint is not None) for r in st.rounds()] == [
        (1, True), (2, True), (3, False)]
    st.close()
    resume(tmp_path / "s", factory=lambda s: NQMTrainable(s, dims=200), space=SPACE)
    ref, got = Store.open(tmp_path / "ref"), Store.open(tmp_path / "s")
    assert got.evaluations() == ref.evaluations() and got.decisions() == ref.decisions()
    ref.close()
    got.close()


def test_a_failure_before_the_round_is_committed_is_raised_as_itself(tmp_path, monkeypatch):
    """The commit of round 2 fails after its checkpoint began: the run raises the commit's
    error (not a store error about binding a checkpoint to a round never committed)."""
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        _late(tmp_path, "s", commit_fails_at=2, monkeypatch=monkeypatch)
    st = Store.open(tmp_path / "s", readonly=True)
    assert [(r.round, r.checkpoint is not None) for r in st.rounds()] == [(1, True)]
    st.close()


def _decisions_text(path):
    from firepbt.records import decision_to_dict

    st = Store.open(path, readonly=True)
    try:  # as text: a zero's sign shows
        return [json.dumps(decision_to_dict(d)) for _r, _s, d in st.decisions()], \
            [(w, s, repr(v)) for _r, w, s, v in st.evaluations()]
    finally:
        st.close()


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_resumed_fire_controller_observes_zeros_as_the_uninterrupted_one(tmp_path, mode):
    """Evaluations of exactly -0.0 (the store keeps no sign of zero): the controller observes
    unsigned zeros, so the controller a resume restores holds, to the sign of every zero, the
    curves of the one that ran, and the resumed run decides as one never stopped."""
    from firepbt.runner import Runner

    def init(seed):
        return {"w": torch.tensor([float(seed % 7) / 10], dtype=torch.float64)}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    def evaluate(state):  # -0.0 once w passes 1 (a score of -0.0 in max mode, 0.0 in min)
        return -max(0.0, 1.0 - float(state["w"][0]))

    make = function_trainable(init, train, evaluate, mode=mode)
    space = Space({"lr": LogUniform(1e-3, 3e-2)})
    cfg = ExperimentConfig(task="zeros", method="fire", workers=12, steps=400, ready_interval=50,
                           eval_interval=10, seed=2)

    def curves(ctl):
        return ({w: [(s, v.hex()) for s, v in m.curve] for w, m in ctl.members.items()},
                {e: [(s, v.hex()) for s, v in ev.curve] for e, ev in ctl.evaluators.items()})

    st = Store.create(tmp_path / "part", cfg.to_dict())
    live = Runner(cfg, ResolvedTask(make, space), st)
    live.start_new()
    live.run(max_rounds=4)
    st.close()
    st = Store.open(tmp_path / "part")
    again = Runner(cfg, ResolvedTask(make, space), st)
    again.restore()
    st.close()
    held = curves(live.controller)
    assert any(v in ("0x0.0p+0", "-0x0.0p+0") for c in held[0].values() for _s, v in c)
    assert curves(again.controller) == held
    run(cfg, tmp_path / "full", factory=make, space=space, progress=False)
    resume(tmp_path / "part", factory=make, space=space, progress=False)
    assert _decisions_text(tmp_path / "full") == _decisions_text(tmp_path / "part")


def test_a_test_that_raises_names_the_worker_and_step(tmp_path):
    from firepbt.errors import TrainableError

    def init(seed):
        return {"w": torch.tensor([float(seed % 5)])}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    def broken_test(state):
        raise RuntimeError("the test set is missing")

    make = function_trainable(init, train, lambda st: float(st["w"][0]), test=broken_test)
    cfg = ExperimentConfig(task="t", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10, seed=0)
    with pytest.raises(TrainableError, match=r"worker \d+ failed at step 20") as err:
        run(cfg, tmp_path / "s", factory=make, space=Space({"lr": LogUniform(1e-3, 1e-1)}),
            progress=False)
    assert "the test set is missing" in str(err.value)


def test_a_store_without_its_run_facts_is_refused_at_resume_in_one_line(tmp_path):
    import sqlite3

    from firepbt.errors import StoreError

    cfg = nqm_config("fire")
    run(cfg, tmp_path / "s", max_rounds=2)
    db = sqlite3.connect(tmp_path / "s" / "experiment.sqlite")
    db.execute("DELETE FROM meta WHERE key='run'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="holds no run yet"):
        resume(tmp_path / "s")


def test_the_final_members_test_is_a_float_and_a_raising_one_names_worker_and_step(tmp_path):
    from firepbt.errors import TrainableError

    def init(seed):
        return {"w": torch.tensor([float(seed % 5)])}

    def train(state, hparams, steps):
        state["w"] += hparams["lr"] * steps

    def tensor_test(state):  # a 0-d tensor, as a test often returns
        return state["w"][0] * 2

    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    cfg = ExperimentConfig(task="t", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10, seed=0)
    make = function_trainable(init, train, lambda st: float(st["w"][0]), test=tensor_test)
    s = run(cfg, tmp_path / "ok", factory=make, space=space, progress=False)
    assert isinstance(s.best_test, float)

    from firepbt.runner import Runner

    class FinalTestFails(LocalExecutor):  # the rounds' tests pass, the final member's raises
        def test(self, worker):
            raise RuntimeError("the test set went away")

    st = Store.create(tmp_path / "late", cfg.to_dict())
    try:
        runner = Runner(cfg, ResolvedTask(make, space), st, executor=FinalTestFails(make))
        runner.start_new()
        with pytest.raises(TrainableError, match=r"worker \d+ failed at step 40") as err:
            runner.run()
        assert "the test set went away" in str(err.value)
    finally:
        st.close()


def test_resume_keeps_the_thread_count_the_run_chose(tmp_path, monkeypatch):
    import firepbt.threads

    seen = []

    def note(state):
        seen.append(torch.get_num_threads())

    make = function_trainable(
        lambda seed: {"w": torch.zeros(1) + seed % 5},
        lambda st, hp, n: (st["w"].add_(hp["lr"] * n), note(st)),
        lambda st: float(st["w"][0]))
    monkeypatch.setattr(firepbt.threads, "auto_threads", lambda window=0.25: 2)
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=60, ready_interval=10,
                           eval_interval=5, seed=1, executor="local")  # threads None: firepbt's
    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    run(cfg, tmp_path / "s", factory=make, space=space, progress=False, max_rounds=2)
    assert set(seen) == {2}
    monkeypatch.setattr(firepbt.threads, "auto_threads", lambda window=0.25: 1)  # busier now
    seen.clear()
    resume(tmp_path / "s", factory=make, space=space, progress=False)
    assert set(seen) == {2}
    assert Store.open(tmp_path / "s", readonly=True).meta("threads_used") == "2"


# -- the loop itself, on a scripted executor and controller (no training) --------------------

def _scripted(tmp_path, script, *, mode="max", steps=30, executor=None):
    from scripted import ScriptedController, ScriptedExecutor

    from firepbt.runner import Runner

    log: list = []
    ex = executor if executor is not None else ScriptedExecutor({w: 0.0 for w in range(4)}, mode)
    ex.log = log
    cfg = ExperimentConfig(task="scripted", method="pbt", workers=4, steps=steps,
                           ready_interval=10, eval_interval=5, executor="local", threads=1)
    st = Store.create(tmp_path / "s", cfg.to_dict())
    commit = st.commit_round

    def logged_commit(row, *a, **k):
        log.append(("commit", row.round))
        return commit(row, *a, **k)

    st.commit_round = logged_commit
    runner = Runner(cfg, ResolvedTask(lambda seed: None, Space({"lr": LogUniform(1e-3, 1.0)})),
                    st, executor=ex)
    runner.controller = ScriptedController({0: 0.01, 1: 0.02, 2: 0.03, 3: 0.04}, script, log)
    runner.start_new()
    runner.run()
    return st, ex, log


def _exploit(loser, source, new_lr):
    return Exploit(loser, source, 0, {"lr": 0.0}, {"lr": 0.0}, {"lr": new_lr}, 0.0, 1.0)


def test_a_round_trains_then_decides_then_copies_then_checkpoints_then_commits(tmp_path):
    st, _ex, log = _scripted(tmp_path, {10: [_exploit(3, 0, 0.5)]})
    st.close()
    first = log[:log.index(("commit", 1)) + 1]
    assert [e[0] for e in first] == ["setup", "train_round", "decide", "copy", "states",
                                     "commit"]
    assert ("copy", 0, 3) in first
    # every round, in that order
    kinds = [e[0] for e in log if e[0] in ("train_round", "decide", "commit")]
    assert kinds == ["train_round", "decide", "commit"] * 3


def test_copies_apply_in_decision_order_each_seeing_the_ones_before(tmp_path):
    # worker 1 copies 0, then 2 copies 1: worker 2 ends the round holding 0's network
    st, ex, _log = _scripted(tmp_path, {10: [_exploit(1, 0, 0.5), _exploit(2, 1, 0.7)]},
                             steps=10)
    workers = st.worker_states(1)
    st.close()
    assert ex.values[2] == ex.values[0] == pytest.approx(0.1)  # 10 steps of lr 0.01
    assert (workers[1].hparams, workers[2].hparams) == ({"lr": 0.5}, {"lr": 0.7})


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_controller_observes_maximised_scores_with_the_step_0_points(tmp_path, mode):
    st, _ex, log = _scripted(tmp_path, {}, mode=mode, steps=10)
    st.close()
    told = [e for e in log if e[0] == "decide"][0]
    sign = 1.0 if mode == "max" else -1.0
    assert told[1] == 10
    assert told[2][3] == [(0, 0.0), (5, pytest.approx(sign * 0.2)), (10, pytest.approx(sign * 0.4))]


def test_an_executor_with_no_optional_capability_runs_on_the_contracts_defaults(tmp_path):
    """No test_best (tests come in the results), no begin_checkpoint (the runner writes the
    checkpoint from states() and binds it with its digest), no copy_many (one copy each)."""
    from scripted import ScriptedExecutor

    st, ex, _log = _scripted(tmp_path, {10: [_exploit(0, 3, 0.5)]},
                             executor=ScriptedExecutor({w: 0.0 for w in range(4)}))
    from firepbt.selection import running_top

    tests = st.tests()
    evals = st.evaluations()
    last = st.last_round()
    states = st.read_checkpoint(last.checkpoint)
    st.close()
    # the tests kept: exactly the running top's points, in (step, worker) order, of those the
    # executor tested (every trained point above the round's starting best; not step 0)
    _best, tops = running_top(((s, w, v) for _r, w, s, v in evals), -math.inf)
    assert sorted((w, s) for _r, w, s, _v in tests) == sorted((w, s) for s, w, _v in tops
                                                               if s > 0)
    assert all(v > 1000 for *_x, v in tests)
    assert states == {w: {"value": pytest.approx(ex.values[w])} for w in range(4)}
