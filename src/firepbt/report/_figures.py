"""The report's figures (paper numbering), drawn with matplotlib from the data records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._data import ComparisonData, CurvePair, ExperimentData, Panel

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


def finish_figure(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str,
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
    return finish_figure(fig, ax, path, title, "training step", data.param, log_y=True)


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
    return finish_figure(fig, ax, path, f"Figure 4a: {panel.param} per sub-population "
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
    return finish_figure(fig, ax, path, title, "training step",
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
    return finish_figure(fig, ax, path, "Figure 5: top return at each step (median, 25-75%, min-max)",
                   "training step", ylabel)


def figure3(pair: CurvePair, path: Path, mode: str = "max") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(*zip(*pair.target_curve, strict=True), "o-", ms=3, label=f"target (worker {pair.target})")
    ax.plot(*zip(*pair.evaluator_curve, strict=True), "o-", ms=3,
            label=f"evaluator (worker {pair.evaluator}; first point: its parent at the copy)")
    ax.axvline(pair.success_step, color="gray", ls=":", label="success")
    return finish_figure(fig, ax, path, "Evaluator vs target around a success (cf. Figure 3)",
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
    return finish_figure(fig, ax, path, "Lineage of the winning network: which worker held its "
                   "weights", "training step", "worker", legend=False)
