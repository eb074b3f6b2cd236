"""The driver's share of a round at scale (issue 13), simulated with cheap trainables.

200 and 1,000 workers (PBT and FIRE PBT) whose ``train`` is a few arithmetic operations, on a
local Ray instance: with training nearly free, a round's wall time is the driver's cost -
deciding, applying the decisions (copies between actors), committing the round to the store
and scheduling the actors' jobs. The table splits it per round and gives the share it would
take of a round whose training costs 1 s per member (every member on its own CPU, so such a
round lasts 1 s plus the driver's part).

    python benchmarks/ray_driver.py [--rounds 8] [--sizes 200 1000] [--checkpoint-interval 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from firepbt import ExperimentConfig, LogUniform, Space  # noqa: E402
from firepbt.runner import Runner  # noqa: E402
from firepbt.store import Store  # noqa: E402


class Cheap:
    """w moves towards 1 at rate lr: a few arithmetic operations per train call."""

    def __init__(self, seed: int) -> None:
        self.w = (seed % 97) / 200.0

    def train(self, hparams, steps):  # type: ignore[no-untyped-def]
        for _ in range(steps):
            self.w += hparams["lr"] * (1.0 - self.w)

    def evaluate(self) -> float:
        return self.w

    def state_dict(self):  # type: ignore[no-untyped-def]
        return {"w": self.w}

    def load_state_dict(self, state):  # type: ignore[no-untyped-def]
        self.w = float(state["w"])


def one(method: str, workers: int, rounds: int, interval: int, tmp: Path) -> dict[str, float]:
    import firepbt.ray_executor as rex

    cfg = ExperimentConfig(task="cheap", method=method, workers=workers, steps=10 * rounds,
                           ready_interval=10, eval_interval=5, executor="ray",
                           checkpoint_interval=interval)
    times = {"train_round": 0.0, "decide": 0.0, "apply": 0.0, "commit": 0.0}
    st = Store.create(tmp / f"{method}-{workers}", cfg.to_dict())
    runner = Runner(cfg, Cheap, Space({"lr": LogUniform(1e-3, 1e-1)}), st,
                    executor=rex.RayExecutor(Cheap))
    runner.start_new()

    def timed(obj, name, key):  # type: ignore[no-untyped-def]
        fn = getattr(obj, name)

        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key] += time.perf_counter() - t0
        setattr(obj, name, wrapper)

    timed(runner.executor, "train_round", "train_round")
    timed(runner.controller, "decide", "decide")
    timed(runner, "_apply", "apply")
    timed(runner.store, "commit_round", "commit")
    t0 = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - t0
    runner.executor.close()
    st.close()
    per = {k: v / rounds * 1e3 for k, v in times.items()}
    per["round"] = wall / rounds * 1e3
    per["other"] = per["round"] - sum(per[k] for k in times)
    per["actors"] = float(len(runner.executor.hosts) or 0)
    return per


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--checkpoint-interval", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=["pbt", "fire"], choices=["pbt", "fire"])
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    print(f"cheap trainables, local Ray with 2 CPUs (2 actors), {args.rounds} rounds, "
          f"checkpoint every {args.checkpoint_interval} round(s); milliseconds per round")
    print(f"{'method':6s} {'workers':>7s} {'round':>8s} {'jobs':>8s} {'decide':>8s} "
          f"{'apply':>8s} {'commit':>8s} {'other':>8s} {'share of a 1 s round':>21s}")
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            for method in args.methods:
                r = one(method, n, args.rounds, args.checkpoint_interval, Path(d))
                share = r["round"] / (1000.0 + r["round"])
                print(f"{method:6s} {n:7d} {r['round']:8.1f} {r['train_round']:8.1f} "
                      f"{r['decide']:8.1f} {r['apply']:8.1f} {r['commit']:8.1f} "
                      f"{r['other']:8.1f} {share:20.1%}")
    ray.shutdown()


if __name__ == "__main__":
    main()
