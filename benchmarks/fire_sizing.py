"""How big a FIRE PBT run must be before evaluators succeed: successes per run over workers,
rounds and evaluations per ready interval, on the noisy quadratic (the sizing paragraph of
docs/site/methods.md and the note `firepbt run` prints before a small run).

    .venv/bin/python benchmarks/fire_sizing.py                    # seeds 0-2, two processes
    .venv/bin/python benchmarks/fire_sizing.py --workers 8 --seeds 0 1 2 3 4

Each run drives the controller through the ask/tell loop of ``examples/ask_tell.py`` (as
``benchmarks/fire_rules.py``): ready every 60 steps, an evaluation every 60/k steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _fire_rules():
    spec = importlib.util.spec_from_file_location(
        "fire_rules", Path(__file__).resolve().parent / "fire_rules.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def one(task: str, workers: int, rounds: int, per_interval: int, seed: int) -> int:
    return int(_fire_rules().run_one(task, "defaults", seed, workers, 60 * rounds, 60,
                                     60 // per_interval)["successes"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="nqm")
    p.add_argument("--workers", type=int, nargs="+", default=[8, 12, 22])
    p.add_argument("--rounds", type=int, nargs="+", default=[8, 20, 50])
    p.add_argument("--per-interval", type=int, nargs="+", default=[4, 6, 12])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--procs", type=int, default=2)
    a = p.parse_args(argv)
    grid = [(w, r, k) for w in a.workers for r in a.rounds for k in a.per_interval]
    with ProcessPoolExecutor(a.procs) as pool:
        futures = {(w, r, k, s): pool.submit(one, a.task, w, r, k, s)
                   for w, r, k in grid for s in a.seeds}
        got = {key: f.result() for key, f in futures.items()}
    print(f"{a.task}, FIRE PBT evaluator successes per run (seeds {a.seeds}); ready every 60 "
          "steps")
    print(f"{'workers':>8} {'rounds':>7} {'evals/interval':>15} {'successes per seed':>24}"
          f" {'mean':>6}")
    for w, r, k in grid:
        xs = [got[w, r, k, s] for s in a.seeds]
        print(f"{w:8d} {r:7d} {k:15d} {' '.join(f'{x:3d}' for x in xs):>24} "
              f"{sum(xs) / len(xs):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
