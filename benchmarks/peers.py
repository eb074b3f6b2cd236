"""FIRE PBT against what a user would pick instead, on the same work (issue 32, part 2):
Ray Tune's ``PopulationBasedTraining`` and ``PB2`` next to firepbt's random search (the
hand-tuned schedule), PBT and FIRE PBT, on MNIST-1D with Table 1's protocol.

Every run is measured the same way: one run at a time, in a child process of this script,
which is made a subreaper (``PR_SET_CHILD_SUBREAPER``) so that every process the run starts -
for Tune, Ray's GCS, raylet, agents and worker processes - stays in its process tree until
reaped. Wall time: from the start to the last process of the tree reaped. CPU time: every
process of the tree sampled from /proc every 0.2 s, each process's own user + system time at
its last sample, summed (``cpu_s``). The ``rusage`` of the reaped processes
(``cpu_rusage_s``) is kept too: it is exact for a tree whose processes are all reaped by a
``wait``, as firepbt's are, but Ray's raylet ignores SIGCHLD, so its workers' time reaches no
``rusage`` (on a 6-worker Tune run: 15 CPU-s by rusage, 67 sampled). The replay (the top
point's schedule retrained from scratch on the full training set, paper 4.1) is a second
measured child.

    .venv/bin/python benchmarks/peers.py                        # all five methods, seeds 0 1 2
    .venv/bin/python benchmarks/peers.py --methods tune-pbt tune-pb2 random pbt
    .venv/bin/python benchmarks/peers.py --methods fire --wait-for-commit "N1/N2 decided"
    .venv/bin/python benchmarks/peers.py --out runs/peers-smoke --workers 4 --steps 240 \\
        --seeds 0                                               # a small smoke test

Each finished run is a JSON file in ``OUT/runs`` and is skipped when the command is run again
(a run stopped midway starts again from scratch, so that its time is one measurement); the
table (mean +- std over seeds) is printed and written to ``OUT/peers.md``, ``OUT/peers.csv``,
with every run's measures in ``OUT/peers.json``.

- ``random``, ``pbt``, ``fire``: ``firepbt run mnist1d --method M --workers 22 --steps 6000
  --ready-interval 120 --eval-interval 10 --seed S --executor local --threads 1 --no-progress
  --store DIR`` then ``firepbt replay DIR --json`` - what ``firepbt compare mnist1d`` runs -
  read back with ``firepbt.open_experiment``.
- ``tune-pbt``, ``tune-pb2``: a ``tune.Trainable`` wrapping firepbt's ``MNIST1DTrainable``
  (built by the task's factory: same data, network, initialisation; one Tune iteration = 10
  training steps and a validation evaluation), the population started from the same 22 seeds
  and initial lambdas as firepbt's PBT for that seed, synchronous, perturbation every 12
  iterations, quantile 0.25, one CPU per trial (two trials at a time on two cores),
  ``reuse_actors=True``, checkpoints on tmpfs (``/dev/shm``). PBT explores as the paper does
  (lambda x 0.5 / 0.8 / 1.25 / 2 chosen uniformly, no resampling, clipped to [1e-4, 3]); PB2
  searches log10(lambda) in [-4, log10 3] (the same bounds, in log space). The top trial's
  schedule is retraced from Tune's policy log (``log_config=True``: ``pbt_global.txt``, every
  exploit in order) and checked against the schedule the trainable carries in its
  checkpoints.

Cost: PB2 is the slow one. Ray's PB2 chooses its GP's data window at every explore by fitting
one GP per window from 200 points up to all of them (``pb2_utils.select_length``, in the
driver, one thread), so its scheduler's time per round grows with the rounds: 468 s per round
by round 44 of 49 on a 2-core machine (trainings: about 20 s per round), about 2.5-3 hours per
seed at 22 workers. Run it on its own (``--methods tune-pb2``) in a long session.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

METHODS = ("tune-pbt", "tune-pb2", "random", "pbt", "fire")
FIREPBT_METHODS = ("random", "pbt", "fire")
LABELS = {"tune-pbt": "Ray Tune PBT", "tune-pb2": "Ray Tune PB2",
          "random": "RS hand-tuned schedule (firepbt)", "pbt": "PBT (firepbt)",
          "fire": "FIRE PBT"}
FACTORS = (0.5, 0.8, 1.25, 2.0)  # the paper's explore (firepbt.tasks.mnist1d.SPACE's factors)
REPO = Path(subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse",
                           "--show-toplevel"], capture_output=True, text=True,
                          check=True).stdout.strip())


# -- the firepbt task's space, seeds and replay (one place) -----------------------------------

def space_limits() -> tuple[float, float, float, float]:
    """(low, high, bound low, bound high) of lambda in ``firepbt.tasks.mnist1d.SPACE``."""
    from firepbt.tasks.mnist1d import SPACE

    p = SPACE.params["lambda"]
    lo, hi = p.bounds if p.bounds is not None else (p.low, p.high)
    return float(p.low), float(p.high), float(lo), float(hi)


def initial_lambdas(seed: int, workers: int) -> list[float]:
    """The initial lambdas firepbt's PBT samples for this experiment seed (its controller's
    generator, branch 1 of the seed sequence, one draw per worker in order)."""
    import numpy as np

    from firepbt.tasks.mnist1d import SPACE

    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return [float(SPACE.sample(rng)["lambda"]) for _ in range(workers)]


def worker_seed(seed: int, workers: int, index: int) -> int:
    """The seed firepbt gives worker ``index`` (branch 0 of the experiment's seed sequence):
    the same initial network and data order as that worker of a firepbt run."""
    import numpy as np

    return int(np.random.SeedSequence([seed, 0]).generate_state(workers)[index])


# -- Ray Tune: the trainable ----------------------------------------------------------------

def _tune_trainable() -> type:
    import numpy as np
    import torch
    from ray import tune

    class TuneMNIST1D(tune.Trainable):
        """firepbt's MNIST1DTrainable as a Tune class trainable. Config: ``lambda`` (or
        ``log10_lambda``), ``seed`` (the experiment's), ``workers``, ``every`` (training steps
        per iteration) and ``total`` (steps of the run)."""

        def setup(self, config: dict[str, Any]) -> None:
            torch.set_num_threads(1)
            self._fresh()

        def _fresh(self) -> None:  # a new trial: its network is built at its first step
            self.net: Any = None
            self.steps = 0
            self.best = -math.inf
            self.history: list[list[float]] = []  # [lambda, steps]: the weights' schedule

        def _lambda(self) -> float:
            c = self.config
            return float(10 ** c["log10_lambda"]) if "log10_lambda" in c else float(c["lambda"])

        def _index(self) -> int:
            return int(str(self.trial_id).rsplit("_", 1)[1])

        def _build(self) -> None:
            from firepbt.tasks import get_task

            c = self.config
            self.net = get_task("mnist1d").make(worker_seed(c["seed"], c["workers"],
                                                            self._index()))

        def step(self) -> dict[str, Any]:
            if self.net is None:
                self._build()
            t0 = time.thread_time()
            lam, every = self._lambda(), int(self.config["every"])
            self.net.train({"lambda": lam}, every)
            self.steps += every
            if self.history and self.history[-1][0] == lam:
                self.history[-1][1] += every
            else:
                self.history.append([lam, every])
            v = float(self.net.evaluate())
            val = v if math.isfinite(v) else 0.0  # a diverged network ranks last
            out: dict[str, Any] = {"val": val, "lambda": lam, "steps": self.steps}
            if self.steps == every:  # which package the worker imported
                import firepbt

                out["package"] = firepbt.__file__
            # a test whenever the trial beats its own lineage's best validation (a superset
            # of the population's running tops) and at the end (the final best member)
            if val > self.best or self.steps >= int(self.config["total"]):
                t1 = time.thread_time()
                t = float(self.net.test())
                out["test"] = t if math.isfinite(t) else 0.0
                out["test_cpu"] = time.thread_time() - t1
                out["history"] = json.dumps(self.history)
            self.best = max(self.best, val)
            out["cpu"] = time.thread_time() - t0
            return out

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            return {"net": self.net.state_dict(), "steps": self.steps, "best": self.best,
                    "history": [list(h) for h in self.history], "trial": self.trial_id}

        def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            if self.net is None:
                self._build()
            self.net.load_state_dict(checkpoint["net"])
            self.steps = int(checkpoint["steps"])
            self.best = float(checkpoint["best"])
            self.history = [list(h) for h in checkpoint["history"]]
            if checkpoint["trial"] != self.trial_id:  # an exploit: a data stream of its own
                c = self.config
                self.net.reseed(int(np.random.SeedSequence(
                    [c["seed"], 5, self.steps, self._index()]).generate_state(1)[0]))

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._fresh()  # a checkpoint restore, when one follows, rebuilds the state
            return True

    return TuneMNIST1D


def clip_lambda(config: dict[str, Any]) -> dict[str, Any]:
    """Tune PBT's custom_explore_fn: keep lambda within the space's bounds (the paper's
    explore clips; Tune's multiplies without bounds)."""
    _lo, _hi, blo, bhi = space_limits()
    config["lambda"] = min(bhi, max(blo, float(config["lambda"])))
    return config


def tune_child(method: str, seed: int, rundir: Path, workers: int, steps: int, ready: int,
               every: int, cpus: int) -> int:
    """One Tune experiment in this process; writes ``rundir/trials.json``."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-result files
    import random

    import numpy as np
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    random.seed(seed)  # Tune's exploit partners and explore factors
    np.random.seed(seed)
    lo, hi, blo, bhi = space_limits()
    lambdas = initial_lambdas(seed, workers)
    interval = ready // every
    if method == "tune-pbt":
        key, values = "lambda", lambdas
        scheduler: Any = PopulationBasedTraining(
            time_attr="training_iteration", metric="val", mode="max",
            perturbation_interval=interval, quantile_fraction=0.25,
            hyperparam_mutations={"lambda": tune.loguniform(lo, hi)},
            resample_probability=0.0, perturbation_factors=FACTORS,
            custom_explore_fn=clip_lambda, log_config=True, synch=True)
    else:
        key, values = "log10_lambda", [math.log10(x) for x in lambdas]
        scheduler = PB2(
            time_attr="training_iteration", metric="val", mode="max",
            perturbation_interval=interval, quantile_fraction=0.25,
            hyperparam_bounds={"log10_lambda": [math.log10(blo), math.log10(bhi)]},
            log_config=True, synch=True)

    rows: list[dict[str, Any]] = []
    initial: dict[str, dict[str, Any]] = {}  # trial id -> its tag and starting value

    class Collect(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                            result: dict[str, Any], **info: Any) -> None:
            if trial.trial_id not in initial:  # its first result, before any exploit
                initial[trial.trial_id] = {"tag": trial.experiment_tag,
                                           key: trial.config[key]}
            row = {"trial": trial.trial_id, "iteration": int(result["training_iteration"])}
            row.update({k: result[k] for k in ("val", "lambda", "steps", "cpu", "test",
                                                "test_cpu", "history", "package")
                        if k in result})
            rows.append(row)

    storage = Path("/dev/shm") / f"firepbt-peers-{os.getpid()}"
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 ** 2)
    try:
        tuner = tune.Tuner(
            tune.with_resources(_tune_trainable(), {"cpu": 1}),
            param_space={key: tune.grid_search(values), "seed": seed, "workers": workers,
                         "every": every, "total": steps},
            tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True),
            run_config=tune.RunConfig(
                name=rundir.name, storage_path=str(storage), verbose=0, callbacks=[Collect()],
                stop={"training_iteration": steps // every},
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
        grid = tuner.fit()
        errors = [str(r.error) for r in grid if r.error is not None]
        policies: dict[str, list[Any]] = {}
        found = sorted({*storage.rglob("pbt_policy_*.txt"), *storage.rglob("pbt_global.txt")})
        exploits = sum(len(f.read_text().splitlines()) for f in found
                       if f.name == "pbt_global.txt")
        (rundir / "policy").mkdir(exist_ok=True)
        for f in found:
            shutil.copy(f, rundir / "policy" / f.name)
            if f.name.startswith("pbt_policy_"):
                tid = f.name[len("pbt_policy_"):-len(".txt")]
                policies[tid] = [json.loads(line) for line in f.read_text().splitlines()
                                 if line.strip()]
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    import firepbt

    packages = sorted({firepbt.__file__, *(r["package"] for r in rows if "package" in r)})
    paired = all(v[key] == values[int(t.rsplit("_", 1)[1])] for t, v in initial.items())
    (rundir / "trials.json").write_text(json.dumps({
        "paired_with_firepbt_workers": paired, "packages": packages, "exploits": exploits,
        "method": method, "seed": seed, "key": key, "initial": initial, "policies": policies,
        "interval": interval, "every": every, "steps": steps, "workers": workers,
        "errors": errors, "rows": rows}))
    return 1 if errors else 0


# -- Tune: reading a run back, retracing and replaying its top schedule ---------------------

def tune_measures(data: dict[str, Any]) -> dict[str, Any]:
    """Top point (population-wide maximum validation, earliest iteration first), its test,
    and the best member at the end and its test."""
    rows = data["rows"]
    last = data["steps"] // data["every"]

    def index(tid: str) -> int:
        return int(tid.rsplit("_", 1)[1])

    top = max(rows, key=lambda r: (r["val"], -r["iteration"], -index(r["trial"])))
    finals = [r for r in rows if r["iteration"] == last]
    best = max(finals, key=lambda r: (r["val"], -index(r["trial"])))
    return {"top_value": top["val"], "top_test": top.get("test"), "top_trial": top["trial"],
            "top_iteration": top["iteration"], "top_history": json.loads(top["history"]),
            "final_value": best["val"], "final_test": best.get("test"),
            "final_trial": best["trial"], "n_final": len(finals),
            "trainable_cpu_s": sum(r.get("cpu", 0.0) for r in rows),
            "test_cpu_s": sum(r.get("test_cpu", 0.0) for r in rows),
            "n_tests": sum("test" in r for r in rows)}


def retrace(data: dict[str, Any], events: list[list[Any]], trial: str,
            iteration: int) -> list[list[float]]:
    """The lambda schedule behind ``trial``'s network at ``iteration``, from Tune's policy log
    (``log_config=True``): ``[[lambda, steps], ...]``.

    ``events`` are the rows of ``pbt_global.txt``, every exploit in the order Tune made them:
    ``[target tag, source tag, target iteration, source iteration, source config, new
    config]``. Replaying them - a target takes its source's lineage plus the new config from
    that time on - gives every trial's lineage at any time; only the exploits before
    ``iteration`` count. (A trial's own ``pbt_policy_ID.txt``, which
    ``PopulationBasedTrainingReplay`` reads, holds its lineage at the *end* of the run: for a
    top point reached before the trial was exploited again it is the wrong one.) Synchronous
    PBT copies at multiples of the perturbation interval; a row's iterations can lag by one
    (Tune logs a trial's previous result), so times are rounded to those multiples."""
    key, every, interval = data["key"], data["every"], data["interval"]

    def lam(config: dict[str, Any]) -> float:
        return float(10 ** config[key]) if key == "log10_lambda" else float(config[key])

    tag_of = {t: v["tag"] for t, v in data["initial"].items()}
    lineage = {v["tag"]: [(0, lam(v))] for v in data["initial"].values()}
    for target, source, t_iter, s_iter, _old, new in events:
        at = round(max(t_iter, s_iter) / interval) * interval
        if at >= iteration:
            break
        lineage[target] = [p for p in lineage[source] if p[0] < at] + [(at, lam(new))]
    points = lineage[tag_of[trial]] + [(iteration, math.nan)]
    merged: list[list[float]] = []
    for (start, v), (stop, _next) in zip(points[:-1], points[1:], strict=True):
        if stop <= start:
            continue
        if merged and merged[-1][0] == v:
            merged[-1][1] += (stop - start) * every
        else:
            merged.append([v, (stop - start) * every])
    return merged


def tune_replay_child(rundir: Path) -> int:
    """Retrain the top trial's retraced schedule from scratch exactly as ``firepbt replay``
    does; writes ``rundir/replay.json``."""
    import torch

    from firepbt.replay import replay_seed, train_schedule
    from firepbt.schedule import Schedule, Segment
    from firepbt.tasks import get_task

    torch.set_num_threads(1)
    data = json.loads((rundir / "trials.json").read_text())
    m = tune_measures(data)
    events = [json.loads(line) for line in
              (rundir / "policy" / "pbt_global.txt").read_text().splitlines() if line.strip()]
    segs = retrace(data, events, m["top_trial"], m["top_iteration"])
    carried = m["top_history"]
    agree = (len(segs) == len(carried) and all(
        int(a[1]) == int(b[1]) and math.isclose(a[0], b[0], rel_tol=1e-6)
        for a, b in zip(segs, carried, strict=True)))
    schedule = Schedule(tuple(Segment({"lambda": float(v)}, int(n)) for v, n in segs))
    task = get_task("mnist1d")
    seed = replay_seed(data["seed"])
    value, test = train_schedule(lambda s: task.make(s, full_train=True), schedule, seed)
    (rundir / "replay.json").write_text(json.dumps({
        "value": value, "test": test, "seed": seed, "schedule": segs,
        "carried_schedule": carried, "policy_log_agrees": agree}))
    return 0


def read_child(rundir: Path) -> int:
    """A firepbt store's measures through the Python API; writes ``rundir/summary.json``."""
    from firepbt import open_experiment

    with open_experiment(rundir / "store") as exp:
        s = exp.summary()
        rec = {"top_value": s.top_value, "top_test": s.top_test, "top_worker": s.top_worker,
               "top_step": s.top_step, "final_value": s.best_value, "final_test": s.best_test,
               "final_worker": s.best_worker, "finished": s.finished}
        if exp.config.method == "fire":
            rec["evaluator_successes"] = len(exp.decisions(["evaluator_success"]))
    (rundir / "summary.json").write_text(json.dumps(rec))
    return 0


# -- measuring a child process tree -----------------------------------------------------------

def become_subreaper() -> None:
    """Orphans of this script's descendants are reparented to it (Linux), so their CPU time
    reaches an ``os.wait4`` here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _processes() -> dict[int, list[tuple[int, str, float]]]:
    """ppid -> [(pid, start time, CPU seconds of the process itself), ...] from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, list[tuple[int, str, float]]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[1] ppid, [11] utime, [12] stime, [19] start time (proc(5), from field 3)
            out.setdefault(int(fields[1]), []).append(
                (int(d), fields[19], (int(fields[11]) + int(fields[12])) / tick))
    return out


def _tree() -> list[tuple[int, str, float]]:
    """This script's descendants (reparented orphans included: it is their subreaper)."""
    procs = _processes()
    out, todo = [], [os.getpid()]
    while todo:
        for child in procs.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def measured(cmd: list[str], log: Path, stdout: Path | None = None,
             env: dict[str, str] | None = None, linger_s: float = 120.0,
             every_s: float = 0.2) -> dict[str, Any]:
    """Run ``cmd`` and reap every process of its tree. Returns its return code, wall seconds
    (start to the last process reaped) and two CPU measures: ``cpu_s``, each process's own
    user + system time, sampled from /proc every ``every_s`` over the whole tree and summed
    over processes (what a process used after its last sample is missed), and
    ``cpu_rusage_s``, the ``rusage`` of every process reaped here (``wait4``), exact but blind
    to processes whose parent ignores SIGCHLD - Ray's raylet does, so its worker processes
    are reaped without their time reaching anyone's rusage. Processes still running
    ``linger_s`` after the command ended are terminated (by pid: they are its own
    descendants, reparented here)."""
    seen: dict[tuple[int, str], float] = {}
    names: dict[tuple[int, str], str] = {}
    done = False

    def sample() -> None:
        while not done:
            for pid, start, cpu in _tree():
                seen[pid, start] = max(cpu, seen.get((pid, start), 0.0))
                if names.get((pid, start), "?") in ("?", "python", "bash", "sh"):
                    try:  # Ray's workers start as a shell, then python, then rename themselves
                        with open(f"/proc/{pid}/comm") as f:
                            names[pid, start] = f.read().strip()
                    except OSError:
                        names[pid, start] = "?"
            time.sleep(every_s)

    t0 = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with open(log, "ab") as f, open(stdout or os.devnull, "wb") as out:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f if stdout is None else out,
                                stderr=subprocess.STDOUT if stdout is None else f, cwd=REPO,
                                env=env)
    cpu, rc, deadline, killed = 0.0, None, math.inf, 0
    while True:
        try:
            pid, status, ru = os.wait4(-1, 0 if rc is None else os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                for p, _start, _cpu in _tree():
                    try:
                        os.kill(p, signal.SIGKILL if time.monotonic() > deadline + 10
                                else signal.SIGTERM)
                        killed += 1
                    except ProcessLookupError:
                        pass
            time.sleep(0.1)
            continue
        cpu += ru.ru_utime + ru.ru_stime
        if pid == proc.pid:
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            deadline = time.monotonic() + linger_s
    wall = time.monotonic() - t0
    done = True
    sampler.join()
    by_name: dict[str, float] = {}
    for key, v in seen.items():
        name = "run" if key[0] == proc.pid else names.get(key, "?")
        by_name[name] = by_name.get(name, 0.0) + v
    return {"rc": rc, "wall_s": wall, "cpu_s": sum(seen.values()), "cpu_rusage_s": cpu,
            "processes": len(seen), "cpu_by_process": by_name, "killed": killed}


def head_commit(rev: str = "HEAD") -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def snapshot(out: Path, commit: str) -> dict[str, str]:
    """The environment of a run's processes: ``PYTHONPATH`` on the package as committed in
    ``commit`` (``git archive`` of src/firepbt into OUT/src/COMMIT), so that edits made to the
    working tree while a run goes on never reach it."""
    root = out / "src" / commit
    if not (root / "src" / "firepbt" / "__init__.py").exists():
        tmp = out / "src" / f"{commit}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src/firepbt"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}


def wait_for_commit(text: str, every_s: float = 300.0) -> None:
    while True:
        log = subprocess.run(["git", "-C", str(REPO), "log", "--oneline"], capture_output=True,
                             text=True).stdout
        hits = [line for line in log.splitlines() if text in line]
        if hits:
            print(f"found: {hits[0]}", flush=True)
            return
        print(f"{time.strftime('%H:%M:%S')} no commit with {text!r} yet; next look in "
              f"{every_s:.0f} s", flush=True)
        time.sleep(every_s)


# -- one run ------------------------------------------------------------------------------

def firepbt_cli() -> list[str]:
    exe = Path(sys.executable).with_name("firepbt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "firepbt"]


def run_one(out: Path, method: str, seed: int, a: argparse.Namespace) -> dict[str, Any]:
    name = f"{method}-w{a.workers}-s{seed}"
    rundir = out / "runs" / name
    final = out / "runs" / f"{name}.json"
    if final.exists():
        return dict(json.loads(final.read_text()))
    rundir.mkdir(parents=True, exist_ok=True)
    log = rundir / "log.txt"
    stage = rundir / "run.json"
    store = rundir / "store"
    if not stage.exists():
        for leftover in (store, rundir / "trials.json", rundir / "replay.json", rundir / "policy",
                         rundir / "summary.json", rundir / "replay-measure.json"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
        if method in FIREPBT_METHODS:
            cmd = [*firepbt_cli(), "run", "mnist1d", "--method", method, "--workers",
                   str(a.workers), "--steps", str(a.steps), "--ready-interval", str(a.ready),
                   "--eval-interval", str(a.every), "--seed", str(seed), "--executor", "local",
                   "--threads", "1", "--no-progress", "--store", str(store)]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "tune", method,
                   str(seed), str(rundir), "--workers", str(a.workers), "--steps",
                   str(a.steps), "--ready", str(a.ready), "--eval", str(a.every),
                   "--tune-cpus", str(a.tune_cpus)]
        commit = head_commit(a.commit or "HEAD")
        print(f"{time.strftime('%H:%M:%S')} {name}: running (the package at {commit[:10]})",
              flush=True)
        m = measured(cmd, log, env=snapshot(out, commit))
        if m["rc"] != 0:
            raise SystemExit(f"{name} failed (exit {m['rc']}); see {log}")
        stage.write_text(json.dumps({**m, "commit": commit, "command": cmd,
                                     "finished_at": time.time()}))
    run_m = json.loads(stage.read_text())
    env = snapshot(out, run_m["commit"])
    replay_file = rundir / "replay.json"
    replay_m_file = rundir / "replay-measure.json"
    if not replay_m_file.exists():
        print(f"{time.strftime('%H:%M:%S')} {name}: replaying", flush=True)
        if method in FIREPBT_METHODS:
            cmd = [*firepbt_cli(), "replay", str(store), "--json"]
            out_file = rundir / "replay-stdout.json"
            m = {**measured(cmd, log, stdout=out_file, env=env), "command": cmd}
            if m["rc"] != 0:
                raise SystemExit(f"{name}: replay failed; see {log}")
            replay_file.write_text(out_file.read_text())
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "replay",
                   "-", "0", str(rundir)]
            m = {**measured(cmd, log, env=env), "command": cmd}
            if m["rc"] != 0:
                raise SystemExit(f"{name}: replay failed; see {log}")
        replay_m_file.write_text(json.dumps(m))
    replay_m = json.loads(replay_m_file.read_text())
    replay = json.loads(replay_file.read_text())
    rec: dict[str, Any] = {"method": method, "label": label(method, a.workers), "seed": seed,
                           "workers": a.workers, "steps": a.steps, "ready": a.ready,
                           "every": a.every, "wall_s": run_m["wall_s"], "cpu_s": run_m["cpu_s"],
                           "cpu_rusage_s": run_m["cpu_rusage_s"],
                           "processes": run_m["processes"],
                           "commit": run_m["commit"],
                           "replay_test": replay["test"], "replay_value": replay["value"],
                           "replay_seed": replay["seed"], "replay_schedule": replay["schedule"],
                           "replay_cpu_s": replay_m["cpu_s"], "replay_wall_s": replay_m["wall_s"]}
    if method in FIREPBT_METHODS:
        summary = rundir / "summary.json"
        if not summary.exists():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "read", method,
                   "0", str(rundir)]
            if subprocess.run(cmd, env=env, cwd=REPO).returncode != 0:
                raise SystemExit(f"{name}: reading the store failed")
        rec.update(json.loads(summary.read_text()))
    else:
        data = json.loads((rundir / "trials.json").read_text())
        tm = tune_measures(data)
        rec.update({k: v for k, v in tm.items() if k != "top_history"})
        rec["top_step"] = tm["top_iteration"] * a.every
        rec["policy_log_agrees"] = replay["policy_log_agrees"]
        rec["exploits"] = data["exploits"]
        rec["cpu_by_process"] = run_m["cpu_by_process"]
    final.write_text(json.dumps(rec, indent=1))
    print(f"{time.strftime('%H:%M:%S')} {name}: top {rec['top_value']:.4f} test "
          f"{rec['top_test']:.4f}, final {rec['final_test']:.4f}, replay "
          f"{rec['replay_test']:.4f}; {rec['wall_s']:.0f} s wall, {rec['cpu_s']:.0f} CPU-s",
          flush=True)
    return rec


