"""Lineage on stores with known copy chains, and schedule replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firepbt.api import run
from firepbt.config import ExperimentConfig
from firepbt.curves import Comparison
from firepbt.lineage import chain, schedule
from firepbt.records import AssignEvaluator, EvaluatorSuccess, Exploit, RunFacts, WorkerState
from firepbt.replay import train_schedule
from firepbt.schedule import Schedule, Segment, hand_tuned
from firepbt.store import RoundRow, Store
from firepbt.tasks.mnist1d import SPACE as MNIST1D_SPACE
from firepbt.tasks.nqm import NQMTrainable


def scripted_store(tmp_path):
    """Workers 0, 1 (P1), 2 (P2), 3 (evaluator); ready interval 10; three rounds.

    Round 1 (step 10): 1 exploits 0 (lr 0.1 -> 0.05); evaluator 3 copies parent 2 with 1's
    target lr 0.05. Round 2 (step 20): evaluator 3 succeeds, target 0 gets its weights.
    Round 3 (step 30): 1 exploits 0 again (lr -> 0.025).
    """
    cfg = ExperimentConfig(task="nqm", method="fire", workers=12, steps=40, ready_interval=10,
                           eval_interval=10)
    st = Store.create(tmp_path / "s", cfg.to_dict())

    def workers(hp):
        return {w: WorkerState(w, "member", 0, {"lr": lr}) for w, lr in hp.items()}

    st.start_run(RunFacts("max", "local", (0, 1), 2, "lr"),
                 workers({0: 0.1, 1: 0.2, 2: 0.4, 3: 0.0}))
    rounds = [
        (1, [Exploit(1, 0, 0, {"lr": 0.2}, {"lr": 0.1}, {"lr": 0.05}, 0.1, 0.9),
             AssignEvaluator(3, 2, 0, 1, {"lr": 0.1})], {0: 0.1, 1: 0.05, 2: 0.4, 3: 0.1}),
        (2, [EvaluatorSuccess(3, 2, 0, 0.3, 0.001, 10, Comparison(True, 9, 9, 0.001, 0.3))],
         {0: 0.1, 1: 0.05, 2: 0.4, 3: 0.1}),
        (3, [Exploit(1, 0, 0, {"lr": 0.05}, {"lr": 0.1}, {"lr": 0.025}, 0.1, 0.9)],
         {0: 0.1, 1: 0.025, 2: 0.4, 3: 0.1}),
    ]
    for r, decisions, hp in rounds:
        st.commit_round(RoundRow(r, 10 * r, 0.0, 0.0, 0.0, 0.0, {}, workers(hp), 0.0, None),
                        [], [], decisions)
    return st


def test_chain_follows_exploits_and_evaluator_successes(tmp_path):
    st = scripted_store(tmp_path)
    links = chain(st, 1, 40)
    assert [(link.worker, link.start, link.stop, link.received_from, link.via)
            for link in links] == [
        (2, 0, 10, None, None),  # P2 parent's initial network
        (3, 10, 20, 2, "assign_evaluator"),  # evaluator trained it with the target's lr
        (0, 20, 30, 3, "evaluator_success"),  # target received it
        (1, 30, 40, 0, "exploit"),  # worker 1 copied worker 0 at step 30
    ]
    sched = schedule(st, 1, 40)
    assert sched.segments == (Segment({"lr": 0.4}, 10), Segment({"lr": 0.1}, 20),
                              Segment({"lr": 0.025}, 10))
    assert schedule(st, 1, 20).segments == (Segment({"lr": 0.1}, 10), Segment({"lr": 0.05}, 10))
    st.close()


def test_a_copy_at_the_evaluated_step_is_not_part_of_that_network(tmp_path):
    """A round evaluates before it copies: the network a worker was evaluated with at step t
    does not include the copies made at t."""
    st = scripted_store(tmp_path)
    # worker 0 was evaluated at step 20 with its own initial network; the evaluator's weights
    # arrived after that evaluation
    assert [(link.worker, link.start, link.stop, link.via) for link in chain(st, 0, 20)] == [
        (0, 0, 20, None)]
    assert schedule(st, 0, 20).segments == (Segment({"lr": 0.1}, 20),)
    # worker 1 at step 30: the copy of step 10, not the one of step 30
    assert [(link.worker, link.start, link.stop) for link in chain(st, 1, 30)] == [
        (0, 0, 10), (1, 10, 30)]
    assert [link.worker for link in chain(st, 1, 10)] == [1]
    st.close()


def test_replay_retraces_the_top_point_not_a_copy_made_at_it(tmp_path):
    from firepbt.replay import top_schedule

    st = scripted_store(tmp_path)
    # worker 0's top validation point is step 20, the step its evaluator success arrived at
    st.commit_round(RoundRow(4, 40, 0.0, 0.0, 0.0, 0.0, {}, st.worker_states(0), 0.0, None),
                    [(0, 20, 0.95), (1, 20, 0.5), (0, 30, 0.6)], [], [])
    sched, worker, step = top_schedule(st)
    assert (worker, step) == (0, 20)
    assert sched.segments == (Segment({"lr": 0.1}, 20),)
    st.close()


def test_replay_seed_is_no_workers_seed():
    from firepbt.build import worker_seeds
    from firepbt.replay import replay_seed

    for seed in range(20):
        assert replay_seed(seed) not in set(worker_seeds(seed, 50).values())
    # deterministic: a fixed value for a seed (a replay can be repeated exactly)
    assert replay_seed(0) == int(np.random.SeedSequence([0, 3]).generate_state(1)[0])


def test_schedule_of_a_real_run_covers_every_step(tmp_path):
    cfg = ExperimentConfig(task="nqm", method="pbt", workers=8, steps=300, ready_interval=50,
                           eval_interval=10, task_options={"dims": 200})
    summary = run(cfg, tmp_path / "s")
    st = Store.open(tmp_path / "s")
    for w in range(8):
        assert schedule(st, w).total_steps == 300
    sched = schedule(st, summary.best_worker)
    # replaying the lineage schedule on the deterministic NQM reproduces the member exactly
    value, _ = train_schedule(lambda seed: NQMTrainable(seed, dims=200), sched, 0)
    assert value == pytest.approx(summary.best_value, rel=1e-12)
    st.close()


def test_replay_equals_a_plain_run_with_the_same_schedule_and_seed(tmp_path):
    from firepbt.tasks.mnist1d import MNIST1DTrainable

    sched = hand_tuned({"lambda": 0.1}, "lambda", 90)

    def factory(seed):
        return MNIST1DTrainable(seed, hidden=32)

    value, test = train_schedule(factory, sched, 5)
    plain = MNIST1DTrainable(5, hidden=32)
    for hp, n in sched.pieces(0, 90):
        plain.train(hp, n)
    assert value == plain.evaluate() and test == plain.test()
    # ... and the random-search controller following the same (exported) schedule
    cfg = ExperimentConfig(task="mnist1d", method="random", workers=1, steps=90,
                           ready_interval=90, eval_interval=90, seed=0,
                           schedule=json.loads(Schedule.from_json(sched.to_json()).to_json()))
    from firepbt.build import worker_seeds

    s = run(cfg, tmp_path / "rs", factory=lambda seed: MNIST1DTrainable(seed, hidden=32),
            space=MNIST1D_SPACE)
    direct, _ = train_schedule(factory, sched, worker_seeds(0, 1)[0])
    assert s.best_value == direct


def test_schedule_json_round_trip_and_pieces():
    sched = Schedule((Segment({"lr": 0.1}, 30), Segment({"lr": 0.01}, 20)))
    assert Schedule.from_json(sched.to_json()) == sched
    assert list(sched.pieces(20, 40)) == [({"lr": 0.1}, 10), ({"lr": 0.01}, 10)]
    assert list(sched.pieces(50, 60)) == [({"lr": 0.01}, 10)]  # the last segment extends
