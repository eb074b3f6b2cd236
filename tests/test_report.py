"""Report data records for small stored experiments (records, not pixels)."""

from __future__ import annotations

import json

import pytest
from helpers import C0, C1, colour_pixels

from firepbt.config import ExperimentConfig
from firepbt.lineage import schedule
from firepbt.report import comparison_data, experiment_data, report
from firepbt.runner import run
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
