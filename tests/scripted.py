"""A scripted executor and controller for the runner's tests: no training, no torch.

:class:`ScriptedExecutor` keeps one number per worker as its "network": ``train(hparams, n)``
adds ``hparams["lr"] * n``, an evaluation is the number, a test the number plus 1000. A copy
moves the number, so what a worker holds after a round's copies shows the order they were
applied in. Every call the runner makes is logged in :attr:`ScriptedExecutor.log`.

:class:`ScriptedController` returns, each round, the decisions a table gives for that step,
and logs what it observed, so a test can check what the runner told it and when.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from firepbt.controllers.base import Controller
from firepbt.executors import BestPoint, Executor, TrainJob, TrainResult
from firepbt.records import MEMBER, WorkerState


class ScriptedExecutor(Executor):
    """Workers as numbers (see the module doc); ``minimal=True`` leaves every optional
    capability to the base class (no ``test_best``: tests come in the results)."""

    def __init__(self, start: Mapping[int, float], mode: str = "max") -> None:
        self.start_values = dict(start)
        self.values: dict[int, float] = {}
        self.mode = mode
        self.log: list[tuple[Any, ...]] = []

    def setup(self, seeds: Mapping[int, int]) -> None:
        self.values = {w: float(self.start_values.get(w, 0.0)) for w in seeds}
        self.log.append(("setup", tuple(sorted(seeds))))

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None) -> list[TrainResult]:
        self.log.append(("train_round", tuple(j.worker for j in jobs)))
        out = []
        best = BestPoint(best_score)
        for job in jobs:
            step, evals, tests = job.start, [], []
            if job.evaluate_start:
                evals.append((step, self.values[job.worker]))
            for hparams, n in job.pieces:
                for _ in range(n):
                    self.values[job.worker] += float(hparams["lr"])
                    step += 1
                    if step % job.eval_interval == 0:
                        v = self.values[job.worker]
                        evals.append((step, v))
                        sc = v if self.mode == "max" else -v
                        if job.wants_test and best.beats(sc, step, job.worker):
                            tests.append((step, v + 1000.0))
            out.append(TrainResult(job.worker, tuple(evals), tuple(tests), 0.0, 0.0))
        return out

    def copy(self, source: int, dest: int, seed: int | None = None) -> None:
        self.log.append(("copy", source, dest))
        self.values[dest] = self.values[source]

    def states(self) -> dict[int, Any]:
        self.log.append(("states",))
        return {w: {"value": v} for w, v in self.values.items()}

    def load_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        self.log.append(("load_states",))
        self.values = {int(w): float(s["value"]) for w, s in states.items()}

    def test(self, worker: int) -> float | None:
        self.log.append(("test", worker))
        return self.values[worker] + 1000.0

    def close(self) -> None:
        self.log.append(("close",))


class ScriptedController(Controller):
    """Members with the given learning rates, one sub-population; each round's decisions
    from ``script`` (step -> decisions); what it was told is logged."""

    method = "pbt"

    def __init__(self, lrs: Mapping[int, float],
                 script: Mapping[int, list[Any]] | None = None,
                 log: list[tuple[Any, ...]] | None = None) -> None:
        self.lrs = dict(lrs)
        self.script = dict(script or {})
        self.log = log if log is not None else []
        self.rounds = 0

    def start(self) -> list[WorkerState]:
        return [WorkerState(w, MEMBER, 0, {"lr": lr}) for w, lr in sorted(self.lrs.items())]

    def decide(self, step: int, observations: Mapping[int, Sequence[tuple[int, float]]]
               ) -> list[Any]:
        self.rounds += 1
        self.log.append(("decide", step, {w: list(p) for w, p in observations.items()}))
        return list(self.script.get(step, []))

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds}

    def load_state_dict(self, state: Mapping[str, Any],
                        history: Mapping[int, Sequence[tuple[int, float]]] | None = None) -> None:
        self.rounds = int(state["rounds"])

    def best_candidates(self) -> list[int]:
        return sorted(self.lrs)

    @property
    def n_workers(self) -> int:
        return len(self.lrs)


def finite(x: float) -> bool:
    return math.isfinite(x)
