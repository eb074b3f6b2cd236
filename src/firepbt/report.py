"""Reports: plain data records extracted from stores, then figures and one HTML page.

:func:`experiment_data` and :func:`comparison_data` read stores into frozen records (tested);
:func:`render_experiment` / :func:`render_comparison` draw them with matplotlib (imported here
only) into PNG files and a self-contained HTML page with the figures embedded.

Figures (paper numbering): 1 - the hand-tuned schedule vs the best schedules found by PBT and
FIRE PBT; 4a - each sub-population's hyperparameter distribution over training, evaluator
successes marked, best schedule overlaid; 4b - the best validation score reached by each step,
distribution across seeds, per method; 5 (V-MPO tasks) - the population's top average episode
return at each step, distribution across experiments, per method; plus a Figure-3-style evaluator-vs-target comparison and
the best member's lineage.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig
from .controllers.fire import curve_from
from .errors import ConfigError, StoreError
from .executor import observed_score, score_of
from .lineage import chain
from .lineage import schedule as lineage_schedule
from .records import AssignEvaluator, EvaluatorSuccess, StopEvaluator
from .results import (
    Activity,
    TopPoint,
    best_effort_workers,
    fire_caveats,
    main_param,
    resolved_settings,
    summarize,
)
from .store import Store


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
    mode = st.meta("mode") or "max"
    summary = summarize(st)
    rounds = st.rounds()
    initial = json.loads(st.meta("initial_runner_state") or '{"workers": {}}')
    param = main_param(cfg, initial)
    candidates = best_effort_workers(cfg)
    top = summary.top
    replay = json.loads(st.meta("replay") or "null")

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
    states = [initial["workers"]] + [r.runner_state["workers"] for r in rounds[:-1]]
    bands = _bands(states, initial, cfg, param)

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
    hp_after = {r.step: r.runner_state["workers"] for r in rounds}
    row_at = {r.step: r for r in rounds}
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
            hp = hp_after.get(step, {}).get(str(d.target), {}).get("hparams") or {}
            events.append(EvaluatorEvent(
                step, d.kind, d.evaluator, d.parent, d.target, _evidence(d),
                _num(hp[param]) if param in hp else None))
            # the most telling example: the success with the longest evaluator curve
            if pair is None or d.trained_steps > pair.success_step - pair.evaluator_curve[0][0]:
                pair = _curve_pair(st, d, step, mode,
                                   row_at.get(step - cfg.ready_interval)) or pair
    # one panel per numeric hyperparameter
    names = sorted({k for v in initial["workers"].values() for k in (v.get("hparams") or {})
                    if not math.isnan(_num(v["hparams"][k]))})
    panels = []
    for name in [param, *(n for n in names if n != param)]:
        succ = []
        for _r, step, d in st.decisions(["evaluator_success"]):
            assert isinstance(d, EvaluatorSuccess)
            hp = hp_after.get(step, {}).get(str(d.target), {}).get("hparams") or {}
            if name in hp:
                succ.append((step, _num(hp[name])))
        panels.append(Panel(name, bands if name == param else _bands(states, initial, cfg,
                                                                     name),
                            tuple((a, b, _num(h.get(name))) for a, b, h in segments),
                            tuple(succ)))
    space = tuple(json.loads(st.meta("space") or "[]"))
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
        tuple(fire_caveats(st)))


def _bands(states: Sequence[dict[str, Any]], initial: dict[str, Any], cfg: ExperimentConfig,
           param: str) -> tuple[SubpopulationBand, ...]:
    """The median and 10-90% of ``param`` over each sub-population's members, round by round
    (``states``: the workers before each round)."""
    from .schedule import Schedule, Segment

    subs = sorted({v["sub"] for v in initial["workers"].values() if v["sub"] is not None})
    bands = []
    for sub in subs:
        steps, med, lo, hi = [], [], [], []
        for i, ws in enumerate(states):
            vals = []
            for v in ws.values():
                if v["sub"] != sub or v["role"] != "member":
                    continue
                if v.get("schedule"):
                    sched = Schedule(tuple(Segment(h, int(n)) for h, n in v["schedule"]))
                    vals.append(_num(sched.hparams_at(i * cfg.ready_interval).get(param)))
                elif v.get("hparams"):
                    vals.append(_num(v["hparams"].get(param)))
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
    for key in ("executor", "device"):
        used = st.meta(key)
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


def _curve_pair(st: Store, d: EvaluatorSuccess, step: int, mode: str,
                prev: Any) -> CurvePair | None:
    """The two curves the controller compared at a success, exactly: each as it stood in the
    controller's state after the round before (``prev``), plus this round's evaluations.
    Values as evaluated (a loss stays a loss)."""
    if prev is None:
        return None
    cs = prev.controller_state
    ev = cs.get("evaluators", {}).get(str(d.evaluator))
    tg = cs.get("members", {}).get(str(d.target))
    if ev is None or tg is None:
        return None

    def curve(entry: Any, worker: int) -> tuple[tuple[int, float], ...]:
        evals = [(s, v) for _r, _w, s, v in st.evaluations(worker) if s <= step]
        # the curve as the controller held it after the round before (scores), then values
        before = curve_from(entry, [(s, observed_score(v, mode)) for s, v in evals
                                    if s <= prev.step])
        pts = [(s, score_of(v, mode)) for s, v in before]
        pts += [(s, v) for s, v in evals if s > prev.step]
        return tuple(pts)

    return CurvePair(d.evaluator, d.target, step, curve(ev, d.evaluator), curve(tg, d.target))


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


def comparison_data(folder: str | Path) -> ComparisonData:
    """Records of a ``firepbt compare`` folder: table rows, curves per seed, best schedules."""
    from .compare import RunSpec, table_rows

    folder = Path(folder)
    specs = [RunSpec(**d) for d in json.loads((folder / "comparison.json").read_text())]
    rows = table_rows(folder, specs)
    curves: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    tops: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    best: dict[str, tuple[float, tuple[tuple[int, int, float], ...]]] = {}
    segs: dict[str, tuple[float, tuple[tuple[int, int, dict[str, Any]], ...]]] = {}
    mode, param = "max", "lr"
    for s in specs:
        data = experiment_data(folder / "runs" / s.name)
        curves.setdefault(s.label, []).append(data.best_so_far)
        tops.setdefault(s.label, []).append(data.top_at_step)
        if data.top is not None:
            score = score_of(data.top.value, data.mode)
            if s.label not in best or score > best[s.label][0]:
                best[s.label] = (score, data.best_schedule)
                segs[s.label] = (score, data.best_segments)
        mode, param = data.mode, data.param
    md = (folder / "table1.md").read_text() if (folder / "table1.md").exists() else ""
    return ComparisonData(str(folder), md, tuple(rows), tuple(curves),
                          {k: tuple(v) for k, v in curves.items()},
                          {k: tuple(v) for k, v in tops.items()},
                          {k: v[1] for k, v in best.items()}, tuple(s.name for s in specs),
                          mode, param, {k: v[1] for k, v in segs.items()})


# -- words ----------------------------------------------------------------------------------

_METHOD_NAMES = {"fire": "FIRE PBT", "pbt": "PBT", "random": "random search"}


def fmt_num(x: Any) -> str:
    """A value rounded for reading: 4 significant digits (``n/a`` for None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def _hp(hparams: dict[str, Any] | None) -> str:
    if not hparams:
        return "-"
    return ", ".join(f"{k} {fmt_num(v)}" for k, v in hparams.items())


def _objective(data: ExperimentData) -> str:
    return "objective" if data.best_test is None and (data.top is None or data.top.test is None) \
        else "validation"


def story(data: ExperimentData) -> list[str]:
    """What happened in a run, in a few sentences (the report's opening)."""
    cfg, st = data.config, data.settings
    method = _METHOD_NAMES.get(cfg["method"], cfg["method"])
    what = _objective(data)
    better = "lower is better" if data.mode == "min" else "higher is better"
    layout = ""
    if cfg["method"] == "fire":
        layout = (f" ({st['subpopulations']} sub-populations of {st['members_per_subpopulation']}"
                  f" members, {st['evaluators']} evaluators)")
    state = "finished" if data.finished else "stopped or still running"
    out = [f"{method} on {cfg['task']}: {cfg['workers']} workers{layout} x {cfg['steps']:,} "
           f"steps, seed {cfg['seed']}; {state} at step {data.steps_done:,}. The {what} "
           f"value is what the trainable's evaluate() returns ({better})."]
    if data.top is not None:
        test = "" if data.top.test is None else f", test {fmt_num(data.top.test)} there"
        out.append(f"Winner: worker {data.top.worker} reached the top {what} value "
                   f"{fmt_num(data.top.value)} at step {data.top.step:,}{test}.")
    if data.best_worker is not None:
        test = "" if data.best_test is None else f", test {fmt_num(data.best_test)}"
        out.append(f"{'At the end' if data.finished else 'Now'}, the best member is worker "
                   f"{data.best_worker}: {what} {fmt_num(data.best_value)}{test}, "
                   f"hyperparameters {_hp(data.best_hparams)}.")
    if data.best_segments:
        first, last = data.best_segments[0][2], data.best_segments[-1][2]
        n = len(data.best_segments)
        if n == 1:
            out.append(f"The winning schedule kept {_hp(first)} throughout.")
        else:
            out.append(f"The winning schedule (table below) starts at {_hp(first)} and ends at "
                       f"{_hp(last)}, in {n} pieces.")
    if data.replay is not None:
        if data.replay.get("test") is not None:
            out.append(f"Retrained from scratch on the full training set, that schedule gives "
                       f"test {fmt_num(data.replay['test'])}.")
        else:
            out.append(f"Retrained from scratch, that schedule ends at {what} "
                       f"{fmt_num(data.replay['value'])}.")
    act = data.activity
    if act is not None and cfg["method"] == "fire":
        ex = ", ".join(f"P{i + 1} {n}" for i, n in act.exploits.items())
        out.append(f"Exploits (a member copying a better one of its sub-population): {ex}. "
                   f"Evaluators: {act.assignments} assigned, {act.successes} successes "
                   "(a parent's weights, trained with the hyperparameters of a target in the "
                   "sub-population below, improved faster than the target and replaced its "
                   "weights).")
    elif act is not None and cfg["method"] == "pbt":
        out.append(f"Exploits (a bottom member copying a top one): {sum(act.exploits.values())}.")
    moves = []
    for band in data.bands:
        if band.median:
            moves.append(f"P{band.subpopulation + 1} {fmt_num(band.median[0])} -> "
                         f"{fmt_num(band.median[-1])}")
    if cfg["method"] == "fire" and moves:
        out.append(f"Median {data.param} per sub-population, first round -> last: "
                   f"{'; '.join(moves)} (Figure 4a).")
    out += data.caveats
    return out


# -- rendering ------------------------------------------------------------------------------

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spans_decades(ax: Any, factor: float = 10.0) -> bool:
    """Whether the plotted values are all positive and differ by more than ``factor``."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    vals = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.array([])
    return bool(vals.size) and bool(np.all(vals > 0)) and vals.max() > factor * vals.min()


def _finish(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str,
            log_y: bool = False, legend: bool = True) -> Path:
    """Label, lay out, save and close one figure. ``log_y``: a log axis where the values are
    positive and span more than a factor of 10."""
    plt = _plt()
    if log_y and _spans_decades(ax):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _step_xy(sched: Sequence[tuple[int, int, float]]) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for a, b, v in sched:
        xs += [a, b]
        ys += [v, v]
    return xs, ys


def _value_label(mode: str, what: str = "validation value") -> str:
    return f"{what} (lower is better)" if mode == "min" else what


def figure1(data: ComparisonData, path: Path,
            title: str = "Figure 1: the hand-tuned schedule and the best schedules found") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, sched in data.best_schedule.items():
        xs, ys = _step_xy(sched)
        ax.plot(xs, ys, label=label, lw=2 if "FIRE" in label else 1.5)
    return _finish(fig, ax, path, title, "training step", data.param, log_y=True)


def figure4a(data: ExperimentData, path: Path, panel: Panel | None = None) -> Path:
    """Figure 4a for ``panel`` (default: the main hyperparameter's)."""
    if panel is None:
        panel = Panel(data.param, data.bands, data.best_schedule,
                      tuple((e.step, e.value) for e in data.events
                            if e.kind == "evaluator_success" and e.value is not None))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    end = data.steps_done
    for band in panel.bands:
        # each value holds for its round: the last one up to the last step
        steps = [*band.steps, end] if band.steps and end > band.steps[-1] else list(band.steps)
        extend = len(steps) - len(band.steps)
        line, = ax.plot(steps, [*band.median, *band.median[-1:] * extend],
                        drawstyle="steps-post", label=f"P{band.subpopulation + 1} median")
        ax.fill_between(steps, [*band.low, *band.low[-1:] * extend],
                        [*band.high, *band.high[-1:] * extend], step="post", alpha=0.2,
                        color=line.get_color())
    xs, ys = _step_xy(panel.best_schedule)
    ax.plot(xs, ys, color="black", lw=1.5, ls="--", label="winning schedule")
    succ = list(panel.successes)
    if succ:
        ax.scatter([s for s, _ in succ], [v for _, v in succ], s=40, facecolors="none",
                   edgecolors="black", zorder=5, label="evaluator success")
    return _finish(fig, ax, path, f"Figure 4a: {panel.param} per sub-population "
                   "(median, 10-90%)", "training step", panel.param, log_y=True)


def _across_runs(curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]]
                 ) -> list[tuple[str, list[int], np.ndarray]]:
    """Per label, the steps every non-empty run has and a (runs x steps) matrix of values."""
    out = []
    for label, runs in curves.items():
        runs = [r for r in runs if r]
        if runs:
            steps = sorted(set.intersection(*[{s for s, _ in r} for r in runs]))
            out.append((label, steps, np.array([[dict(r)[s] for s in steps] for r in runs])))
    return out


