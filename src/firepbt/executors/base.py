"""The executor contract: what the runner asks of whatever trains the workers.

An executor trains workers; it never decides and never writes the store's database. The runner
calls, in this order:

1. ``setup(seeds)`` once, with one seed per worker (on resume, then ``load_states(states)``);
2. each round ``train_round(jobs, best_score, progress)``: train the round's jobs
   (:class:`TrainJob`) and return one :class:`TrainResult` per job, in job order;
3. ``test_best(worker, step)`` for the round's best point, before its copies;
4. the round's weight copies in decision order, ``copy_many(copies)`` (by default one
   ``copy(source, dest, seed)`` each: the destination gets an independent copy of the
   source's state, then a data stream of its own from ``seed``, :mod:`firepbt.trainable`);
5. at a checkpoint round ``begin_checkpoint(store, round)``, else ``mark_round()``; where
   ``begin_checkpoint`` returns None the runner writes ``states()`` into the store itself;
6. ``take_failures()``: the worker failures the round handled, recorded with its decisions;
7. ``close()`` at the end, also after a failure.

``test(worker)`` tests a worker as it is now (the final member). ``mode`` (``"max"`` or
``"min"``, the trainables' objective) is set by ``setup``; ``current`` names who trains while a
round runs (a round deadline names it); ``name`` is what the store records as the executor
used (``"local"``, ``"vectorized"``, ``"ray"``; the class name for others).

**Optional capabilities** are declared here with the behaviour of an executor that lacks them,
so the runner asks every executor the same way and probes none: ``copy_many`` loops over
``copy``; ``test_best`` returns None (the executor then returns in its results the tests of
every point that beat the running best); ``begin_checkpoint`` returns None (the runner writes
the checkpoint); ``mark_round`` and ``take_failures`` do nothing; ``handles_round_timeout`` is
False (the runner enforces a round's deadline in its own process, :mod:`firepbt.deadlines`).

Built in: :class:`~firepbt.executors.local.LocalExecutor` (this process, one worker after
another), :class:`~firepbt.executors.vectorized.VectorizedExecutor` (the population as one
batched model, :mod:`firepbt.executors.batched`; it trains as the local one where the
trainables declare no batched population and the configuration says ``auto``) and
:class:`~firepbt.executors.ray.RayExecutor` (Ray actors).
"""

from __future__ import annotations

import math
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TrainableError
from ..records import WorkerFailure

if TYPE_CHECKING:
    from ..store import ExperimentStore


class Executor(ABC):
    """Trains the workers of one experiment (the contract is the module docstring)."""

    mode: str = "max"
    current: int | str | None = None  # who is training now (a round deadline names it)
    handles_round_timeout: bool = False  # True: it retires members past a round's deadline

    @property
    def name(self) -> str:
        """What the store records as the executor used."""
        return type(self).__name__.replace("Executor", "").lower() or "custom"

    @abstractmethod
    def setup(self, seeds: Mapping[int, int]) -> None:
        """Make one trainable per worker from its seed; sets :attr:`mode`."""

    @abstractmethod
    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        """Train the round's jobs; one result per job, in job order. ``best_score``: the
        running best score at the round's start (:class:`BestPoint`); ``progress(steps)``
        after each stretch of training."""

    @abstractmethod
    def copy(self, source: int, dest: int, seed: int | None = None) -> None:
        """``dest`` takes an independent copy of ``source``'s state, then a data stream of its
        own from ``seed``."""

    @abstractmethod
    def states(self) -> dict[int, Any]:
        """Every worker's state (for a checkpoint)."""

    @abstractmethod
    def load_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Put the states of a checkpoint back into the workers."""

    @abstractmethod
    def test(self, worker: int) -> float | None:
        """``worker`` tested as it is now (None without a test set)."""

    def close(self) -> None:  # noqa: B027 - a no-op default, as the contract says
        """Let the workers go (after the run, also after a failure)."""

    # -- optional capabilities: the behaviour of an executor without them ------------------

    def copy_many(self, copies: Sequence[tuple[int, int, int | None]]) -> None:
        """A round's copies ``(source, dest, seed)``, applied in order."""
        for source, dest, seed in copies:
            self.copy(source, dest, seed)

    def test_best(self, worker: int, step: int
                  ) -> Callable[[], tuple[float | None, float]] | None:
        """Start the test of the round's best point (``worker`` at ``step``) and return a
        function giving it and its seconds; None: the tests are in the round's results."""
        return None

    def begin_checkpoint(self, store: ExperimentStore, round_index: int
                         ) -> Callable[[], str] | None:
        """Start writing round ``round_index``'s checkpoint into ``store`` and return a
        function that waits for it and gives its name (bound to the round once the next
        round has trained); None: the runner writes :meth:`states` itself."""
        return None

    def mark_round(self) -> None:  # noqa: B027 - a no-op default, as the contract says
        """A round ended without a checkpoint."""

    def take_failures(self) -> list[WorkerFailure]:
        """The worker failures handled since the last call (recorded with the round)."""
        return []


