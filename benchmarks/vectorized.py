"""Vectorized vs per-member executor vs the ideal, on MNIST-1D with the built-in MLP.

For N = 16, 22 and 50 members (40-256-256-10, batch 128), one synchronous round of
``--steps`` steps with evaluation every ``--eval`` steps, on one thread and on two, all in one
run. The ideal is N x one model's pure training time (``train`` alone, no evaluation) at the
same thread count. The vectorized and per-member executors are timed on the same round,
evaluations included, so their ratio to the ideal includes evaluation cost; a second column
times training alone. A roofline-style bound: the FLOPs of one training step (3 x the forward
matmul FLOPs) x N over the core's measured dense-matmul rate.

    .venv/bin/python benchmarks/vectorized.py [--steps 250] [--eval 25]
"""

from __future__ import annotations

import argparse
import time

import torch

from firepbt.executors import LocalExecutor, TrainJob
from firepbt.executors.vectorized import VectorizedExecutor
from firepbt.supervised import SupervisedPopulation
from firepbt.tasks.mnist1d import MNIST1DTrainable, load_data


def matmul_rate(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    n = 40
    for _ in range(n):
        a @ b
    return 2 * 512 ** 3 * n / (time.perf_counter() - t0)


def round_time(executor, n: int, steps: int, eval_every: int) -> float:
    executor.setup({w: w for w in range(n)})
    jobs = [TrainJob(w, 0, (({"lambda": 0.1}, steps),), eval_every) for w in range(n)]
    executor.train_round([TrainJob(w, 0, (({"lambda": 0.1}, eval_every),), eval_every)
                          for w in range(n)], -1e9)  # warm-up
    t0 = time.perf_counter()
    executor.train_round([TrainJob(j.worker, eval_every, j.pieces, eval_every) for j in jobs],
                         -1e9)
    return time.perf_counter() - t0


def pure_vectorized(n: int, steps: int) -> float:
    ex = VectorizedExecutor(MNIST1DTrainable)
    ex.setup({w: w for w in range(n)})
    pop = SupervisedPopulation([ex.trainables[w] for w in range(n)])
    settings = torch.zeros((steps, n, 3), dtype=torch.float64)
    settings[..., 0], settings[..., 1] = 0.05, 0.9  # lr, momentum; no weight decay
    pop.train(settings[:10])
    t0 = time.perf_counter()
    pop.train(settings)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--eval", type=int, default=25)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 22, 50])
    args = p.parse_args()
    load_data()
    flops_step = 3 * 2 * 128 * (40 * 256 + 256 * 256 + 256 * 10)
    print(f"MNIST-1D MLP 40-256-256-10, batch 128, {args.steps} steps, eval every {args.eval}")
    print(f"{'thr':>3s}{'N':>4s}{'ideal s':>9s}{'per-member':>11s}{'vectorized':>11s}"
          f"{'vec train':>10s}{'roofline':>10s}   (ratios to the ideal)")
    for threads in (1, 2):
        rate = matmul_rate(threads)
        torch.set_num_threads(threads)
        one = MNIST1DTrainable(0)
        one.train({"lambda": 0.1}, 20)
        t0 = time.perf_counter()
        one.train({"lambda": 0.1}, args.steps)
        single = time.perf_counter() - t0
        for n in args.sizes:
            ideal = n * single
            local = round_time(LocalExecutor(MNIST1DTrainable), n, args.steps, args.eval)
            vec = round_time(VectorizedExecutor(MNIST1DTrainable), n, args.steps, args.eval)
            vec_train = pure_vectorized(n, args.steps)
            roof = n * args.steps * flops_step / rate
            print(f"{threads:3d}{n:4d}{ideal:9.2f}{local / ideal:11.3f}{vec / ideal:11.3f}"
                  f"{vec_train / ideal:10.3f}{roof / ideal:10.3f}")
        print(f"    matmul rate {rate / 1e9:.1f} GFLOP/s on {threads} thread(s); one step "
              f"{flops_step / 1e6:.1f} MFLOP; one model {single / args.steps * 1e3:.3f} ms/step")


if __name__ == "__main__":
    main()