def figure4b(curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]], path: Path,
             mode: str = "max", what: str = "validation value") -> Path:
    """The best value reached by each step: one line per run, or per method the median
    across runs with the min-max range shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    series = _across_runs(curves)
    several = any(len(mat) > 1 for _l, _s, mat in series)
    for label, steps, mat in series:
        if len(mat) > 1:
            line, = ax.plot(steps, np.median(mat, 0), label=f"{label} (median of {len(mat)})")
            ax.fill_between(steps, mat.min(0), mat.max(0), alpha=0.2, color=line.get_color())
        else:
            ax.plot(steps, mat[0], label=label)
    title = f"Figure 4b: best {what} reached by each step"
    if several:
        title += " (min-max over seeds)"
    return _finish(fig, ax, path, title, "training step",
                   _value_label(mode, f"best {what} so far"), log_y=mode == "min")


def figure5(curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]], path: Path,
            ylabel: str = "top average episode return") -> Path:
    """The paper's Figure 5: per method, the population's top objective at each step -
    median across experiments, with the 25-75% and min-max ranges shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, steps, mat in _across_runs(curves):
        line, = ax.plot(steps, np.median(mat, 0), label=f"{label} (median of {len(mat)})")
        ax.fill_between(steps, *np.percentile(mat, [25, 75], axis=0), alpha=0.25,
                        color=line.get_color())
        ax.fill_between(steps, mat.min(0), mat.max(0), alpha=0.08, color=line.get_color())
    return _finish(fig, ax, path, "Figure 5: top return at each step (median, 25-75%, min-max)",
                   "training step", ylabel)


