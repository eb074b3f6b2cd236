"""Multi-seed comparison (paper 4.1.2, Table 1): methods x worker counts x seeds on a task.

Every run is an ordinary store under ``OUT/runs``; running the same command again skips
finished runs and resumes stopped ones, so a comparison can be stopped (or killed) and resumed.
Runs go one per core (child processes running the Python API's :func:`firepbt.run`), each on
one thread with the local executor: measured faster here than
the vectorized executor on one thread (benchmarks/vectorized.py); results agree to rounding.
Each finished run is replayed (schedule of its top validation score, trained from scratch on
the full training set). The table - mean +- std over seeds of the top validation score, the
test score at that point, and the replay test score, plus compute - is written as Markdown and
CSV from the stores.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import METHODS, ExperimentConfig
from .errors import ConfigError, FirePBTError, check

LABELS = {"random": "RS hand-tuned schedule", "pbt": "PBT", "fire": "FIRE PBT"}


@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str
    workers: int
    seed: int
    steps: int
    ready_interval: int
    eval_interval: int
    max_eval_steps: int | None = None
    min_steps_before_eval: int | tuple[int, ...] = 0
    n_subpopulations: int | None = None
    device: str = "cpu"
    factory: str | None = None  # module:callable of your own trainable (--factory)

    def __post_init__(self) -> None:
        if isinstance(self.min_steps_before_eval, list):  # read back from JSON
            object.__setattr__(self, "min_steps_before_eval", tuple(self.min_steps_before_eval))

    @property
    def name(self) -> str:
        return f"{self.method}-w{self.workers}-s{self.seed}"

    @property
    def label(self) -> str:
        if self.method == "fire":
            return f"FIRE PBT ({self.workers})"
        if self.method == "random":
            from .tasks import TASKS

            task = TASKS.get(self.task)
            if task is not None and task.schedule_param is None:
                return "Random search (constant)"
        return LABELS[self.method]

    def config(self) -> ExperimentConfig:
        """The run's configuration. On the CPU: the local executor on one thread (runs go one
        per core); on a GPU: the population as one batched model (executor ``auto``)."""
        fire: dict[str, Any] = {}
        if self.method == "fire":
            fire = {"max_eval_steps": self.max_eval_steps,
                    "min_steps_before_eval": self.min_steps_before_eval,
                    "n_subpopulations": self.n_subpopulations}
        cpu: dict[str, Any] = {"executor": "local", "threads": 1} if self.device == "cpu" else {}
        return ExperimentConfig(
            task=self.task, method=self.method, workers=self.workers, steps=self.steps,
            ready_interval=self.ready_interval, eval_interval=self.eval_interval,
            seed=self.seed, device=self.device, **cpu, **fire)


def plan(task: str, methods: Sequence[str], seeds: Sequence[int], workers: int,
         fire_workers: Sequence[int], steps: int, ready_interval: int, eval_interval: int,
         max_eval_steps: int | None = None, min_steps_before_eval: int | tuple[int, ...] = 0,
         n_subpopulations: int | None = None, device: str = "cpu",
         factory: str | None = None) -> list[RunSpec]:
    """The runs of a comparison, in a fixed order (``device``: a resolved device, see
    :func:`firepbt.devices.resolve_device`)."""
    for m in methods:
        check(m in METHODS, "methods", f"a list of {list(METHODS)}", list(methods))
    check(len(set(methods)) == len(methods), "methods", "each method once", list(methods))
    check(len(seeds) >= 1, "seeds", "at least one seed", list(seeds))
    check(len(set(seeds)) == len(seeds), "seeds", "each seed once (two runs of one seed are "
          "one run)", list(seeds))
    check(len(set(fire_workers)) == len(fire_workers), "fire_workers", "each count once",
          list(fire_workers))
    specs = []
    for m in methods:
        counts = fire_workers if m == "fire" else [workers]
        for w in counts:
            for s in seeds:
                specs.append(RunSpec(task, m, int(w), int(s), steps, ready_interval,
                                     eval_interval, max_eval_steps, min_steps_before_eval,
                                     n_subpopulations, device, factory))
    return specs


def _state(store: Path) -> str:
    """'new', 'partial', 'trained' (finished, not replayed) or 'done'."""
    from .results import open_experiment

    if not (store / "experiment.sqlite").exists():
        return "new"
    with open_experiment(store) as exp:
        if exp.final() is None:
            return "partial"
        return "done" if exp.replay() is not None else "trained"


def _one(spec: RunSpec, store: Path) -> None:
    """Bring one run to 'done' (called in a child process)."""
    from .replay import replay_store
    from .runner import resume_store, run_store
    from .trainable import load_experiment

    code: dict[str, Any] = {}
    if spec.factory is not None:  # your own trainable, imported in this child as in its parent
        factory, space, param = load_experiment(spec.factory)
        code = {"factory": factory, "space": space,
                "schedule_param": param if spec.method == "random" else None}
    state = _state(store)
    if state == "new":
        if store.exists():  # a run killed before its first round: start again
            import shutil

            shutil.rmtree(store)
        run_store(spec.config(), store, progress=False, **code)
    elif state == "partial":
        resume_store(store, progress=False, **code)
    if _state(store) == "trained":
        replay_store(str(store), factory=code.get("factory"))


def run_comparison(out: Path, specs: Sequence[RunSpec], jobs: int = 2,
                   on_update: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every spec with up to ``jobs`` child processes, then write the table."""
    check(isinstance(jobs, int) and jobs >= 1, "jobs", "an int >= 1", jobs)
    check(not (out / "experiment.sqlite").exists(), "out", "a folder for the comparison, not "
          "an experiment's store", str(out))
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "comparison.json"
    spec_json = json.dumps([asdict(s) for s in specs], indent=1)
    if spec_file.exists() and _stored_specs(spec_file) != list(specs):
        raise ConfigError("out", "a new folder or one holding this same comparison",
                          str(out))
    spec_file.write_text(spec_json)
    (out / "runs").mkdir(exist_ok=True)
    todo = [s for s in specs if _state(out / "runs" / s.name) != "done"]
    done = len(specs) - len(todo)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    running: list[tuple[RunSpec, subprocess.Popen[bytes], float]] = []
    failures = []
    if on_update:
        on_update(done, len(specs), "")
    while todo or running:
        while todo and len(running) < jobs:
            spec = todo.pop(0)
            log = open(out / "runs" / f"{spec.name}.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "firepbt.compare", json.dumps(asdict(spec)),
                 str(out / "runs" / spec.name)], env=env, stdout=log, stderr=log)
            running.append((spec, proc, time.time()))
        time.sleep(0.5)
        for item in list(running):
            spec, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                failures.append(spec.name)
            done += 1
            if on_update:
                on_update(done, len(specs), f"{spec.name} in {time.time() - t0:.0f} s")
    if failures:
        raise FirePBTError(f"{len(failures)} of the comparison's runs failed: "
                           f"{', '.join(failures)} (each says why in its .log in "
                           f"{out / 'runs'}); rerunning the same command resumes them")
    rows = table_rows(out, specs)
    from .tasks import TASKS

    task = TASKS.get(specs[0].task)
    write_table(out, rows, percent=task is not None and task.has_test)
    return rows


