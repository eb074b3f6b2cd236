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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import ExperimentConfig
from .controllers.fire_layout import fire_split
from .errors import StoreLocked
from .lineage import Link, chain
from .lineage import schedule as lineage_schedule
from .records import (
    MEMBER,
    AssignEvaluator,
    Decision,
    EvaluatorSuccess,
    Exploit,
    FinalMember,
    RunFacts,
    StopEvaluator,
    WorkerState,
)
from .schedule import Schedule
from .selection import best_member, score_of
from .store import (
    CREATED_AT,
    ELAPSED,
    ENDED,
    LAST_ERROR,
    LAUNCH,
    REPLAY,
    RUN,
    RoundRow,
    Store,
)


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
    exploits: dict[int, int] = {i: 0 for i in range(store.run_facts.subpopulations)}
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
    facts = store.run_facts
    out = []
    if activity(store).successes == 0:
        out.append(f"No evaluator succeeded in {last.round} rounds: no weights were handed "
                   "down, so P1 behaved like PBT on its own. A success needs an evaluator to "
                   "improve faster than its target over enough binomial trials (7 of 7 at "
                   "p_stat 0.01): a longer run, more evaluations per ready interval (the "
                   "paper's 12) or more workers give evaluators the rounds and points it takes (see "
                   "'How big a FIRE PBT run must be' in the methods page).")
    param = facts.main_param
    med: dict[int, float] = {}
    for sub in range(facts.subpopulations):
        vals = [_number((st.hparams or {}).get(param)) for st in last.workers.values()
                if st.subpopulation == sub and st.role == MEMBER]
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


def random_schedule_words(config: ExperimentConfig, schedule_param: str | None) -> str | None:
    """What random search's members followed, in words (None for the other methods)."""
    if config.method != "random":
        return None
    if config.schedule is not None:
        return "every member followed the fixed schedule given (--schedule)"
    if schedule_param is None:
        return ("every hyperparameter stayed constant at its sampled value (no schedule_param: "
                "give run(..., schedule_param=NAME) for the hand-tuned schedule)")
    from .schedule import HAND_TUNED, hand_tuned_settings

    shape = hand_tuned_settings(config.hand_tuned)
    if config.hand_tuned is None or shape == hand_tuned_settings(HAND_TUNED):
        warm, at = "5/90", "30/90, 60/90 and 80/90"
    else:
        warm = f"{shape['warmup_fraction']:.3g}"
        at = ", ".join(f"{f:.3g}" for f in shape["decay_fractions"]) or "no point"
    factor = shape["decay_factor"]
    times = "divided by 10" if factor == 0.1 else f"multiplied by {factor:g}"
    return (f"{schedule_param} followed the hand-tuned schedule: the sampled value warmed up "
            f"linearly over the first {warm} of training, then {times} at {at}; the other "
            "hyperparameters stayed constant at their sampled values")


def latest_scores(store: Store, workers: list[int]) -> dict[int, tuple[int, float]]:
    """Per worker among ``workers``: its latest evaluation as ``(step, score)``."""
    mode = store.run_facts.mode
    out: dict[int, tuple[int, float]] = {}
    wanted = set(workers)
    for _r, w, s, v in store.evaluations():
        if w in wanted:
            out[w] = (s, score_of(v, mode))
    return out


