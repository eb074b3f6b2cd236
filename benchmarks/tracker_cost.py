"""The driver time a round spends in the trackers (``--log``), at 22 and 200 workers.

FIRE PBT on the noisy quadratic (cheap training, so the trackers' share is as large as it
gets), 5 rounds of 60 steps with an evaluation every 5 (12 per worker per round), each tracker
alone and all three together, side by side in one process. "ms / round in the tracker" is the
time inside ``on_round`` per round, "ms once" that of ``start`` and ``close`` (a first
warm-up run, not shown, pays the imports and MLflow's table creation); "whole run vs
no tracker" is the run's wall time over the run without a tracker, measured next to it (noisy
on a shared machine; the first column is the one to read). W&B runs offline.

    .venv/bin/python benchmarks/tracker_cost.py              # 22 and 200 workers
    .venv/bin/python benchmarks/tracker_cost.py --workers 22
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


class Timed:
    """A tracker with a stopwatch around each call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.key = inner.key
        self.seconds = {"start": 0.0, "on_round": 0.0, "close": 0.0}

    def _timed(self, name, *args):
        fn = getattr(self.inner, name, None)
        if fn is None:
            return
        t0 = time.perf_counter()
        try:
            fn(*args)
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def start(self, info):
        self._timed("start", info)

    def on_round(self, report):
        self._timed("on_round", report)

    def close(self):
        self._timed("close")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, nargs="+", default=[22, 200])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    import torch

    from firepbt import ExperimentConfig, run
    from firepbt.tracking import make_tracker

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="firepbt-trackers-"))
    os.environ.setdefault("WANDB_DIR", str(tmp))
    rows = []
    try:
        for n in args.workers:
            cfg = ExperimentConfig(task="nqm", method="fire", workers=n,
                                   steps=60 * args.rounds, ready_interval=60, eval_interval=5,
                                   executor="local", seed=0)
            base = None
            for name in ("warm-up", "none", "tensorboard", "mlflow", "wandb", "all three"):
                kinds = {"none": [], "all three": ["tensorboard", "mlflow", "wandb"],
                         "warm-up": ["tensorboard", "mlflow", "wandb"]}.get(name, [name])
                specs = {"tensorboard": f"tensorboard:{tmp / 'tb'}",
                         "mlflow": f"mlflow:{tmp / 'ml'}", "wandb": "wandb:firepbt-bench"}
                trackers = [Timed(make_tracker(specs[k])) for k in kinds]
                t0 = time.perf_counter()
                run(cfg, tmp / f"s-{n}-{name.replace(' ', '-')}", callbacks=trackers,
                    progress=False)
                wall = time.perf_counter() - t0
                if name == "warm-up":  # imports, MLflow's database tables: once, not counted
                    continue
                base = wall if base is None else base
                per = sum(t.seconds["on_round"] for t in trackers) / args.rounds
                once = sum(t.seconds["start"] + t.seconds["close"] for t in trackers)
                rows.append((n, name, 1000 * per, 1000 * once, wall / base))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"FIRE PBT on nqm, {args.rounds} rounds x 60 steps, 12 evaluations per worker per round")
    print(f"{'workers':>7}  {'tracker':<12} {'ms / round in on_round':>23} "
          f"{'ms once (start+close)':>22} {'whole run vs no tracker':>24}")
    for n, name, ms, once, ratio in rows:
        print(f"{n:>7}  {name:<12} {ms:>23.1f} {once:>22.1f} {ratio:>23.2f}x")


if __name__ == "__main__":
    main()
