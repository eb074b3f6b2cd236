"""The Ray executor against a real local Ray instance (2 CPUs, loopback only)."""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from firepbt.api import run  # noqa: E402
from firepbt.build import worker_seeds  # noqa: E402
from firepbt.config import ExperimentConfig  # noqa: E402
from firepbt.store import Store  # noqa: E402
from firepbt.tasks.nqm import SPACE, NQMTrainable  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests are not importable
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


class Faulty:
    """The NQM, failing at the first train call that reaches ``at_step``, on one worker:
    ``how`` is "kill" (SIGKILL of its own actor process), "raise_once" or "raise_always".
    The marker file makes a one-off fault happen once across restarts."""

    mode = "min"

    def __init__(self, seed, bad_seed, how, at_step, marker):
        self.inner = NQMTrainable(seed, dims=300)
        self.seed, self.bad_seed, self.how = seed, bad_seed, how
        self.at_step, self.marker = at_step, marker
        self.steps = 0

    def train(self, hparams, steps):
        if self.seed == self.bad_seed and self.steps + steps >= self.at_step:
            if self.how == "raise_always":
                raise ValueError(f"worker with seed {self.seed} always fails")
            if not Path(self.marker).exists():
                Path(self.marker).write_text("done")
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.how == "hang":  # a train() that never returns
                    import time

                    time.sleep(3600)
                raise ValueError("a one-off failure")
        self.inner.train(hparams, steps)
        self.steps += steps

    def evaluate(self):
        return self.inner.evaluate()

    def test(self):  # a function of the weights: the held best point's test is comparable
        return self.inner.evaluate() + 1.0

    def state_dict(self):
        return {**self.inner.state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)
        self.steps = int(state["steps"])


def faulty(bad_worker, how, at_step, marker, seed=3, n=8):
    bad_seed = worker_seeds(seed, n)[bad_worker]

    def make(s):
        return Faulty(s, bad_seed, how, at_step, str(marker))

    return make


def records(path):
    st = Store.open(path)
    try:
        decisions = [d for _r, _s, d in st.decisions()]
        return (st.evaluations(), st.tests()), decisions
    finally:
        st.close()


def cfg(executor, method="pbt", workers=8):
    return ExperimentConfig(task="faulty", method=method, workers=workers, steps=200,
                            ready_interval=50, eval_interval=10, seed=3, executor=executor)


def without_failures(decisions):
    return [d for d in decisions if d.kind != "worker_failure"]


def test_same_decisions_as_the_local_executor(tmp_path):
    for method, workers in (("pbt", 8), ("fire", 12)):
        c = cfg("local", method, workers)
        make = faulty(0, "none", 10**9, tmp_path / "m", n=workers)
        run(c, tmp_path / f"{method}-local", factory=make, space=SPACE)
        run(ExperimentConfig(**{**c.to_dict(), "executor": "ray"}), tmp_path / f"{method}-ray",
            factory=make, space=SPACE)
        local, ray_ = records(tmp_path / f"{method}-local"), records(tmp_path / f"{method}-ray")
        assert local == ray_ and local[0][1]  # the same tests too: the rounds' best points


def test_sigkill_of_an_actor_mid_round_loses_nothing(tmp_path):
    make = faulty(5, "kill", 120, tmp_path / "killed")
    run(cfg("local"), tmp_path / "ref", factory=faulty(5, "none", 10**9, tmp_path / "x"),
        space=SPACE)
    s = run(cfg("ray"), tmp_path / "ray", factory=make, space=SPACE)
    assert s.finished and (tmp_path / "killed").exists()
    evals, decisions = records(tmp_path / "ray")
    failures = [d for d in decisions if d.kind == "worker_failure"]
    # 2 CPUs: 2 actors, members dealt round-robin; worker 5's actor also held 1, 3 and 7
    assert sorted(f.worker for f in failures) == [1, 3, 5, 7]
    assert {f.error for f in failures} == {"actor_died"}
    ref_evals, ref_decisions = records(tmp_path / "ref")
    assert evals == ref_evals and without_failures(decisions) == ref_decisions


def test_a_trainable_that_raises_is_reported_and_restored(tmp_path):
    make = faulty(2, "raise_once", 70, tmp_path / "raised")
    run(cfg("local"), tmp_path / "ref", factory=faulty(2, "none", 10**9, tmp_path / "x"),
        space=SPACE)
    run(cfg("ray"), tmp_path / "ray", factory=make, space=SPACE)
    evals, decisions = records(tmp_path / "ray")
    (failure,) = [d for d in decisions if d.kind == "worker_failure"]
    assert failure.worker == 2 and failure.error == "trainable_error"
    # chunks of 10 steps from 50: the call covering steps 60-70 reaches at_step=70 and raises
    assert failure.step == 60 and "ValueError: a one-off failure" in failure.traceback
    assert "restored" in failure.action
    ref_evals, ref_decisions = records(tmp_path / "ref")
    assert evals == ref_evals and without_failures(decisions) == ref_decisions


