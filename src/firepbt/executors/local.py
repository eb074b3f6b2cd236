"""The local executor: every worker in this process, trained one after another (deterministic
for a seed), and the pieces other executors reuse to train a job (:func:`run_job`) and build a
population (:func:`build_population`)."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..deadlines import RoundTimeout
from ..errors import ConfigError, TrainableError
from ..selection import score_of
from ..trainable import (
    Trainable,
    TrainableFactory,
    check_trainable,
    clone_state,
    copy_into,
    mode_of,
    test_of,
)
from .base import BestPoint, Executor, TrainJob, TrainResult, objective_value


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


class LocalExecutor(Executor):
    """All workers in this process, trained one after another (deterministic for a seed)."""

    def __init__(self, factory: TrainableFactory) -> None:
        self.factory = factory
        self.trainables: dict[int, Trainable] = {}
        self.mode = "max"
        self.best = BestPoint(math.inf)

    def setup(self, seeds: Mapping[int, int]) -> None:
        """Make one trainable per worker (:func:`build_population`)."""
        self.adopt(build_population(self.factory, seeds))

    def adopt(self, trainables: Mapping[int, Trainable]) -> None:
        """Train these trainables (one per worker, all of one mode)."""
        self.trainables = dict(trainables)
        modes = {mode_of(t) for t in self.trainables.values()}
        if len(modes) != 1:
            raise ValueError(f"all trainables must share one mode, got {sorted(modes)}")
        self.mode = modes.pop()

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        self.best = BestPoint(best_score)
        out = []
        for job in jobs:
            self.current = job.worker  # (who trains: a deadline names it)
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