def label(method: str, workers: int) -> str:
    base = LABELS[method]
    return f"{base} ({workers})" if method in ("fire", "tune-pbt", "tune-pb2") else base


# -- the table ------------------------------------------------------------------------------

COLUMNS = [("top_value", "Top validation", True), ("top_test", "Matching test", True),
           ("final_test", "Final best-member test", True),
           ("replay_test", "Schedule replay test", True),
           ("wall_s", "Wall min / run", False), ("cpu_s", "CPU-s / run", False),
           ("replay_cpu_s", "Replay CPU-s", False)]


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return m, s


def table(records: list[dict[str, Any]]) -> tuple[str, str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["label"], []).append(r)
    md = ["| Method | Runs | " + " | ".join(c[1] for c in COLUMNS) + " |",
          "|---|---|" + "---|" * len(COLUMNS)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "runs"] + [f"{k}_{s}" for k, _n, _p in COLUMNS
                                     for s in ("mean", "std")])
    for lab, rs in groups.items():
        cells, row = [], [lab, len(rs)]
        for key, _name, percent in COLUMNS:
            m, s = mean_std([r.get(key) for r in rs])
            row += [m, s]
            if math.isnan(m):
                cells.append("n/a")
            elif percent:
                cells.append(f"{m * 100:.2f}" + ("" if math.isnan(s) else f" ± {s * 100:.2f}"))
            elif key == "wall_s":
                cells.append(f"{m / 60:.1f}")
            else:
                cells.append(f"{m:.0f}")
        md.append(f"| {lab} | {len(rs)} | " + " | ".join(cells) + " |")
        w.writerow(row)
    return "\n".join(md) + "\n", buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/peers"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=22)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--ready", type=int, default=120)
    p.add_argument("--eval", type=int, default=10, dest="every")
    p.add_argument("--tune-cpus", type=int, default=os.cpu_count() or 1,
                   help="CPUs of Tune's local Ray instance (one trial each; default: all)")
    p.add_argument("--wait-for-commit", default=None, metavar="TEXT",
                   help="before the first FIRE PBT run, wait (looking every 5 minutes) for a "
                        "commit whose subject contains TEXT")
    p.add_argument("--commit", default=None, metavar="REV",
                   help="run the package as committed in REV (default: HEAD when each run "
                        "starts); the runs never see uncommitted edits")
    p.add_argument("--table-only", action="store_true", help="write the table of the runs done")
    p.add_argument("--child", nargs=4, metavar=("KIND", "METHOD", "SEED", "DIR"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, method, seed, rundir = a.child
        if kind == "tune":
            return tune_child(method, int(seed), Path(rundir), a.workers, a.steps, a.ready,
                              a.every, a.tune_cpus)
        if kind == "read":
            return read_child(Path(rundir))
        return tune_replay_child(Path(rundir))
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        become_subreaper()
        waited = False
        for method in a.methods:
            for seed in a.seeds:
                name = out / "runs" / f"{method}-w{a.workers}-s{seed}.json"
                if method == "fire" and a.wait_for_commit and not waited and not name.exists():
                    wait_for_commit(a.wait_for_commit)
                    waited = True
                run_one(out, method, seed, a)
    records = [json.loads(f.read_text()) for m in METHODS for s in a.seeds
               if (f := out / "runs" / f"{m}-w{a.workers}-s{s}.json").exists()]
    md, csv_text = table(records)
    (out / "peers.md").write_text(md)
    (out / "peers.csv").write_text(csv_text)
    (out / "peers.json").write_text(json.dumps(records, indent=1))
    print(f"MNIST-1D, {a.workers} workers x {a.steps} steps, ready every {a.ready}, an "
          f"evaluation every {a.every}; seeds {' '.join(map(str, a.seeds))} (accuracy in %, "
          "mean ± std over seeds)")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
