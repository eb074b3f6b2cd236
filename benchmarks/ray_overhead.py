"""Ray overhead: firepbt's Ray executor vs Ray Tune's synchronous PBT vs the ideal.

The same population - 16 MNIST-1D MLPs, 4,000 steps each, evaluation every 200 steps,
exploit/explore every 800 - on a local 2-CPU Ray instance (loopback), in one run:

(a) ``firepbt`` with ``executor="ray"`` (one long-lived actor per CPU, 8 members each);
(b) Ray Tune's ``PopulationBasedTraining(synch=True)`` with a function trainable that saves a
    checkpoint at every report (PBT needs one at every perturbation point), one CPU per trial,
    with ``reuse_actors=True`` (its best case; pass --tune-no-reuse for its default);
(c) the ideal: 16 x one model's pure training time (4,000 steps) / 2 cores, measured before
    and after (a) and (b) - this machine is shared and its speed drifts - the faster of the two
    taken (the stricter ideal).

Prints wall times, ratios to the ideal, and the bytes of checkpoint files each wrote.
Needs ``pip install 'ray[tune]'``.

    .venv/bin/python benchmarks/ray_overhead.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from firepbt import ExperimentConfig, run  # noqa: E402
from firepbt.tasks.mnist1d import MNIST1DTrainable, load_data  # noqa: E402

MEMBERS, STEPS, EVAL, READY = 16, 4000, 200, 800


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ideal() -> float:
    torch.set_num_threads(1)
    t = MNIST1DTrainable(0)
    t.train({"lambda": 0.1}, 50)
    t0 = time.perf_counter()
    t.train({"lambda": 0.1}, 1000)
    per_step = (time.perf_counter() - t0) / 1000
    return MEMBERS * STEPS * per_step / 2


def firepbt_ray(tmp: Path) -> tuple[float, float, int, int, float, float]:
    """Wall time of the whole run, of starting the actors (setup) within it, the checkpoint
    bytes, the actors, and the actors' training and evaluation seconds (their sums over the
    members, over the 2 CPUs: the wall time they take with both actors busy)."""
    from firepbt.executors import ray as ray_executor

    cfg = ExperimentConfig(task="mnist1d", method="pbt", workers=MEMBERS, steps=STEPS,
                           ready_interval=READY, eval_interval=EVAL, executor="ray")
    setup_time = [0.0]
    n_actors = [0]
    original = ray_executor.RayExecutor.setup

    def timed_setup(self, seeds):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        original(self, seeds)
        import ray

        ray.get([h.pid.remote() for h in self.hosts])  # actors are up
        n_actors[0] = len(self.hosts)
        setup_time[0] = time.perf_counter() - t

    ray_executor.RayExecutor.setup = timed_setup  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        run(cfg, tmp / "store")
        wall = time.perf_counter() - t0
    finally:
        ray_executor.RayExecutor.setup = original  # type: ignore[method-assign]
    from firepbt.store import Store

    st = Store.open(tmp / "store", readonly=True)
    rounds = st.rounds()
    st.close()
    train = sum(r.train_seconds for r in rounds) / 2
    evals = sum(r.eval_seconds for r in rounds) / 2
    return wall, setup_time[0], du(tmp / "store" / "checkpoints"), n_actors[0], train, evals


def tune_pbt(tmp: Path, reuse: bool) -> tuple[float, int]:
    from ray import tune
    from ray.tune import Checkpoint
    from ray.tune.schedulers import PopulationBasedTraining

    def trainable(config):  # type: ignore[no-untyped-def]
        torch.set_num_threads(1)
        t = MNIST1DTrainable(int(config["seed"]))
        step = 0
        ckpt = tune.get_checkpoint()
        if ckpt:
            with ckpt.as_directory() as d:
                state = torch.load(os.path.join(d, "state.pt"), weights_only=True)
            t.load_state_dict(state["trainable"])
            step = int(state["step"])
        while step < STEPS:
            t.train({"lambda": config["lambda"]}, EVAL)  # sets the (explored) lr every call
            step += EVAL
            with tempfile.TemporaryDirectory() as d:
                torch.save({"trainable": t.state_dict(), "step": step},
                           os.path.join(d, "state.pt"))
                tune.report({"acc": t.evaluate(), "step": step},
                            checkpoint=Checkpoint.from_directory(d))

    pbt = PopulationBasedTraining(time_attr="step", perturbation_interval=READY, synch=True,
                                  hyperparam_mutations={"lambda": tune.loguniform(2e-2, 6e-1)},
                                  metric="acc", mode="max")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lambda": tune.loguniform(2e-2, 6e-1), "seed": tune.randint(0, 10_000)},
        tune_config=tune.TuneConfig(scheduler=pbt, num_samples=MEMBERS, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=str(tmp / "tune"), stop={"step": STEPS},
                                  verbose=0))
    t0 = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - t0, du(tmp / "tune")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tune-no-reuse", action="store_true")
    args = p.parse_args()
    import ray

    load_data()
    first = ideal()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        sec, setup, size, actors, train, evals = firepbt_ray(Path(d))
        rows.append(("firepbt, Ray executor", sec, size))
        rows.append((f"  of which starting the {actors} actors", setup, 0))
        rows.append(("  firepbt without actor start-up", sec - setup, 0))
        rows.append(("    of which training (actors, 2 CPUs)", train, 0))
        rows.append(("    of which the protocol's evaluations", evals, 0))
        rows.append(("    the rest: engine, Ray, store", sec - setup - train - evals, 0))
    try:
        with tempfile.TemporaryDirectory() as d:
            sec, size = tune_pbt(Path(d), reuse=not args.tune_no_reuse)
            rows.append((f"Ray Tune PBT synch, reuse_actors={not args.tune_no_reuse}", sec, size))
    except ImportError as exc:
        rows.append((f"Ray Tune PBT: not run ({exc})", float("nan"), 0))
    ray.shutdown()
    last = ideal()
    base = min(first, last)
    print(f"{MEMBERS} members x {STEPS} steps (MNIST-1D MLP), eval every {EVAL}, exploit every "
          f"{READY}, local Ray with 2 CPUs; the ideal measured {first:.1f} s before and "
          f"{last:.1f} s after, the faster taken")
    print(f"{'':44s}{'wall s':>8s}{'x ideal':>9s}{'checkpoint MB':>15s}")
    print(f"{'ideal (16 x pure training / 2 cores)':44s}{base:8.1f}{1.0:9.3f}{0:15.1f}")
    for name, sec, size in rows:
        print(f"{name:44s}{sec:8.1f}{sec / base:9.3f}{size / 1e6:15.1f}")


if __name__ == "__main__":
    main()
