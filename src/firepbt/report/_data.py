"""The report's data: stores read into plain frozen records (tested; nothing drawn here)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExperimentConfig
from ..lineage import chain
from ..lineage import schedule as lineage_schedule
from ..records import MEMBER, AssignEvaluator, EvaluatorSuccess, StopEvaluator, WorkerState
from ..results import (
    Activity,
    TopPoint,
    fire_caveats,
    random_schedule_words,
    resolved_settings,
    summarize,
)
from ..selection import score_of
from ..store import DEVICE, REPLAY, Store


@dataclass(frozen=True)
class SubpopulationBand:
    """Quantiles of one hyperparameter across a sub-population's members, per round."""

    subpopulation: int
    steps: tuple[int, ...]
    median: tuple[float, ...]
    low: tuple[float, ...]  # 10th percentile
    high: tuple[float, ...]  # 90th percentile


@dataclass(frozen=True)
class EvaluatorEvent:
    step: int
    kind: str  # assign_evaluator, stop_evaluator, evaluator_success
    evaluator: int
    parent: int
    target: int
    detail: str
    value: float | None = None  # the target's hyperparameter value (successes)


@dataclass(frozen=True)
class CurvePair:
    """An evaluator's curve against its target's, around one success (Figure 3)."""

    evaluator: int
    target: int
    success_step: int
    evaluator_curve: tuple[tuple[int, float], ...]
    target_curve: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Panel:
    """Figure 4a for one hyperparameter: its bands per sub-population, the winning schedule's
    values and, at each evaluator success, the target's value."""

    param: str
    bands: tuple[SubpopulationBand, ...]
    best_schedule: tuple[tuple[int, int, float], ...]
    successes: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class ExperimentData:
    store: str
    config: dict[str, Any]
    param: str
    steps_done: int
    finished: bool
    best_worker: int | None
    best_value: float | None
    best_test: float | None
    top: TopPoint | None
    replay: dict[str, Any] | None
    best_schedule: tuple[tuple[int, int, float], ...]  # (start, stop, value of param)
    bands: tuple[SubpopulationBand, ...]
    best_so_far: tuple[tuple[int, float], ...]  # (step, best validation value by then)
    top_at_step: tuple[tuple[int, float], ...]  # (step, best member value at that step)
    events: tuple[EvaluatorEvent, ...]
    lineage: tuple[tuple[int, int, int, int | None, str | None], ...]
    curve_pair: CurvePair | None
    compute: dict[str, float] = field(default_factory=dict)
    decision_counts: dict[str, int] = field(default_factory=dict)
    mode: str = "max"  # "min": lower values are better (e.g. the NQM's loss)
    settings: dict[str, Any] = field(default_factory=dict)  # resolved_settings()
    activity: Activity | None = None
    # every hyperparameter of the best schedule: (start, stop, hparams)
    best_segments: tuple[tuple[int, int, dict[str, Any]], ...] = ()
    best_hparams: dict[str, Any] | None = None
    # one Figure 4a per numeric hyperparameter, the figures' main one (``param``) first
    panels: tuple[Panel, ...] = ()
    space: tuple[dict[str, Any], ...] = ()  # Space.describe() as the run stored it
    caveats: tuple[str, ...] = ()  # results.fire_caveats: where FIRE PBT did not show
    random_schedule: str | None = None  # random search: what its members followed, in words
    reinforcement: bool = False  # an RL task (the objective is an average episode return)


