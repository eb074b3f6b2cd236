"""FIRE PBT controller cost: decision time per round as a fraction of the round's training.

The controller is fed fabricated curves (noisy saturating curves, 5 evaluations per round as
with ready 125 / eval 25) for a whole 48-round run at 22, 50, 200 and 1,000 workers, and every
``decide`` is timed. The round's training time is measured in the same run: one MNIST-1D MLP
step and one validation evaluation on one thread, times the workers' steps and evaluations of
a round (all workers on one core: the fraction for a machine with C cores is C times higher).

    .venv/bin/python benchmarks/controller_cost.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from firepbt.controllers import FirePBT  # noqa: E402
from firepbt.tasks.mnist1d import SPACE, MNIST1DTrainable, load_data  # noqa: E402

READY, EVAL, ROUNDS = 125, 25, 48


def round_training_seconds(workers: int) -> float:
    torch.set_num_threads(1)
    load_data()
    t = MNIST1DTrainable(0)
    t.train({"lambda": 0.1}, 50)
    t0 = time.perf_counter()
    t.train({"lambda": 0.1}, 250)
    step = (time.perf_counter() - t0) / 250
    t0 = time.perf_counter()
    for _ in range(5):
        t.evaluate()
    ev = (time.perf_counter() - t0) / 5
    return workers * (READY * step + READY // EVAL * ev)


def simulate(workers: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    fire = FirePBT(SPACE, ready_interval=READY, workers=workers, seed=seed)
    fire.start()
    level = {w: 0.5 + 0.1 * rng.random() for w in range(workers)}
    times = []
    for r in range(1, ROUNDS + 1):
        step = r * READY
        first = 0 if r == 1 else step - READY + EVAL
        active = [w for w in range(fire.n_members)] + [
            e for e, ev in fire.evaluators.items() if ev.active]
        obs = {}
        for w in active:
            pts = []
            for s in range(first, step + 1, EVAL):
                level[w] += 0.3 * (1 - level[w]) * rng.random() * 0.05
                pts.append((s, level[w] + rng.normal(0, 0.004)))
            obs[w] = pts
        t0 = time.perf_counter()
        decisions = fire.decide(step, obs)
        times.append(time.perf_counter() - t0)
        for d in decisions:  # copied weights: the receiver takes the source's level
            if d.kind == "exploit":
                level[d.worker] = level[d.source]
            elif d.kind == "assign_evaluator":
                level[d.evaluator] = level[d.parent]
            elif d.kind == "evaluator_success":
                level[d.target] = level[d.evaluator]
    return times


def main() -> None:
    print(f"FIRE PBT decide() per round ({ROUNDS} rounds, ready {READY}, eval every {EVAL}), "
          "fabricated curves; training time of a round measured on one core")
    print(f"{'workers':>8s}{'split':>12s}{'decide mean ms':>16s}{'max ms':>9s}"
          f"{'round train s':>15s}{'fraction':>10s}")
    for workers in (22, 50, 200, 1000):
        fire = FirePBT(SPACE, ready_interval=READY, workers=workers)
        times = simulate(workers)
        train = round_training_seconds(workers)
        split = f"{fire.n_subpopulations}x{fire.size}+{fire.n_evaluators}"
        mean = float(np.mean(times))
        print(f"{workers:8d}{split:>12s}{mean * 1e3:16.2f}{max(times) * 1e3:9.1f}"
              f"{train:15.2f}{mean / train:10.5f}")


if __name__ == "__main__":
    main()