@dataclass(frozen=True, slots=True)
class TrainJob:
    """Train ``worker`` from step ``start`` through ``pieces`` of ``(hparams, steps)``,
    evaluating whenever the step is a multiple of ``eval_interval``; when ``evaluate_start``
    the worker is also evaluated before training (the step-0 point)."""

    worker: int
    start: int
    pieces: tuple[tuple[Mapping[str, Any], int], ...]
    eval_interval: int
    evaluate_start: bool = False
    wants_test: bool = False

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # pickled by its fields, directly
        return (TrainJob, (self.worker, self.start, self.pieces, self.eval_interval,
                           self.evaluate_start, self.wants_test))


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Evaluations ``(step, raw value)`` of one job, tests ``(step, raw value)`` (left empty by
    executors with ``test_best``, which test only the round's best point when the runner asks),
    and the seconds spent training and evaluating; ``held``: the job's best point was held for
    a test (:class:`BestPoint`) when it finished."""

    worker: int
    evaluations: tuple[tuple[int, float], ...]
    tests: tuple[tuple[int, float], ...]
    train_seconds: float
    eval_seconds: float
    held: bool = False

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # pickled by its fields, directly
        return (TrainResult, (self.worker, self.evaluations, self.tests, self.train_seconds,
                              self.eval_seconds, self.held))


def objective_value(value: Any, what: str) -> float:
    """A trainable's objective as a float: numbers (Python, numpy, 0-d tensors) only; a string
    or a bool is refused rather than silently converted."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ConfigError(what, "a float (NaN or inf for a diverged network)", value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(what, "a float (NaN or inf for a diverged network)", value) from None
    return out


class BestPoint:
    """The round's one point worth a test among the jobs one executor (or one Ray actor)
    trains: of the evaluations of best-effort workers (``wants_test``) that beat ``floor``, the
    running best score at the round's start, the highest; among equal scores the earliest step,
    then the lowest worker (the first to reach it in the runner's step, worker order). So the
    round's best point over all executors is held by one of them, and only it is tested: the
    run's top validation point is always such a point (paper 4.1.2), and a test is taken once
    per round instead of once per member that beat the running best.

    ``hold`` keeps a point with the function that tests it (on a copy of the state at that
    point, or on the state at its job's end, which stays until the round's copies); the runner
    calls :meth:`test` for the round's best point before it applies the round's copies."""

    def __init__(self, floor: float) -> None:
        self.floor = floor
        self.key: tuple[float, int, int] | None = None
        self.at: tuple[int, int] | None = None  # (worker, step)
        self._test: Callable[[], float | None] | None = None

    def beats(self, score: float, step: int, worker: int) -> bool:
        if not (math.isfinite(score) and score > self.floor):
            return False
        return self.key is None or (score, -step, -worker) > self.key

    def hold(self, score: float, step: int, worker: int,
             test: Callable[[], float | None]) -> None:
        self.key, self.at, self._test = (score, -step, -worker), (worker, step), test

    def test(self, worker: int | None, step: int | None) -> tuple[float | None, float]:
        """The test of the held point when it is ``worker`` at ``step`` (else None), and the
        seconds it took; the point is let go either way (what it kept is freed). A test that
        raises is a :class:`~firepbt.errors.TrainableError` naming the worker and step."""
        fn, at = self._test, self.at
        self._test = self.at = self.key = None
        if fn is None or at != (worker, step):
            return None, 0.0
        t0 = time.perf_counter()
        value = tested_value(fn, at[0], at[1])
        return value, time.perf_counter() - t0


def tested_value(fn: Callable[[], Any], worker: int, step: int) -> float | None:
    """A test taken: ``fn()`` as a float (or None); a trainable that raises - also through a
    Ray task, whose error carries it - reported as a :class:`~firepbt.errors.TrainableError`
    naming the worker and step, with the original traceback."""
    try:
        t = fn()
    except (ConfigError, TrainableError):
        raise
    except Exception as exc:  # noqa: BLE001 - the trainable's (or its actor's) error
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (ConfigError, TrainableError)):
            raise cause from None
        raise TrainableError(worker, step, traceback.format_exc()) from exc
    return None if t is None else objective_value(t, "test()")
