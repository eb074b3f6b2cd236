"""Does the learning-rate schedule matter for V-MPO on Pendulum? (the issue's choice of env)

Run:  .venv/bin/python examples/vmpo_lr_schedules.py [--seeds 0 1 2] [--steps 2000] [--jobs 2]

Trains the built-in ``vmpo`` agent (Pendulum-v1, epsilon_eta 0.01) under constant learning
rates and under step decays (/10 at 50% and again at 80% of training), a few seeds each, one
process per core, and prints per schedule: the final average return (mean of the last 3
evaluations, every 50 updates) and the best one, mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SCHEDULES = {
    "constant 1e-4": (1e-4, False), "constant 3e-4": (3e-4, False),
    "constant 1e-3": (1e-3, False), "constant 3e-3": (3e-3, False),
    "decay from 1e-3": (1e-3, True), "decay from 3e-3": (3e-3, True),
}


def lr_at(name: str, step: int, steps: int) -> float:
    lr, decay = SCHEDULES[name]
    if decay:
        lr *= (0.1 if step >= steps // 2 else 1.0) * (0.1 if step >= 4 * steps // 5 else 1.0)
    return lr


def one(name: str, seed: int, steps: int) -> tuple[str, int, float, float]:
    import torch

    torch.set_num_threads(1)
    from firepbt.tasks import get_task

    t = get_task("vmpo").make(seed)
    values = []
    for s in range(0, steps, 50):
        t.train({"lr": lr_at(name, s, steps), "epsilon_eta": 0.01}, 50)
        values.append(t.evaluate())
    return name, seed, float(np.mean(values[-3:])), float(np.max(values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [(n, s, a.steps) for n in SCHEDULES for s in a.seeds]
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(one, *zip(*jobs, strict=True)))
    print(f"V-MPO on Pendulum-v1, {a.steps} updates, seeds {a.seeds}: average return")
    print(f"| {'learning-rate schedule':24s} | {'final (last 3 evals)':>22s} | {'best':>16s} |")
    print(f"|{'-' * 26}|{'-' * 24}|{'-' * 18}|")
    for name in SCHEDULES:
        fin = [r[2] for r in results if r[0] == name]
        best = [r[3] for r in results if r[0] == name]
        print(f"| {name:24s} | {np.mean(fin):10.0f} ± {np.std(fin, ddof=1):9.0f} "
              f"| {np.mean(best):6.0f} ± {np.std(best, ddof=1):7.0f} |")


if __name__ == "__main__":
    main()
