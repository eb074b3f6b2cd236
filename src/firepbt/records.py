"""Frozen records that cross layers: what a worker is doing, what a run established, and the
controllers' decisions.

Controllers return decisions; only the runner applies them (copy weights, set
hyperparameters) and the store records them. Each decision carries its evidence so reports and
lineage never recompute it. ``kind`` names the decision in the store.

A worker's state is one record, :class:`WorkerState`, from the controller's ``start()``
through the runner (which replaces it as decisions apply), the store (its JSON form, per
round) and the trackers, to lineage and replay.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

from .curves import Comparison
from .errors import check
from .schedule import Schedule, Segment

Role = Literal["member", "evaluator"]
# where an evaluator's curve and its target's began, each (step, score): see EvaluatorSuccess
CurveStarts = tuple[tuple[int, float], tuple[int, float]]
MEMBER: Role = "member"
EVALUATOR: Role = "evaluator"


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What a worker is now: a ``member`` of a sub-population or an ``evaluator``, the
    hyperparameters it trains with (or the ``schedule`` it follows: random search), and
    whether it trains next round (an idle evaluator does not).

    ``subpopulation`` is 0 for P1 (the greedy one), 1 for P2, ...; None for an idle
    evaluator. ``hparams`` is None for an idle evaluator; for a member on a ``schedule`` it is
    the schedule's value at the step the runner last looked (what it trains with now).
    A controller's ``start()`` returns one per worker; the runner replaces them
    (``dataclasses.replace``) as decisions apply.
    """

    worker: int
    role: Role
    subpopulation: int | None
    hparams: Mapping[str, Any] | None
    schedule: Schedule | None = None
    active: bool | None = None  # None: a member trains, an evaluator waits (the start)

    def __post_init__(self) -> None:
        check(self.role in (MEMBER, EVALUATOR), "WorkerState.role",
              f"one of {[MEMBER, EVALUATOR]}", self.role)
        if self.hparams is not None:
            object.__setattr__(self, "hparams", dict(self.hparams))
        if self.active is None:
            object.__setattr__(self, "active", self.role == MEMBER)

    def hparams_at(self, step: int) -> dict[str, Any]:
        """The hyperparameters it trains with at ``step``."""
        if self.schedule is not None:
            return self.schedule.hparams_at(step)
        return dict(self.hparams or {})

    def pieces(self, start: int, stop: int) -> Iterator[tuple[dict[str, Any], int]]:
        """``(hparams, steps)`` covering ``[start, stop)``: its schedule's pieces, or its
        hyperparameters throughout."""
        if self.schedule is not None:
            yield from self.schedule.pieces(start, stop)
        else:
            yield dict(self.hparams or {}), stop - start

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the store keeps (the worker is the key it is stored under)."""
        return {"role": self.role, "subpopulation": self.subpopulation,
                "hparams": None if self.hparams is None else dict(self.hparams),
                "schedule": None if self.schedule is None else
                [[dict(s.hparams), s.steps] for s in self.schedule.segments],
                "active": self.active}

    @classmethod
    def from_dict(cls, worker: int, d: Mapping[str, Any]) -> WorkerState:
        sched = d.get("schedule")
        return cls(int(worker), d["role"], d["subpopulation"], d["hparams"],
                   None if sched is None else Schedule(tuple(Segment(h, int(n))
                                                             for h, n in sched)),
                   bool(d["active"]))


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a run established when it started, written once with its first state (the read
    side takes them from here, never from the task registry or a controller):

    ``mode``: ``"max"`` or ``"min"``, the objective's direction; ``executor``: the executor
    used (what ``"auto"`` chose); ``best_candidates``: the workers whose networks count as the
    run's result (FIRE PBT: P1; the controller's ``best_candidates()``); ``subpopulations``:
    how many (1 for PBT and random search); ``main_param``: the hyperparameter the run is
    summed up by (the report's main figure); ``schedule_param``: the one random search's
    hand-tuned schedule applies to (None: none); ``space``: the search space as the run used
    it (``Space.describe()``); ``reinforcement``: an RL task (its objective is an average
    episode return; comparisons draw the paper's Figure 5).
    """

    mode: str
    executor: str
    best_candidates: tuple[int, ...]
    subpopulations: int
    main_param: str
    schedule_param: str | None = None
    space: tuple[Mapping[str, Any], ...] = ()
    reinforcement: bool = False

    def __post_init__(self) -> None:
        check(self.mode in ("max", "min"), "RunFacts.mode", "'max' or 'min'", self.mode)
        object.__setattr__(self, "best_candidates", tuple(int(w) for w in self.best_candidates))
        object.__setattr__(self, "space", tuple(dict(x) for x in self.space))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "executor": self.executor,
                "best_candidates": list(self.best_candidates),
                "subpopulations": self.subpopulations, "main_param": self.main_param,
                "schedule_param": self.schedule_param, "space": [dict(x) for x in self.space],
                "reinforcement": self.reinforcement}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunFacts:
        return cls(d["mode"], d["executor"], tuple(d["best_candidates"]),
                   int(d["subpopulations"]), d["main_param"], d.get("schedule_param"),
                   tuple(d.get("space") or ()), bool(d.get("reinforcement", False)))


