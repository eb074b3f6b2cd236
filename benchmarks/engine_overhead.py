"""Engine overhead: the synchronous engine's wall time over the members' pure training time.

One core (torch and BLAS limited to one thread). The same population - N MNIST-1D MLPs
(40-256-256-10, batch 128), PBT, ready every 125 steps, evaluation every 25 - is run
(a) through firepbt (local executor, SQLite store, checkpoints every round, evaluations), and
(b) as the ideal: each member's ``train`` alone for the same number of steps, one after another
    (measured before and after (a), the faster taken).
Prints a table with the ratio and where the extra time goes. Run:

    .venv/bin/python benchmarks/engine_overhead.py [--members 16] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from firepbt import ExperimentConfig, run  # noqa: E402
from firepbt.store import Store  # noqa: E402
from firepbt.tasks.mnist1d import MNIST1DTrainable, load_data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ready-interval", type=int, default=125)
    p.add_argument("--eval-interval", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(1)
    load_data()  # generate or read the cached data outside the timings

    def pure_training() -> float:
        """(b) the ideal: pure training, member after member (built before the clock starts:
        the first torch optimizer of a process imports torch's compiler stack, ~1 s)."""
        members = [MNIST1DTrainable(seed) for seed in range(args.members)]
        t0 = time.perf_counter()
        for t in members:
            t.train({"lambda": 0.1}, args.steps)
        return time.perf_counter() - t0

    first = pure_training()  # measured before and after the engine (the machine drifts)

    # (a) the engine
    cfg = ExperimentConfig(task="mnist1d", method="pbt", workers=args.members, steps=args.steps,
                           ready_interval=args.ready_interval, eval_interval=args.eval_interval)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run(cfg, os.path.join(d, "s"))
        engine = time.perf_counter() - t0
        st = Store.open(os.path.join(d, "s"))
        rounds = st.rounds()
        train = sum(r.train_seconds for r in rounds)
        evals = sum(r.eval_seconds for r in rounds)
        decide = sum(r.decide_seconds for r in rounds)
        st.close()
    other = engine - train - evals - decide
    last = pure_training()
    ideal = min(first, last)
    print(f"MNIST-1D MLP, {args.members} members x {args.steps} steps, ready {args.ready_interval},"
          f" eval every {args.eval_interval}, one thread; the ideal measured {first:.2f} s "
          f"before and {last:.2f} s after, the faster taken")
    print(f"{'':34s}{'seconds':>9s}{'x ideal':>9s}")
    rows = [("ideal (pure training, sum)", ideal), ("engine wall time", engine),
            ("  of which training", train), ("  of which evaluations", evals),
            ("  of which controller", decide), ("  of which store+checkpoints+copies", other)]
    for name, sec in rows:
        print(f"{name:34s}{sec:9.2f}{sec / ideal:9.3f}")
    print(f"engine without evaluations / ideal: {(engine - evals) / ideal:.3f}")


if __name__ == "__main__":
    main()
