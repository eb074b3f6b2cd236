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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig
from .executor import score_of
from .lineage import chain
from .lineage import schedule as lineage_schedule
from .records import AssignEvaluator, EvaluatorSuccess, StopEvaluator
from .runner import _candidates, summarize, top_measures
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
class ExperimentData:
    store: str
    config: dict[str, Any]
    param: str
    steps_done: int
    finished: bool
    best_worker: int | None
    best_value: float | None
    best_test: float | None
    top: tuple[int, int, float, float | None] | None
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


def _num(value: Any) -> float:
    """A hyperparameter value as a float for the figures (NaN for a non-number, e.g. a
    categorical string: its figures stay empty rather than fail)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _param_of(cfg: ExperimentConfig, runner_state: dict[str, Any]) -> str:
    """The hyperparameter the figures show: the task's schedule parameter, else ``lr``, else
    the first numeric one (else the first)."""
    from .tasks import TASKS

    task = TASKS.get(cfg.task)
    if task is not None and task.schedule_param:
        return task.schedule_param
    for st in runner_state["workers"].values():
        hp = st.get("hparams")
        if hp:
            if "lr" in hp:
                return "lr"
            numeric = [k for k in sorted(hp) if not math.isnan(_num(hp[k]))]
            return (numeric or sorted(hp))[0]
    return "lr"


def experiment_data(path: str | Path) -> ExperimentData:
    """Everything a report shows about one store, as plain records."""
    st = Store.open(path, readonly=True)
    try:
        cfg = ExperimentConfig.from_dict(st.config)
        mode = st.meta("mode") or "max"
        summary = summarize(st)
        rounds = st.rounds()
        initial = json.loads(st.meta("initial_runner_state") or '{"workers": {}}')
        param = _param_of(cfg, initial)
        candidates = _candidates(cfg)
        top = top_measures(st, candidates)
        replay = json.loads(st.meta("replay") or "null")

        # best schedule: the one behind the top validation score
        best_sched: list[tuple[int, int, float]] = []
        lineage_rows: list[tuple[int, int, int, int | None, str | None]] = []
        if top is not None:
            pos = 0
            for seg in lineage_schedule(st, top[0], top[1]).segments:
                best_sched.append((pos, pos + seg.steps, _num(seg.hparams.get(param))))
                pos += seg.steps
            lineage_rows = [(lk.worker, lk.start, lk.stop, lk.received_from, lk.via)
                            for lk in chain(st, top[0], top[1])]

        # Figure 4a bands: hyperparameters in force during each round, per sub-population
        states = [initial["workers"]] + [r.runner_state["workers"] for r in rounds[:-1]]
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
                        from .schedule import Schedule, Segment

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
        events = []
        counts: dict[str, int] = {}
        pair = None
        for _r, step, d in st.decisions():
            counts[d.kind] = counts.get(d.kind, 0) + 1
            if isinstance(d, AssignEvaluator):
                events.append(EvaluatorEvent(step, d.kind, d.evaluator, d.parent, d.target,
                                             f"{param}={_fmt_value(d.hparams.get(param))}"))
            elif isinstance(d, StopEvaluator):
                p = "n/a" if d.p_value is None else f"{d.p_value:.3g}"
                events.append(EvaluatorEvent(step, d.kind, d.evaluator, d.parent, d.target,
                                             f"{d.reason}, p={p}, T={d.trained_steps}"))
            elif isinstance(d, EvaluatorSuccess):
                hp = hp_after.get(step, {}).get(str(d.target), {}).get("hparams") or {}
                events.append(EvaluatorEvent(
                    step, d.kind, d.evaluator, d.parent, d.target,
                    f"score diff {d.score_diff:.4g}, p={d.p_value:.3g}, T={d.trained_steps}",
                    _num(hp[param]) if param in hp else None))
                # the most telling example: the success with the longest evaluator curve
                if pair is None or d.trained_steps > pair.success_step - pair.evaluator_curve[0][0]:
                    pair = _curve_pair(st, d, step, mode)
        compute = {"train_seconds": sum(r.train_seconds for r in rounds),
                   "eval_seconds": sum(r.eval_seconds for r in rounds),
                   "controller_seconds": sum(r.decide_seconds for r in rounds)}
        return ExperimentData(
            str(st.path), cfg.to_dict(), param, summary.steps_done, summary.finished,
            summary.best_worker, summary.best_value, summary.best_test, top, replay,
            tuple(best_sched), tuple(bands), tuple(best_so_far), top_at_step, tuple(events),
            tuple(lineage_rows), pair, compute, counts)
    finally:
        st.close()


def _curve_pair(st: Store, d: EvaluatorSuccess, step: int, mode: str) -> CurvePair:
    start = step - d.trained_steps
    # the evaluator's curve starts with its parent's evaluation at the copy step (3.1.1, x_1)
    ev = [(s, score_of(v, mode)) for _r, _w, s, v in st.evaluations(d.parent) if s == start]
    ev += [(s, score_of(v, mode)) for _r, _w, s, v in st.evaluations(d.evaluator)
           if start < s <= step]
    tg = [(s, score_of(v, mode)) for _r, _w, s, v in st.evaluations(d.target)
          if start - 2 * d.trained_steps <= s <= step]
    return CurvePair(d.evaluator, d.target, step, tuple(ev), tuple(tg))


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


def comparison_data(folder: str | Path) -> ComparisonData:
    """Records of a ``firepbt compare`` folder: table rows, curves per seed, best schedules."""
    from .compare import RunSpec, table_rows

    folder = Path(folder)
    specs = [RunSpec(**d) for d in json.loads((folder / "comparison.json").read_text())]
    rows = table_rows(folder, specs)
    curves: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    tops: dict[str, list[tuple[tuple[int, float], ...]]] = {}
    best: dict[str, tuple[float, tuple[tuple[int, int, float], ...]]] = {}
    for s in specs:
        data = experiment_data(folder / "runs" / s.name)
        curves.setdefault(s.label, []).append(data.best_so_far)
        tops.setdefault(s.label, []).append(data.top_at_step)
        if data.top is not None:
            score = data.top[2] if data.config.get("task") != "nqm" else -data.top[2]
            if s.label not in best or score > best[s.label][0]:
                best[s.label] = (score, data.best_schedule)
    md = (folder / "table1.md").read_text() if (folder / "table1.md").exists() else ""
    return ComparisonData(str(folder), md, tuple(rows), tuple(curves),
                          {k: tuple(v) for k, v in curves.items()},
                          {k: tuple(v) for k, v in tops.items()},
                          {k: v[1] for k, v in best.items()}, tuple(s.name for s in specs))


# -- rendering ------------------------------------------------------------------------------

def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_positive_data(ax) -> bool:  # type: ignore[no-untyped-def]
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        if np.any(np.isfinite(y) & (y > 0)):
            return True
    return False


def _finish(fig, ax, path: Path, title: str, xlabel: str, ylabel: str,  # type: ignore[no-untyped-def]
            log_y: bool = False, legend: bool = True) -> Path:
    """Label, lay out, save and close one figure."""
    plt = _plt()
    if log_y and _has_positive_data(ax):  # a log axis needs a positive value to show
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
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


def figure1(data: ComparisonData, path: Path,
            title: str = "Figure 1: hand-tuned schedule vs the best schedules found",
            ylabel: str = "schedule hyperparameter (λ)") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, sched in data.best_schedule.items():
        xs, ys = _step_xy(sched)
        ax.plot(xs, ys, label=label, lw=2 if "FIRE" in label else 1.5)
    return _finish(fig, ax, path, title, "training step", ylabel, log_y=True)


def figure4a(data: ExperimentData, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for band in data.bands:
        line, = ax.plot(band.steps, band.median, drawstyle="steps-post",
                        label=f"P{band.subpopulation + 1} median")
        ax.fill_between(band.steps, band.low, band.high, step="post", alpha=0.2,
                        color=line.get_color())
    xs, ys = _step_xy(data.best_schedule)
    ax.plot(xs, ys, color="black", lw=1.5, ls="--", label="best schedule")
    succ = [(e.step, e.value) for e in data.events if e.kind == "evaluator_success"
            and e.value is not None]
    if succ:
        ax.scatter([s for s, _ in succ], [v for _, v in succ], s=40, facecolors="none",
                   edgecolors="black", zorder=5, label="evaluator success")
    return _finish(fig, ax, path, "Figure 4a: sub-population hyperparameters (median, 10-90%)",
                   "training step", data.param, log_y=True)


def _across_runs(curves: dict[str, Sequence[Sequence[tuple[int, float]]]]
                 ) -> list[tuple[str, list[int], np.ndarray]]:
    """Per label, the steps every non-empty run has and a (runs x steps) matrix of values."""
    out = []
    for label, runs in curves.items():
        runs = [r for r in runs if r]
        if runs:
            steps = sorted(set.intersection(*[{s for s, _ in r} for r in runs]))
            out.append((label, steps, np.array([[dict(r)[s] for s in steps] for r in runs])))
    return out


def figure4b(curves: dict[str, Sequence[Sequence[tuple[int, float]]]], path: Path,
             ylabel: str = "best validation so far",
             title: str = "Figure 4b: best validation score reached by each step "
             "(min-max over seeds)") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, steps, mat in _across_runs(curves):
        line, = ax.plot(steps, np.median(mat, 0), label=f"{label} (median of {len(mat)})")
        ax.fill_between(steps, mat.min(0), mat.max(0), alpha=0.2, color=line.get_color())
    lo = min((v for runs in curves.values() for r in runs for _, v in r[len(r) // 4:]),
             default=None)
    if lo is not None:
        ax.set_ylim(bottom=lo)
    return _finish(fig, ax, path, title, "training step", ylabel)


def figure5(curves: dict[str, Sequence[Sequence[tuple[int, float]]]], path: Path,
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


def figure3(pair: CurvePair, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(*zip(*pair.target_curve, strict=True), "o-", ms=3, label=f"target (worker {pair.target})")
    ax.plot(*zip(*pair.evaluator_curve, strict=True), "o-", ms=3,
            label=f"evaluator (worker {pair.evaluator}; first point: its parent at the copy)")
    ax.axvline(pair.success_step, color="gray", ls=":", label="success")
    return _finish(fig, ax, path, "Evaluator vs target around a success (cf. Figure 3)",
                   "training step", "validation score")


def lineage_figure(data: ExperimentData, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    for i, (w, a, b, src, via) in enumerate(data.lineage):
        ax.plot([a, b], [w, w], lw=3)
        if src is not None and i > 0:
            ax.annotate("", xy=(a, w), xytext=(a, src),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
            ax.text(a, (w + src) / 2, via.replace("_", " ") if via else "", fontsize=6)
    return _finish(fig, ax, path, "Lineage of the top network: which worker held its weights",
                   "training step", "worker", legend=False)


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{b64}"></p>'


_CSS = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 6px}th{background:#f3f3f3}code,pre{background:#f6f6f6}")


def _md_table(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.strip().splitlines() if r.strip()]
    if len(rows) < 2:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                   for r in rows[2:])
    return f"<table><tr>{head}</tr>{body}</table>"


def render_experiment(data: ExperimentData, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>firepbt report: {html.escape(data.config['method'])} on "
             f"{html.escape(data.config['task'])}</h1>",
             f"<p>Store <code>{html.escape(data.store)}</code>: {data.steps_done}/"
             f"{data.config['steps']} steps per worker, {data.config['workers']} workers, "
             f"{'finished' if data.finished else 'running or stopped'}.</p>"]
    rows = [("best member now", f"worker {data.best_worker}: {data.best_value} "
             f"(test {data.best_test})")]
    if data.top is not None:
        rows.append(("top validation over the run", f"{data.top[2]:.4f} by worker {data.top[0]}"
                     f" at step {data.top[1]}, test there {data.top[3]}"))
    if data.replay is not None:
        rows.append(("schedule replay (full training set)", f"test {data.replay['test']}, "
                     f"validation-split value {data.replay['value']:.4f}"))
    rows += [(k.replace("_", " "), f"{v:.1f} s") for k, v in data.compute.items()]
    rows += [(f"decisions: {k}", str(v)) for k, v in sorted(data.decision_counts.items())]
    parts.append("<h2>Results</h2><table>" + "".join(
        f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
        + "</table>")
    parts.append("<h2>Winning schedule</h2><table><tr><th>steps</th><th>"
                 f"{html.escape(data.param)}</th></tr>" + "".join(
                     f"<tr><td>{a}-{b}</td><td>{v:.4g}</td></tr>" for a, b, v in data.best_schedule)
                 + "</table>")
    parts.append(_img(figure4a(data, out_dir / "figure4a.png")))
    parts.append(_img(figure4b({data.config["method"]: [data.best_so_far]},
                               out_dir / "figure4b.png")))
    if data.curve_pair is not None:
        parts.append(_img(figure3(data.curve_pair, out_dir / "figure3.png")))
    if data.lineage:
        parts.append(_img(lineage_figure(data, out_dir / "lineage.png")))
    ev = [e for e in data.events]
    if ev:
        parts.append(f"<h2>What the evaluators did ({len(ev)} events)</h2><table><tr><th>step"
                     "</th><th>event</th><th>evaluator</th><th>parent</th><th>target</th><th>"
                     "detail</th></tr>" + "".join(
                         f"<tr><td>{e.step}</td><td>{e.kind}</td><td>{e.evaluator}</td><td>"
                         f"{e.parent}</td><td>{e.target}</td><td>{html.escape(e.detail)}</td></tr>"
                         for e in ev[:500]) + "</table>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(data.config, indent=1))
                 + "</pre>")
    page = out_dir / "report.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>firepbt report"
                    f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    return page


def render_comparison(data: ComparisonData, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>firepbt comparison: {html.escape(data.folder)}</h1>",
             "<h2>Table 1</h2>", _md_table(data.table_markdown)]
    if _is_rl(data):
        parts += [_img(figure5(data.top_at_step, out_dir / "figure5.png")),
                  _img(figure1(data, out_dir / "figure1.png", "Learning-rate schedules of the "
                               "top returns", "learning rate (lr)")),
                  _img(figure4b(data.best_so_far, out_dir / "figure4b.png",
                                "best average return so far", "Best average episode return "
                                "reached by each step (min-max over seeds)"))]
    else:
        parts += [_img(figure1(data, out_dir / "figure1.png")),
                  _img(figure4b(data.best_so_far, out_dir / "figure4b.png"))]
    fire_runs = [r for r in data.runs if r.startswith("fire")]
    if fire_runs:
        exp = experiment_data(Path(data.folder) / "runs" / fire_runs[0])
        parts.append(f"<h2>One FIRE PBT run: {html.escape(fire_runs[0])}</h2>")
        parts.append(_img(figure4a(exp, out_dir / "figure4a.png")))
        if exp.curve_pair is not None:
            parts.append(_img(figure3(exp.curve_pair, out_dir / "figure3.png")))
    parts.append("<h2>Best schedules</h2>")
    for label, sched in data.best_schedule.items():
        parts.append(f"<h3>{html.escape(label)}</h3><p>" + ", ".join(
            f"{v:.4g} x {b - a}" for a, b, v in sched) + "</p>")
    page = out_dir / "report.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>firepbt "
                    f"comparison</title><style>{_CSS}</style></head><body>{''.join(parts)}"
                    "</body></html>")
    return page


def _is_rl(data: ComparisonData) -> bool:
    from .tasks.vmpo import ENVIRONMENTS

    spec = json.loads((Path(data.folder) / "comparison.json").read_text())
    return bool(spec) and spec[0]["task"] in ENVIRONMENTS


def report(path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` (and the PNG figures) for a store or a comparison folder."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path / "report"
    if (path / "comparison.json").exists():
        return render_comparison(comparison_data(path), out)
    return render_experiment(experiment_data(path), out)
