"""Per-member vs vectorized training on one GPU (issue 12), as ratios measured side by side.

For N = 16, 22, 50 and 200 members: the MNIST-1D MLP 40-256-256-10 (the vectorized executor's
batched-matmul fast path) and the ``mnist`` task's CNN (the ``torch.func`` path; on random
tensors of MNIST's shape, since timing does not depend on the pixels and the device machine
has no data). Both executors train the same round (``--steps`` steps, one evaluation at its
end); the table gives microseconds per member-step and the vectorized speed-up. Prints the
GPU's name; without CUDA it says so and exits 0.

    python benchmarks/gpu.py [--steps 100] [--sizes 16 22 50 200] [--models mlp cnn]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch

from firepbt.executors import LocalExecutor, TrainJob
from firepbt.executors.vectorized import VectorizedExecutor
from firepbt.supervised import SupervisedData, SupervisedTrainable
from firepbt.tasks.mnist import cnn
from firepbt.tasks.mnist1d import MNIST1DTrainable


def _mnist_shaped(n: int = 12_000) -> SupervisedData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    cut = n - 2_000
    return SupervisedData(x[:cut], y[:cut], x[cut:], y[cut:])


def _cnn(seed: int, data: SupervisedData, device: str) -> SupervisedTrainable:
    with torch.random.fork_rng(devices=[]):
        net = cnn()
    return SupervisedTrainable(seed, model=net, data=data, lr_param="lambda", lr_scale=0.5,
                               eval_batch=2000, device=device)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def per_member_step_us(executor, n: int, steps: int) -> float:
    """Microseconds per member-step of one round of ``steps`` (after a warm-up round)."""
    executor.setup({w: w for w in range(n)})
    warm = [TrainJob(w, 0, (({"lambda": 0.1}, 5),), 5) for w in range(n)]
    executor.train_round(warm, -1e9)
    jobs = [TrainJob(w, 5, (({"lambda": 0.1}, steps),), steps) for w in range(n)]
    _sync()
    t0 = time.perf_counter()
    executor.train_round(jobs, -1e9)
    _sync()
    executor.close()
    return (time.perf_counter() - t0) / (n * steps) * 1e6


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 22, 50, 200])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--local-max", type=int, default=50,
                   help="per-member timing above this N is extrapolated from this N (it is "
                   "linear in N: one member after another)")
    p.add_argument("--device", default="cuda",
                   help="cuda (default); cpu only checks that the script runs")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; run it on a GPU machine (skipped)")
        return 0
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (a check only)"
    print(f"GPU: {where}; torch {torch.__version__}; "
          f"{args.steps} steps per round, evaluation at its end")
    data = _mnist_shaped() if "cnn" in args.models else None
    factories = {"mlp": functools.partial(MNIST1DTrainable, device=args.device),
                 "cnn": functools.partial(_cnn, data=data, device=args.device)}
    names = {"mlp": "MNIST-1D MLP 40-256-256-10 (fast path)",
             "cnn": "mnist CNN conv16-conv32-fc (torch.func path)"}
    print(f"{'model':46s} {'N':>5s} {'per-member us':>14s} {'vectorized us':>14s} "
          f"{'speed-up':>9s}")
    local_cache: dict[str, float] = {}
    for model in args.models:
        for n in args.sizes:
            if n <= args.local_max or model not in local_cache:
                local = per_member_step_us(LocalExecutor(factories[model]), min(n, args.local_max),
                                           args.steps)
                local_cache[model] = local
            local = local_cache[model]
            vec = per_member_step_us(VectorizedExecutor(factories[model]), n, args.steps)
            note = "" if n <= args.local_max else f" (per-member from N={args.local_max})"
            print(f"{names[model]:46s} {n:5d} {local:14.1f} {vec:14.1f} {local / vec:8.1f}x"
                  f"{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