def top_measures(store: Store, candidates: list[int] | None = None) -> TopPoint | None:
    """The paper's first two measures (4.1.2): the top validation value over the run among the
    best-effort members (``candidates``, default the run's, :class:`~firepbt.records.RunFacts`),
    and the test value of the same network at that point."""
    facts = store.run_facts
    wanted = set(facts.best_candidates if candidates is None else candidates)
    tests = {(w, s): v for _r, w, s, v in store.tests()}
    best: tuple[float, bool, int, int, int, float] | None = None
    for _r, w, s, v in store.evaluations():
        sc = score_of(v, facts.mode)
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
    if last is None and store.meta_json(RUN) is None:  # created, not started
        return Summary(store.path, 0, cfg.steps, False, None, None, None, None, None, None,
                       None, None, None, "max", None, None)
    facts = store.run_facts
    final = store.final_member()
    best_worker = best_value = best_test = best_hparams = None
    if final is not None:
        best_worker, best_value, best_test = final.worker, final.value, final.test
        best_hparams = None if final.hparams is None else dict(final.hparams)
    elif last is not None:
        latest = latest_scores(store, list(facts.best_candidates))
        if latest:
            best_worker = best_member({w: sc for w, (_s, sc) in latest.items()})
            assert best_worker is not None
            step, sc = latest[best_worker]
            best_value = score_of(sc, facts.mode)
            tests = {(w, s): v for _r, w, s, v in store.tests()}
            best_test = tests.get((best_worker, step))
            hp = last.workers[best_worker].hparams
            best_hparams = None if hp is None else dict(hp)
    top = top_measures(store)
    return Summary(store.path, steps_done, cfg.steps, steps_done >= cfg.steps and final is not None,
                   best_worker, best_value, best_test, best_hparams,
                   None if top is None else top.value, None if top is None else top.test,
                   None if top is None else top.worker, None if top is None else top.step,
                   activity(store), facts.mode,
                   random_schedule_words(cfg, facts.schedule_param), store.meta_json(ENDED))


