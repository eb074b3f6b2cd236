"""Executors train workers; the local one runs them one after another in this process.

Contract (the runner calls, in this order): ``setup(seeds)`` once; then per round
``train_round(jobs, ...)``, followed by ``copy(source, dest, seed)`` as decisions require (the
destination gets an independent copy of the source's state, then a new data stream from
``seed``, see :mod:`firepbt.trainable`); ``states()`` and
``load_states()`` at round boundaries for checkpoints. An executor never decides and never
writes the store's database.

Optional (the Ray executor has all of them):
``copy_many(copies)`` takes a round's copies at once (applied in order; it returns when they
are made and raises a trainable's error while loading a state, as ``copy`` does);
``begin_checkpoint(store, round)`` starts writing the checkpoint itself (into the store's
folder, :meth:`~firepbt.store.Store.parts_folder`, or through
:meth:`~firepbt.store.Store.write_checkpoint` from a background thread) and returns a function
that waits for it and returns its name, which the runner binds to the round when the next
round's training is done; ``mark_round()`` after a round without a checkpoint;
``test_best(worker, step)`` (the local and vectorized executors have it too), called before
the round's copies, starts the test of the round's best point (:class:`BestPoint`) and returns a
function that gives it and its seconds (executors without it return tests in their results, of
any points that beat the running best).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .deadlines import RoundTimeout
from .errors import ConfigError, TrainableError
from .trainable import (
    Trainable,
    TrainableFactory,
    check_trainable,
    clone_state,
    copy_into,
    mode_of,
    test_of,
)


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


def score_of(value: float, mode: str) -> float:
    """The maximised score of a raw objective value."""
    return value if mode == "max" else -value


def observed_score(value: float, mode: str) -> float:
    """The score a controller observes for a raw objective value: :func:`score_of` with a
    zero unsigned (the store keeps no sign of zero, and a resumed controller must observe
    exactly what it observed the first time)."""
    return score_of(value, mode) + 0.0


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


def _test_state(trainable: Trainable, state: dict[str, Any] | None) -> float | None:
    """``trainable`` tested on ``state`` (None: as it is), its own state restored after."""
    if state is None:
        return test_of(trainable)
    current = clone_state(trainable.state_dict())
    trainable.load_state_dict(state)
    try:
        return test_of(trainable)
    finally:
        trainable.load_state_dict(current)


def run_job(trainable: Trainable, job: TrainJob, best: BestPoint, mode: str) -> TrainResult:
    """Train one job on one trainable.

    A job with ``wants_test`` offers its best point of the round to ``best`` (the
    :class:`BestPoint` of the jobs trained beside it) when it finishes: an independent copy of
    the state at that point (:func:`~firepbt.trainable.clone_state` of ``state_dict()``, which
    may hold live tensors) is kept while it beats the points held so far, none when the point
    is the job's end. Nothing is tested here: the runner asks for the round's best point.
    """
    evals: list[tuple[int, float]] = []
    t_train = t_eval = 0.0
    step = job.start
    own: tuple[float, int, dict[str, Any] | None] | None = None
    testable = job.wants_test and getattr(trainable, "test", None) is not None

    def evaluate() -> None:
        nonlocal t_eval, own
        t0 = time.perf_counter()
        value = objective_value(trainable.evaluate(), "evaluate()")
        evals.append((step, value))
        score = score_of(value, mode)
        if testable and best.beats(score, step, job.worker) and (own is None or score > own[0]):
            own = (score, step, None if step == end else clone_state(trainable.state_dict()))
        t_eval += time.perf_counter() - t0

    end = job.start + sum(n for _, n in job.pieces)
    try:
        if job.evaluate_start:
            evaluate()
        for hparams, n in job.pieces:
            remaining = n
            while remaining > 0:
                to_eval = job.eval_interval - (step % job.eval_interval)
                k = min(remaining, to_eval)
                t0 = time.perf_counter()
                trainable.train(hparams, k)
                t_train += time.perf_counter() - t0
                step += k
                remaining -= k
                if step % job.eval_interval == 0:
                    evaluate()
    except (ConfigError, RoundTimeout):  # the contract broken (e.g. evaluate() returned a
        raise                              # string), or the round's deadline passed
    except Exception as exc:  # reported with worker, step and the original traceback
        raise TrainableError(job.worker, step, traceback.format_exc()) from exc
    held = own is not None and best.beats(own[0], own[1], job.worker)  # a finished job only
    if own is not None and held:
        state = own[2]
        best.hold(own[0], own[1], job.worker, lambda: _test_state(trainable, state))
    return TrainResult(job.worker, tuple(evals), (), t_train, t_eval, held)


def build_population(factory: TrainableFactory, seeds: Mapping[int, int]) -> dict[int, Trainable]:
    """One trainable per worker, after checking from the first that all of them fit."""
    order = sorted(seeds.items())
    if not order:
        return {}
    first = factory(int(order[0][1]))
    check_trainable(first)
    check_population_fits(first, len(order))
    out = {order[0][0]: first}
    for w, s in order[1:]:
        out[w] = factory(int(s))
    return out


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def state_bytes(state: Any) -> int:
    """Bytes of the tensors and arrays in a state."""
    import numpy as np
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, np.ndarray):
        return int(state.nbytes)
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def check_population_fits(first: Trainable, n_workers: int) -> None:
    """Refuse a population whose states cannot fit in this machine's memory, judged from one
    worker before the others are built: each worker holds its state, and a checkpoint round
    holds a second copy of every state (three copies in all, to leave room for training)."""
    avail = available_memory()
    if avail is None:
        return
    per = max(1, state_bytes(first.state_dict()))
    fits = max(1, avail // (3 * per))
    if n_workers > fits:
        raise ConfigError("workers", f"at most {fits} for this trainable on this machine "
                          f"(about {per / 2**20:.3g} MiB of state each, held three times; "
                          f"{avail / 2**30:.3g} GiB available)", n_workers)


class LocalExecutor:
    """All workers in this process, trained one after another (deterministic for a seed)."""

    def __init__(self, factory: TrainableFactory) -> None:
        self.factory = factory
        self.trainables: dict[int, Trainable] = {}
        self.mode = "max"
        self.best = BestPoint(math.inf)

    def setup(self, seeds: Mapping[int, int],
              built: Mapping[int, Trainable] | None = None) -> None:
        """Make one trainable per worker (or adopt ``built``, the ones another executor made
        from the same seeds: the ``auto`` executor's fallback builds each trainable once)."""
        self.trainables = dict(built) if built else build_population(self.factory, seeds)
        modes = {mode_of(t) for t in self.trainables.values()}
        if len(modes) != 1:
            raise ValueError(f"all trainables must share one mode, got {sorted(modes)}")
        self.mode = modes.pop()

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        self.best = BestPoint(best_score)
        out = []
        for job in jobs:
            self.current: int | str | None = job.worker  # (who trains: a deadline names it)
            out.append(run_job(self.trainables[job.worker], job, self.best, self.mode))
            if progress is not None:
                progress(sum(n for _, n in job.pieces))
        self.current = None
        return out

    def test_best(self, worker: int, step: int) -> Callable[[], tuple[float | None, float]]:
        """The test of the round's best point, ``worker`` at ``step`` (see :class:`BestPoint`),
        taken now; returns a function that gives it and the seconds it took."""
        got = self.best.test(worker, step)
        return lambda: got

    def copy(self, source: int, dest: int, seed: int | None = None) -> None:
        """``dest`` takes an independent copy of ``source``'s state, then (when ``seed`` is
        given and the trainable has it) ``reseed(seed)``: a data stream of its own."""
        copy_into(self.trainables[source], self.trainables[dest], seed)

    def test(self, worker: int) -> float | None:
        return test_of(self.trainables[worker])

    def states(self) -> dict[int, dict[str, Any]]:
        return {w: t.state_dict() for w, t in self.trainables.items()}

    def load_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        for w, s in states.items():
            self.trainables[int(w)].load_state_dict(clone_state(s))

    def close(self) -> None:
        self.trainables = {}
