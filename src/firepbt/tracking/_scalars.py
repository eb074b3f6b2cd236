"""What the built-in trackers write for a round: one series of ``(tag, step, value)``
(see :mod:`firepbt.tracking`)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..records import (
    EvaluatorSuccess,
    Exploit,
    WorkerState,
)
from ._base import RoundReport

# -- what the built-in trackers write ------------------------------------------------------

def worker_tag(worker: int, n_workers: int) -> str:
    """``w03`` for worker 3 of 22 (zero-padded so that tags sort)."""
    return f"w{worker:0{max(2, len(str(max(0, n_workers - 1))))}d}"


def scalars(report: RoundReport) -> list[tuple[str, int, float]]:
    """The ``(tag, step, value)`` series every built-in tracker writes for a round (see the
    module docstring), in step order; numbers only (a non-numeric hyperparameter is left out)."""
    n = len(report.workers)
    out: list[tuple[str, int, float]] = []
    for w, s, v in report.evaluations:
        out.append((f"objective/{worker_tag(w, n)}", s, float(v)))
    for w, s, v in report.tests:
        out.append((f"test/{worker_tag(w, n)}", s, float(v)))

    def numbers(values: Mapping[str, Any]) -> list[tuple[str, float]]:
        return [(k, float(v)) for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def hparams(workers: Sequence[WorkerState], step: int) -> None:
        subs: dict[tuple[int, str], list[float]] = {}
        for info in workers:
            now = info.hparams_at(step) if info.schedule is not None else info.hparams or {}
            for k, v in numbers(now):
                out.append((f"hparams/{k}/{worker_tag(info.worker, n)}", step, v))
                if info.role == "member" and info.subpopulation is not None:
                    subs.setdefault((info.subpopulation, k), []).append(v)
        for (sub, k), vs in sorted(subs.items()):
            out.append((f"subpop/P{sub + 1}/{k}", step, statistics.median(vs)))

    if report.initial is not None:
        hparams(report.initial, 0)
    # a schedule (random search) changes inside a round: each change at its own step
    start = report.step - report.steps // max(1, report.rounds)
    for info in report.workers:
        if info.schedule is None:
            continue
        at = 0
        for seg in info.schedule.segments:
            if start < at < report.step:
                for k, v in numbers(seg.hparams):
                    out.append((f"hparams/{k}/{worker_tag(info.worker, n)}", at, v))
            at += seg.steps
    hparams(report.workers, report.step)
    if report.best is not None:
        out.append(("best/objective", report.step, float(report.best[2])))
    exploits = report.of_kind(Exploit)
    successes = report.of_kind(EvaluatorSuccess)
    for d in exploits:
        out.append((f"events/exploit/{worker_tag(d.worker, n)}", report.step, float(d.source)))
    for d in successes:
        out.append((f"events/success/{worker_tag(d.target, n)}", report.step,
                    float(d.evaluator)))
    out.append(("events/exploits", report.step, float(len(exploits))))
    out.append(("events/successes", report.step, float(len(successes))))
    out.sort(key=lambda x: x[1])
    return out
