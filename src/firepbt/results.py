"""Reading an experiment: the paper's measures and what the controller did, from its store.

The read side of firepbt, used by the CLI (``status``, ``lineage``), ``report``, ``replay`` and
``compare``, and by your own analysis::

    from firepbt import open_experiment

    with open_experiment("runs/mnist1d-fire-...") as exp:
        s = exp.summary()                # progress, best member now, top point, activity
        top = exp.top()                  # TopPoint(worker, step, value, test) or None
        sched = exp.schedule()           # the schedule behind the top point (replayable)
        links = exp.lineage()            # whose weights it descends from, oldest first
        for round_, step, d in exp.decisions(["evaluator_success"]): ...

Every function here only reads; a store can be read while its experiment runs.

Scores and values: a *value* is what the trainable's ``evaluate()`` returned (for a minimising
objective such as the NQM's loss, lower is better); a *score* is the same value turned so that
higher is better (negated in ``mode="min"``), which is what the controllers compare.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import ExperimentConfig
from .controllers.fire_layout import fire_split
from .lineage import Link, chain
from .lineage import schedule as lineage_schedule
from .records import AssignEvaluator, Decision, EvaluatorSuccess, Exploit, StopEvaluator
from .schedule import Schedule
from .selection import best_member, score_of
from .store import Store


class TopPoint(NamedTuple):
    """The top validation point of a run among its best-effort members (paper 4.1.2):
    ``worker`` evaluated ``value`` at ``step``; ``test`` is the test value of the same network
    there (None without a test set)."""

    worker: int
    step: int
    value: float
    test: float | None


@dataclass(frozen=True, slots=True)
class Activity:
    """What the controller did over a run, counted from the stored decisions: exploits per
    sub-population (0 = P1), evaluator assignments and successes, evaluator stops by reason."""

    exploits: dict[int, int]
    assignments: int
    successes: int
    stops: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"exploits": {str(k): v for k, v in self.exploits.items()},
                "assignments": self.assignments, "successes": self.successes,
                "stops": dict(self.stops)}


@dataclass(frozen=True, slots=True)
class Summary:
    """What a finished (or stopped) experiment produced.

    ``best_*``: the *best member now* - the best-effort member (FIRE PBT: of P1) with the best
    latest evaluation (after the last step: the final member, tested before the last round's
    copies): its worker, value, test value and hyperparameters.
    ``top_*``: the *top point over the run* - the best evaluation any best-effort member reached
    at any step, who (worker) and when (step), with the test value of that network there; the
    schedule behind it is what ``replay`` retrains. Values are as ``evaluate()`` returned them
    (lower is better in ``mode="min"``).
    """

    store: Path
    steps_done: int
    steps_total: int
    finished: bool
    best_worker: int | None
    best_value: float | None
    best_test: float | None
    best_hparams: dict[str, Any] | None
    top_value: float | None
    top_test: float | None
    top_worker: int | None
    top_step: int | None
    activity: Activity | None = None
    mode: str = "max"
    random_schedule: str | None = None  # random search: what its members followed, in words
    # why a run that is not finished ended, when it ended by itself: {"reason": "time_budget",
    # "budget": seconds, "elapsed": seconds of rounds, "round": the last one} (None otherwise)
    ended: dict[str, Any] | None = None

    @property
    def top(self) -> TopPoint | None:
        """The ``top_*`` fields as a :class:`TopPoint` (None before the first evaluation)."""
        if self.top_worker is None or self.top_step is None or self.top_value is None:
            return None
        return TopPoint(self.top_worker, self.top_step, self.top_value, self.top_test)


def best_effort_workers(config: ExperimentConfig) -> list[int]:
    """The workers whose networks count as the experiment's result: every worker for PBT and
    random search, the first sub-population (P1) for FIRE PBT."""
    if config.method == "fire":
        return list(range(fire_split(config.workers, config.n_subpopulations,
                                     config.quantile)[1]))
    return list(range(config.workers))


def n_subpopulations(config: ExperimentConfig) -> int:
    """Sub-populations of a run (1 for PBT and random search)."""
    if config.method == "fire":
        return fire_split(config.workers, config.n_subpopulations, config.quantile)[0]
    return 1


def resolved_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The settings a run actually used, defaults resolved and fields of other methods left
    out: for FIRE PBT the split (sub-populations, members per sub-population, evaluators),
    ``max_eval_steps`` and ``min_steps_before_eval`` per sub-population."""
    out: dict[str, Any] = {
        "task": config.task, "method": config.method, "workers": config.workers,
        "steps": config.steps, "ready_interval": config.ready_interval,
        "eval_interval": config.eval_interval, "seed": config.seed}
    if config.method in ("pbt", "fire"):
        out["quantile"] = config.quantile
        if config.factors is not None:
            out["factors"] = config.factors
    if config.method == "fire":
        n_sub, size, n_eval = fire_split(config.workers, config.n_subpopulations,
                                         config.quantile)
        ms = config.min_steps_before_eval
        per_sub = list(ms) if isinstance(ms, (list, tuple)) else [0] + [ms] * (n_sub - 1)
        out.update(subpopulations=n_sub, members_per_subpopulation=size, evaluators=n_eval,
                   max_eval_steps=config.max_eval_steps or 3 * config.ready_interval,
                   p_stat=config.p_stat,
                   min_steps_before_eval={f"P{i + 1}": v for i, v in enumerate(per_sub)
                                          if i > 0})
    if config.method == "random" and config.schedule is not None:
        out["schedule"] = "fixed (--schedule)"
    if config.task_options:
        out["task_options"] = dict(config.task_options)
    out["executor"] = config.executor
    out["device"] = config.device
    out["checkpoint_interval"] = config.checkpoint_interval
    if config.executor == "ray":
        out["threads"] = f"{config.threads or 1} per actor (its CPUs)"
        out["gpus_per_worker"] = config.gpus_per_worker
    else:
        out["threads"] = "auto (the free cores)" if config.threads is None else config.threads
    return out