def figure3(pair: CurvePair, path: Path, mode: str = "max") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(*zip(*pair.target_curve, strict=True), "o-", ms=3, label=f"target (worker {pair.target})")
    ax.plot(*zip(*pair.evaluator_curve, strict=True), "o-", ms=3,
            label=f"evaluator (worker {pair.evaluator}; first point: its parent at the copy)")
    ax.axvline(pair.success_step, color="gray", ls=":", label="success")
    return _finish(fig, ax, path, "Evaluator vs target around a success (cf. Figure 3)",
                   "training step", _value_label(mode), log_y=mode == "min")


_VIA = {"exploit": ("exploit", "tab:blue"), "assign_evaluator": ("evaluator assigned", "tab:orange"),
        "evaluator_success": ("evaluator success", "tab:green")}


def lineage_figure(data: ExperimentData, path: Path) -> Path:
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7, 3))
    workers = sorted({w for w, *_ in data.lineage} | {src for *_, src, _v in data.lineage
                                                      if src is not None})
    for i, (w, a, b, src, via) in enumerate(data.lineage):
        ax.plot([a, b], [w, w], lw=4, color="dimgray", solid_capstyle="butt")
        if src is not None and i > 0:
            colour = _VIA.get(via or "", ("copy", "gray"))[1]
            ax.annotate("", xy=(a, w), xytext=(a, src),
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5})
    ax.set_yticks(workers)
    ax.set_yticklabels([str(w) for w in workers])
    ax.set_ylim(min(workers) - 0.7, max(workers) + 0.7)
    used = {via for *_, via in data.lineage if via}
    handles = [Line2D([], [], color="dimgray", lw=4, label="worker holding the weights")]
    handles += [Line2D([], [], color=c, lw=1.5, label=f"copy: {name}")
                for k, (name, c) in _VIA.items() if k in used]
    ax.legend(handles=handles, fontsize=7, loc="best")
    return _finish(fig, ax, path, "Lineage of the winning network: which worker held its "
                   "weights", "training step", "worker", legend=False)


