"""FIRE PBT: Faster Improvement Rate PBT (paper section 3; settings of 4.1.1).

Workers ``0 .. n*size-1`` are population members, sub-population ``P_{i+1}`` holding workers
``i*size .. (i+1)*size-1`` (so P1 is ``0 .. size-1``); the remaining workers are evaluators.

Each round (one ready interval) :meth:`FirePBT.decide` does the four steps below, in this
order. The order is chosen so that nothing a round decides is undone by a later step of the
same round: weights an evaluator hands over are never overwritten by that round's exploits
(step 3 exempts their receiver), and the evaluators freed by steps 2 and 3 are reassigned in
step 4, after every copy of the round is known, so that they copy the weights the parents hold
once the round's copies are applied (the runner applies the decisions in the order returned).

1. **Record** the new evaluations: a member's curve runs from the step it last copied another
   member's weights through an exploit-and-explore step, or from the start (3.2: "The training
   curve of rho_child starts from when it last copied the weights of another member via an
   exploit-and-explore step"); an evaluator's curve starts at the step it copied its parent,
   with the parent's evaluation at that step as its first point (3.1.1, x_1).
2. **Evaluator criteria** (3.2), for every evaluator that trained this round, T steps since it
   was assigned, from the comparison of its curve with its target's
   (:func:`~firepbt.curves.compare`; the binomial test's trials are the overlapping sections'
   points *past* their start pair, 3.2: "y^eta_{r+1} > y^rho_{s+1}, ..., y^eta_{r+n} >
   y^rho_{s+n}"): success when ``best_score_diff(eta, target) > 0`` and ``binom_test(eta,
   target) < p_stat``; otherwise stop when there is no overlapping section and ``T >
   max_eval_steps``, or there is one and ``binom_test > p_stat + max(0, 1 - T /
   max_eval_steps)`` (:func:`judge`). **No trial, no success:** an evaluator whose curve has
   no overlapping section with its target's (or one holding only its start pair, so no point
   past it) has no binomial test: the paper defines the test over the overlap only ("we start
   by extracting overlapping regions ... We run a binomial test with k successes and n
   trials"), and for curves that do not overlap its only rule is "The evaluator's curve does
   not overlap with rho_child's curve and T is greater than max_eval_steps" (stop). So it is
   never crowned without a trial - an evaluator wholly above its target trains on until the
   curves overlap and the test decides, or until ``T > max_eval_steps`` (reason
   ``no_overlap``). *Open detail 1, several successes on one target in one round:* only the
   evaluator with the largest score difference hands its weights over (the target cannot hold
   two networks); the others stop with reason ``target_superseded``. *Open detail 2, the
   target's curve after it receives weights:* it continues (the 3.2 sentence quoted in step 1
   restarts a curve at an exploit-and-explore step only; measured against restarting it at the
   copy: ``benchmarks/fire_rules.py``), and the target's latest evaluation, P1's fitness, is
   the evaluator's last one (those are its weights now). *Open detail 3, an evaluator that
   overlaps and is significant (p <= p_stat) but not better at its best (best_score_diff <=
   0):* the paper's rules neither stop nor crown it; it keeps its slot until ``T >
   max_eval_steps`` (the budget a non-overlapping evaluator gets) and then stops with reason
   ``not_better``, so no evaluator holds a slot forever. *Open detail 4, a member that
   receives weights through an evaluator success:* it has no fitness this round in its
   sub-population (P1 included), so it is neither a loser nor a source in this round's
   truncation (the weights it received train before anything is decided about them; as members
   without an evaluator, 3.1.2, it is exempt from this evolution); in P1 it is still ranked, by
   its latest objective - the evaluator's last evaluation -, when a new evaluator takes "the
   highest fitness member['s]" hyperparameters (step 2 makes no exception;
   ``FireRules.receivers_as_targets``); if it is a
   parent too (in P_i, i >= 2, a target can also be a parent), its own evaluator stops (reason
   ``member_received_weights``: it measures weights the member no longer holds), and its time
   since last evaluated restarts.
3. **Fitness and PBT within each sub-population** (3.1.2): P1 uses the latest objective; a
   parent sub-population ``P_i`` uses, for each member in Φ (those whose evaluator trained this
   round), the sum of ``best_score_diff`` of its evaluator's curve against the curves of the
   other members of Φ; members outside Φ have no fitness and are exempt from evolution.
   Truncation selection (:func:`~firepbt.selection.truncation`) and explore as in PBT. A
   member that loses an evolution event frees its evaluator (``member_lost_evolution``) and
   the evaluators targeting it (``target_lost_evolution``). *Open detail 5, an exact tie in a
   small group:* where the paper's ``floor(quantile * n)`` selects nobody and firepbt's "at
   least one" does (a parent sub-population ranking two or three members, as at 8 = 3 + 3 + 2),
   a loser whose fitness equals its source's exactly does not exploit (two curves without
   evidence against each other both score 0: a coin would decide; ``FireRules.ties``).
4. **Assign free evaluators** at once (section 3, steps 1-2): "Find the population member
   rho_parent in the union of P_j, j >= 2, and its sub-population P_i which has least recently
   been evaluated" - over all parent sub-populations together -, i.e. (3.2) "the one which has
   been training for the longest since either it was evaluated or lost an evolution event":
   among the members without an evaluator, past their sub-population's
   ``min_steps_before_eval``, the one whose last event is oldest (ties at random), the events
   being the start of its last evaluation (the step its evaluator copied its weights: the
   weights it holds now have trained since then without being evaluated; the text does not
   say whether "since it was evaluated" counts from an evaluation's start or its end, and
   the start measured better, ``benchmarks/fire_rules.py``), an evolution event lost, and
   weights received. The evaluator
   copies its weights and the hyperparameters of the highest-fitness member of ``P_{i-1}``
   (its target), ranked by this round's fitness as it was *before* the round's exploits.
   No evaluator is assigned before the first round: the paper's runs decide at evolution
   steps only ("a synchronous implementation which will wait for all workers to have reached
   the next evolution step before making any decision", 4.1.1), and an assignment is a
   decision (at step 0 it would measure the initial weights, which no hyperparameter has
   trained yet).

The readings where the text leaves a choice (when a member was last evaluated, the target's
curve after a success, curves apart without being strictly separated, the penalty range, a
receiver as a target, an exact tie in a small group) are :class:`FireRules`; the defaults are
firepbt's, chosen by ``benchmarks/fire_rules.py`` (where it measures no difference, the reading
the paper's text supports).

**Layouts that cannot evolve are refused** (:func:`check_evolvable`): truncation selects
:func:`~firepbt.selection.n_selected` of ``k`` ranked members - ``floor(quantile * k)``, at
least one from two on -, and a parent sub-population ranks only the members whose evaluator
trained, so every sub-population needs 2 members and the evaluators must be at least 2 per
parent sub-population: 6 = 2 + 2 + 2 workers at least with two sub-populations, 8 = 3 + 3 + 2
(the PBT-Zoo benchmark's layout), and the paper's 22, 36 and 50 as before.

The best-effort model at any time is the best member of P1 (4.1.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..curves import Comparison, Curve, compare_many, pairwise_best_score_diff
from ..errors import check
from ..records import (
    EVALUATOR,
    MEMBER,
    AssignEvaluator,
    CurveStarts,
    Decision,
    EvaluatorSuccess,
    Exploit,
    FitnessRecord,
    StopEvaluator,
    WorkerState,
)
from ..selection import members_needed, rank_key, truncation
from ..space import Space
from .base import Controller, Observations, load_rng_state, make_rng, rng_state
from .fire_layout import check_evolvable, fire_split

EVALUATED_SINCE = ("end", "start")
TARGET_CURVE = ("continues", "restarts")
TIES = ("exploit", "skip", "skip_in_small_groups")


@dataclass(frozen=True, slots=True)
class FireRules:
    """The readings of section 3 where the paper's text leaves a choice (module doc); the
    defaults are firepbt's, chosen by a measurement (``benchmarks/fire_rules.py``, docs/site/benchmarks.md).

    Args:
        evaluated_since: when a member "was evaluated" for the choice of the next parent
            (3.2, "training for the longest since either it was evaluated or lost an
            evolution event"): ``"end"``, the end of its last evaluation, or ``"start"``, the
            step its last evaluator copied its weights.
        target_curve: a member's curve after it receives an evaluator's weights:
            ``"continues"`` (3.2 restarts it at an exploit-and-explore step only) or
            ``"restarts"`` at the copy, with the evaluator's last evaluation as first point.
        separated_only: best_score_diff's penalty search (3.1.1) only for curves strictly
            separated, ``min(y_high) > max(y_low)`` (the paper's case), 0 for curves apart
            after smoothing but not so separated; ``False`` searches those too.
        widened_range: the penalty search's range, the paper's ``[min(y_high) - max(y_low),
            min(y_high) - min(y_low)]`` (``False``) or widened by the penalties that align
            the smoothed curves (:func:`~firepbt.curves.best_score_diff`).
        receivers_as_targets: whether a P1 member that received an evaluator's weights this
            round can be the target whose hyperparameters the round's new evaluators copy
            (section 3, step 2: "the highest fitness member ... in P_{i-1}"), ranked by its
            latest objective (the evaluator's last evaluation: the weights it holds now).
            It sits out the round's truncation either way (open detail 4); ``False`` leaves
            it out of the target choice too. In P2..Pn a receiver has no fitness (its own
            evaluation ended), so it is never a target there.
        ties: what truncation selection does when a loser's fitness equals its source's
            exactly (two curves without evidence against each other both score 0; two
            deterministic members can hold the same value): ``"exploit"`` as on any other
            pair (a coin decided which of the two lost); ``"skip"``, no exploit on an exact
            tie; ``"skip_in_small_groups"``, no exploit on an exact tie in a group where the
            paper's ``floor(quantile * n)`` selects nobody - where firepbt's "at least one"
            (:func:`~firepbt.selection.n_selected`) decides, as at 8 = 3 + 3 + 2, whose parent
            sub-populations rank two or three members.
    """

    evaluated_since: str = "start"
    target_curve: str = "continues"
    separated_only: bool = False
    widened_range: bool = True
    receivers_as_targets: bool = True
    ties: str = "skip_in_small_groups"

    def __post_init__(self) -> None:
        check(self.evaluated_since in EVALUATED_SINCE, "rules.evaluated_since",
              f"one of {list(EVALUATED_SINCE)}", self.evaluated_since)
        check(self.target_curve in TARGET_CURVE, "rules.target_curve",
              f"one of {list(TARGET_CURVE)}", self.target_curve)
        check(isinstance(self.separated_only, bool), "rules.separated_only", "a bool",
              self.separated_only)
        check(isinstance(self.widened_range, bool), "rules.widened_range", "a bool",
              self.widened_range)
        check(isinstance(self.receivers_as_targets, bool), "rules.receivers_as_targets",
              "a bool", self.receivers_as_targets)
        check(self.ties in TIES, "rules.ties", f"one of {list(TIES)}", self.ties)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FireRules:
        """The rules a state holds; a rule it does not name keeps its default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        check(not unknown, "rules", f"only the rules {sorted(known)}", unknown)
        return cls(**dict(d))

    def penalty(self) -> dict[str, bool]:
        """The keyword arguments of the curve comparisons (:mod:`firepbt.curves`)."""
        return {"separated_only": self.separated_only, "widened_range": self.widened_range}


class FirePBT(Controller):
    """The FIRE PBT controller.

    Args:
        space: hyperparameters, initial ranges, bounds and explore factors.
        ready_interval: steps per round; evaluators check their criteria every round.
        n_subpopulations: ``n >= 2`` (P1 greedy, P2..Pn parents).
        subpopulation_size: members per sub-population (>= ``1/quantile``).
        n_evaluators: default three quarters of the parents' total size (rounded down), at
            least 2 per parent sub-population (:func:`check_evolvable`).
        max_eval_steps: default 3 ready intervals.
        p_stat: significance level of the binomial test (paper: 0.01).
        min_steps_before_eval: per sub-population (one int for all, or a sequence of length n;
            the value for P1 is ignored); paper: 0.
        quantile: truncation fraction (25%).
        seed: seed or generator.
        workers: shortcut; when given, the split comes from :func:`fire_split`.
        rules: the readings where the paper leaves a choice (:class:`FireRules`).
    """

    method = "fire"

    def __init__(self, space: Space, *, ready_interval: int, n_subpopulations: int = 2,
                 subpopulation_size: int = 8, n_evaluators: int | None = None,
                 max_eval_steps: int | None = None, p_stat: float = 0.01,
                 min_steps_before_eval: int | Sequence[int] = 0, quantile: float = 0.25,
                 seed: int | np.random.Generator = 0, workers: int | None = None,
                 rules: FireRules | None = None) -> None:
        if workers is not None:
            n_subpopulations, subpopulation_size, n_evaluators = fire_split(
                workers, None, quantile)
        check(isinstance(ready_interval, int) and ready_interval > 0, "ready_interval",
              "an int > 0", ready_interval)
        check(isinstance(n_subpopulations, int) and n_subpopulations >= 2, "n_subpopulations",
              "an int >= 2", n_subpopulations)
        need = members_needed(quantile)
        if n_evaluators is None:
            n_evaluators = max((3 * (n_subpopulations - 1) * subpopulation_size) // 4,
                               need * (n_subpopulations - 1))
        check_evolvable(n_subpopulations, subpopulation_size, n_evaluators, quantile)
        if max_eval_steps is None:
            max_eval_steps = 3 * ready_interval
        check(isinstance(max_eval_steps, int) and max_eval_steps > 0, "max_eval_steps",
              "an int > 0", max_eval_steps)
        check(0 < p_stat < 1, "p_stat", "in (0, 1)", p_stat)
        rules = FireRules() if rules is None else rules
        check(isinstance(rules, FireRules), "rules", "a FireRules", rules)
        if isinstance(min_steps_before_eval, int):
            min_steps = [min_steps_before_eval] * n_subpopulations
        else:
            min_steps = [int(x) for x in min_steps_before_eval]
        check(len(min_steps) == n_subpopulations and all(x >= 0 for x in min_steps),
              "min_steps_before_eval", f"an int >= 0 or {n_subpopulations} such ints",
              min_steps_before_eval)
        self.space = space
        self.ready_interval = ready_interval
        self.n_subpopulations = n_subpopulations
        self.size = subpopulation_size
        self.n_evaluators = n_evaluators
        self.max_eval_steps = max_eval_steps
        self.p_stat = p_stat
        self.min_steps = min_steps
        self.quantile = quantile
        self.rules = rules
        self.rng = make_rng(seed)
        self.members: dict[int, MemberState] = {}
        self.evaluators: dict[int, EvaluatorState] = {}

    # -- layout ---------------------------------------------------------------------------

    @property
    def n_members(self) -> int:
        return self.n_subpopulations * self.size

    @property
    def n_workers(self) -> int:
        return self.n_members + self.n_evaluators

    def subpopulation(self, i: int) -> list[int]:
        """Workers of sub-population ``P_{i+1}`` (i = 0 is P1)."""
        return list(range(i * self.size, (i + 1) * self.size))

    def best_candidates(self) -> list[int]:
        return self.subpopulation(0)

    # -- ask/tell -------------------------------------------------------------------------

    def start(self) -> list[WorkerState]:
        specs = []
        for w in range(self.n_members):
            hp = self.space.sample(self.rng)
            self.members[w] = MemberState(w // self.size, dict(hp))
            specs.append(WorkerState(w, MEMBER, w // self.size, dict(hp)))
        for e in range(self.n_members, self.n_workers):
            self.evaluators[e] = IDLE
            specs.append(WorkerState(e, EVALUATOR, None, None))
        return specs

    def decide(self, step: int, observations: Observations) -> list[Decision]:
        """One round of section 3 (see the module doc): record, judge the evaluators, evolve
        each sub-population, assign the free evaluators."""
        # 1. record
        self.members, self.evaluators = record(self.members, self.evaluators, observations)
        trained = sorted(e for e, ev in self.evaluators.items() if ev.active and ev.start < step)
        curves = [self.evaluators[e].curve_() for e in trained]
        eval_curve_of = {self.evaluators[e].parent_id: c
                         for e, c in zip(trained, curves, strict=True)}
        # 2. evaluator criteria (3.2)
        decisions, received = self._judge(trained, curves, step)
        # 3. fitness and PBT within each sub-population (3.1.2, 2); the fitness is taken
        # before any exploit of the round, and the evaluators' targets are chosen by it; the
        # members that received weights in step 2 sit this evolution out (open detail 4)
        fitness_by_sub: dict[int, dict[int, float]] = {}
        losers: set[int] = set()
        exempt = set(received)
        for i in range(self.n_subpopulations):
            fitness = subpopulation_fitness(self.members, self.subpopulation(i), i == 0,
                                            eval_curve_of, exempt, **self.rules.penalty())
            fitness_by_sub[i] = fitness
            decisions.append(FitnessRecord(i, dict(fitness)))
            skip_ties = self.rules.ties == "skip" or (
                self.rules.ties == "skip_in_small_groups"
                and math.floor(self.quantile * len(fitness) + 1e-9) == 0)
            for loser, source in truncation(fitness, self.rng, self.quantile):
                if skip_ties and fitness[loser] == fitness[source]:
                    continue  # an exact tie: nothing tells the two apart
                decisions.extend(self._exploit(loser, source, i, fitness, step))
                losers.add(loser)
        if self.rules.receivers_as_targets:  # P1's receivers ranked for the target choice
            fitness_by_sub[0] = {**fitness_by_sub[0], **{
                m: float(x) for m in received
                if self.members[m].subpopulation == 0 and (x := self.members[m].latest) is not None}}
        # 4. assign free evaluators (3, steps 1-2)
        choose = None
        for e in sorted(self.evaluators):
            if self.evaluators[e].active:
                continue
            if choose is None:  # the candidates as they stand now, for every free evaluator
                choose = parent_chooser(self.members, self.subpopulation, self.n_subpopulations,
                                        self.min_steps, step, self.rng)
            assignment = self._assign(e, step, fitness_by_sub, losers, choose())
            if assignment is None:
                break
            decisions.append(assignment)
        return decisions

    # -- the steps ------------------------------------------------------------------------

    def _judge(self, trained: list[int], curves: list[Curve], step: int
               ) -> tuple[list[Decision], list[int]]:
        """Step 2: each trained evaluator's verdict (:func:`judge`), its curve (``curves``, in
        the order of ``trained``) compared with its target's, all at once; the best success per
        target hands its weights over (open detail 1), the targets' curves restart (open
        detail 2) and their own evaluators stop (open detail 4). Returns the decisions and the
        members that received weights."""
        decisions: list[Decision] = []
        successes: dict[int, list[tuple[float, int, Comparison]]] = {}
        targets = [self.evaluators[e].target_id for e in trained]
        target_curve = {t: Curve.of(self.members[t].curve) for t in set(targets)}
        comparisons = compare_many([(c, target_curve[t])
                                    for c, t in zip(curves, targets, strict=True)],
                                   **self.rules.penalty())
        starts: dict[int, CurveStarts | None] = {}  # where the compared curves began
        for e, c in zip(trained, comparisons, strict=True):
            ev = self.evaluators[e]
            tc = self.members[ev.target_id].curve
            starts[e] = (ev.curve[0], tc[0]) if ev.curve and tc else None
            verdict = judge(c, step - ev.start, self.p_stat, self.max_eval_steps)
            if verdict == "success":
                successes.setdefault(ev.target_id, []).append((c.diff, e, c))
            elif verdict != "continue":
                decisions.append(self._stop(e, verdict, step, c, starts[e]))
        received: list[int] = []
        for target in sorted(successes):
            ranked = sorted(successes[target], key=lambda x: (-x[0], x[1]))
            _diff, e, c = ranked[0]
            ev = self.evaluators[e]
            value = ev.curve[-1][1]
            decisions.append(EvaluatorSuccess(e, ev.parent_id, target, c.diff, c.p,
                                              step - ev.start, c, starts[e]))
            curve = (((step, value),) if self.rules.target_curve == "restarts"
                     else self.members[target].curve)
            self.members[target] = replace(self.members[target], curve=curve, latest=value,
                                           last_event=step)
            self._free(e, step)
            for _d2, e2, c2 in ranked[1:]:
                decisions.append(self._stop(e2, "target_superseded", step, c2, starts[e2]))
            received.append(target)
        # open detail 4: a member that received new weights (a target in P_i, i >= 2, may also
        # be a parent) is no longer the network its own evaluator measures: that evaluation
        # ends, as when a member loses an evolution event, and the member has no fitness
        for target in received:
            own = self.members[target].evaluator
            if own is not None:
                decisions.append(self._stop(own, "member_received_weights", step))
        return decisions, received

    def _stop(self, e: int, reason: str, step: int, comparison: Comparison | None = None,
              starts: CurveStarts | None = None) -> StopEvaluator:
        ev = self.evaluators[e]
        assert ev.parent is not None and ev.target is not None
        d = StopEvaluator(e, ev.parent, ev.target, reason,
                          None if comparison is None else comparison.p,
                          None if comparison is None else comparison.diff,
                          step - ev.start, comparison, starts)
        self._free(e, step)
        return d

    def _free(self, e: int, step: int) -> None:
        """The evaluation of ``e`` ends at ``step``: its parent has no evaluator any more and
        (``evaluated_since="end"``) was last evaluated now."""
        parent = self.evaluators[e].parent
        if parent is not None and self.members[parent].evaluator == e:
            pm = self.members[parent]
            last = step if self.rules.evaluated_since == "end" else pm.last_event
            self.members[parent] = replace(self.members[parent], evaluator=None,
                                           last_event=last)
        self.evaluators[e] = IDLE

    def _exploit(self, loser: int, source: int, sub: int, fitness: Mapping[int, float],
                 step: int) -> list[Decision]:
        lm, sm = self.members[loser], self.members[source]
        new = self.space.perturb(sm.hparams, self.rng)
        out: list[Decision] = [Exploit(loser, source, sub, dict(lm.hparams), dict(sm.hparams),
                                       new, fitness[loser], fitness[source])]
        value = sm.latest
        self.members[loser] = replace(lm, hparams=dict(new),
                                      curve=() if value is None else ((step, value),),
                                      latest=value, last_event=step)
        if lm.evaluator is not None:
            out.append(self._stop(lm.evaluator, "member_lost_evolution", step))
        for e in sorted(self.evaluators):
            ev = self.evaluators[e]
            if ev.active and ev.target == loser:
                out.append(self._stop(e, "target_lost_evolution", step))
        return out

    def _assign(self, e: int, step: int, fitness_by_sub: Mapping[int, Mapping[int, float]],
                losers: set[int], parent: int | None) -> AssignEvaluator | None:
        if parent is None:
            return None
        pm = self.members[parent]
        child_sub = pm.subpopulation - 1
        target = best_of(self.members, self.subpopulation(child_sub),
                         fitness_by_sub.get(child_sub, {}), losers)
        hp = dict(self.members[target].hparams)
        assert pm.latest is not None
        self.evaluators[e] = EvaluatorState(True, parent, target, hp, ((step, pm.latest),), step)
        self.members[parent] = replace(pm, evaluator=e, last_event=step)
        return AssignEvaluator(e, parent, target, pm.subpopulation, hp)

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The members and evaluators with each curve as its first point and its length: the
        rest of a curve is the worker's own observations after that point (see
        :func:`curve_entry`), which ``load_state_dict`` takes back from ``history``. (Whole
        curves in every round's state made a store grow with the square of its rounds.) The
        rules go with it: a resumed run goes on under the rules it began with, whatever this
        release's defaults."""
        return {"rng": rng_state(self.rng), "rules": self.rules.to_dict(),
                "members": {str(k): v.to_dict() for k, v in self.members.items()},
                "evaluators": {str(k): v.to_dict() for k, v in self.evaluators.items()}}

    def load_state_dict(self, state: Mapping[str, Any],
                        history: Observations | None = None) -> None:
        """Restore ``state``; ``history`` holds every observation given to ``decide`` up to
        the state's round. The state's rules replace the controller's (a state without
        them keeps the controller's)."""
        if "rules" in state:
            self.rules = FireRules.from_dict(state["rules"])
        load_rng_state(self.rng, state["rng"])
        hist = {} if history is None else history
        self.members = {int(k): MemberState.from_dict(v, hist.get(int(k), ()))
                        for k, v in state["members"].items()}
        self.evaluators = {int(k): EvaluatorState.from_dict(v, hist.get(int(k), ()))
                           for k, v in state["evaluators"].items()}


# -- state records ----------------------------------------------------------------------------

Points = tuple[tuple[int, float], ...]


def _points(raw: Sequence[Sequence[float]]) -> Points:
    return tuple((int(p[0]), float(p[1])) for p in raw)


def curve_entry(curve: Points) -> dict[str, Any]:
    """A curve as a state keeps it: its first point and its length. Every curve is a first
    point (the worker's first evaluation, or the evaluation it took over with copied weights)
    followed by the worker's own observations after it, in order, so the rest need not be
    stored again every round."""
    return {"head": [[s, v] for s, v in curve[:1]], "points": len(curve)}


def curve_from(d: Mapping[str, Any], observed: Sequence[Sequence[float]]) -> Points:
    """The curve of a state entry, ``head``/``points`` (:func:`curve_entry`), completed from
    ``observed``, the worker's observations in step order up to the state's round. Refused when
    they do not complete it exactly (they are not the ones the controller was given)."""
    head, n = _points(d["head"]), int(d["points"])
    if n == 0:
        return ()
    after = head[0][0]
    tail = tuple((int(s), float(v)) for s, v in observed if s > after)
    if len(tail) != n - 1:
        raise ValueError(f"a curve of {n} points from step {after} needs {n - 1} observations "
                         f"after it, {len(tail)} were given")
    return head + tail


@dataclass(frozen=True, slots=True)
class MemberState:
    """A population member as the controller sees it: its sub-population (0 = P1), its
    hyperparameters, its curve since its last exploit (or the start), its latest evaluation,
    the step of its last event (start, evolution lost, weights received, evaluator assigned;
    also the end of an evaluation under ``FireRules.evaluated_since="end"``) and its evaluator
    (None when it has none)."""

    subpopulation: int
    hparams: Mapping[str, Any]
    curve: Points = ()
    latest: float | None = None
    last_event: int = 0
    evaluator: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"subpopulation": self.subpopulation, "hparams": dict(self.hparams),
                **curve_entry(self.curve), "latest": self.latest,
                "last_event": self.last_event, "evaluator": self.evaluator}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], observed: Sequence[Sequence[float]] = ()
                  ) -> MemberState:
        return cls(int(d["subpopulation"]), dict(d["hparams"]), curve_from(d, observed), d["latest"],
                   int(d["last_event"]), d["evaluator"])


@dataclass(frozen=True, slots=True)
class EvaluatorState:
    """An evaluator: idle, or measuring ``parent``'s weights trained with ``target``'s
    hyperparameters since ``start``; its curve starts with the parent's evaluation at the copy
    (3.1.1, x_1)."""

    active: bool = False
    parent: int | None = None
    target: int | None = None
    hparams: Mapping[str, Any] | None = None
    curve: Points = ()
    start: int = 0

    def curve_(self) -> Curve:
        return Curve.of(self.curve)

    @property
    def parent_id(self) -> int:
        """The parent of an active evaluator (an idle one has none)."""
        if self.parent is None:
            raise ValueError("an idle evaluator has no parent")
        return self.parent

    @property
    def target_id(self) -> int:
        """The target of an active evaluator (an idle one has none)."""
        if self.target is None:
            raise ValueError("an idle evaluator has no target")
        return self.target

    def to_dict(self) -> dict[str, Any]:
        return {"active": self.active, "parent": self.parent, "target": self.target,
                "hparams": None if self.hparams is None else dict(self.hparams),
                **curve_entry(self.curve), "start": self.start}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], observed: Sequence[Sequence[float]] = ()
                  ) -> EvaluatorState:
        return cls(bool(d["active"]), d["parent"], d["target"],
                   None if d["hparams"] is None else dict(d["hparams"]),
                   curve_from(d, observed), int(d["start"]))


IDLE = EvaluatorState()


# -- the steps of section 3, as functions -------------------------------------------------------

def record(members: Mapping[int, MemberState], evaluators: Mapping[int, EvaluatorState],
           observations: Observations) -> tuple[dict[int, MemberState], dict[int, EvaluatorState]]:
    """Step 1: append the round's evaluations to the members' and active evaluators' curves."""
    ms, es = dict(members), dict(evaluators)
    for w, points in observations.items():
        pts = _points(points)
        if w in ms and pts:  # (the constructors: replace() is slow at 1,000 workers)
            m = ms[w]
            ms[w] = MemberState(m.subpopulation, m.hparams, m.curve + pts, pts[-1][1], m.last_event,
                                m.evaluator)
        elif w in es and es[w].active:
            e = es[w]
            es[w] = EvaluatorState(e.active, e.parent, e.target, e.hparams, e.curve + pts,
                                   e.start)
    return ms, es


def judge(c: Comparison, t_steps: int, p_stat: float, max_eval_steps: int) -> str:
    """Step 2 for one evaluator (3.2), from the comparison ``c`` of its curve against its
    target's (:func:`~firepbt.curves.compare`) after ``t_steps`` steps: ``"success"``,
    ``"continue"``, or the reason it stops (``no_overlap``, ``not_significant``,
    ``not_better``: open detail 3). An overlapping section counts when it holds a binomial
    trial (``c.n > 0``, a point past its start pair); without one there is no test, so no
    success, and the evaluator stops only once ``t_steps > max_eval_steps`` (module doc,
    step 2)."""
    if c.n > 0 and c.diff > 0 and c.p < p_stat:
        return "success"
    if c.n == 0:
        return "no_overlap" if t_steps > max_eval_steps else "continue"
    if c.p > p_stat + max(0.0, 1 - t_steps / max_eval_steps):
        return "not_significant"
    if t_steps > max_eval_steps:
        # open detail 3: significant (p <= p_stat) but not better at its best
        return "not_better"
    return "continue"


def subpopulation_fitness(members: Mapping[int, MemberState], ids: Sequence[int], greedy: bool,
                          eval_curve_of: Mapping[int, Curve], exempt: Collection[int] = (),
                          **penalty: bool) -> dict[int, float]:
    """Step 3's fitness (3.1.2): P1 (``greedy``) ranks every member by its latest evaluation; a
    parent sub-population ranks the members of Φ (those whose evaluator trained this round) by
    the sum of ``best_score_diff`` of their evaluator's curve against the others' in Φ. The
    ``exempt`` members (those that received weights this round) have no fitness."""
    if greedy:
        return {m: float(x) for m in ids
                if (x := members[m].latest) is not None and m not in exempt}
    phi = [m for m in ids if m in eval_curve_of and m not in exempt]
    # every pair at once, each compared once (best_score_diff is antisymmetric, exactly); the
    # sums add Python floats in the order of Φ
    diff = pairwise_best_score_diff([eval_curve_of[m] for m in phi], **penalty).tolist()
    return {m: float(sum(diff[i][j] for j in range(len(phi)) if j != i))
            for i, m in enumerate(phi)}


def choose_parent(members: Mapping[int, MemberState], subpopulation: Any, n_sub: int,
                  min_steps: Sequence[int], step: int, rng: np.random.Generator) -> int | None:
    """Step 4's parent (section 3, step 1; 3.2): among the members of P2..Pn together without
    an evaluator, past their sub-population's ``min_steps_before_eval`` and evaluated at least
    once, the one whose last event (:attr:`MemberState.last_event`) is oldest, ties at random
    (one permutation of the candidates drawn per choice); None when there is none."""
    return parent_chooser(members, subpopulation, n_sub, min_steps, step, rng)()


def parent_chooser(members: Mapping[int, MemberState], subpopulation: Any, n_sub: int,
                   min_steps: Sequence[int], step: int, rng: np.random.Generator
                   ) -> Callable[[], int | None]:
    """:func:`choose_parent` for a round's free evaluators one after another: the candidates
    are taken once; each choice then takes its parent out of them (all that assigning it
    changes), so the choices and random draws are those of calling :func:`choose_parent`
    after each assignment (tested)."""
    candidates = [m for i in range(1, n_sub) for m in subpopulation(i)
                  if members[m].evaluator is None and step >= min_steps[i]
                  and members[m].latest is not None]
    ids = np.array(candidates, dtype=np.int64)
    last = np.array([members[c].last_event for c in candidates], dtype=np.int64)

    def choose() -> int | None:
        nonlocal ids, last
        if ids.size == 0:
            return None
        tiebreak = rng.permutation(ids.size)
        # the smallest (last event, tiebreak), in that order
        at = np.flatnonzero(last == last.min())
        i = int(at[np.argmin(tiebreak[at])])
        parent = int(ids[i])
        ids, last = np.delete(ids, i), np.delete(last, i)
        return parent

    return choose


def best_of(members: Mapping[int, MemberState], sub_ids: Sequence[int],
            fitness: Mapping[int, float], losers: set[int]) -> int:
    """Step 4's target: the highest-fitness member of a sub-population by this round's
    fitness, taken before the round's exploits, never one of this round's ``losers`` (a loser
    that just copied the best member ties with it on its latest evaluation, and losers can tie
    with the best before exploits too, but they hold untested, perturbed hyperparameters). A
    sub-population without a fitness this round (no ranked member) falls back on the latest
    evaluations, which no exploit changed. Non-finite values rank lowest; ties go to the lower
    id."""
    ids = [m for m in sub_ids if m not in losers] or list(sub_ids)
    scores = {m: float(fitness[m]) for m in ids if m in fitness}
    if not scores:
        scores = {m: math.nan if (x := members[m].latest) is None else float(x) for m in ids}
    return max(sorted(scores), key=lambda m: (rank_key(scores[m]), -m))