@dataclass(frozen=True, slots=True)
class FinalMember:
    """The best-effort member after the last step: the best candidate by its evaluation there
    (``value``, as ``evaluate()`` returned it), tested on that network (``test``, None without a
    test set), with the hyperparameters it trained with last."""

    worker: int
    step: int
    value: float
    test: float | None
    hparams: Mapping[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "step": self.step, "value": self.value,
                "test": self.test, "hparams": None if self.hparams is None else
                dict(self.hparams)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FinalMember:
        return cls(int(d["worker"]), int(d["step"]), float(d["value"]),
                   None if d["test"] is None else float(d["test"]), d["hparams"])


@dataclass(frozen=True, slots=True)
class Exploit:
    """``worker`` copies the weights of ``source`` and takes ``new_hparams`` (explored from the
    source's ``source_hparams``) - truncation selection within ``subpopulation`` (paper 2)."""

    worker: int
    source: int
    subpopulation: int
    old_hparams: Mapping[str, Any]
    source_hparams: Mapping[str, Any]
    new_hparams: Mapping[str, Any]
    fitness: float
    source_fitness: float
    kind: str = field(default="exploit", init=False)


@dataclass(frozen=True, slots=True)
class AssignEvaluator:
    """``evaluator`` copies the weights of ``parent`` and the hyperparameters of ``target``
    (the best member of the child sub-population) - paper 3, steps 1-2."""

    evaluator: int
    parent: int
    target: int
    parent_subpopulation: int
    hparams: Mapping[str, Any]
    kind: str = field(default="assign_evaluator", init=False)


@dataclass(frozen=True, slots=True)
class EvaluatorSuccess:
    """``target`` copies the weights of ``evaluator`` and keeps its own hyperparameters (3.2).
    ``comparison``: the evaluator's curve against the target's that decided it;
    ``curve_starts``: where the two compared curves began, the evaluator's then the target's,
    each ``(step, score)`` - a curve is that point followed by its worker's own evaluations
    after it, up to the decision's step, so a report redraws both from the store."""

    evaluator: int
    parent: int
    target: int
    score_diff: float
    p_value: float
    trained_steps: int
    comparison: Comparison
    curve_starts: CurveStarts | None = None
    kind: str = field(default="evaluator_success", init=False)


@dataclass(frozen=True, slots=True)
class StopEvaluator:
    """``evaluator`` stops and is free (3.2). ``reason`` is one of ``no_overlap``,
    ``not_significant``, ``not_better`` (significant but not better at its best after
    ``max_eval_steps``), ``member_lost_evolution``, ``target_lost_evolution``,
    ``member_received_weights`` (its parent received an evaluator's weights), ``target_superseded``
    (another evaluator succeeded on the same target this round). See
    :mod:`firepbt.controllers.fire`. ``comparison``: the evaluator's curve against the
    target's, for the stops the curves decided (no_overlap, not_significant, not_better,
    target_superseded), with ``curve_starts`` as for :class:`EvaluatorSuccess`; None for the
    others."""

    evaluator: int
    parent: int
    target: int
    reason: str
    p_value: float | None
    score_diff: float | None
    trained_steps: int
    comparison: Comparison | None = None
    curve_starts: CurveStarts | None = None
    kind: str = field(default="stop_evaluator", init=False)


@dataclass(frozen=True, slots=True)
class FitnessRecord:
    """The fitness of each ranked member of ``subpopulation`` this round (evidence only)."""

    subpopulation: int
    fitness: Mapping[int, float]
    kind: str = field(default="fitness", init=False)


@dataclass(frozen=True, slots=True)
class WorkerFailure:
    """An executor event, not a decision: ``worker`` failed at ``step`` (``error``:
    ``actor_died`` or ``trainable_error``, with the original traceback) and what was done."""

    worker: int
    step: int
    error: str
    traceback: str
    action: str
    kind: str = field(default="worker_failure", init=False)


Decision = (Exploit | AssignEvaluator | EvaluatorSuccess | StopEvaluator | FitnessRecord
            | WorkerFailure)

_KINDS: dict[str, type] = {
    "exploit": Exploit,
    "assign_evaluator": AssignEvaluator,
    "evaluator_success": EvaluatorSuccess,
    "stop_evaluator": StopEvaluator,
    "fitness": FitnessRecord,
    "worker_failure": WorkerFailure,
}


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """A decision as plain data (what ``dataclasses.asdict`` gives, without its deep copies:
    the result is written out at once); fitness keys as strings."""
    out: dict[str, Any] = _plain(d)
    if isinstance(d, FitnessRecord):
        out["fitness"] = {str(k): v for k, v in d.fitness.items()}
    return out


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_SCALARS = (int, float, str, bytes, type(None))


def _plain(x: Any) -> Any:
    if isinstance(x, _SCALARS):  # most values: first
        return x
    if is_dataclass(x) and not isinstance(x, type):
        return {k: _plain(getattr(x, k)) for k in _field_names(type(x))}
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def decision_from_dict(data: Mapping[str, Any]) -> Decision:
    data = dict(data)
    cls = _KINDS[data.pop("kind")]
    if cls is FitnessRecord:
        data["fitness"] = {int(k): v for k, v in data["fitness"].items()}
    if isinstance(data.get("comparison"), Mapping):
        data["comparison"] = Comparison(**data["comparison"])
    if data.get("curve_starts") is not None:
        (s1, v1), (s2, v2) = data["curve_starts"]
        data["curve_starts"] = ((int(s1), float(v1)), (int(s2), float(v2)))
    decision: Decision = cls(**data)
    return decision
