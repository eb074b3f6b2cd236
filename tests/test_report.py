"""Report data records for small stored experiments (records, not pixels)."""

from __future__ import annotations

import json

import pytest
from helpers import C0, C1, colour_pixels

from firepbt.api import run
from firepbt.config import ExperimentConfig
from firepbt.lineage import schedule
from firepbt.report import comparison_data, experiment_data, report
from firepbt.store import Store


@pytest.fixture(scope="module")
def fire_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "fire"
    cfg = ExperimentConfig(task="nqm", method="fire", workers=12, steps=500, ready_interval=50,
                           eval_interval=10, seed=1, task_options={"dims": 2000})
    run(cfg, path)
    return path


def test_experiment_records_match_the_store(fire_store):
    data = experiment_data(fire_store)
    st = Store.open(fire_store)
    decisions = st.decisions()
    evals = st.evaluations()
    st.close()
    # decision counts and evaluator events come from the stored decisions
    counts = {}
    for _r, _s, d in decisions:
        counts[d.kind] = counts.get(d.kind, 0) + 1
    assert data.decision_counts == counts
    n_eval_events = sum(counts.get(k, 0) for k in
                        ("assign_evaluator", "stop_evaluator", "evaluator_success"))
    assert len(data.events) == n_eval_events
    # best-so-far is monotone (min objective: non-increasing) and ends at the top value
    values = [v for _s, v in data.best_so_far]
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    assert data.top is not None and values[-1] == data.top[2]
    # Figure 5's top at each step: never better than the best so far, and reaching it
    assert [s for s, _ in data.top_at_step] == [s for s, _ in data.best_so_far]
    assert all(t >= b for (_, t), (_, b) in zip(data.top_at_step, data.best_so_far, strict=True))
    assert min(v for _s, v in data.top_at_step) == data.top[2]
    best_p1 = min(v for _r, w, _s, v in evals if w < 4)
    assert data.top[2] == best_p1
    # the best schedule covers the top step and equals the lineage schedule
    st = Store.open(fire_store)
    sched = schedule(st, data.top[0], data.top[1])
    st.close()
    assert data.best_schedule[-1][1] == data.top[1]
    assert [v for _a, _b, v in data.best_schedule] == [s.hparams["lr"] for s in sched.segments]
    # one band per sub-population, one point per round
    assert [b.subpopulation for b in data.bands] == [0, 1]
    for b in data.bands:
        assert len(b.steps) == 10 and all(lo <= m <= hi for lo, m, hi in
                                         zip(b.low, b.median, b.high, strict=True))


def test_report_writes_html_with_embedded_figures(fire_store, tmp_path):
    page = report(fire_store, tmp_path / "out")
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 2
    assert "Winning schedule" in text and "Configuration" in text
    # Figure 4a draws one median line per sub-population, in the first two cycle colours (a
    # figure without its data, or with one sub-population missing, has no such pixels)
    png = tmp_path / "out" / "figure4a.png"
    assert colour_pixels(png, C0) > 50 and colour_pixels(png, C1) > 50


def test_comparison_records(tmp_path):
    from firepbt.compare import plan, run_comparison

    specs = plan("nqm", ["random", "pbt"], [0, 1], 4, [11], 100, 50, 10)
    rows = run_comparison(tmp_path / "cmp", specs, jobs=2)
    assert [r["method"] for r in rows] == ["RS hand-tuned schedule", "PBT"]
    assert all(r["runs"] == 2 for r in rows)
    data = comparison_data(tmp_path / "cmp")
    assert set(data.best_so_far) == {"RS hand-tuned schedule", "PBT"}
    assert all(len(v) == 2 for v in data.best_so_far.values())
    # the table's mean top value is the mean over the two stores' top values
    from firepbt.compare import run_measures

    tops = [run_measures(tmp_path / "cmp" / "runs" / f"pbt-w4-s{s}")["top_value"] for s in (0, 1)]
    assert rows[1]["top_value"][0] == pytest.approx(sum(tops) / 2)
    # rerunning resumes: nothing to do, same table
    again = run_comparison(tmp_path / "cmp", specs, jobs=2)
    assert again == rows
    # a folder written before RunSpec gained its FIRE fields still resumes
    spec_file = tmp_path / "cmp" / "comparison.json"
    old = [{k: v for k, v in d.items() if k not in ("min_steps_before_eval", "n_subpopulations")}
           for d in json.loads(spec_file.read_text())]
    spec_file.write_text(json.dumps(old))
    assert run_comparison(tmp_path / "cmp", specs, jobs=2) == rows
    # a different comparison in the same folder is refused
    from firepbt.errors import ConfigError

    with pytest.raises(ConfigError, match="out must be"):
        run_comparison(tmp_path / "cmp", plan("nqm", ["pbt"], [0], 4, [11], 100, 50, 10))
    page = report(tmp_path / "cmp", tmp_path / "cmp-report")
    assert "Table 1" in page.read_text()
    json.loads((tmp_path / "cmp" / "comparison.json").read_text())


