"""Run the population on Ray: actors sized by the cluster's resources, each holding several
members (``pip install firepbt[ray]``).

**Actors per resource, not per member.** The executor starts as many long-lived actors as the
cluster's CPUs allow (one CPU each by default, ``cpus_per_actor``), and no more than there are
members; with ``gpus_per_worker`` each actor also declares that share of a GPU, and no more
actors start than the cluster's GPUs hold. Members are dealt to the actors round-robin (worker
``w`` lives in actor ``w % n_actors``); an actor trains its members' jobs of a round one after
another, with the same code as the local executor. So N members cost as many interpreter
start-ups and torch imports as there are CPUs, not N. Where the members' family declares a
batched population (:mod:`firepbt.executors.batched`: the built-in supervised tasks, the NQM), an actor
trains its members as one batched model instead (``batched=True``, the default): on a GPU
node with ``gpus_per_worker=1``, one actor holds the whole population as one model.

**Copies.** Between two members of one actor a copy stays inside it; between actors the state
goes actor to actor through Ray's object store (states with CPU tensors), not through files.
A round's copies are sent in *waves* (:meth:`RayExecutor.copy_many`): one export call per
pair of source and receiving actor (only the states that actor needs) and one call per
receiving actor, a new wave only where a copy reads a member that received weights earlier in
the same wave; calls on one actor run in the order they were made, so the decisions of a round
apply in order, with a few calls per actor instead of two per copy.

**Checkpoints without the driver in the way.** Every ``checkpoint_interval`` rounds
(``ExperimentConfig.checkpoint_interval``, default 1) each actor writes its own members'
states into the store's checkpoint folder (``round-NNNNNN.parts/part-KKK.pt``, see
:mod:`firepbt.store`) when the actors see that folder (one machine, or a shared filesystem:
checked once with a probe file; ``checkpoint_writes="auto"``); the driver then only seals the
parts' digests into a manifest. Where the actors cannot see it, the driver gathers the states
in a background thread and writes the checkpoint itself (``"driver"``). Either way the
checkpoint is written while the next round trains and bound to its round when that round's
training is done (:meth:`~firepbt.store.Store.attach_checkpoint`), and between checkpoints no
state crosses the driver (a run reads its first checkpoint back once, on the driver, to check
it). The store stays the single source of truth: ``resume`` continues from the last bound
checkpoint, exactly. The trade-off: a driver crash loses the rounds since the last bound
checkpoint - at most ``checkpoint_interval`` + 1 rounds.

**Faults.** If an actor (or its node) dies mid-round, its members are restored from the
states of the round's start - in a new actor when the cluster has room for one within
``restart_timeout`` seconds, else dealt to the surviving actors (a lost node's CPUs are gone) -
and every job of theirs that round runs again; the local executor's determinism makes the
result identical. A batched model that raises leaves its members partly trained: they are
restored the same way and trained one after another, which finds the failing member. Those
states come from the checkpoint taken at the round's start (its parts on disk, or the states
the driver gathered) or, between checkpoints, from the object store; when the only copy went
with the dead actor or node (an actor that died before it wrote its part, or a node that held
the object), the run stops with a one-line error and ``firepbt resume`` continues it from the
last checkpoint. If a trainable raises, the error is recorded with the worker, the step and the
original traceback, the member is restored and its job retried; after ``max_failures``
failures in a round it is *retired* for the round (NaN evaluations: truncation selection
refills it by exploitation). Failures are recorded in the store as ``worker_failure`` events.

**Tests.** Each actor keeps the best point of its jobs that beat the running best
(:class:`~firepbt.executors.base.BestPoint`); the runner asks for the round's best point before the
round's copies (:meth:`RayExecutor.test_best`: the actor holding it tests it while the driver
decides, the others let go of theirs). A test lost with its actor is recorded as none; a
``test()`` that raises stops the run with the trainable's error, as on the local executor.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError, TrainableError, require_extra
from ..records import WorkerFailure
from ..store import ExperimentStore, read_states, write_states
from ..trainable import (
    TrainableFactory,
    clone_state,
    copy_into,
    cpu_state,
    mode_of,
    reseed_of,
    test_of,
)
from .base import BestPoint, Executor, TrainJob, TrainResult
from .local import build_population, run_job


def _require_ray() -> Any:
    # (exercised by tests/packaging/wheel_alone.sh, which has no Ray)
    return require_extra("ray", "the Ray executor", "the 'ray' package", "ray")


@dataclass(frozen=True)
class _JobError:
    """A job whose trainable raised (returned by the actor, so its other jobs go on)."""

    worker: int
    step: int
    traceback_text: str


class _Host:
    """One actor: the members dealt to it, trained one after another."""

    def __init__(self, factory: TrainableFactory, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.factory = factory
        self.members: dict[int, Any] = {}
        self.vec: Any = None
        self.mode = "max"
        self.best = BestPoint(math.inf)  # the round's best point here (see test_best)
        self.round_id: int | None = None

    def build(self, seeds: Mapping[int, int], batched: bool = True) -> list[str]:
        """Make (more) members (the modes they declare, for the driver to check); with
        ``batched``, train them as one batched population when their family declares one
        (:mod:`firepbt.executors.batched`)."""
        seeds = {int(w): int(s) for w, s in seeds.items()}
        self.members.update(build_population(self.factory, seeds))
        self.vec = None
        modes = sorted({mode_of(t) for t in self.members.values()})
        if batched and len(self.members) > 1 and len(modes) == 1:
            from .vectorized import VectorizedExecutor

            vec = VectorizedExecutor(self.factory, strict=False)
            vec.adopt(self.members)
            if vec.population is not None:
                self.vec = vec
        self.mode = modes[0]
        return modes

    def batched(self) -> bool:
        return self.vec is not None

    def pid(self) -> int:
        return os.getpid()

    def run_jobs(self, jobs: Sequence[TrainJob], best: float, one_by_one: bool = False,
                 round_id: int | None = None) -> list[TrainResult | _JobError] | str:
        """The jobs' results; ``"batch_failed"`` when the batched model raised (the members'
        states may be partly advanced: the driver restores them and asks again, one by one).
        The round's best point here is kept for :meth:`test_best` (``round_id``: the jobs'
        round; a new one starts from ``best``, the running best at its start)."""
        if round_id != self.round_id or round_id is None:
            self.best, self.round_id = BestPoint(best), round_id
        if self.vec is not None and len(jobs) > 1 and not one_by_one:
            try:
                return list(self.vec.train_round(jobs, best, best=self.best))
            except TrainableError:
                return "batch_failed"
        out: list[TrainResult | _JobError] = []
        for job in jobs:
            try:
                out.append(run_job(self.members[job.worker], job, self.best, self.mode))
            except TrainableError as exc:  # this member only; a ConfigError stops the run
                out.append(_JobError(job.worker, exc.step, exc.traceback_text))
        return out

    def test_best(self, worker: int, step: int) -> tuple[float | None, float]:
        """The test of the round's best point if this actor holds it (``BestPoint.test``)."""
        return self.best.test(worker, step)

    def get_states(self, workers: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The members' states with CPU tensors (they may go to a machine without a GPU)."""
        return {w: cpu_state(self.members[w].state_dict()) for w in workers}

    def set_states(self, workers: Sequence[int], *states: Mapping[str, Any]) -> None:
        """Load ``states[i]`` into ``workers[i]`` (states as separate arguments: Ray resolves
        ObjectRefs only at the top level)."""
        for w, s in zip(workers, states, strict=True):
            self.members[int(w)].load_state_dict(clone_state(s))

    def apply_copies(self, ops: Sequence[tuple[int, int, int | None, int | None]],
                     sources: Sequence[int], *exports: Mapping[int, Any]) -> None:
        """One wave of copies into this actor's members, in order: ``(source, dest, seed,
        None)`` between two of its members, ``(source, dest, seed, k)`` from the states that
        actor ``k`` exported (``exports[sources.index(k)]``; ObjectRefs passed as separate
        arguments, which Ray resolves)."""
        got = dict(zip(sources, exports, strict=True))
        for source, dest, seed, k in ops:
            if k is None:
                copy_into(self.members[source], self.members[dest], seed)
                continue
            self.members[dest].load_state_dict(clone_state(got[k][source]))
            if seed is not None:
                reseed_of(self.members[dest], seed)

    def write_part(self, path: str, workers: Sequence[int]) -> str:
        """Write these members' states as one part of a checkpoint; its SHA-256."""
        return write_states(Path(path), {w: self.members[w].state_dict() for w in workers})

    def sees(self, path: str) -> bool:
        """Whether this actor sees the file (the driver's probe of a shared filesystem)."""
        return Path(path).is_file()

    def test(self, worker: int) -> float | None:
        return test_of(self.members[worker])


class RayExecutor(Executor):
    """The population on Ray actors (see module doc).

    Args:
        factory: ``seed -> Trainable``; shipped to the actors (must be picklable by Ray).
        address: a running cluster (``ray://...`` or ``host:port``); default ``RAY_ADDRESS``,
            else a local Ray instance is started with ``num_cpus``.
        cpus_per_actor: CPUs each actor declares (and its torch threads); default 1.
        gpus_per_worker: GPUs each actor declares (fractions allowed); default 0.
        max_actors: at most this many actors (default: as many as the resources allow).
        max_failures: trainable errors tolerated per worker and round before it is retired.
        batched: each actor trains its members as one batched population when their family
            declares one (:mod:`firepbt.executors.batched`; results then equal the local executor's up
            to floating-point rounding, bitwise for the NQM), else one after another. With ``gpus_per_worker=1`` on one GPU, the
            whole population is one batched model on one GPU actor.
        restart_timeout: seconds to wait for room for a dead actor's replacement before its
            members are dealt to the surviving actors.
        checkpoint_writes: who writes the members' states at a checkpoint: ``"actors"`` (each
            its members, into the store's folder), ``"driver"`` (gathered in a background
            thread), or ``"auto"`` (the actors when they all see the store's folder).
        round_timeout: seconds a round's training may take (None: no deadline). The actors
            still busy then are killed and replaced from the round's start states, and every
            member they held is retired for the round (NaN evaluations, a ``worker_failure``
            with error ``round_timeout``): one actor is one process, so the members it trains
            share its fate - for a member of its own per hung ``train()``, give the actors
            one member each (``max_actors`` >= members, or as many CPUs).
    """

    #: the runner leaves the round's deadline to this executor (it retires, not stops)
    handles_round_timeout = True

    def __init__(self, factory: TrainableFactory, *, address: str | None = None,
                 num_cpus: int | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_worker: float = 0.0, max_actors: int | None = None,
                 max_failures: int = 2, batched: bool = True,
                 restart_timeout: float = 20.0, checkpoint_writes: str = "auto",
                 round_timeout: float | None = None) -> None:
        if checkpoint_writes not in ("auto", "actors", "driver"):
            raise ConfigError("checkpoint_writes", "'auto', 'actors' or 'driver'",
                              checkpoint_writes)
        self.factory = factory
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.cpus_per_actor = cpus_per_actor
        self.gpus_per_worker = gpus_per_worker
        self.max_actors = max_actors
        self.max_failures = max_failures
        self.batched = batched
        self.restart_timeout = restart_timeout
        self.round_timeout = round_timeout
        self.hosts: list[Any] = []
        self.home: dict[int, int] = {}  # worker -> index of the actor holding it
        self.seeds: dict[int, int] = {}
        self.checkpoint_writes = checkpoint_writes
        self._shared: dict[Path, bool] = {}  # store folder -> whether every actor sees it
        self._writer: ThreadPoolExecutor | None = None  # the driver's checkpoint writes
        # the states at the round's start, where they can be had: (workers, fetch) pairs
        self.boundary: list[tuple[tuple[int, ...], Callable[[], Mapping[int, Any]]]] = []
        self.failures: list[WorkerFailure] = []
        self._rounds = 0  # train_round calls, to tell the actors a new round from a retry
        self.mode = "max"
        self._started_ray = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _init_ray(self) -> Any:
        ray = _require_ray()
        if not ray.is_initialized():
            if self.address:
                check_address(self.address)
                ray.init(address=self.address, log_to_driver=False)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")  # loopback only
                self._started_ray = True
        return ray

    @property
    def n_actors(self) -> int:
        """Actors alive (a dead one whose members went to the survivors is None in hosts)."""
        return sum(h is not None for h in self.hosts)

    def _plan(self, n_members: int) -> int:
        """How many actors the cluster's resources allow (at least one, at most one per
        member); an explicit request the cluster cannot hold is refused."""
        ray = _require_ray()
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 1.0)), float(total.get("GPU", 0.0))
        if self.cpus_per_actor <= 0 or self.cpus_per_actor > cpus + 1e-9:
            raise ConfigError("threads (the CPUs of each Ray actor, cpus_per_actor)",
                              f"in (0, {cpus:g}] (the cluster's CPUs)", self.cpus_per_actor)
        n = int(cpus // self.cpus_per_actor + 1e-9)
        if self.gpus_per_worker > 0:
            if self.gpus_per_worker > gpus + 1e-9:
                raise ConfigError("gpus_per_worker", f"at most {gpus:g} (the cluster's GPUs)",
                                  self.gpus_per_worker)
            n = min(n, int(gpus / self.gpus_per_worker + 1e-9))
        if self.max_actors is not None:
            n = min(n, self.max_actors)
        return max(1, min(n, n_members))

    def _start_host(self, index: int) -> Any:
        """A new actor for the members dealt to ``index``, built from their seeds."""
        ray = _require_ray()
        cls = ray.remote(_Host).options(num_cpus=self.cpus_per_actor,
                                        num_gpus=self.gpus_per_worker, max_restarts=0)
        host = cls.remote(self.factory, int(max(1, self.cpus_per_actor)))
        mine = {w: self.seeds[w] for w, i in self.home.items() if i == index}
        return host, host.build.remote(mine, self.batched)

    def setup(self, seeds: Mapping[int, int]) -> None:
        ray = self._init_ray()
        self.seeds = {int(w): int(s) for w, s in seeds.items()}
        n = self._plan(len(self.seeds))
        self.home = {w: i % n for i, w in enumerate(sorted(self.seeds))}
        started = [self._start_host(i) for i in range(n)]
        self.hosts = [h for h, _ in started]
        modes = {m for ms in ray.get([b for _, b in started]) for m in ms}
        if len(modes) != 1:
            raise ValueError(f"all trainables must share one mode, got {sorted(modes)}")
        self.mode = modes.pop()
        self.mark_round()  # the first round's start (see Faults)

    def close(self) -> None:
        if not self.hosts and self._writer is None and not self._started_ray:
            return  # never started (e.g. Ray is not installed): nothing to stop
        ray = _require_ray()
        for h in self.hosts:
            if h is None:
                continue
            try:
                ray.kill(h)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.hosts = []
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- the executor contract -----------------------------------------------------------------

    def _members(self, index: int) -> list[int]:
        return sorted(w for w, i in self.home.items() if i == index)

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        ray = _require_ray()
        from ray.exceptions import RayActorError, RayTaskError

        pending: dict[Any, tuple[int, list[TrainJob]]] = {}
        self._rounds += 1
        round_id = self._rounds

        def submit(todo: list[TrainJob], one_by_one: bool = False) -> None:
            by_host: dict[int, list[TrainJob]] = {}
            for j in todo:
                by_host.setdefault(self.home[j.worker], []).append(j)
            for index, mine in sorted(by_host.items()):
                ref = self.hosts[index].run_jobs.remote(mine, best_score, one_by_one, round_id)
                pending[ref] = (index, mine)

        def restore(todo: list[TrainJob]) -> None:
            states = self._round_start_states([j.worker for j in todo])
            by_host: dict[int, list[int]] = {}
            for j in todo:
                by_host.setdefault(self.home[j.worker], []).append(j.worker)
            for index, ws in sorted(by_host.items()):
                self.hosts[index].set_states.remote(ws, *[states[w] for w in ws])

        submit(list(jobs))
        tries = {j.worker: 0 for j in jobs}
        results: dict[int, TrainResult] = {}
        from ..deadlines import clock

        deadline = None if self.round_timeout is None else clock() + self.round_timeout
        while pending:
            wait = None if deadline is None else max(0.0, deadline - clock())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
            if not ready:  # past the round's deadline: the busy actors are hung
                self._retire_hung(pending, jobs, results)
                break
            index, todo = pending.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except RayActorError as exc:  # the process or its node died
                # every member the actor held restarts from the round's start, so every job
                # of theirs this round runs again, finished ones included
                lost = set(self._members(index))
                rerun = [j for j in jobs if j.worker in lost]
                for j in rerun:
                    results.pop(j.worker, None)
                    self.failures.append(WorkerFailure(
                        j.worker, j.start, "actor_died", str(exc)[:2000],
                        "restarted from the state at the round's start"))
                for ref, (i2, _mine) in list(pending.items()):  # its other calls died with it
                    if i2 == index:
                        pending.pop(ref)
                self._restart(index)
                submit(rerun, one_by_one=True)
                continue
            except RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if isinstance(cause, ConfigError):  # a broken contract: retrying cannot help
                    raise cause from None
                raise
            if out == "batch_failed":  # find the failing member, from the round's start
                restore(todo)
                submit(todo, one_by_one=True)
                continue
            again = []
            for job, res in zip(todo, out, strict=True):
                if isinstance(res, TrainResult):
                    results[job.worker] = res
                    if progress is not None:
                        progress(sum(n for _, n in job.pieces))
                    continue
                w = job.worker
                tries[w] += 1
                retire = tries[w] > self.max_failures
                self.failures.append(WorkerFailure(
                    w, int(res.step), "trainable_error", res.traceback_text[-4000:],
                    "retired for the round (NaN evaluations)" if retire
                    else "restored from the state at the round's start and retried"))
                restore([job])
                if retire:
                    results[w] = _retired(job)
                else:
                    again.append(job)
            if again:
                submit(again, one_by_one=True)
        return [results[j.worker] for j in jobs]

    def _retire_hung(self, pending: dict[Any, tuple[int, list[TrainJob]]],
                     jobs: Sequence[TrainJob], results: dict[int, TrainResult]) -> None:
        """The round's deadline passed with calls still ``pending``: each busy actor is killed
        and replaced from the round's start states (:meth:`_restart`), and the members it
        held are retired for the round - NaN evaluations, which truncation selection refills
        by exploitation - with a ``worker_failure`` each."""
        ray = _require_ray()

        hung = sorted({index for index, _todo in pending.values()})
        pending.clear()
        for index in hung:
            lost = set(self._members(index))
            for j in jobs:
                if j.worker in lost:
                    results[j.worker] = _retired(j)
                    self.failures.append(WorkerFailure(
                        j.worker, j.start, "round_timeout",
                        f"actor {index} was still training past the round's deadline of "
                        f"{self.round_timeout:g} s",
                        "retired for the round (NaN evaluations); its actor was replaced "
                        "from the state at the round's start"))
            logging.getLogger("firepbt").warning(
                "round deadline of %g s passed: Ray actor %d (workers %s) was killed and "
                "replaced; its members are retired for the round", self.round_timeout, index,
                sorted(lost))
            with contextlib.suppress(Exception):
                ray.kill(self.hosts[index])
            self._restart(index)

    def _round_start_states(self, workers: Sequence[int]) -> dict[int, Any]:
        """The members' states at the round's start, fetched to the driver (a failure's path
        only): from the checkpoint taken then, or from the object store."""
        from ray.exceptions import RayError

        wanted: set[int] = set(workers)
        out: dict[int, Any] = {}
        for covered, fetch in self.boundary:
            if wanted.isdisjoint(covered):
                continue
            try:
                got = fetch()
            except RayError:  # the states lived in a dead actor or on a dead node
                raise StoreError(
                    "a Ray actor or node died and took the members' states at the round's start "
                    "with it; 'firepbt resume STORE' continues from the last checkpoint") from None
            except StoreError as exc:  # a part of the round's start checkpoint is unreadable
                raise StoreError(f"the members' states at the round's start cannot be read "
                                 f"({exc}); 'firepbt resume STORE' continues from the last "
                                 "checkpoint") from None
            out.update({w: got[w] for w in covered if w in wanted})
        return out

    def _restart(self, index: int) -> None:
        """The dead actor ``index``'s members, restored to the round's start: in a new actor
        when the cluster has room for one within ``restart_timeout`` seconds, else dealt to
        the surviving actors (a lost node's CPUs are gone)."""
        ray = _require_ray()

        members = self._members(index)
        start = self._round_start_states(members)
        states = [start[w] for w in members]
        self._shared.clear()  # a new actor may run where the store's folder is not seen
        host, built = self._start_host(index)
        ready, _ = ray.wait([built], timeout=self.restart_timeout)
        if ready:
            ray.get(built)
            ray.get(host.set_states.remote(members, *states))
            self.hosts[index] = host
            return
        ray.kill(host)  # no room: the survivors take the members
        self.hosts[index] = None
        survivors = [i for i, h in enumerate(self.hosts) if h is not None]
        if not survivors:
            raise StoreError("every Ray actor is gone; 'firepbt resume STORE' continues from "
                             "the last checkpoint")
        calls = []
        for k, w in enumerate(members):
            self.home[w] = survivors[k % len(survivors)]
        for i in survivors:
            mine = [w for w in members if self.home[w] == i]
            if mine:
                ray.get(self.hosts[i].build.remote({w: self.seeds[w] for w in mine},
                                                   self.batched))
                calls.append(self.hosts[i].set_states.remote(
                    mine, *[states[members.index(w)] for w in mine]))
        ray.get(calls)

    def copy(self, source: int, dest: int, seed: int | None = None) -> None:
        self.copy_many([(source, dest, seed)])

    def test_best(self, worker: int, step: int) -> Callable[[], tuple[float | None, float]]:
        """Start the test of the round's best point on the actor that holds it, and let the
        other actors free the best points they hold (before the round's copies, which run
        after); return a function that waits for it: the test runs while the driver decides.
        A test lost with its actor is None; a test that raises stops the run with the
        trainable's error, as on the local executor."""
        ray = _require_ray()
        from ray.exceptions import RayActorError, RayTaskError

        holder = self.home[worker]
        refs = {i: h.test_best.remote(worker, step) for i, h in enumerate(self.hosts)
                if h is not None}

        def wait() -> tuple[float | None, float]:
            got: tuple[float | None, float] = (None, 0.0)
            for i, ref in refs.items():
                try:
                    out = ray.get(ref)
                except RayActorError:
                    continue
                except RayTaskError as exc:
                    raise (exc.cause if getattr(exc, "cause", None) is not None else exc
                           ) from None
                if i == holder:
                    got = (out[0], out[1])
            return got
        return wait

    def copy_many(self, copies: Sequence[tuple[int, int, int | None]]) -> None:
        """``copy(source, dest, seed)`` for each, in order, in waves (module doc, Copies): per
        wave one export from each source actor to each receiving actor (only the states that
        actor needs), then one call per receiving actor. Returns when every copy is made; a
        trainable's error while loading a state is raised here, as the local executor does."""
        ray = _require_ray()
        from ray.exceptions import RayTaskError

        calls = []
        for wave in _waves(copies):
            exports: dict[tuple[int, int], list[int]] = {}
            for source, dest, _seed in wave:
                i, j = self.home[source], self.home[dest]
                if i != j and source not in exports.setdefault((i, j), []):
                    exports[i, j].append(source)
            refs = {key: self.hosts[key[0]].get_states.remote(ws)
                    for key, ws in sorted(exports.items())}
            ops: dict[int, list[tuple[int, int, int | None, int | None]]] = {}
            for source, dest, seed in wave:
                i, j = self.home[source], self.home[dest]
                ops.setdefault(j, []).append((source, dest, seed, None if i == j else i))
            for j, mine in sorted(ops.items()):
                sources = sorted({k for *_, k in mine if k is not None})
                calls.append(self.hosts[j].apply_copies.remote(
                    mine, sources, *[refs[k, j] for k in sources]))
        try:
            ray.get(calls)
        except RayTaskError as exc:
            raise (exc.cause if getattr(exc, "cause", None) is not None else exc) from None

    def mark_round(self) -> None:
        """The round's decisions are applied: the states now are the next round's start (kept
        in the object store, one object per actor, not fetched)."""
        ray = _require_ray()
        self.boundary = []
        for i, h in enumerate(self.hosts):
            if h is not None:
                ref = h.get_states.remote(self._members(i))
                self.boundary.append((tuple(self._members(i)), functools.partial(ray.get, ref)))

    def begin_checkpoint(self, store: ExperimentStore, round_index: int
                         ) -> Callable[[], str]:
        """Start writing the members' states as round ``round_index``'s checkpoint (module
        doc, Checkpoints) and return a function that waits for it and returns its name (for
        :meth:`~firepbt.store.Store.attach_checkpoint`). Call it after the round's copies: the
        actors write before they train the next round's jobs."""
        ray = _require_ray()
        alive = [(i, h) for i, h in enumerate(self.hosts) if h is not None]
        if self._writer is None:  # the driver's side of it runs in the background
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        if self._actors_write(store):
            folder = store.parts_folder(round_index).resolve()  # actors may run elsewhere
            parts = {i: (f"part-{i:03d}.pt", tuple(self._members(i))) for i, _ in alive}
            refs = {i: h.write_part.remote(str(folder / parts[i][0]), parts[i][1])
                    for i, h in alive}

            def part_states(i: int) -> Mapping[int, Any]:
                ray.get(refs[i])  # written (raises when the actor died before it was)
                return read_states(folder / parts[i][0])

            self.boundary = [(parts[i][1], functools.partial(part_states, i)) for i, _ in alive]

            def sealed() -> str:
                digests = ray.get([refs[i] for i, _ in alive])
                return store.seal_parts(round_index, {parts[i][0]: d for (i, _), d in
                                                      zip(alive, digests, strict=True)})
            return self._writer.submit(sealed).result
        gets = self._exports()
        gathered = self._writer.submit(lambda: _merged(ray.get(gets)))
        written = self._writer.submit(lambda: store.write_checkpoint(round_index,
                                                                     gathered.result()))
        # a failure's path takes the round's start from the states gathered for the checkpoint
        self.boundary = [(tuple(sorted(self.home)), gathered.result)]
        return written.result

    def _actors_write(self, store: ExperimentStore) -> bool:
        """Whether the actors write the checkpoint's parts: asked for, or (auto) every actor
        sees a probe file the driver wrote into the store's checkpoint folder."""
        if self.checkpoint_writes != "auto":
            return self.checkpoint_writes == "actors"
        folder = (Path(store.path) / "checkpoints").resolve()
        if folder not in self._shared:
            ray = _require_ray()
            probe = folder / f".probe-{secrets.token_hex(8)}"
            probe.write_text("firepbt")
            try:
                seen = ray.get([h.sees.remote(str(probe)) for h in self.hosts if h is not None])
            finally:
                probe.unlink(missing_ok=True)
            self._shared[folder] = all(seen)
        return self._shared[folder]

    def _exports(self) -> list[Any]:
        """Each live actor's members' states, as ObjectRefs (one call per actor)."""
        return [h.get_states.remote(self._members(i))
                for i, h in enumerate(self.hosts) if h is not None]

    def states(self) -> dict[int, dict[str, Any]]:
        """Every member's state, gathered to the driver."""
        return _merged(_require_ray().get(self._exports()))

    def load_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        ray = _require_ray()
        refs = {int(w): ray.put(dict(s)) for w, s in states.items()}
        calls = []
        for i, h in enumerate(self.hosts):
            if h is None:
                continue
            mine = [w for w in self._members(i) if w in refs]
            calls.append(h.set_states.remote(mine, *[refs[w] for w in mine]))
        ray.get(calls)
        held = {int(w): dict(s) for w, s in states.items()}
        self.boundary = [(tuple(sorted(held)), lambda: held)]

    def test(self, worker: int) -> float | None:
        ray = _require_ray()
        value: float | None = ray.get(self.hosts[self.home[worker]].test.remote(worker))
        return value

    def take_failures(self) -> list[WorkerFailure]:
        out, self.failures = self.failures, []
        return out


def _merged(parts: Sequence[Mapping[int, Any]]) -> dict[int, Any]:
    """The actors' ``{worker: state}`` exports as one mapping, in worker order."""
    return dict(sorted((w, st) for part in parts for w, st in part.items()))


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one line, a Ray address nothing answers at (``ray.init`` would retry for
    minutes): ``host:port`` or ``ray://host:port`` must accept a TCP connection within
    ``timeout`` seconds. ``auto`` and ``local`` are Ray's to resolve."""
    import socket

    if address in ("auto", "local"):
        return
    allowed = ("the address of a running Ray cluster's head, host:port (or ray://host:port), "
               "that answers from here")
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("ray_address", allowed, address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError("ray_address", allowed,
                          f"{address} ({exc.strerror or type(exc).__name__})") from None


def _waves(copies: Sequence[tuple[int, int, int | None]]
           ) -> list[list[tuple[int, int, int | None]]]:
    """Split copies, kept in order, into waves in which no copy reads a member that received
    weights earlier in the same wave (so a wave can read every source at its start)."""
    waves: list[list[tuple[int, int, int | None]]] = []
    written: set[int] = set()
    for source, dest, seed in copies:
        if not waves or source in written:
            waves.append([])
            written = set()
        waves[-1].append((source, dest, seed))
        written.add(dest)
    return waves


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