def activity(store: Store) -> Activity:
    """Count a store's decisions (see :class:`Activity`); every sub-population of the run is
    listed, with 0 where nothing evolved."""
    cfg = ExperimentConfig.from_dict(store.config)
    exploits: dict[int, int] = {i: 0 for i in range(n_subpopulations(cfg))}
    stops: dict[str, int] = {}
    assignments = successes = 0
    for _r, _s, d in store.decisions(["exploit", "assign_evaluator", "evaluator_success",
                                      "stop_evaluator"]):
        if isinstance(d, Exploit):
            exploits[d.subpopulation] = exploits.get(d.subpopulation, 0) + 1
        elif isinstance(d, AssignEvaluator):
            assignments += 1
        elif isinstance(d, EvaluatorSuccess):
            successes += 1
        elif isinstance(d, StopEvaluator):
            stops[d.reason] = stops.get(d.reason, 0) + 1
    return Activity(dict(sorted(exploits.items())), assignments, successes,
                    dict(sorted(stops.items())))


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def main_param(cfg: ExperimentConfig, runner_state: dict[str, Any]) -> str:
    """The hyperparameter a run is summed up by (the report's main figure): the task's
    schedule parameter, else ``lr``, else the first numeric one (else the first)."""
    from .tasks import TASKS

    task = TASKS.get(cfg.task)
    if task is not None and task.schedule_param:
        return task.schedule_param
    for st in runner_state["workers"].values():
        hp = st.get("hparams")
        if hp:
            if "lr" in hp:
                return "lr"
            numeric = [str(k) for k in sorted(hp) if not math.isnan(_number(hp[k]))]
            return (numeric or [str(k) for k in sorted(hp)])[0]
    return "lr"


def fire_caveats(store: Store) -> list[str]:
    """Where a FIRE PBT run did not show what FIRE PBT is for, in sentences (the summary and
    the report say them): no evaluator success (no weights handed down: P1 was PBT on its
    own), and a parent sub-population whose median of the main hyperparameter ended below
    P1's (its improvement-rate fitness did not keep it higher). Empty for other methods and
    before the first round."""
    cfg = ExperimentConfig.from_dict(store.config)
    last = store.last_round()
    if cfg.method != "fire" or last is None:
        return []
    out = []
    act = activity(store)
    if act.successes == 0:
        out.append(f"No evaluator succeeded in {last.round} rounds: no weights were handed "
                   "down, so P1 behaved like PBT on its own. A success needs an evaluator to "
                   "improve faster than its target over enough binomial trials (7 of 7 at "
                   "p_stat 0.01): a longer run, more evaluations per ready interval (the "
                   "paper's 12) or more workers give evaluators the rounds and points it takes.")
    workers = last.runner_state["workers"]
    initial = json.loads(store.meta("initial_runner_state") or '{"workers": {}}')
    param = main_param(cfg, initial)
    med: dict[int, float] = {}
    for sub in range(n_subpopulations(cfg)):
        vals = [_number((v.get("hparams") or {}).get(param)) for v in workers.values()
                if v["sub"] == sub and v["role"] == "member"]
        vals = [x for x in vals if math.isfinite(x)]
        if vals:
            med[sub] = float(np.median(vals))
    if 0 in med:
        low = [s for s in sorted(med) if s > 0 and med[s] < med[0]]
        if low:
            which = ", ".join(f"P{s + 1}'s {med[s]:.3g}" for s in low)
            out.append(f"At the end the median {param} of {which} is below P1's {med[0]:.3g}: "
                       f"in this run the improvement-rate fitness did not keep the parents' "
                       f"{param} above the greedy sub-population's (with few rounds or few "
                       "successes it has little to act on).")
    return out


def latest_scores(store: Store, workers: list[int]) -> dict[int, tuple[int, float]]:
    """Per worker among ``workers``: its latest evaluation as ``(step, score)``."""
    mode = store.meta("mode") or "max"
    out: dict[int, tuple[int, float]] = {}
    wanted = set(workers)
    for _r, w, s, v in store.evaluations():
        if w in wanted:
            out[w] = (s, score_of(v, mode))
    return out