def _text(page) -> str:
    """The page's visible text (tags removed, whitespace collapsed)."""
    import html
    import re

    body = re.sub(r"<img[^>]*>", " ", page.read_text())
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_report_tells_what_happened_in_rounded_words(fire_store, tmp_path):
    from firepbt import open_experiment

    page = report(fire_store, tmp_path / "out")
    text = _text(page)
    with open_experiment(fire_store) as exp:
        top, act = exp.top(), exp.activity()
    assert f"Winner: worker {top.worker} reached the top objective value {top.value:.4g}" in text
    assert f"Evaluators: {act.assignments} assigned, {act.successes} successes" in text
    assert f"P1 {act.exploits[0]}, P2 {act.exploits[1]}" in text
    assert "lower is better" in text  # the NQM's loss is minimised
    # no unrounded floats, no unresolved settings
    import re

    long_float = re.search(r"\d\.0*[1-9]\d{5,}", text)  # 6+ significant digits
    assert long_float is None, long_float
    assert "null" not in text and "None" not in text
    # the resolved FIRE layout: 2 x 4 members + 4 evaluators, max_eval_steps 3 ready intervals
    assert "subpopulations 2" in text and "members_per_subpopulation 4" in text
    assert "evaluators 4" in text and "max_eval_steps 150" in text
    # the evaluator table's columns are explained and show the comparison that decided
    assert re.search(r"not_significant, above at \d+ of \d+ overlapping points, p=", text)
    # every figure is there
    assert "the member of sub-population P(i) whose weights it copied" in text
    for fig in ("figure4a", "figure4b", "lineage"):
        assert f'alt="{fig}"' in page.read_text()


def _capture_figures(monkeypatch):
    """Record title, y-label, y-scale, y-limits, y-ticks and data of every figure drawn."""
    import firepbt.report._figures as rep

    seen = {}
    original = rep.finish_figure

    def finish(fig, ax, path, title, xlabel, ylabel, log_y=False, legend=True):
        out = original(fig, ax, path, title, xlabel, ylabel, log_y, legend)
        seen[path.stem] = {"title": ax.get_title(), "ylabel": ax.get_ylabel(),
                           "yscale": ax.get_yscale(), "ylim": ax.get_ylim(),
                           "yticks": list(ax.get_yticks()),
                           "legend": [t.get_text() for t in ax.get_legend().get_texts()]
                           if ax.get_legend() else [],
                           "ydata": [list(line.get_ydata()) for line in ax.get_lines()]}
        return out

    monkeypatch.setattr(rep, "finish_figure", finish)
    return seen


def test_figures_of_a_single_minimising_run(fire_store, tmp_path, monkeypatch):
    seen = _capture_figures(monkeypatch)
    report(fire_store, tmp_path / "out")
    f4b = seen["figure4b"]
    # one run: no spread over seeds claimed; the whole curve shown
    assert "min-max" not in f4b["title"] and not any("median" in t for t in f4b["legend"])
    values = [v for line in f4b["ydata"] for v in line]
    assert f4b["ylim"][0] <= min(values) and f4b["ylim"][1] >= max(values)
    # the objective as it is (a loss: positive), lower is better, log axis over decades
    assert min(values) > 0 and "lower is better" in f4b["ylabel"]
    assert f4b["yscale"] == ("log" if max(values) > 10 * min(values) else "linear")
    # the hyperparameter has one name in every figure; worker ticks are whole numbers
    assert seen["figure4a"]["ylabel"] == "lr"
    assert all(float(t).is_integer() for t in seen["lineage"]["yticks"])


