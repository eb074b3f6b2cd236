"""FirePBT decisions on scripted curves (no training): paper sections 3, 3.1.2 and 3.2."""

from __future__ import annotations

import numpy as np
import pytest

from firepbt.controllers import FirePBT, fire_split
from firepbt.errors import ConfigError
from firepbt.records import (
    AssignEvaluator,
    EvaluatorSuccess,
    Exploit,
    FitnessRecord,
    StopEvaluator,
)
from firepbt.space import LogUniform, Space

SPACE = Space({"lr": LogUniform(1e-2, 1.0, bounds=(1e-4, 2.0))})
READY, EVAL = 100, 20
P1, P2 = [0, 1, 2, 3], [4, 5, 6, 7]


def make(n_evaluators=4, **kw):
    fire = FirePBT(SPACE, ready_interval=READY, n_subpopulations=2, subpopulation_size=4,
                   n_evaluators=n_evaluators, seed=0, **kw)
    fire.start()
    return fire


def round_obs(step, fn, workers):
    """Evaluations every EVAL steps in the round ending at ``step`` (and step 0 in round 1)."""
    first = 0 if step == READY else step - READY + EVAL
    return {w: [(s, float(fn(w, s))) for s in range(first, step + 1, EVAL)] for w in workers}


def kinds(decisions, cls):
    return [d for d in decisions if isinstance(d, cls)]


def first_round(fire, p1_levels=(0.8, 0.7, 0.6, 0.5)):
    """Round 1: P1 at fixed levels (worker 0 best), P2 at 0.6; evaluators get assigned."""
    fn = lambda w, s: p1_levels[w] if w in P1 else 0.6  # noqa: E731
    return fire.decide(READY, round_obs(READY, fn, P1 + P2))


def test_split_follows_the_paper():
    assert fire_split(22) == (2, 8, 6)
    assert fire_split(36) == (3, 8, 12)
    assert fire_split(50) == (4, 8, 18)
    with pytest.raises(ConfigError, match="workers must be an int >= 11"):
        fire_split(10)
    fire = FirePBT(SPACE, ready_interval=READY, workers=22)
    assert (fire.n_sub, fire.size, fire.n_evaluators, fire.n_workers) == (2, 8, 6, 22)
    assert FirePBT(SPACE, ready_interval=READY).max_eval_steps == 3 * READY


def test_free_evaluators_are_assigned_to_parents_with_the_best_child_as_target():
    fire = make()
    decisions = first_round(fire)
    assigns = kinds(decisions, AssignEvaluator)
    assert len(assigns) == 4
    assert sorted(a.parent for a in assigns) == P2  # each parent gets at most one evaluator
    for a in assigns:
        assert a.target == 0  # highest objective in P1
        assert a.parent_subpopulation == 1
        assert dict(a.hparams) == fire.members[0]["hparams"]
        assert fire.evaluators[a.evaluator]["curve"] == [[READY, 0.6]]  # x_1 = copy step