def test_a_member_that_keeps_failing_is_retired_and_refilled_by_exploitation(tmp_path):
    make = faulty(4, "raise_always", 60, tmp_path / "never")
    s = run(cfg("ray"), tmp_path / "ray", factory=make, space=SPACE)
    assert s.finished
    (evals, _tests), decisions = records(tmp_path / "ray")
    failures = [d for d in decisions if d.kind == "worker_failure" and d.worker == 4]
    assert any("retired" in f.action for f in failures)
    nan_steps = [s for _r, w, s, v in evals if w == 4 and math.isnan(v)]
    assert nan_steps and min(nan_steps) == 60
    exploits = [d for d in decisions if d.kind == "exploit" and d.worker == 4]
    assert exploits, "the retired member must be refilled by exploitation"


def test_a_hung_member_cannot_hold_the_run_past_its_deadline(tmp_path):
    # worker 5's train() sleeps for an hour in round 3: at the round's deadline (3 s) its actor
    # is killed and replaced, the members it held (2 CPUs, 2 actors: 1, 3, 5, 7) are retired
    # for the round with NaN evaluations, and the run goes on to the end
    import time

    make = faulty(5, "hang", 120, tmp_path / "hung")
    c = ExperimentConfig(**{**cfg("ray").to_dict(), "round_timeout": 3.0})
    t0 = time.monotonic()
    s = run(c, tmp_path / "ray", factory=make, space=SPACE)
    assert s.finished and (tmp_path / "hung").exists()
    assert time.monotonic() - t0 < 120  # not an hour
    (evals, _tests), decisions = records(tmp_path / "ray")
    failures = [d for d in decisions if d.kind == "worker_failure"]
    assert sorted(f.worker for f in failures) == [1, 3, 5, 7]
    assert {f.error for f in failures} == {"round_timeout"}
    assert all(f.step == 100 and "retired for the round" in f.action for f in failures)
    nan = {(w, st) for _r, w, st, v in evals if math.isnan(v)}
    assert nan == {(w, st) for w in (1, 3, 5, 7) for st in range(110, 151, 10)}
    assert all(math.isfinite(v) for _r, w, st, v in evals if st > 150)  # refilled, trained on


def test_resume_after_the_driver_stops_equals_an_uninterrupted_run(tmp_path):
    from firepbt.api import resume

    make = faulty(0, "none", 10**9, tmp_path / "m")
    run(cfg("ray"), tmp_path / "full", factory=make, space=SPACE)
    part = run(cfg("ray"), tmp_path / "part", factory=make, space=SPACE, max_rounds=2)
    assert not part.finished
    done = resume(tmp_path / "part", factory=make, space=SPACE)
    assert done.finished
    assert records(tmp_path / "full") == records(tmp_path / "part")


def test_trainable_error_survives_pickling():
    import pickle

    from firepbt.errors import TrainableError

    e = pickle.loads(pickle.dumps(TrainableError(3, 120, "Traceback ...\nValueError: x")))
    assert (e.worker, e.step) == (3, 120) and "ValueError: x" in str(e)


def test_actors_are_sized_by_the_cpus_not_the_members():
    from firepbt.executors.ray import RayExecutor

    ex = RayExecutor(faulty(0, "none", 10**9, "/nonexistent"))
    ex.setup({w: w for w in range(8)})
    try:
        pids = ray.get([h.pid.remote() for h in ex.hosts])
        assert ex.n_actors == 2 and len(set(pids)) == 2  # 2 CPUs: 2 processes for 8 members
        assert ex.home == {w: w % 2 for w in range(8)}
    finally:
        ex.hosts and [ray.kill(h) for h in ex.hosts]