def _img(path: Path, caption: str = "") -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{b64}">'
            f"{cap}</figure>")


_CSS = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222;line-height:1.4}"
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left}th{background:#f3f3f3}code,pre{background:#f6f6f6}"
        "figure{margin:1em 0}figcaption{font-size:13px;color:#555}"
        ".story p{margin:.3em 0}.note{font-size:13px;color:#555}")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _md_table(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.strip().splitlines() if r.strip()]
    if len(rows) < 2:
        return ""
    return _table([c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[2:]])


def _schedule_table(segments: Sequence[tuple[int, int, dict[str, Any]]]) -> str:
    names = sorted({k for _a, _b, hp in segments for k in hp})
    return _table(["steps", *names], [[f"{a:,}-{b:,}", *[fmt_num(hp.get(k)) for k in names]]
                                      for a, b, hp in segments])


_DECISIONS = {
    "exploit": "a member copied the weights of a better member of its sub-population and "
               "perturbed their hyperparameters",
    "keep": "a member kept its weights and hyperparameters",
    "fitness": "a sub-population's members ranked by their fitness this round (evidence "
               "for the exploits)",
    "assign_evaluator": "an idle evaluator received a parent's weights and a child "
                        "sub-population target's hyperparameters",
    "stop_evaluator": "an evaluator stopped without success (see its reason)",
    "evaluator_success": "an evaluator improved faster than its target; its weights replaced "
                         "the target's",
    "worker_failed": "a worker's training raised; it was restarted from a copy",
}