@dataclass(frozen=True, slots=True)
class Status:
    """What ``firepbt status`` says of a store (:meth:`Experiment.status`): the run, its
    progress and state (``"finished"``, ``"running"`` - a writer holds it, ``writer_pid`` -
    or ``"stopped"``), the best member now and the top point over the run (values as
    ``evaluate()`` returned them: lower is better in ``mode="min"``; ``None`` before the first
    evaluation), the best member's schedule, what the controller did, the compute, what
    stopped it (``last_error``, ``ended``), the round resume would continue from
    (``checkpoint_round``) and where FIRE PBT did not show (``notes``)."""

    store: Path
    task: str
    method: str
    workers: int
    seed: int
    mode: str
    steps_done: int
    steps_total: int
    rounds_done: int
    finished: bool
    state: str
    writer_pid: int | None
    best_worker: int | None
    best_value: float | None
    best_test: float | None
    best_hparams: dict[str, Any] | None
    best_schedule: Schedule | None
    top: TopPoint | None
    activity: Activity | None
    train_seconds: float
    eval_seconds: float
    decide_seconds: float
    elapsed_seconds: float
    wall_seconds: float
    random_schedule: str | None
    last_error: dict[str, Any] | None
    ended: dict[str, Any] | None
    checkpoint_round: int | None
    notes: tuple[str, ...] = ()

    @property
    def has_test(self) -> bool:
        """Whether the run's task has a test set (the objective is then a validation value)."""
        return self.best_test is not None or (self.top is not None and self.top.test is not None)

    def to_dict(self) -> dict[str, Any]:
        """As ``firepbt status --json`` prints it: values under ``value`` and ``test``, worker
        ids under ``worker``."""
        top = self.top
        return {
            "store": str(self.store), "task": self.task, "method": self.method,
            "workers": self.workers, "seed": self.seed, "mode": self.mode,
            "steps_done": self.steps_done, "steps_total": self.steps_total,
            "rounds_done": self.rounds_done, "finished": self.finished, "state": self.state,
            "writer_pid": self.writer_pid,
            "best": {"worker": self.best_worker, "value": self.best_value,
                     "test": self.best_test, "hparams": self.best_hparams},
            "top": {"worker": None if top is None else top.worker,
                    "step": None if top is None else top.step,
                    "value": None if top is None else top.value,
                    "test": None if top is None else top.test},
            "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
            "decide_seconds": self.decide_seconds, "elapsed_seconds": self.elapsed_seconds,
            "wall_seconds": self.wall_seconds,
            "activity": None if self.activity is None else self.activity.to_dict(),
            "random_schedule": self.random_schedule, "last_error": self.last_error,
            "ended": self.ended, "checkpoint_round": self.checkpoint_round,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where ``resume`` would continue a store from (:meth:`Experiment.resume_point`): the
    step it trains from (the last round with a bound checkpoint; steps after it are trained
    again), the last committed step, whether the run is finished or ended by itself (its
    budget spent: ``ended``)."""

    step: int
    steps_done: int
    steps_total: int
    checkpoint_round: int | None
    finished: bool
    ended: dict[str, Any] | None


class Experiment:
    """A read-only view of one experiment's store (see the module docstring). Use as a
    context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store.open(path, readonly=True)
        self.config = ExperimentConfig.from_dict(self.store.config)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def facts(self) -> RunFacts:
        """What the run established when it started (mode, best-effort workers, ...)."""
        return self.store.run_facts

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``: the objective's direction."""
        return self.facts.mode

    def summary(self) -> Summary:
        return summarize(self.store)

    def status(self) -> Status:
        """Everything ``firepbt status`` (and the summary after ``run``) says of the store."""
        st = self.store
        writer = Store.writer_pid(st.path)
        s = summarize(st)
        rounds = st.rounds()
        cfg = self.config
        best_schedule = None
        if s.best_worker is not None:
            best_schedule = lineage_schedule(st, s.best_worker)
        wall = 0.0
        created = st.meta_json(CREATED_AT)
        if rounds and created is not None:
            wall = max(0.0, rounds[-1].finished_at - float(created))
        return Status(
            st.path, cfg.task, cfg.method, cfg.workers, cfg.seed, s.mode, s.steps_done,
            s.steps_total, rounds[-1].round if rounds else 0, s.finished,
            "finished" if s.finished else "running" if writer is not None else "stopped",
            writer, s.best_worker, s.best_value, s.best_test, s.best_hparams, best_schedule,
            s.top, s.activity, sum(r.train_seconds for r in rounds),
            sum(r.eval_seconds for r in rounds), sum(r.decide_seconds for r in rounds),
            float(st.meta_json(ELAPSED) or 0.0), wall, s.random_schedule,
            st.meta_json(LAST_ERROR), s.ended,
            max((r.round for r in rounds if r.checkpoint is not None), default=None),
            tuple(fire_caveats(st)))

    def resume_point(self) -> ResumePoint:
        """Where ``resume`` would continue from; refused (:class:`~firepbt.errors.StoreLocked`,
        one line naming the process) while another process writes the store."""
        writer = Store.writer_pid(self.path)
        if writer is not None:
            raise StoreLocked(f"store {str(self.path)!r} is being written by another firepbt "
                              f"process (pid {writer}); one writer at a time - wait for it or "
                              "stop it, then 'firepbt resume'")
        s = summarize(self.store)
        bound = [r.round for r in self.store.rounds() if r.checkpoint is not None]
        start = s.steps_done if s.finished else (
            bound[-1] * self.config.ready_interval if bound else 0)
        return ResumePoint(start, s.steps_done, s.steps_total, bound[-1] if bound else None,
                           s.finished, s.ended)

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

    def tests(self) -> list[tuple[int, int, int, float]]:
        """``(round, worker, step, value)`` of every test taken."""
        return self.store.tests()

    def rounds(self) -> list[RoundRow]:
        """The committed rounds, in order (timings, worker states, checkpoint)."""
        return self.store.rounds()

    def worker_states(self, round_index: int) -> dict[int, WorkerState]:
        """Every worker's state after round ``round_index`` (0: before the first round)."""
        return self.store.worker_states(round_index)

    def activity(self) -> Activity:
        return activity(self.store)

    def final(self) -> FinalMember | None:
        """The final best-effort member (once the last round is committed)."""
        return self.store.final_member()

    def launch(self) -> dict[str, Any]:
        """How the run was started: ``{"factory": "module:callable" or None, "log": [--log
        specs]}`` (what ``resume`` takes again when it is not given them)."""
        raw = self.store.meta_json(LAUNCH)
        return {"factory": None, "log": [], **(raw if isinstance(raw, dict) else {})}

    def replay(self) -> dict[str, Any] | None:
        """The recorded schedule replay (``firepbt replay``), if any."""
        replay: dict[str, Any] | None = self.store.meta_json(REPLAY)
        return replay


def open_experiment(path: str | Path) -> Experiment:
    """Open a store for reading (see :class:`Experiment`)."""
    return Experiment(path)