@pytest.mark.parametrize("writes", ["actors", "driver"])
def test_checkpoints_are_written_beside_the_driver_and_resume_exactly(tmp_path, monkeypatch,
                                                                       writes):
    """The actors write their members' states (they see the store's folder here); where they
    could not, the driver gathers them in a background thread. Either way no state is gathered
    on the driver's main thread, the checkpoint is bound after its round, and a run stopped
    between checkpoints resumes to the local executor's results and states."""
    import threading

    from firepbt.api import resume
    from firepbt.executors.ray import RayExecutor

    if writes == "driver":
        monkeypatch.setattr(RayExecutor, "_actors_write", lambda self, store: False)
    gathered, writers = [], []
    states, write = RayExecutor.states, Store.write_checkpoint
    monkeypatch.setattr(RayExecutor, "states", lambda self: gathered.append(1) or states(self))

    def spy(self, r, s):
        writers.append(threading.current_thread().name)
        return write(self, r, s)

    monkeypatch.setattr(Store, "write_checkpoint", spy)
    make = faulty(0, "none", 10**9, tmp_path / "m")
    c = ExperimentConfig(**{**cfg("ray").to_dict(), "checkpoint_interval": 2})  # 4 rounds
    part = run(c, tmp_path / "ray", factory=make, space=SPACE, max_rounds=3)
    assert not part.finished
    st = Store.open(tmp_path / "ray", readonly=True)
    assert [(r.round, r.checkpoint is not None) for r in st.rounds()] == [
        (1, False), (2, True), (3, False)]
    st.close()
    resume(tmp_path / "ray", factory=make, space=SPACE)  # from round 2: rounds 3, 4 again
    monkeypatch.undo()
    run(ExperimentConfig(**{**c.to_dict(), "executor": "local"}), tmp_path / "local",
        factory=make, space=SPACE)
    assert records(tmp_path / "ray") == records(tmp_path / "local")
    assert gathered == []
    ray_st, local_st = Store.open(tmp_path / "ray"), Store.open(tmp_path / "local")
    name = ray_st.last_round().checkpoint
    assert [r.round for r in ray_st.rounds() if r.checkpoint is not None] == [2, 4]
    if writes == "actors":  # one part per actor, nothing written by the driver
        assert name.endswith(".parts") and writers == []
        assert sorted(p.name for p in (tmp_path / "ray" / "checkpoints" / name).iterdir()) == [
            "manifest.json", "part-000.pt", "part-001.pt"]
    else:
        assert name.endswith(".pt") and writers and set(writers) != {"MainThread"}
    got, want = ray_st.read_checkpoint(name), local_st.read_checkpoint(
        local_st.last_round().checkpoint)
    assert sorted(got) == sorted(want)
    for w in want:
        assert want[w].keys() == got[w].keys()
        assert all(torch_equal(want[w][k], got[w][k]) for k in want[w])
    ray_st.close()
    local_st.close()


def torch_equal(a, b):
    import torch

    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_rounds_copies_sent_together_equal_copies_one_by_one():
    """Copies whose sources received weights earlier in the round, across and within actors:
    sent in waves they leave every member as copying one by one on the local executor does
    (states, and the data streams the seeds give)."""
    from firepbt.executors import LocalExecutor, TrainJob
    from firepbt.executors.ray import RayExecutor

    make = faulty(0, "none", 10**9, "/nonexistent")
    seeds = {w: 100 + w for w in range(6)}
    ex, local = RayExecutor(make), LocalExecutor(make)
    ex.setup(seeds)
    local.setup(seeds)
    try:
        jobs = [TrainJob(w, 0, (({"lr": 0.1 + 0.1 * w}, 7),), 5) for w in range(6)]
        ex.train_round(jobs, -math.inf)  # the members now differ
        local.train_round(jobs, -math.inf)
        copies = [(0, 1, 11), (1, 2, 12), (2, 4, None), (3, 0, 13), (0, 5, 14), (5, 3, 15),
                  (4, 0, 16)]  # workers w live in actor w % 2
        ex.copy_many(copies)
        for source, dest, seed in copies:
            local.copy(source, dest, seed)
        got, want = ex.states(), local.states()
        for w in range(6):
            assert all(torch_equal(want[w][k], got[w][k]) for k in want[w]), w
        more = [TrainJob(w, 7, (({"lr": 0.2}, 5),), 5) for w in range(6)]
        assert ([r.evaluations for r in ex.train_round(more, -math.inf)]
                == [r.evaluations for r in local.train_round(more, -math.inf)])
    finally:
        ex.close()


class RefusesStates(Faulty):
    def load_state_dict(self, state):
        raise ValueError("this state does not fit")


def test_an_error_while_copying_is_raised_as_the_local_executor_raises_it():
    from firepbt.executors.ray import RayExecutor

    ex = RayExecutor(lambda s: RefusesStates(s, -1, "none", 10**9, "/nonexistent"))
    ex.setup({w: w for w in range(4)})
    try:
        for copy in ((0, 2, 7), (0, 1, 7)):  # within one actor, and across the two
            with pytest.raises(ValueError, match="does not fit"):
                ex.copy_many([copy])
    finally:
        ex.close()