def _page(title: str, parts: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def _range(pair: Any) -> str:
    return "" if not pair else f"[{fmt_num(pair[0])}, {fmt_num(pair[1])}]"


def _file_part(name: str) -> str:
    """A hyperparameter's name as part of a file name (any name a space may hold)."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    return safe if safe == name and safe else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def render_experiment(data: ExperimentData, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = data.config
    what = _objective(data)
    method = _METHOD_NAMES.get(cfg["method"], cfg["method"])
    parts = [f"<h1>firepbt report: {html.escape(method)} on {html.escape(cfg['task'])}</h1>",
             f"<p class='note'>Store <code>{html.escape(data.store)}</code></p>",
             "<h2>What happened</h2><div class='story'>"
             + "".join(f"<p>{html.escape(x)}</p>" for x in story(data)) + "</div>"]
    rows: list[tuple[str, str]] = []
    if data.top is not None:
        test = "" if data.top.test is None else f", test there {fmt_num(data.top.test)}"
        rows.append((f"top {what} over the run", f"{fmt_num(data.top.value)} by worker "
                     f"{data.top.worker} at step {data.top.step:,}{test}"))
    if data.best_worker is not None:
        test = "" if data.best_test is None else f", test {fmt_num(data.best_test)}"
        rows.append(("best member at the end" if data.finished else "best member now",
                     f"worker {data.best_worker}: {fmt_num(data.best_value)}{test}"))
    if data.replay is not None:
        rows.append(("winning schedule retrained from scratch",
                     f"test {fmt_num(data.replay['test'])}" if data.replay.get("test")
                     is not None else f"{what} {fmt_num(data.replay['value'])}"))
    rows += [(k.replace("_", " "), f"{v:.1f} s") for k, v in data.compute.items()]
    parts.append("<h2>Results</h2>" + _table(["measure", "value"], rows))
    if data.best_segments:
        parts.append("<h2>Winning schedule</h2><p class='note'>The hyperparameters that trained "
                     "the network of the top score, from step 0 (<code>firepbt lineage --json"
                     "</code> writes it; <code>firepbt replay</code> retrains it).</p>"
                     + _schedule_table(data.best_segments))
    for i, panel in enumerate(data.panels or (None,)):
        name = data.param if panel is None else panel.param
        parts.append(_img(figure4a(data, out_dir / ("figure4a.png" if i == 0 else
                                                    f"figure4a-{_file_part(name)}.png"), panel),
                          f"Each sub-population's {name} over training (median and 10-90% of "
                          "its members), the winning schedule dashed, evaluator successes "
                          "circled at the target's value."))
    parts.append(_img(figure4b({method: [data.best_so_far]}, out_dir / "figure4b.png",
                               data.mode, f"{what} value"),
                      f"The best {what} value any best-effort member had reached by each step."))
    if data.curve_pair is not None:
        parts.append(_img(figure3(data.curve_pair, out_dir / "figure3.png", data.mode),
                          "An evaluator's curve against its target's, up to the success with "
                          "the longest evaluation. A success means the evaluator improved "
                          "faster than its target from the same level (best_score_diff > 0, "
                          "and the binomial test significant: paper 3.2), not that its value "
                          "is better at that moment: its curve may still lie below the "
                          "target's."))
    if data.lineage:
        parts.append(_img(lineage_figure(data, out_dir / "lineage.png"),
                          "Which worker held the winning network's weights over training; "
                          "arrows are the copies that moved them."))
    if data.decision_counts:
        parts.append("<h2>Decisions</h2>" + _table(
            ["decision", "count", "meaning"],
            [(k, v, _DECISIONS.get(k, "")) for k, v in sorted(data.decision_counts.items())]))
    if data.events:
        parts.append(
            f"<h2>What the evaluators did ({len(data.events)} events)</h2><p class='note'>"
            "<b>evaluator</b>: the worker doing the evaluation; <b>parent</b>: the member of "
            "sub-population P(i) whose weights it copied; <b>target</b>: the member of "
            "P(i-1) whose hyperparameters it trains with and whose improvement rate it is "
            "compared with; <b>p</b>: the binomial test's p-value that the evaluator improves "
            "faster than the target (success below p_stat); <b>T</b>: steps the evaluator "
            "trained; <b>score diff</b>: how much more the evaluator improved than the target "
            "over sections of equal length that start at the same smoothed level "
            "(best_score_diff, paper 3.1.1).</p>"
            + _table(["step", "event", "evaluator", "parent", "target", "detail"],
                     [(f"{e.step:,}", e.kind, e.evaluator, e.parent, e.target, e.detail)
                      for e in data.events[:500]]))
    if data.space:
        parts.append("<h2>Search space</h2><p class='note'>Initial values are sampled from the "
                     "initial range; explore multiplies by one of the factors and clips to the "
                     "bounds.</p>" + _table(
                         ["hyperparameter", "kind", "initial range", "bounds", "explore factors"],
                         [(r["name"], r["kind"], _range(r.get("initial")) if "initial" in r else
                           "choices " + ", ".join(map(str, r.get("choices", []))),
                           _range(r.get("bounds")), ", ".join(f"{f:g}" for f in
                                                              r.get("factors", [])))
                          for r in data.space]))
    parts.append("<h2>Configuration</h2><p class='note'>As the run used it, defaults resolved."
                 "</p>" + _table(["setting", "value"],
                                 [(k, json.dumps(v) if isinstance(v, dict) else v)
                                  for k, v in data.settings.items()]))
    page = out_dir / "report.html"
    page.write_text(_page("firepbt report", parts))
    return page


def render_comparison(data: ComparisonData, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    what = "validation value" if data.mode == "max" else "objective"
    better = "lower is better" if data.mode == "min" else "higher is better"
    parts = [f"<h1>firepbt comparison: {html.escape(data.folder)}</h1>",
             "<h2>Table 1</h2>", _md_table(data.table_markdown),
             f"<p class='note'>Mean ± standard deviation over seeds ({better}). Top: the best "
             f"{what} any best-effort member reached"
             + ("; matching test: the test score of that network there; schedule replay: its "
                "schedule retrained from scratch on the full training set, tested; final "
                "best-member test: the best member at the end, tested.</p>"
                if data.mode == "max" and "test" in data.table_markdown else
                "; best member's final: the best member's value at the end; schedule replay: "
                "the top point's schedule retrained from scratch, its final value.</p>")]
    if _is_rl(data):
        parts += [_img(figure5(data.top_at_step, out_dir / "figure5.png")),
                  _img(figure1(data, out_dir / "figure1.png", "Learning-rate schedules of the "
                               "top returns")),
                  _img(figure4b(data.best_so_far, out_dir / "figure4b.png", data.mode,
                                "average return"))]
    else:
        parts += [_img(figure1(data, out_dir / "figure1.png"),
                       "Per method, the schedule behind its best seed's top score (random "
                       "search: the hand-tuned schedule scaled by its sampled value)."),
                  _img(figure4b(data.best_so_far, out_dir / "figure4b.png", data.mode, what),
                       f"Per method, the best {what} reached by each step: the median over "
                       "seeds, the range shaded.")]
    fire_runs = [r for r in data.runs if r.startswith("fire")]
    if fire_runs:
        exp = experiment_data(Path(data.folder) / "runs" / fire_runs[0])
        parts.append(f"<h2>One FIRE PBT run: {html.escape(fire_runs[0])}</h2><div "
                     "class='story'>" + "".join(f"<p>{html.escape(x)}</p>" for x in story(exp))
                     + "</div>")
        parts.append(_img(figure4a(exp, out_dir / "figure4a.png"),
                          f"Each sub-population's {exp.param} over training (median and 10-90%),"
                          " the winning schedule dashed, evaluator successes circled."))
        if exp.curve_pair is not None:
            parts.append(_img(figure3(exp.curve_pair, out_dir / "figure3.png", exp.mode),
                              "An evaluator's curve against its target's, up to the success "
                              "with the longest evaluation."))
    parts.append("<h2>Best schedules</h2><p class='note'>Per method, the schedule behind its "
                 "best seed's top score.</p>")
    for label, segs in data.best_segments.items():
        parts.append(f"<h3>{html.escape(label)}</h3>" + _schedule_table(segs))
    page = out_dir / "report.html"
    page.write_text(_page("firepbt comparison", parts))
    return page


def _is_rl(data: ComparisonData) -> bool:
    from .tasks.vmpo import ENVIRONMENTS

    spec = json.loads((Path(data.folder) / "comparison.json").read_text())
    return bool(spec) and spec[0]["task"] in ENVIRONMENTS


def report(path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` (and the PNG figures) for a store or a comparison folder."""
    path = Path(path)
    if out_dir is not None and not str(out_dir).strip():
        raise ConfigError("out", "a folder path (not empty)", str(out_dir))
    out = Path(out_dir) if out_dir is not None else path / "report"
    if out_dir is None:  # inside the store: never written through a symbolic link (a store
        for p in (out, *(out.glob("*") if out.is_dir() else ())):  # from elsewhere may hold
            if p.is_symlink():                                       # links out of it)
                raise StoreError(f"the report folder {str(out)!r} holds a symbolic link "
                                 f"({p.name}); firepbt does not write through links - remove "
                                 "it, or give --out")
    if (path / "comparison.json").exists():
        return render_comparison(comparison_data(path), out)
    return render_experiment(experiment_data(path), out)
