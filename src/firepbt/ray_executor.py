"""Run the workers as long-lived Ray actors, one per worker slot (``pip install firepbt[ray]``).

The round is dispatched to the actors at once, or - when actors share CPUs - one job per
cluster CPU at a time, so that they do not thrash; each trains its job with the same code as
the local executor. Copies (exploit, evaluator assignment, evaluator success) move weights from
actor to actor through Ray's object store - ``dest.set_state.remote(source.get_state.remote())``
- never through files; only the driver writes the store.

Faults: the states at the last round boundary are kept in the object store. If an actor (or
its node) dies mid-round, a new actor is started for that worker from that state and the job
is run again - the local executor's determinism makes the result identical. If the trainable
raises, the error is recorded with the worker, the step and the original traceback, the worker
is restored from that state and the job retried; after ``max_failures`` failures in a round the
worker is *retired* for the round: it reports NaN evaluations (a diverged member, never ranked
above a finite one), so truncation selection refills it by exploitation at the next decision,
and the round never hangs. Failures are recorded in the store as ``worker_failure`` events.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ConfigError
from .executor import TrainJob, TrainResult, run_job
from .records import WorkerFailure
from .trainable import TrainableFactory, clone_state, mode_of, reseed_of, test_of


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised without ray installed
        raise ImportError("the Ray executor needs Ray: pip install 'firepbt[ray]'") from exc
    return ray


class _Worker:
    """One worker slot: a trainable living in its own process."""

    def __init__(self, factory: TrainableFactory, seed: int, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.trainable = factory(seed)
        self.mode = mode_of(self.trainable)

    def get_mode(self) -> str:
        return self.mode

    def pid(self) -> int:
        return os.getpid()

    def run_job(self, job: TrainJob, best: float) -> TrainResult:
        return run_job(self.trainable, job, [best], self.mode)

    def get_state(self) -> dict[str, Any]:
        return self.trainable.state_dict()

    def set_state(self, state: Mapping[str, Any], seed: int | None = None) -> None:
        """Load an independent copy of ``state`` (then a new data stream from ``seed``)."""
        self.trainable.load_state_dict(clone_state(state))
        if seed is not None:
            reseed_of(self.trainable, seed)

    def test(self) -> float | None:
        return test_of(self.trainable)


class RayExecutor:
    """Workers as Ray actors (see module doc).

    Args:
        factory: ``seed -> Trainable``; shipped to the actors (must be picklable by Ray).
        address: a running cluster (``ray://...`` or ``host:port``); default ``RAY_ADDRESS``,
            else a local Ray instance is started with ``num_cpus``.
        cpus_per_worker, gpus_per_worker: resources each actor declares. The actors live for
            the whole experiment, so all of them must fit at once: by default each declares
            ``min(1, cluster CPUs / workers)`` CPUs; an explicit request larger than the
            cluster is refused with an error rather than left waiting.
        max_failures: trainable errors tolerated per worker and round before it is retired.
    """

    def __init__(self, factory: TrainableFactory, *, address: str | None = None,
                 num_cpus: int | None = None, cpus_per_worker: float | None = None,
                 gpus_per_worker: float = 0.0, max_failures: int = 2) -> None:
        self.factory = factory
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.cpus_per_worker = cpus_per_worker
        self._cpus = 1.0
        self._in_flight = 1
        self.gpus_per_worker = gpus_per_worker
        self.max_failures = max_failures
        self.actors: dict[int, Any] = {}
        self.seeds: dict[int, int] = {}
        self.boundary: dict[int, Any] = {}  # ObjectRefs of the states at the last round end
        self.failures: list[WorkerFailure] = []
        self.mode = "max"
        self._started_ray = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _init_ray(self) -> Any:
        ray = _require_ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")  # loopback only
                self._started_ray = True
        return ray

    def _new_actor(self, worker: int) -> Any:
        ray = _require_ray()
        cls = ray.remote(_Worker).options(num_cpus=self._cpus, num_gpus=self.gpus_per_worker,
                                          max_restarts=0)
        return cls.remote(self.factory, self.seeds[worker], int(max(1, self._cpus)))

    def setup(self, seeds: Mapping[int, int]) -> None:
        ray = self._init_ray()
        self.seeds = {int(w): int(s) for w, s in seeds.items()}
        from .errors import ConfigError

        total = ray.cluster_resources()
        n = len(self.seeds)
        cpus = float(total.get("CPU", 1.0))
        self._cpus = (self.cpus_per_worker if self.cpus_per_worker is not None
                      else min(1.0, cpus / n))
        # actors sharing CPUs would all train at once and thrash: keep one job per CPU in flight
        self._in_flight = max(1, int(cpus)) if self._cpus < 1 else n
        if self._cpus * n > cpus + 1e-9:
            raise ConfigError("cpus_per_worker", f"at most {cpus / n:.3g} for {n} long-lived "
                              f"actors on a cluster of {cpus:g} CPUs", self._cpus)
        gpus = float(total.get("GPU", 0.0))
        if self.gpus_per_worker * n > gpus + 1e-9:
            raise ConfigError("gpus_per_worker", f"at most {gpus / n:.3g} for {n} actors on a "
                              f"cluster of {gpus:g} GPUs", self.gpus_per_worker)
        self.actors = {w: self._new_actor(w) for w in sorted(self.seeds)}
        modes = set(ray.get([a.get_mode.remote() for a in self.actors.values()]))
        if len(modes) != 1:
            raise ValueError(f"all trainables must share one mode, got {sorted(modes)}")
        self.mode = modes.pop()
        self.boundary = {w: a.get_state.remote() for w, a in self.actors.items()}

    def close(self) -> None:
        ray = _require_ray()
        for a in self.actors.values():
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = {}
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- the executor contract -----------------------------------------------------------------

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        ray = _require_ray()
        from ray.exceptions import RayActorError, RayTaskError

        queue = list(jobs)
        pending: dict[Any, TrainJob] = {}
        tries = {j.worker: 0 for j in jobs}
        results: dict[int, TrainResult] = {}
        while queue or pending:
            while queue and len(pending) < self._in_flight:
                j = queue.pop(0)
                pending[self.actors[j.worker].run_job.remote(j, best_score)] = j
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            job = pending.pop(ref)
            w = job.worker
            try:
                results[w] = ray.get(ref)
                if progress is not None:
                    progress(sum(n for _, n in job.pieces))
                continue
            except RayActorError as exc:  # the process or its node died: new actor, same job
                self.failures.append(WorkerFailure(w, job.start, "actor_died", str(exc)[:2000],
                                                   "restarted from the round checkpoint"))
                self.actors[w] = self._new_actor(w)
            except RayTaskError as exc:  # the trainable raised
                tries[w] += 1
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if isinstance(cause, ConfigError):  # a broken contract: retrying cannot help
                    raise cause from None
                step = getattr(cause, "step", job.start)
                text = getattr(cause, "traceback_text", None) or str(exc)
                retire = tries[w] > self.max_failures
                self.failures.append(WorkerFailure(
                    w, int(step), "trainable_error", text[-4000:],
                    "retired for the round (NaN evaluations)" if retire
                    else "restored from the round checkpoint and retried"))
                if retire:
                    self.actors[w].set_state.remote(self.boundary[w])
                    results[w] = _retired(job)
                    continue
            self.actors[w].set_state.remote(self.boundary[w])
            queue.insert(0, job)
        return [results[j.worker] for j in jobs]

    def copy(self, source: int, dest: int, seed: int | None = None) -> None:
        self.actors[dest].set_state.remote(self.actors[source].get_state.remote(), seed)

    def states(self) -> dict[int, dict[str, Any]]:
        ray = _require_ray()
        self.boundary = {w: a.get_state.remote() for w, a in self.actors.items()}
        return dict(zip(self.boundary, ray.get(list(self.boundary.values())), strict=True))

    def load_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        ray = _require_ray()
        refs = {int(w): ray.put(dict(s)) for w, s in states.items()}
        ray.get([self.actors[w].set_state.remote(r) for w, r in refs.items()])
        self.boundary.update(refs)

    def test(self, worker: int) -> float | None:
        ray = _require_ray()
        return ray.get(self.actors[worker].test.remote())

    def take_failures(self) -> list[WorkerFailure]:
        out, self.failures = self.failures, []
        return out


def _retired(job: TrainJob) -> TrainResult:
    steps = []
    step = job.start
    if job.evaluate_start:
        steps.append(step)
    for _, n in job.pieces:
        for _ in range(n):
            step += 1
            if step % job.eval_interval == 0:
                steps.append(step)
    return TrainResult(job.worker, tuple((s, math.nan) for s in steps), (), 0.0, 0.0)