def test_faster_improving_evaluator_succeeds_and_target_receives_its_weights():
    fire = make(n_evaluators=1)
    first_round(fire)
    (e,) = [e for e, ev in fire.evaluators.items() if ev["active"]]
    target = fire.evaluators[e]["target"]
    assert target == 0

    def fn(w, s):
        if w == e:  # from 0.6 up fast: crosses the target's 0.8 and keeps rising
            return 0.6 + 0.4 * (1 - np.exp(-(s - READY) / 60))
        return (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6

    success = None
    for r in range(2, 6):
        step = r * READY
        decisions = fire.decide(step, round_obs(step, fn, P1 + P2 + [e]))
        assert not kinds(decisions, StopEvaluator)
        found = kinds(decisions, EvaluatorSuccess)
        if found:
            success = found[0]
            break
    assert success is not None, "a clearly faster evaluator must succeed"
    assert success.evaluator == e and success.target == 0
    assert success.score_diff > 0 and success.p_value < 0.01
    # the target's curve restarts at the copy step with the evaluator's last evaluation
    assert fire.members[0]["curve"] == [[step, fn(e, step)]]
    # the evaluator was freed and, as the order of decisions shows, reassigned at once
    order = [type(d).__name__ for d in decisions]
    assert order.index("EvaluatorSuccess") < order.index("AssignEvaluator")


def test_flat_evaluator_below_its_target_is_stopped_after_max_eval_steps():
    fire = make(n_evaluators=1)
    first_round(fire)
    (e,) = [e for e, ev in fire.evaluators.items() if ev["active"]]

    def fn(w, s):
        if w == e:
            return 0.6  # flat, never reaching the target's level
        return (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6

    stops = []
    for r in range(2, 7):
        decisions = fire.decide(r * READY, round_obs(r * READY, fn, P1 + P2 + [e]))
        stops += [d for d in kinds(decisions, StopEvaluator) if d.evaluator == e]
        if stops:
            break
    assert stops and stops[0].reason == "no_overlap"
    # no overlap: it may only stop once it has trained more than max_eval_steps (300)
    assert stops[0].trained_steps > fire.max_eval_steps
    assert r == 5


def test_overlapping_evaluator_that_is_not_better_stops_as_not_significant():
    fire = make(n_evaluators=1)

    def fn(w, s):
        if w == 0:  # the target keeps improving steadily
            return 0.5 + 0.001 * s
        if w in fire.evaluators:  # the evaluator copies a parent at 0.6 and stays flat
            return 0.6
        return (None, 0.55, 0.5, 0.45)[w] if w in P1 else 0.6

    fire.decide(READY, round_obs(READY, fn, P1 + P2))
    (e,) = [e for e, ev in fire.evaluators.items() if ev["active"]]
    assert fire.evaluators[e]["target"] == 0
    decisions = fire.decide(2 * READY, round_obs(2 * READY, fn, P1 + P2 + [e]))
    (stop,) = [d for d in kinds(decisions, StopEvaluator) if d.evaluator == e]
    # overlapping (the target reaches the evaluator's start) and never above it: p = 1, which
    # exceeds p_stat + max(0, 1 - 100/300) = 0.677 after one round
    assert stop.reason == "not_significant"
    assert stop.p_value == pytest.approx(1.0)
    assert stop.trained_steps == READY


def _losing_setup(target_collapses):
    fire = make(n_evaluators=4)
    first_round(fire)
    parent_of = {e: ev["parent"] for e, ev in fire.evaluators.items() if ev["active"]}
    rates = {4: 0.30, 5: 0.20, 6: 0.10, 7: 0.01}  # parent 7's evaluator improves slowest

    def fn(w, s):
        if w in parent_of:  # evaluator: level start, rising at its parent's rate
            return 0.6 + rates[parent_of[w]] * (1 - np.exp(-(s - READY) / 300))
        if w == 0 and target_collapses:  # the target falls to the bottom of P1
            return 0.1
        return (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6

    decisions = fire.decide(2 * READY, round_obs(2 * READY, fn, P1 + P2 + list(parent_of)))
    return fire, decisions


def test_member_losing_evolution_frees_its_evaluator():
    fire, decisions = _losing_setup(target_collapses=False)
    exploits = {d.worker: d for d in kinds(decisions, Exploit)}
    assert 7 in exploits and exploits[7].subpopulation == 1
    assert exploits[7].source == 4  # the fastest evaluator's parent is the top of P2
    stops = kinds(decisions, StopEvaluator)
    assert [(d.reason, d.parent) for d in stops] == [("member_lost_evolution", 7)]
    assert fire.members[7]["evaluator"] is None or fire.members[7]["last_event"] == 2 * READY


def test_target_losing_evolution_frees_the_evaluators_targeting_it():
    fire, decisions = _losing_setup(target_collapses=True)
    exploits = {d.worker: d for d in kinds(decisions, Exploit)}
    assert 0 in exploits and exploits[0].subpopulation == 0
    stops = kinds(decisions, StopEvaluator)
    # P1 is decided first: all four evaluators targeted worker 0
    assert len(stops) == 4
    assert {d.reason for d in stops} == {"target_lost_evolution"}
    assert {d.target for d in stops} == {0}
    # the freed evaluators are reassigned at once, with P1's new best as target
    # (worker 0 now holds worker 1's weights and score; ties go to the lower id)
    assigns = kinds(decisions, AssignEvaluator)
    assert len(assigns) == 4
    assert all(fire.members[a.target]["latest"] == 0.7 for a in assigns)


def test_parent_fitness_follows_evaluator_improvement_rates():
    fire = make(n_evaluators=4)
    first_round(fire)
    parent_of = {e: ev["parent"] for e, ev in fire.evaluators.items() if ev["active"]}
    rates = {4: 0.05, 5: 0.20, 6: 0.10, 7: 0.30}

    def fn(w, s):
        if w in parent_of:
            return 0.6 + rates[parent_of[w]] * (1 - np.exp(-(s - READY) / 300))
        return (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6

    decisions = fire.decide(2 * READY, round_obs(2 * READY, fn, P1 + P2 + list(parent_of)))
    (fit,) = [d for d in kinds(decisions, FitnessRecord) if d.subpopulation == 1]
    order = sorted(fit.fitness, key=fit.fitness.get)
    assert order == [4, 6, 5, 7]
    assert sum(fit.fitness.values()) == pytest.approx(0.0, abs=1e-12)  # antisymmetry
    p1 = [d for d in kinds(decisions, FitnessRecord) if d.subpopulation == 0][0]
    assert p1.fitness == {0: 0.8, 1: 0.7, 2: 0.6, 3: 0.5}


def test_members_without_evaluator_are_exempt_and_min_steps_before_eval_delays_assignment():
    fire = make(n_evaluators=1, min_steps_before_eval=[0, 200])
    decisions = first_round(fire)
    assert not kinds(decisions, AssignEvaluator)  # step 100 < 200
    fit = [d for d in kinds(decisions, FitnessRecord) if d.subpopulation == 1][0]
    assert fit.fitness == {}
    assert not [d for d in kinds(decisions, Exploit) if d.subpopulation == 1]
    fn = lambda w, s: (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6  # noqa: E731
    decisions = fire.decide(200, round_obs(200, fn, P1 + P2))
    assert len(kinds(decisions, AssignEvaluator)) == 1


def test_two_successes_on_one_target_only_the_larger_hands_over():
    fire = make(n_evaluators=2)
    first_round(fire)
    evs = sorted(e for e, ev in fire.evaluators.items() if ev["active"])
    gains = {evs[0]: 0.3, evs[1]: 0.4}

    def fn(w, s):
        if w in gains:
            return 0.6 + gains[w] * (1 - np.exp(-(s - READY) / 60))
        return (0.8, 0.7, 0.6, 0.5)[w] if w in P1 else 0.6

    for r in range(2, 6):
        decisions = fire.decide(r * READY, round_obs(r * READY, fn, P1 + P2 + evs))
        if kinds(decisions, EvaluatorSuccess):
            break
    (success,) = kinds(decisions, EvaluatorSuccess)
    assert success.evaluator == evs[1]
    superseded = [d for d in kinds(decisions, StopEvaluator) if d.reason == "target_superseded"]
    assert [d.evaluator for d in superseded] == [evs[0]]


def test_state_round_trip_gives_identical_decisions():
    a = make()
    first_round(a)
    b = make()
    b.load_state_dict(a.state_dict())
    fn = lambda w, s: 0.5 + 0.001 * s * (w % 3)  # noqa: E731
    workers = P1 + P2 + [e for e, ev in a.evaluators.items() if ev["active"]]
    assert a.decide(200, round_obs(200, fn, workers)) == b.decide(200, round_obs(200, fn, workers))
    import json

    json.dumps(a.state_dict())  # JSON-serialisable