def test_story_of_a_fabricated_run():
    from firepbt.report import ExperimentData, SubpopulationBand, story
    from firepbt.results import Activity, TopPoint

    data = ExperimentData(
        "s", {"method": "fire", "task": "mnist1d", "workers": 12, "steps": 1500, "seed": 3},
        "lambda", 1500, True, 1, 0.912345678, 0.905,
        TopPoint(2, 1375, 0.9187654, 0.9101), {"test": 0.93456789, "value": 0.99},
        ((0, 750, 0.3), (750, 1500, 0.03)), (SubpopulationBand(0, (0, 125), (0.2, 0.05),
                                                               (0.1, 0.01), (0.3, 0.1)),),
        (), (), (), (), None, {}, {}, "max",
        {"subpopulations": 2, "members_per_subpopulation": 4, "evaluators": 4},
        Activity({0: 7, 1: 5}, 9, 2, {}),
        ((0, 750, {"lambda": 0.3}), (750, 1500, {"lambda": 0.03})), {"lambda": 0.0312345})
    text = " ".join(story(data))
    assert "12 workers (2 sub-populations of 4 members, 4 evaluators) x 1,500 steps" in text
    assert "Winner: worker 2 reached the top validation value 0.9188 at step 1,375, test " \
        "0.9101 there." in text
    assert "best member is worker 1: validation 0.9123, test 0.905, hyperparameters " \
        "lambda 0.03123" in text
    assert "starts at lambda 0.3 and ends at lambda 0.03, in 2 pieces" in text
    assert "full training set, that schedule gives test 0.9346" in text
    assert "P1 7, P2 5" in text and "9 assigned, 2 successes" in text
    assert "P1 0.2 -> 0.05" in text and "higher is better" in text


def test_figure3_shows_exactly_the_curves_the_controller_compared(fire_store):
    """The evaluator-vs-target figure is read from the controller's state, not re-derived
    with a window: comparing its two curves again gives the comparison the success carries."""
    from firepbt import open_experiment
    from firepbt.curves import Curve, compare

    pair = experiment_data(fire_store).curve_pair
    assert pair is not None
    with open_experiment(fire_store) as exp:
        (d,) = [d for _r, s, d in exp.decisions(["evaluator_success"])
                if s == pair.success_step and d.evaluator == pair.evaluator]
    # the NQM's loss is minimised: the controller compares negated values
    eta = Curve.of([(s, -v) for s, v in pair.evaluator_curve])
    kappa = Curve.of([(s, -v) for s, v in pair.target_curve])
    assert d.comparison is not None and compare(eta, kappa) == d.comparison


def test_every_hyperparameter_has_its_panel_and_the_space_is_shown(tmp_path):
    # a space of two hyperparameters (one mnist1d-like weight decay that the trainable ignores):
    # one Figure 4a each, both in the evaluator events and in the search-space table
    import torch

    from firepbt import LogUniform, Space, function_trainable

    def _train(state, hp, steps):
        for _ in range(steps):
            state["w"] += hp["lr"] * (1.0 - state["w"]) - hp["weight_decay"] * state["w"]

    make = function_trainable(lambda seed: {"w": torch.zeros(1) + seed % 5 / 50}, _train,
                              lambda s: float(s["w"][0]))
    space = Space({"lr": LogUniform(1e-3, 1e-1), "weight_decay": LogUniform(1e-5, 1e-3,
                                                                           bounds=(1e-6, 1e-2))})
    cfg = ExperimentConfig(task="two", method="fire", workers=12, steps=240, ready_interval=60,
                           eval_interval=5, seed=3)
    run(cfg, tmp_path / "s", factory=make, space=space, progress=False)
    data = experiment_data(tmp_path / "s")
    assert [p.param for p in data.panels] == ["lr", "weight_decay"]
    for p in data.panels:
        assert [b.subpopulation for b in p.bands] == [0, 1]
        assert [v for _a, _b, v in p.best_schedule] == [h[p.param] for _a, _b, h in
                                                        data.best_segments]
    assigns = [e for e in data.events if e.kind == "assign_evaluator"]
    assert assigns and all("lr=" in e.detail and "weight_decay=" in e.detail for e in assigns)
    assert [r["name"] for r in data.space] == ["lr", "weight_decay"]
    assert data.space[1]["bounds"] == [1e-6, 1e-2] and data.space[1]["initial"] == [1e-5, 1e-3]
    page = report(tmp_path / "s").read_text()
    assert 'alt="figure4a"' in page and 'alt="figure4a-weight_decay"' in page
    assert "Each sub-population&#x27;s weight_decay over training" in page
    assert (tmp_path / "s" / "report" / "figure4a-weight_decay.png").is_file()
    assert "<h2>Search space</h2>" in page and "[1e-06, 0.01]" in page