def _num(value: Any) -> float:
    """A hyperparameter value as a float for the figures (NaN for a non-number, e.g. a
    categorical string: its figures stay empty rather than fail)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def experiment_data(path: str | Path) -> ExperimentData:
    """Everything a report shows about one store, as plain records."""
    st = Store.open(path, readonly=True)
    try:
        with st.snapshot():  # (a store being written: every read sees the same rounds)
            return _experiment_data(st)
    finally:
        st.close()


def _experiment_data(st: Store) -> ExperimentData:
    cfg = ExperimentConfig.from_dict(st.config)
    facts = st.run_facts
    mode = facts.mode
    summary = summarize(st)
    rounds = st.rounds()
    initial = st.worker_states(0)
    param = facts.main_param
    candidates = facts.best_candidates
    top = summary.top
    replay = st.meta_json(REPLAY)

    # best schedule: the one behind the top validation score
    best_sched: list[tuple[int, int, float]] = []
    segments: list[tuple[int, int, dict[str, Any]]] = []
    lineage_rows: list[tuple[int, int, int, int | None, str | None]] = []
    if top is not None:
        pos = 0
        for seg in lineage_schedule(st, top.worker, top.step).segments:
            best_sched.append((pos, pos + seg.steps, _num(seg.hparams.get(param))))
            segments.append((pos, pos + seg.steps, dict(seg.hparams)))
            pos += seg.steps
        lineage_rows = [(lk.worker, lk.start, lk.stop, lk.received_from, lk.via)
                        for lk in chain(st, top.worker, top.step)]

    # Figure 4a bands: hyperparameters in force during each round, per sub-population
    states = [initial] + [r.workers for r in rounds[:-1]]
    bands = _bands(states, cfg, param)

    # Figure 4b: best validation value reached by each step (best-effort members)
    wanted = set(candidates)
    by_step: dict[int, float] = {}
    for _r, w, s, v in st.evaluations():
        sc = score_of(v, mode)
        if w in wanted and math.isfinite(sc):
            by_step[s] = max(by_step.get(s, -math.inf), sc)
    best_so_far, running = [], -math.inf
    for s in sorted(by_step):
        running = max(running, by_step[s])
        best_so_far.append((s, score_of(running, mode)))
    top_at_step = tuple((s, score_of(by_step[s], mode)) for s in sorted(by_step))

    # evaluator events and hyperparameters of targets at successes
    hp_after = {r.step: r.workers for r in rounds}
    events = []
    counts: dict[str, int] = {}
    pair = None
    for _r, step, d in st.decisions():
        counts[d.kind] = counts.get(d.kind, 0) + 1
        if isinstance(d, AssignEvaluator):
            events.append(EvaluatorEvent(step, d.kind, d.evaluator, d.parent, d.target,
                                         ", ".join(f"{k}={_fmt_value(v)}" for k, v in
                                                   sorted(d.hparams.items()))))
        elif isinstance(d, StopEvaluator):
            events.append(EvaluatorEvent(step, d.kind, d.evaluator, d.parent, d.target,
                                         f"{d.reason}, {_evidence(d)}"))
        elif isinstance(d, EvaluatorSuccess):
            hp = _hparams(hp_after.get(step, {}), d.target)
            events.append(EvaluatorEvent(
                step, d.kind, d.evaluator, d.parent, d.target, _evidence(d),
                _num(hp[param]) if param in hp else None))
            # the most telling example: the success with the longest evaluator curve
            if pair is None or d.trained_steps > pair.success_step - pair.evaluator_curve[0][0]:
                pair = _curve_pair(st, d, step, mode) or pair
    # one panel per numeric hyperparameter
    names = sorted({k for v in initial.values() for k, x in (v.hparams or {}).items()
                    if not math.isnan(_num(x))})
    panels = []
    for name in [param, *(n for n in names if n != param)]:
        succ = []
        for _r, step, d in st.decisions(["evaluator_success"]):
            assert isinstance(d, EvaluatorSuccess)
            hp = _hparams(hp_after.get(step, {}), d.target)
            if name in hp:
                succ.append((step, _num(hp[name])))
        panels.append(Panel(name, bands if name == param else _bands(states, cfg, name),
                            tuple((a, b, _num(h.get(name))) for a, b, h in segments),
                            tuple(succ)))
    space = tuple(dict(x) for x in facts.space)
    compute = {"train_seconds": sum(r.train_seconds for r in rounds),
               "eval_seconds": sum(r.eval_seconds for r in rounds),
               "controller_seconds": sum(r.decide_seconds for r in rounds)}
    return ExperimentData(
        str(st.path), cfg.to_dict(), param, summary.steps_done, summary.finished,
        summary.best_worker, summary.best_value, summary.best_test, top, replay,
        tuple(best_sched), tuple(bands), tuple(best_so_far), top_at_step, tuple(events),
        tuple(lineage_rows), pair, compute, counts, mode, _used(resolved_settings(cfg), st),
        summary.activity,
        tuple(segments), summary.best_hparams, tuple(panels), space,
        tuple(fire_caveats(st)), random_schedule_words(cfg, facts.schedule_param),
        facts.reinforcement)


def _hparams(workers: Mapping[int, WorkerState], worker: int) -> dict[str, Any]:
    st = workers.get(worker)
    return {} if st is None or st.hparams is None else dict(st.hparams)


def _bands(states: Sequence[Mapping[int, WorkerState]], cfg: ExperimentConfig,
           param: str) -> tuple[SubpopulationBand, ...]:
    """The median and 10-90% of ``param`` over each sub-population's members, round by round
    (``states``: the workers before each round, the first the initial ones)."""
    subs = sorted({v.subpopulation for v in states[0].values() if v.subpopulation is not None})
    bands = []
    for sub in subs:
        steps, med, lo, hi = [], [], [], []
        for i, ws in enumerate(states):
            vals = []
            for v in ws.values():
                if v.subpopulation != sub or v.role != MEMBER:
                    continue
                if v.schedule is not None or v.hparams:
                    vals.append(_num(v.hparams_at(i * cfg.ready_interval).get(param)))
            if vals:
                steps.append(i * cfg.ready_interval)
                med.append(float(np.median(vals)))
                lo.append(float(np.percentile(vals, 10)))
                hi.append(float(np.percentile(vals, 90)))
        bands.append(SubpopulationBand(sub, tuple(steps), tuple(med), tuple(lo), tuple(hi)))
    return tuple(bands)


def _used(settings: dict[str, Any], st: Store) -> dict[str, Any]:
    """The resolved settings with what ``auto`` chose at run time (executor, device)."""
    out = dict(settings)
    for key, used in (("executor", st.run_facts.executor), ("device", st.meta(DEVICE))):
        if used and used != out.get(key):
            out[key] = f"{used} ({out.get(key)})"
    return out


def _evidence(d: StopEvaluator | EvaluatorSuccess) -> str:
    """What decided an evaluator's stop or success, as the controller computed it."""
    c = d.comparison
    if c is not None:
        above = (f"above at {c.k} of {c.n} overlapping points, " if c.overlap else
                 "" if isinstance(d, StopEvaluator) else "curves apart (no overlap), ")
        return f"{above}p={c.p:.3g}, score diff {c.diff:.4g}, T={d.trained_steps}"
    p = "n/a" if d.p_value is None else f"{d.p_value:.3g}"
    diff = "" if d.score_diff is None else f", score diff {d.score_diff:.4g}"
    return f"p={p}{diff}, T={d.trained_steps}"


