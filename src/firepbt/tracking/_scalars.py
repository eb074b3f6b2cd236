"""What the built-in trackers write for a round: one series of ``(tag, step, value)``
(see :mod:`firepbt.tracking`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

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

    def hparams(workers: Sequence[WorkerState], step: int) -> None:
        subs: dict[tuple[int, str], list[float]] = {}
        for info in workers:
            for k, v in (info.hparams or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append((f"hparams/{k}/{worker_tag(info.worker, n)}", step, float(v)))
                    if info.role == "member" and info.subpopulation is not None:
                        subs.setdefault((info.subpopulation, k), []).append(float(v))
        for (sub, k), vs in sorted(subs.items()):
            out.append((f"subpop/P{sub + 1}/{k}", step, statistics.median(vs)))

    if report.initial is not None:
        hparams(report.initial, 0)
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