def _stored_specs(path: Path) -> list[RunSpec] | None:
    """The specs of an existing comparison (fields added since it was written take their
    defaults, so an older folder still resumes); None when unreadable."""
    try:
        return [RunSpec(**d) for d in json.loads(path.read_text())]
    except (ValueError, TypeError):
        return None


def _mean_std(xs: list[float]) -> tuple[float, float]:
    arr = np.array([x for x in xs if x is not None and math.isfinite(x)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    # one run has no spread: NaN (the table shows the value alone)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def run_measures(store: Path) -> dict[str, Any]:
    """The paper's measures for one store, plus compute and wall time."""
    from .results import open_experiment

    with open_experiment(store) as exp:
        status = exp.status()
        top = status.top
        replay = exp.replay()
        final = exp.final()
        return {
            "top_value": None if top is None else top.value,
            "top_test": None if top is None else top.test,
            "replay_test": None if replay is None else replay["test"],
            "replay_value": None if replay is None else replay["value"],
            "final_test": None if final is None else final.test,
            "final_value": None if final is None else final.value,
            "train_cpu_s": status.train_seconds + status.eval_seconds,
            "controller_cpu_s": status.decide_seconds,
            "wall_s": status.wall_seconds,
        }


def table_rows(out: Path, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in specs:
        m = run_measures(out / "runs" / s.name)
        groups.setdefault(s.label, []).append(m)
    rows = []
    for label, ms in groups.items():
        row: dict[str, Any] = {"method": label, "runs": len(ms)}
        for key in ("top_value", "top_test", "replay_test", "replay_value", "final_test",
                    "final_value"):
            row[key] = _mean_std([m[key] for m in ms])
        row["train_cpu_s"] = float(np.mean([m["train_cpu_s"] for m in ms]))
        row["controller_cpu_s"] = float(np.mean([m["controller_cpu_s"] for m in ms]))
        row["wall_s"] = float(np.mean([m["wall_s"] for m in ms]))
        rows.append(row)
    return rows


def _fmt(ms: tuple[float, float], percent: bool) -> str:
    m, s = ms
    if math.isnan(m):
        return "n/a"
    if percent:
        return f"{m * 100:.2f}" + ("" if math.isnan(s) else f" ± {s * 100:.2f}")
    return f"{m:.4g}" + ("" if math.isnan(s) else f" ± {s:.2g}")


def markdown(rows: Sequence[dict[str, Any]], percent: bool = True) -> str:
    """Table 1. ``percent``: objective values are fractions shown as percentages (accuracy,
    F1); otherwise they are shown as they are (e.g. the NQM's expected loss, lower is better)
    and, with no test set, the table shows the objective: its top value over the run, the
    best member's final value and the replayed schedule's final value."""
    if not percent:
        lines = ["| Method | Runs | Top objective over the run | Best member's final objective "
                 "| Schedule replay final objective | Train+eval CPU-s / run "
                 "| Controller CPU-s / run |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['runs']} | {_fmt(r['top_value'], False)} | "
                         f"{_fmt(r['final_value'], False)} | {_fmt(r['replay_value'], False)} "
                         f"| {r['train_cpu_s']:.0f} | {r['controller_cpu_s']:.1f} |")
        return "\n".join(lines) + "\n"
    lines = ["| Method | Runs | Top validation | Matching test | Schedule replay test | "
             "Final best-member test | Train+eval CPU-s / run | Controller CPU-s / run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        replay = r["replay_test"] if not math.isnan(r["replay_test"][0]) else r["replay_value"]
        lines.append(f"| {r['method']} | {r['runs']} | {_fmt(r['top_value'], percent)} | "
                     f"{_fmt(r['top_test'], percent)} | {_fmt(replay, percent)} | "
                     f"{_fmt(r['final_test'], percent)} "
                     f"| {r['train_cpu_s']:.0f} | {r['controller_cpu_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, rows: Sequence[dict[str, Any]], percent: bool = True) -> None:
    (out / "table1.md").write_text(markdown(rows, percent))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "runs", "top_value_mean", "top_value_std", "top_test_mean",
                "top_test_std", "replay_test_mean", "replay_test_std", "final_test_mean",
                "final_test_std", "final_value_mean", "final_value_std", "replay_value_mean",
                "replay_value_std", "train_cpu_s", "controller_cpu_s", "wall_s"])
    for r in rows:
        w.writerow([r["method"], r["runs"], *r["top_value"], *r["top_test"], *r["replay_test"],
                    *r["final_test"], *r["final_value"], *r["replay_value"], r["train_cpu_s"],
                    r["controller_cpu_s"], r["wall_s"]])
    (out / "table1.csv").write_text(buf.getvalue())


if __name__ == "__main__":  # child process: one run
    spec = RunSpec(**json.loads(sys.argv[1]))
    _one(spec, Path(sys.argv[2]))