def test_actors_train_a_batched_family_as_one_model_with_the_local_results(tmp_path):
    from firepbt.executors.ray import RayExecutor

    c = ExperimentConfig(task="nqm", method="fire", workers=12, steps=200, ready_interval=50,
                         eval_interval=10, seed=3, task_options={"dims": 300})
    run(ExperimentConfig(**{**c.to_dict(), "executor": "local"}), tmp_path / "local")
    run(ExperimentConfig(**{**c.to_dict(), "executor": "ray"}), tmp_path / "ray")
    assert records(tmp_path / "ray") == records(tmp_path / "local")  # the NQM: bitwise
    ex = RayExecutor(lambda s: NQMTrainable(s, dims=50), max_actors=1)
    ex.setup({w: w for w in range(6)})
    try:
        assert ex.n_actors == 1 and ray.get(ex.hosts[0].batched.remote())
    finally:
        [ray.kill(h) for h in ex.hosts]


class Flaky:
    """A batched family (w -> 1 at rate lr) whose member with ``bad`` raises from step 60;
    with ``once`` (a marker file), only the batched model fails, once, after advancing every
    member's state part of the way (as a batched model that dies mid-round leaves it)."""

    mode = "max"

    def __init__(self, seed, bad, once=None):
        self.w, self.bad, self.steps, self.once = (seed % 7) / 10, bad, 0, once

    def train(self, hparams, steps):
        if self.bad and self.once is None and self.steps + steps > 60:
            raise ValueError("this member always fails")
        for _ in range(steps):
            self.w += hparams["lr"] * (1.0 - self.w)
        self.steps += steps

    def evaluate(self):
        return self.w

    def state_dict(self):
        return {"w": self.w, "steps": self.steps}

    def load_state_dict(self, state):
        self.w, self.steps = float(state["w"]), int(state["steps"])


class FlakyPopulation:
    @classmethod
    def check(cls, members):
        pass

    @staticmethod
    def settings(member, hparams):
        return (float(hparams["lr"]),)

    def __init__(self, members):
        self.members = list(members)
        self.new = [(m.w, m.steps) for m in self.members]

    def train(self, settings):
        for m in self.members:  # the batched model fails as a whole
            if m.bad and m.steps + len(settings) > 60:
                if m.once is None:
                    raise ValueError("a member of the batch fails")
                if not Path(m.once).exists():
                    Path(m.once).write_text("x")
                    for other in self.members:
                        other.w += 1.0  # partly advanced
                    raise ValueError("the batched model fails once")
        for lr_row in settings[..., 0]:
            self.new = [(w + float(lr) * (1.0 - w), s + 1)
                        for (w, s), lr in zip(self.new, lr_row, strict=True)]

    def evaluate(self):
        return [w for w, _s in self.new]

    def snapshot(self, i):
        return None

    def test_at(self, i, snapshot):
        return None

    def write_back(self):
        for m, (w, s) in zip(self.members, self.new, strict=True):
            m.w, m.steps = w, s


def test_a_failing_member_of_a_batched_actor_is_found_and_retired_alone(tmp_path):
    from firepbt.executors.batched import register_batched
    from firepbt.space import LogUniform, Space

    bad_seed = worker_seeds(3, 8)[5]

    def make(seed):
        register_batched(Flaky, FlakyPopulation)  # in the actor's process
        return Flaky(seed, seed == bad_seed)

    s = run(cfg("ray"), tmp_path / "ray", factory=make,
            space=Space({"lr": LogUniform(1e-3, 1e-1)}))
    assert s.finished
    (evals, _tests), decisions = records(tmp_path / "ray")
    failed = {d.worker for d in decisions if d.kind == "worker_failure"}
    assert failed == {5}
    assert all(not math.isnan(v) for _r, w, _s, v in evals if w != 5)


def test_a_batched_model_that_fails_mid_round_is_retried_from_the_rounds_start(tmp_path):
    from firepbt.executors.batched import register_batched
    from firepbt.space import LogUniform, Space

    bad_seed = worker_seeds(3, 8)[5]
    once = str(tmp_path / "once")

    def make(seed):
        register_batched(Flaky, FlakyPopulation)
        return Flaky(seed, seed == bad_seed, once)

    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    run(cfg("ray"), tmp_path / "ray", factory=make, space=space)
    assert Path(once).exists()  # the batched model did fail
    run(cfg("local"), tmp_path / "local", factory=lambda s: Flaky(s, False), space=space)
    (evals, tests), decisions = records(tmp_path / "ray")
    (ref_evals, ref_tests), ref_decisions = records(tmp_path / "local")
    diff = [(a, b) for a, b in zip(ref_evals, evals, strict=True) if a != b]
    assert diff == [] and tests == ref_tests
    assert ref_decisions == [d for d in decisions if d.kind != "worker_failure"]