def top_measures(store: Store, candidates: list[int] | None = None) -> TopPoint | None:
    """The paper's first two measures (4.1.2): the top validation value over the run among the
    best-effort members (``candidates``, default :func:`best_effort_workers`), and the test
    value of the same network at that point."""
    if candidates is None:
        candidates = best_effort_workers(ExperimentConfig.from_dict(store.config))
    mode = store.meta("mode") or "max"
    wanted = set(candidates)
    tests = {(w, s): v for _r, w, s, v in store.tests()}
    best: tuple[float, bool, int, int, int, float] | None = None
    for _r, w, s, v in store.evaluations():
        sc = score_of(v, mode)
        if w not in wanted or not math.isfinite(sc):
            continue
        # among equal values, the point that has a test score (the first to reach it)
        key = (sc, (w, s) in tests, -s, -w, w, v)
        if best is None or key > best:
            best = key
    if best is None:
        return None
    w, s, v = best[4], -best[2], best[5]
    return TopPoint(w, s, v, tests.get((w, s)))


def summarize(store: Store) -> Summary:
    """Progress and the best member of a store (works while it runs)."""
    cfg = ExperimentConfig.from_dict(store.config)
    last = store.last_round()
    steps_done = 0 if last is None else last.step
    mode = store.meta("mode") or "max"
    final = store.meta("final")
    candidates = best_effort_workers(cfg)
    best_worker = best_value = best_test = best_hparams = None
    if final is not None:
        f = json.loads(final)
        best_worker, best_value, best_test, best_hparams = (f["worker"], f["value"], f["test"],
                                                            f["hparams"])
    elif last is not None:
        latest = latest_scores(store, candidates)
        if latest:
            best_worker = best_member({w: sc for w, (_s, sc) in latest.items()})
            assert best_worker is not None
            step, sc = latest[best_worker]
            best_value = score_of(sc, mode)
            tests = {(w, s): v for _r, w, s, v in store.tests()}
            best_test = tests.get((best_worker, step))
            best_hparams = last.runner_state["workers"][str(best_worker)]["hparams"]
    top = top_measures(store, candidates)
    return Summary(store.path, steps_done, cfg.steps, steps_done >= cfg.steps and final is not None,
                   best_worker, best_value, best_test, best_hparams,
                   None if top is None else top.value, None if top is None else top.test,
                   None if top is None else top.worker, None if top is None else top.step,
                   activity(store), mode, store.meta("random_schedule"),
                   json.loads(store.meta("ended") or "null"))


class Experiment:
    """A read-only view of one experiment's store (see the module docstring). Use as a
    context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store.open(path, readonly=True)
        self.config = ExperimentConfig.from_dict(self.store.config)
        self.mode: str = self.store.meta("mode") or "max"

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def path(self) -> Path:
        return self.store.path

    def summary(self) -> Summary:
        return summarize(self.store)

    def top(self) -> TopPoint | None:
        """The top validation point over the run (None before the first evaluation)."""
        return top_measures(self.store)

    def _point(self, worker: int | None, step: int | None) -> tuple[int, int | None]:
        if worker is not None:
            return worker, step
        top = self.top()
        if top is None:
            raise ValueError(f"store {str(self.path)!r} has no evaluation yet")
        return top.worker, top.step

    def schedule(self, worker: int | None = None, step: int | None = None) -> Schedule:
        """The schedule that trained ``worker``'s network up to ``step`` (default: the last
        step); with no worker, the schedule behind the top point - the one ``replay``
        retrains. ``Schedule.to_json()`` gives what ``firepbt run --schedule`` reads."""
        w, s = self._point(worker, step)
        return lineage_schedule(self.store, w, s)

    def lineage(self, worker: int | None = None, step: int | None = None) -> list[Link]:
        """Whose weights ``worker``'s network at ``step`` descends from, oldest first
        (default: the top point's network)."""
        w, s = self._point(worker, step)
        return chain(self.store, w, s)

    def decisions(self, kinds: list[str] | None = None) -> list[tuple[int, int, Decision]]:
        """``(round, step, decision)`` in order; ``kinds`` filters by ``Decision.kind``
        (exploit, assign_evaluator, evaluator_success, stop_evaluator, ...)."""
        return self.store.decisions(kinds)

    def evaluations(self, worker: int | None = None) -> list[tuple[int, int, int, float]]:
        """``(round, worker, step, value)`` of every evaluation (or one worker's)."""
        return self.store.evaluations(worker)

    def activity(self) -> Activity:
        return activity(self.store)

    def replay(self) -> dict[str, Any] | None:
        """The recorded schedule replay (``firepbt replay``), if any."""
        replay: dict[str, Any] | None = json.loads(self.store.meta("replay") or "null")
        return replay


def open_experiment(path: str | Path) -> Experiment:
    """Open a store for reading (see :class:`Experiment`)."""
    return Experiment(path)
