"""The report's page: one self-contained HTML file with the figures embedded."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ._data import ComparisonData, ExperimentData, comparison_data, experiment_data
from ._figures import figure1, figure3, figure4a, figure4b, figure5, lineage_figure
from ._story import METHOD_NAMES, fmt_num, objective_word, story


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
    """One row per segment; a linear warm-up (random search's hand-tuned schedule) as one row
    (:func:`firepbt.schedule.display_rows`)."""
    from ..schedule import Schedule, Segment, display_rows

    names = sorted({k for _a, _b, hp in segments for k in hp})
    if not segments:
        return _table(["steps", *names], [])
    rows, pos = [], segments[0][0]
    sched = Schedule(tuple(Segment(hp, b - a) for a, b, hp in segments))
    for label, hp, steps in display_rows(sched):
        warm = label.split(" to ")[0].removeprefix("linear warm-up of ") if label else None
        rows.append([f"{pos:,}-{pos + steps:,}", *[
            f"linear warm-up to {fmt_num(hp.get(k))}{label[label.index(' in '):]}"
            if label and k == warm else fmt_num(hp.get(k)) for k in names]])
        pos += steps
    return _table(["steps", *names], rows)


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
    what = objective_word(data)
    method = METHOD_NAMES.get(cfg["method"], cfg["method"])
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
    if data.reinforcement:
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
