"""Train the whole population as one batched model (stacked weights, one forward/backward).

:class:`VectorizedExecutor` takes the same trainable factory as the local executor, provided
its trainables belong to a family that declares a batched population
(:mod:`firepbt.executors.batched`: ``register_batched``); the executor itself knows no task.
Built in: :class:`~firepbt.supervised.SupervisedTrainable` (its population,
:class:`~firepbt.supervised.SupervisedPopulation`, is registered next to it) and the NQM
(:mod:`firepbt.tasks.nqm`). Each round the members' per-step settings go to the population,
which trains them together; at the round's end the results are written back into the
per-member trainables, so copies (exploit, evaluators), checkpoints and the store are exactly
those of the local executor (the numbers agree with it to floating-point rounding, or exactly
where the family's batched arithmetic is the same, as the NQM's).

Trainables of no batched family: with ``strict`` (``executor="vectorized"``) they are refused
in one line; otherwise (``executor="auto"``) the executor trains them as the local executor
does, each one built once, and says so in :attr:`VectorizedExecutor.name` (``"local"``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError, TrainableError
from ..selection import score_of
from ..trainable import Trainable, TrainableFactory
from .base import BestPoint, TrainJob, TrainResult
from .batched import NotVectorizable, population_type
from .local import LocalExecutor


class VectorizedExecutor(LocalExecutor):
    """Trains all workers of a synchronous round as one batched model (see module doc).

    Copies, tests and checkpoints act on the per-member trainables, as in the local executor
    (the batched state is written back into them at the end of every round).

    Args:
        factory: ``seed -> SupervisedTrainable``.
        threads: torch intra-op threads while training (None: leave torch's setting).
    """

    def __init__(self, factory: TrainableFactory, threads: int | None = None, *,
                 strict: bool = True) -> None:
        super().__init__(factory)
        self.threads = threads
        self.strict = strict
        self.population: type | None = None

    @property
    def name(self) -> str:
        return "vectorized" if self.population is not None or not self.trainables else "local"

    # -- executor contract ----------------------------------------------------------------

    def adopt(self, trainables: Mapping[int, Trainable]) -> None:
        """Train these trainables as one batched model when their family declares one; else
        refuse them (``strict``) or train them one after another, as the local executor."""
        super().adopt(trainables)
        try:
            self.population = population_type(list(self.trainables.values()))
        except NotVectorizable as exc:
            if self.strict:
                raise ConfigError("executor", "'local' for these trainables",
                                  f"vectorized ({exc})") from exc
            self.population = None

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None,
                    best: BestPoint | None = None) -> list[TrainResult]:
        """The round's jobs as one batched model; the round's best point is offered to
        ``best`` (default: a new :class:`~firepbt.executor.BestPoint` from ``best_score``, which
        :meth:`test_best` then asks)."""
        if self.population is None:  # no batched family (executor "auto"): one by one
            return super().train_round(jobs, best_score, progress)
        if best is None:  # (one given by the caller is the caller's to ask and let go)
            self.best = best = BestPoint(best_score)
        if not jobs:
            return []
        # (who trains, as a round deadline names it: all of them at once)
        self.current = f"the batched population (workers {jobs[0].worker}-{jobs[-1].worker})"
        old_threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._train_round(jobs, best, progress)
        finally:
            if self.threads is not None:
                torch.set_num_threads(old_threads)

    # -- the batched round -----------------------------------------------------------------

    def _train_round(self, jobs: Sequence[TrainJob], best: BestPoint,
                     progress: Callable[[int], None] | None) -> list[TrainResult]:
        workers = [j.worker for j in jobs]
        members = [self.trainables[w] for w in workers]
        start = jobs[0].start
        n_steps = sum(n for _, n in jobs[0].pieces)
        eval_interval = jobs[0].eval_interval
        for j in jobs:
            if j.start != start or sum(n for _, n in j.pieces) != n_steps or \
                    j.eval_interval != eval_interval:
                raise ValueError("a vectorized round needs every job to cover the same steps")
        # per-step settings of every member as runs of (settings, steps); the (steps, N, k)
        # tensors are built one chunk at a time, so a long round costs no memory
        assert self.population is not None
        pop: Any = self.population(members)
        runs = [[(tuple(pop.settings(m, h)), n) for h, n in j.pieces]
                for m, j in zip(members, jobs, strict=True)]
        # the round's best point worth a test (firepbt.executor.BestPoint), its parameters
        # kept (a snapshot, or None at the round's end), offered to ``best`` if the round ends
        cand: tuple[float, int, int, int, Any] | None = None  # score, step, worker, i, snapshot
        evals: dict[int, list[tuple[int, float]]] = {w: [] for w in workers}
        t_train = t_eval = 0.0
        end = start + n_steps

        def evaluate(step: int) -> None:
            nonlocal t_eval, cand
            t0 = time.perf_counter()
            values = pop.evaluate()
            for i, (w, j) in enumerate(zip(workers, jobs, strict=True)):
                evals[w].append((step, values[i]))
                sc = score_of(values[i], self.mode)
                if j.wants_test and best.beats(sc, step, w) and \
                        (cand is None or (sc, -step, -w) > (cand[0], -cand[1], -cand[2])):
                    cand = (sc, step, w, i, None if step == end else pop.snapshot(i))
            t_eval += time.perf_counter() - t0

        step = start
        try:
            if any(j.evaluate_start for j in jobs):
                evaluate(step)
            k = 0
            while k < n_steps:
                to_eval = eval_interval - (step % eval_interval)
                n = min(to_eval, n_steps - k, _CHUNK)
                settings = _settings_chunk(runs, k, n)
                t0 = time.perf_counter()
                pop.train(settings)
                t_train += time.perf_counter() - t0
                k += n
                step += n
                if progress is not None:
                    progress(n * len(jobs))
                if step % eval_interval == 0:
                    evaluate(step)
        except Exception as exc:  # the batched model cannot tell which member failed
            import traceback

            raise TrainableError(-1, step, traceback.format_exc()) from exc
        pop.write_back()
        held = None
        if cand is not None and best.beats(cand[0], cand[1], cand[2]):
            sc, at, held, i, snap = cand
            best.hold(sc, at, held, lambda: pop.test_at(i, snap))
        share = 1.0 / len(jobs)
        return [TrainResult(w, tuple(evals[w]), (), t_train * share, t_eval * share, w == held)
                for w in workers]


_CHUNK = 1024  # steps whose per-step settings are materialised at once


def _settings_chunk(runs: Sequence[Sequence[tuple[tuple[float, ...], int]]], k: int,
                    n: int) -> torch.Tensor:
    """The settings of steps ``k .. k+n`` of a round: one ``(n, N, k)`` float64 tensor, from
    each member's runs of ``(settings, steps)``."""
    cols = []
    for member_runs in runs:
        col: list[tuple[float, ...]] = []
        pos = 0
        for settings, m in member_runs:
            lo, hi = max(k, pos), min(k + n, pos + m)
            if lo < hi:
                col += [settings] * (hi - lo)
            pos += m
            if pos >= k + n:
                break
        cols.append(col)
    return torch.tensor(cols, dtype=torch.float64).permute(1, 0, 2)  # (n, N, k)
