"""FIRE PBT's readings where the paper leaves a choice (``firepbt.controllers.fire.FireRules``),
measured against each other on the same seeds.

Each variant flips one rule of the defaults; every variant runs the same seeds, so the table
gives, besides each variant's mean, its difference from the defaults seed by seed (mean and
standard error of the paired differences, and on how many seeds it did better). The runs
drive the controller through its ask/tell API (``start``, ``decide``) in a plain loop - the
loop a user's own scheduler would run - with the built-in task's trainables, one process per
core, one thread each.

    .venv/bin/python benchmarks/fire_rules.py                       # nqm, 22 workers, 16 seeds
    .venv/bin/python benchmarks/fire_rules.py --workers 8 --seeds 16
    .venv/bin/python benchmarks/fire_rules.py --task mnist1d --workers 8 --steps 3000 \\
        --ready 120 --eval 10 --seeds 3

Measures: the top objective over the run among the best-effort members (P1; the paper's
"top validation"), the best P1 member's objective at the end, and evaluator successes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("OMP_NUM_THREADS", "1")

VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {},
    "evaluated_since=end": {"evaluated_since": "end"},
    "target_curve=restarts": {"target_curve": "restarts"},
    "separated_only=True": {"separated_only": True},
    "widened_range=False": {"widened_range": False},
    "receivers_as_targets=False": {"receivers_as_targets": False},
    "ties=exploit": {"ties": "exploit"},
    "ties=skip": {"ties": "skip"},
}


def rules_of(variant: str) -> dict[str, object]:
    """A variant's rules: a name of VARIANTS, or ``key=value`` pairs joined by ``+``."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    out: dict[str, object] = {}
    for part in variant.split("+"):
        key, value = part.split("=")
        out[key] = {"True": True, "False": False}.get(value, value)
    return out


def run_one(task_name: str, variant: str, seed: int, workers: int, steps: int, ready: int,
            every: int, method: str = "fire") -> dict[str, float]:
    import importlib.util
    from pathlib import Path

    import torch

    from firepbt import PBT, ExperimentConfig, FirePBT, FireRules
    from firepbt.build import build_controller
    from firepbt.tasks import get_task

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location(  # the ask/tell loop of the example
        "ask_tell", Path(__file__).resolve().parents[1] / "examples" / "ask_tell.py")
    example = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    task = get_task(task_name)
    config = ExperimentConfig(task=task_name, method=method, workers=workers, steps=steps,
                              ready_interval=ready, eval_interval=every, seed=seed)
    controller: FirePBT | PBT = build_controller(config, task.space, None)  # type: ignore
    if method == "fire":  # the same controller, seeded the same way, with the variant's rules
        controller = FirePBT(task.space, ready_interval=ready, workers=workers,
                             seed=controller.rng, rules=FireRules(**rules_of(variant)))
    sign = -1.0 if getattr(task.make(0), "mode", "max") == "min" else 1.0
    t0 = time.perf_counter()
    decisions, seen = example.drive(config, task.make, task.space, controller)
    best = controller.best_candidates()
    top = max(v for w in best for _s, v in seen[w] if math.isfinite(v))
    final = max(seen[w][-1][1] for w in best)
    successes = sum(d.kind == "evaluator_success" for d in decisions)
    return {"top": sign * top, "final": sign * final, "successes": successes,
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="nqm")
    p.add_argument("--workers", type=int, default=22)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--ready", type=int, default=60)
    p.add_argument("--eval", type=int, default=5, dest="every")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS),
                   help="names of VARIANTS, or rules as key=value joined by '+' "
                        "(e.g. separated_only=False+evaluated_since=start)")
    p.add_argument("--pbt", action="store_true", help="add classic PBT as a reference row")
    p.add_argument("--procs", type=int, default=2)
    a = p.parse_args(argv)
    rows = [(v, "fire") for v in a.variants] + ([("pbt", "pbt")] if a.pbt else [])
    jobs = {(v, s): (a.task, v if m == "fire" else "defaults", s, a.workers, a.steps, a.ready,
                     a.every, m) for v, m in rows for s in range(a.seeds)}
    with ProcessPoolExecutor(a.procs) as pool:
        futures = {k: pool.submit(run_one, *args) for k, args in jobs.items()}
        results = {k: f.result() for k, f in futures.items()}
    from firepbt.tasks import get_task

    minimise = getattr(get_task(a.task).make(0), "mode", "max") == "min"
    better = (lambda x, y: x < y) if minimise else (lambda x, y: x > y)
    print(f"{a.task}, {a.workers} workers x {a.steps} steps, ready {a.ready}, eval every "
          f"{a.every}, seeds 0-{a.seeds - 1} ({'lower' if minimise else 'higher'} is better); "
          "paired differences against the defaults, seed by seed")
    head = (f"{'variant':{max(24, *(len(v) for v, _m in rows))}} {'top mean':>10} {'d top':>10} {'+-':>9} {'better':>7} "
            f"{'final mean':>11} {'d final':>10} {'+-':>9} {'better':>7} {'succ':>6}")
    print(head)
    width = max(24, *(len(v) for v, _m in rows))
    for v, _m in rows:
        out = []
        for key in ("top", "final"):
            xs = [results[v, s][key] for s in range(a.seeds)]
            ds = [results[v, s][key] - results["defaults", s][key] for s in range(a.seeds)]
            n = len(ds)
            mean_d = sum(ds) / n
            se = (math.sqrt(sum((d - mean_d) ** 2 for d in ds) / (n - 1) / n) if n > 1
                  else float("nan"))
            wins = sum(better(results[v, s][key], results["defaults", s][key])
                       for s in range(a.seeds))
            out.append((sum(xs) / n, mean_d, se, wins))
        succ = sum(results[v, s]["successes"] for s in range(a.seeds)) / a.seeds
        (t, dt, st, wt), (f, df, sf, wf) = out
        print(f"{v:{width}} {t:10.5g} {dt:+10.3g} {st:9.2g} {wt:4d}/{a.seeds:<2d} "
              f"{f:11.5g} {df:+10.3g} {sf:9.2g} {wf:4d}/{a.seeds:<2d} {succ:6.1f}")
    secs = sum(r["seconds"] for r in results.values())
    print(f"({len(results)} runs, {secs:.0f} s of training and deciding in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
