"""Frozen records that cross layers: worker assignments and the controllers' decisions.

Controllers return decisions; only the runner applies them (copy weights, set
hyperparameters) and the store records them. Each decision carries its evidence so reports and
lineage never recompute it. ``kind`` names the decision in the store.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .curves import Comparison
from .schedule import Schedule, Segment

MEMBER = "member"
EVALUATOR = "evaluator"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker is at the start: a member of a sub-population, or an (idle) evaluator.

    Members with a ``schedule`` follow it (random search); others train with ``hparams``.
    ``subpopulation`` is 0 for P1 (the greedy one), 1 for P2, ...; None for evaluators.
    """

    worker: int
    role: str
    subpopulation: int | None
    hparams: Mapping[str, Any] | None
    schedule: Schedule | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "role": self.role, "subpopulation": self.subpopulation,
                "hparams": None if self.hparams is None else dict(self.hparams),
                "schedule": None if self.schedule is None else
                [[dict(s.hparams), s.steps] for s in self.schedule.segments]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerSpec:
        sched = d.get("schedule")
        return cls(int(d["worker"]), d["role"], d["subpopulation"], d["hparams"],
                   None if sched is None else Schedule(tuple(Segment(h, int(n)) for h, n in sched)))


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
    ``comparison``: the evaluator's curve against the target's that decided it (None in stores
    written before it was recorded)."""

    evaluator: int
    parent: int
    target: int
    score_diff: float
    p_value: float
    trained_steps: int
    comparison: Comparison | None = None
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
    target_superseded); None for the others."""

    evaluator: int
    parent: int
    target: int
    reason: str
    p_value: float | None
    score_diff: float | None
    trained_steps: int
    comparison: Comparison | None = None
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
    decision: Decision = cls(**data)
    return decision
