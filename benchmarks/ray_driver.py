"""The driver's share of a round at scale (issue 13), simulated with cheap trainables.

200 and 1,000 workers (PBT and FIRE PBT) whose ``train`` is a few arithmetic operations, on a
local Ray instance with two actors. The table gives, per round, the wall time (with training
nearly free it is the round's overhead: the actors' side - serialising states, writing their
checkpoint parts - included) split into its parts as the driver sees them (``jobs``: submitting
the round's jobs and waiting for them; ``decide``; ``apply``: sending the copies; ``commit``:
the round's SQLite transaction; ``other``: the rest - binding the last checkpoint, the round's
bookkeeping), and the driver process's CPU time (all its threads: Ray's, the checkpoint
thread's). The share is the driver's CPU time over a round whose training takes 1 s per member
(every member on its own CPU, so such a round lasts 1 s plus the driver's serial part).

Each case runs ``--repeats`` times (this machine is shared and noisy): the row is the run with
the median driver CPU, and the last column the range of the share over the runs.

    python benchmarks/ray_driver.py [--rounds 12] [--repeats 3] [--sizes 200 1000]
        [--checkpoint-interval 1]
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
from firepbt.build import ResolvedTask  # noqa: E402
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
    """Per-round milliseconds: medians over the rounds after the first (which also probes the
    filesystem and warms the caches) of the wall time, its parts, and the driver's CPU time."""
    import itertools
    import statistics

    import firepbt.executors.ray as rex

    cfg = ExperimentConfig(task="cheap", method=method, workers=workers, steps=10 * rounds,
                           ready_interval=10, eval_interval=5, executor="ray",
                           checkpoint_interval=interval)
    parts = ("train_round", "decide", "apply", "commit")
    times: dict[str, list[float]] = {k: [] for k in parts}
    ends: list[tuple[float, float]] = []  # (wall, driver CPU) at each round's end

    def progress(step, total, info):  # type: ignore[no-untyped-def]
        if info.get("done"):
            ends.append((time.perf_counter(), time.process_time()))

    tmp.mkdir(parents=True, exist_ok=True)
    st = Store.create(tmp / f"{method}-{workers}", cfg.to_dict())
    runner = Runner(cfg, ResolvedTask(Cheap, Space({"lr": LogUniform(1e-3, 1e-1)})), st,
                    executor=rex.RayExecutor(Cheap), progress=progress)
    runner.start_new()

    def timed(obj, name, key):  # type: ignore[no-untyped-def]
        fn = getattr(obj, name)

        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key].append(time.perf_counter() - t0)
        setattr(obj, name, wrapper)

    timed(runner.executor, "train_round", "train_round")
    timed(runner.controller, "decide", "decide")
    timed(runner, "_apply", "apply")
    timed(runner.store, "commit_round", "commit")
    ends.append((time.perf_counter(), time.process_time()))
    runner.run()
    runner.executor.close()
    st.close()

    def median_ms(xs: list[float]) -> float:
        return statistics.median(xs[1:]) * 1e3

    per = {k: median_ms(v) for k, v in times.items()}
    per["round"] = median_ms([b[0] - a[0] for a, b in itertools.pairwise(ends)])
    per["cpu"] = median_ms([b[1] - a[1] for a, b in itertools.pairwise(ends)])
    per["other"] = per["round"] - sum(per[k] for k in parts)
    return per


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--checkpoint-interval", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=["pbt", "fire"], choices=["pbt", "fire"])
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    print(f"cheap trainables, local Ray with 2 CPUs (2 actors), {args.rounds} rounds, "
          f"checkpoint every {args.checkpoint_interval} round(s); milliseconds per round "
          f"(medians over rounds 2-{args.rounds}; the run of median driver CPU of "
          f"{args.repeats})")
    print(f"{'method':6s} {'workers':>7s} {'round':>8s} {'jobs':>8s} {'decide':>8s} "
          f"{'apply':>8s} {'commit':>8s} {'other':>8s} {'driver CPU':>11s} "
          f"{'share of a 1 s round':>21s} {'over the runs':>14s}")
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            for method in args.methods:
                runs = sorted((one(method, n, args.rounds, args.checkpoint_interval,
                                   Path(d) / f"{k}") for k in range(args.repeats)),
                              key=lambda r: r["cpu"])
                r = runs[len(runs) // 2]
                share = r["cpu"] / (1000.0 + r["cpu"])
                lo, hi = (x["cpu"] / (1000.0 + x["cpu"]) for x in (runs[0], runs[-1]))
                print(f"{method:6s} {n:7d} {r['round']:8.1f} {r['train_round']:8.1f} "
                      f"{r['decide']:8.1f} {r['apply']:8.1f} {r['commit']:8.1f} "
                      f"{r['other']:8.1f} {r['cpu']:11.1f} {share:20.1%} "
                      f"{f'{lo:.1%}-{hi:.1%}':>14s}")
    ray.shutdown()


if __name__ == "__main__":
    main()
