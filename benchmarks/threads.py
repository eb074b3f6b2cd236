"""PyTorch intra-op threads for the population: wall time of the same experiment at 1 and 2
threads and at the default (``threads=None``: the cores not busy when the run starts), per
executor, on this machine as it is and with one core kept busy by another process (a shared
machine), side by side in one run (compare the ratios, not the seconds).

The experiment is `make run`'s (FIRE PBT on MNIST-1D, 12 workers, ready every 125 steps,
evaluations every 25), shortened to ``--steps`` per worker. Every configuration runs
``--repeats`` times, interleaved, and the table shows the median.

    .venv/bin/python benchmarks/threads.py [--steps 500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from firepbt.api import run
from firepbt.config import ExperimentConfig
from firepbt.tasks.mnist1d import load_data


def busy() -> None:  # another process's work on one core
    while True:
        pass


def one(executor: str, threads: int | None, steps: int, base: Path, i: int) -> float:
    cfg = ExperimentConfig(task="mnist1d", method="fire", workers=12, steps=steps,
                           ready_interval=125, eval_interval=25, executor=executor,
                           threads=threads)
    t0 = time.perf_counter()
    run(cfg, base / f"{executor}-{threads}-{i}")
    return time.perf_counter() - t0


def table(steps: int, repeats: int, base: Path, label: str) -> None:
    configs = [(e, t) for e in ("vectorized", "local") for t in (1, 2, None)]
    times: dict[tuple[str, int | None], list[float]] = {c: [] for c in configs}
    for i in range(repeats):
        for c in configs:
            times[c].append(one(*c, steps, base / label, i))
    print(f"\n{label}: make run's experiment, {steps} steps per worker, median of {repeats}")
    print(f"{'executor':<12} {'threads':>14} {'wall s':>8} {'vs 1 thread':>12}")
    for e, t in configs:
        med = statistics.median(times[(e, t)])
        ref = statistics.median(times[(e, 1)])
        name = "default (auto)" if t is None else str(t)
        print(f"{e:<12} {name:>14} {med:>8.1f} {med / ref:>11.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)  # the default would leave an explicit setting
    load_data()  # generate and cache the data once, outside the timings
    print(f"{torch.get_num_threads()} cores visible to PyTorch")
    with tempfile.TemporaryDirectory() as tmp:
        table(args.steps, args.repeats, Path(tmp), "machine as it is")
        hog = multiprocessing.Process(target=busy, daemon=True)
        hog.start()
        time.sleep(65)  # let the 1-minute load average see it, as a real neighbour would
        try:
            table(args.steps, args.repeats, Path(tmp), "one core busy elsewhere")
        finally:
            hog.terminate()


if __name__ == "__main__":
    main()