def _curve_pair(st: Store, d: EvaluatorSuccess, step: int, mode: str) -> CurvePair | None:
    """The two curves the controller compared at a success, exactly, from the store: each
    begins where the decision says it began (``curve_starts``) and goes on with its worker's
    own evaluations after that point, up to the decision's step. Values as evaluated (a loss
    stays a loss)."""
    if d.curve_starts is None:
        return None

    def curve(worker: int, start: tuple[int, float]) -> tuple[tuple[int, float], ...]:
        s0, score0 = start
        return ((s0, score_of(score0, mode)),) + tuple(
            (s, v) for _r, _w, s, v in st.evaluations(worker) if s0 < s <= step)

    ev, tg = d.curve_starts
    return CurvePair(d.evaluator, d.target, step, curve(d.evaluator, ev), curve(d.target, tg))


@dataclass(frozen=True)
class ComparisonData:
    folder: str
    table_markdown: str
    rows: tuple[dict[str, Any], ...]
    methods: tuple[str, ...]
    best_so_far: dict[str, tuple[tuple[tuple[int, float], ...], ...]]  # per method, per seed
    top_at_step: dict[str, tuple[tuple[tuple[int, float], ...], ...]]  # per method, per seed
    best_schedule: dict[str, tuple[tuple[int, int, float], ...]]  # per method (best seed)
    runs: tuple[str, ...]
    mode: str = "max"
    param: str = "lr"
    best_segments: dict[str, tuple[tuple[int, int, dict[str, Any]], ...]] = field(
        default_factory=dict)  # per method (best seed): every hyperparameter
    reinforcement: bool = False  # RL runs (the paper's Figure 5)


def comparison_data(folder: str | Path) -> ComparisonData:
    """Records of a ``firepbt compare`` folder: table rows, curves per seed, best schedules."""
    from ..compare import RunSpec, table_rows

    folder = Path(folder)
    specs = [RunSpec(**d) for d in json.loads((folder / "comparison.json").read_text())]
    rows = table_rows(folder, specs)
    curves: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    tops: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    best: dict[str, tuple[float, tuple[tuple[int, int, float], ...]]] = {}
    segs: dict[str, tuple[float, tuple[tuple[int, int, dict[str, Any]], ...]]] = {}
    mode, param, rl = "max", "lr", False
    for s in specs:
        data = experiment_data(folder / "runs" / s.name)
        curves.setdefault(s.label, []).append(data.best_so_far)
        tops.setdefault(s.label, []).append(data.top_at_step)
        if data.top is not None:
            score = score_of(data.top.value, data.mode)
            if s.label not in best or score > best[s.label][0]:
                best[s.label] = (score, data.best_schedule)
                segs[s.label] = (score, data.best_segments)
        mode, param, rl = data.mode, data.param, data.reinforcement
    md = (folder / "table1.md").read_text() if (folder / "table1.md").exists() else ""
    return ComparisonData(str(folder), md, tuple(rows), tuple(curves),
                          {k: tuple(v) for k, v in curves.items()},
                          {k: tuple(v) for k, v in tops.items()},
                          {k: v[1] for k, v in best.items()}, tuple(s.name for s in specs),
                          mode, param, {k: v[1] for k, v in segs.items()}, rl)
