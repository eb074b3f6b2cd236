"""The callback contract (see :mod:`firepbt.tracking`): what a callback is given after each
committed round, what its ``start`` is told, and how a function becomes a tracker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..records import (
    AssignEvaluator,
    Decision,
    EvaluatorSuccess,
    Exploit,
    StopEvaluator,
    WorkerFailure,
    WorkerState,
)


@dataclass(frozen=True)
class RoundReport:
    """What one committed round recorded (see the module docstring).

    ``evaluations`` and ``tests`` are ``(worker, step, raw value)`` in worker, step order (raw:
    as ``evaluate()`` returned it, a loss stays a loss); ``decisions`` in the order they were
    applied; ``workers`` every worker's :class:`~firepbt.records.WorkerState` after the
    decisions (its role, sub-population, the hyperparameters it trains with from this step on,
    whether it trains next round); ``best`` the population's top point so far,
    ``(worker, step, raw value)`` over the best-effort members (P1 for FIRE PBT), None before a
    finite one; ``initial`` the workers before the first round (round 1 only, else None)."""

    round: int
    rounds: int
    step: int
    steps: int
    mode: str
    evaluations: tuple[tuple[int, int, float], ...]
    tests: tuple[tuple[int, int, float], ...]
    decisions: tuple[Decision, ...]
    workers: tuple[WorkerState, ...]
    best: tuple[int, int, float] | None
    train_seconds: float = field(compare=False)  # (timings: not part of a report's equality)
    eval_seconds: float = field(compare=False)
    initial: tuple[WorkerState, ...] | None = None
    finished_at: float = field(default=0.0, compare=False)  # when the round was committed

    def of_kind(self, kind: type) -> list[Any]:
        """The round's decisions of one kind, e.g. ``report.of_kind(Exploit)``."""
        return [d for d in self.decisions if isinstance(d, kind)]

    def events(self) -> list[tuple[int, str]]:
        """The round's decisions in words, ``(worker concerned, text)``, for text logs."""
        out = []
        for d in self.decisions:
            if isinstance(d, Exploit):
                out.append((d.worker, f"step {self.step}: worker {d.worker} (P{d.subpopulation + 1})"
                                      f" copied worker {d.source}, hyperparameters "
                                      f"{_hp(d.old_hparams)} -> {_hp(d.new_hparams)}"))
            elif isinstance(d, AssignEvaluator):
                out.append((d.evaluator, f"step {self.step}: evaluator {d.evaluator} took parent "
                                         f"{d.parent} (P{d.parent_subpopulation + 1}) to train "
                                         f"with {_hp(d.hparams)} against target {d.target}"))
            elif isinstance(d, EvaluatorSuccess):
                out.append((d.target, f"step {self.step}: evaluator {d.evaluator} succeeded "
                                      f"(p = {d.p_value:.3g}, score diff {d.score_diff:.3g}); "
                                      f"worker {d.target} took its weights"))
            elif isinstance(d, StopEvaluator):
                out.append((d.evaluator, f"step {self.step}: evaluator {d.evaluator} stopped "
                                         f"({d.reason})"))
            elif isinstance(d, WorkerFailure):
                out.append((d.worker, f"step {self.step}: worker {d.worker} failed ({d.error}); "
                                      f"{d.action}"))
        return out


def _hp(h: Mapping[str, Any] | None) -> str:
    return "{" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((h or {}).items())) + "}"


@dataclass(frozen=True)
class RunInfo:
    """What a tracker's ``start`` is told: the store, its configuration, the objective's mode,
    the round the run goes on from (0 for a new run), and what this tracker saved in the store
    before (``saved``; :meth:`save` keeps more, e.g. a W&B or MLflow run id for a resume)."""

    store: Path
    name: str
    config: Mapping[str, Any]
    mode: str
    rounds: int
    steps: int
    ready_interval: int
    start_round: int
    last_given: int
    saved: Mapping[str, Any]
    _save: Callable[[str, Any], None] = field(repr=False, compare=False)

    def save(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) in the store under this tracker, for the next ``resume``."""
        self._save(key, value)


@runtime_checkable
class Tracker(Protocol):
    """A callback object (see the module docstring). ``key`` names it in the store's
    bookkeeping: two trackers with the same key are one tracker to ``resume``."""

    key: str

    def on_round(self, report: RoundReport) -> None: ...


class _Function:
    """A plain function as a tracker."""

    def __init__(self, fn: Callable[[RoundReport], Any]) -> None:
        self.fn = fn
        self.key = "callable:" + ".".join(
            x for x in (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
                        or type(fn).__name__) if x)

    def on_round(self, report: RoundReport) -> None:
        self.fn(report)


def as_tracker(cb: Any) -> Any:
    """A callback as a tracker: objects with ``on_round`` as they are, functions wrapped."""
    if hasattr(cb, "on_round"):
        if not isinstance(getattr(cb, "key", None), str):
            try:
                cb.key = f"{type(cb).__module__}.{type(cb).__qualname__}"
            except AttributeError as exc:
                raise ConfigError("callbacks", "objects with a str attribute 'key' (or one that "
                                  "can be set)", type(cb).__name__) from exc
        return cb
    if callable(cb):
        return _Function(cb)
    raise ConfigError("callbacks", "functions report -> None, objects with on_round(report), or "
                      "--log specs such as 'tensorboard:DIR'", type(cb).__name__)
