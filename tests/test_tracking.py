"""Callbacks after each committed round (firepbt.tracking), and the TensorBoard, MLflow and
W&B trackers read back through their own libraries (no mocks)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
import wandb_files

from firepbt import ExperimentConfig, resume, run
from firepbt.errors import ConfigError
from firepbt.records import EvaluatorSuccess, Exploit
from firepbt.store import Store
from firepbt.tracking import RoundReport, make_tracker, scalars, worker_tag

# FIRE PBT, 8 workers (3 + 3 + 2) on the noisy quadratic: 10 rounds in a few seconds, with
# exploits in both sub-populations and evaluator successes (seed 1)
CFG = dict(task="nqm", method="fire", workers=8, steps=600, ready_interval=60, eval_interval=5,
           seed=1)


def config(**kw):
    return ExperimentConfig(**{**CFG, **kw})


class Recorder:
    """A tracker object: keeps every report and how often start/close were called."""

    def __init__(self, key="recorder", fail_at=None, interrupt_at=None):
        self.key = key
        self.reports: list[RoundReport] = []
        self.started = []
        self.closed = 0
        self.fail_at = fail_at
        self.interrupt_at = interrupt_at

    def start(self, info):
        self.started.append((info.start_round, info.last_given))

    def on_round(self, report):
        if report.round == self.fail_at:
            raise RuntimeError("tracker down")
        if report.round == self.interrupt_at:
            raise KeyboardInterrupt
        self.reports.append(report)

    def close(self):
        self.closed += 1


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One uninterrupted run with a recorder: the live reports."""
    path = tmp_path_factory.mktemp("full") / "s"
    rec = Recorder()
    run(config(), path, callbacks=[rec], progress=False)
    return path, rec


def test_live_reports_are_what_the_store_committed(full):
    path, rec = full
    assert [r.round for r in rec.reports] == list(range(1, 11))
    assert rec.started == [(0, 0)] and rec.closed == 1
    st = Store.open(path, readonly=True)
    try:
        evals = st.evaluations()
        decisions = st.decisions()
    finally:
        st.close()
    for rep in rec.reports:
        assert list(rep.evaluations) == sorted((w, s, v) for r, w, s, v in evals
                                               if r == rep.round)
        assert list(rep.decisions) == [d for r, _s, d in decisions if r == rep.round]
    kinds = {type(d) for rep in rec.reports for d in rep.decisions}
    assert Exploit in kinds and EvaluatorSuccess in kinds
    # the top so far is the store's top point at the end
    from firepbt.results import summarize

    st = Store.open(path, readonly=True)
    try:
        s = summarize(st)
    finally:
        st.close()
    assert rec.reports[-1].best[:2] == (s.top_worker, s.top_step)
    assert rec.reports[0].initial is not None and rec.reports[1].initial is None


def test_reports_read_back_from_the_store_equal_the_live_ones(full, tmp_path):
    # a finished run resumed with a new tracker: it is given every round from the store
    path, rec = full
    late = Recorder("late")
    resume(path, callbacks=[late], progress=False)
    assert late.reports == rec.reports
    # and a second time: nothing more (each round once)
    again = Recorder("late")
    resume(path, callbacks=[again], progress=False)
    assert again.reports == [] and again.started == [(10, 10)]


def test_stop_and_resume_gives_each_round_once(full, tmp_path):
    _, rec = full
    path = tmp_path / "s"
    part = Recorder()
    run(config(), path, callbacks=[part], max_rounds=4, progress=False)
    rest = Recorder()
    resume(path, callbacks=[rest], progress=False)
    assert rest.started == [(4, 4)]
    assert part.reports + rest.reports == rec.reports


def test_a_tracker_that_raises_is_disabled_and_costs_nothing(full, tmp_path, caplog):
    path0, rec = full
    path = tmp_path / "s"
    bad = Recorder(fail_at=3)
    good = Recorder("good")
    with caplog.at_level(logging.WARNING, logger="firepbt"):
        run(config(), path, callbacks=[bad, good], progress=False)
    assert "tracker recorder failed at round 3" in caplog.text and "disabled" in caplog.text
    assert [r.round for r in bad.reports] == [1, 2] and bad.closed == 1
    assert good.reports == rec.reports  # the others go on
    st0, st = Store.open(path0, readonly=True), Store.open(path, readonly=True)
    try:
        assert st.evaluations() == st0.evaluations()
        assert st.decisions() == st0.decisions()
    finally:
        st0.close()
        st.close()
    # resume gives the tracker what it missed
    back = Recorder()
    resume(path, callbacks=[back], progress=False)
    assert [r.round for r in back.reports] == list(range(3, 11))
    assert back.reports == rec.reports[2:]


def test_interrupted_in_a_tracker_the_round_stays_and_is_given_on_resume(full, tmp_path):
    _, rec = full
    path = tmp_path / "s"
    first = Recorder(interrupt_at=5)
    with pytest.raises(KeyboardInterrupt):
        run(config(), path, callbacks=[first], progress=False)
    st = Store.open(path, readonly=True)
    try:
        assert st.last_round().round == 5  # committed before the tracker saw it
    finally:
        st.close()
    rest = Recorder()
    resume(path, callbacks=[rest], progress=False)
    assert first.reports + rest.reports == rec.reports  # round 5 once, none missed


def test_plain_functions_and_bad_callbacks(tmp_path):
    got = []
    run(config(steps=120), tmp_path / "a", callbacks=[got.append], progress=False)
    assert [r.round for r in got] == [1, 2]
    with pytest.raises(ConfigError, match="callbacks"):
        run(config(), tmp_path / "b", callbacks=[42], progress=False)
    with pytest.raises(ConfigError, match="--log must be tensorboard:DIR"):
        run(config(), tmp_path / "c", callbacks=["tensorbored:x"], progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="different keys"):
        run(config(), tmp_path / "d", callbacks=[Recorder(), Recorder()], progress=False)


def test_scalars_name_events_where_they_happened(full):
    _, rec = full
    rep = next(r for r in rec.reports if r.of_kind(Exploit) and r.of_kind(EvaluatorSuccess))
    tags = {(t, s): v for t, s, v in scalars(rep)}
    n = len(rep.workers)
    for d in rep.of_kind(Exploit):
        assert tags[f"events/exploit/{worker_tag(d.worker, n)}", rep.step] == d.source
        assert tags[f"hparams/lr/{worker_tag(d.worker, n)}", rep.step] == d.new_hparams["lr"]
    for d in rep.of_kind(EvaluatorSuccess):
        assert tags[f"events/success/{worker_tag(d.target, n)}", rep.step] == d.evaluator
    assert tags["events/exploits", rep.step] == len(rep.of_kind(Exploit))
    assert worker_tag(3, 8) == "w03" and worker_tag(3, 200) == "w003"


# -- the trackers, through the command line, read back with their own libraries -------------

def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "firepbt", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def cli_run(store, *log, rounds=None, env=None):
    steps = CFG["steps"] if rounds is None else rounds * CFG["ready_interval"]
    return cli("run", "nqm", "--method", "fire", "--workers", "8", "--steps", str(steps),
               "--ready-interval", "60", "--eval-interval", "5", "--seed", "1", "--store",
               str(store), "--no-progress", "--executor", "local",
               *[x for spec in log for x in ("--log", spec)], env=env)


def expected(store):
    """The store's evaluations by (tag, step), its exploits and successes."""
    st = Store.open(store, readonly=True)
    try:
        evals = {(f"objective/{worker_tag(w, 8)}", s): v for _r, w, s, v in st.evaluations()}
        ds = st.decisions()
    finally:
        st.close()
    exploits = [(s, d) for _r, s, d in ds if isinstance(d, Exploit)]
    successes = [(s, d) for _r, s, d in ds if isinstance(d, EvaluatorSuccess)]
    assert exploits and successes
    return evals, exploits, successes


def test_tensorboard_written_and_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, logdir = tmp_path / "exp", tmp_path / "tb"
    out = cli_run(store, f"tensorboard:{logdir}", rounds=6)  # 6 rounds, then extended to 10
    assert out.returncode == 0, out.stderr
    out = cli("resume", str(store), "--steps", "600", "--no-progress", "--log",
              f"tensorboard:{logdir}")
    assert out.returncode == 0, out.stderr
    ea = EventAccumulator(str(logdir / "exp"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    evals, exploits, successes = expected(store)
    got = {}
    for tag in ea.Tags()["scalars"]:
        steps = [e.step for e in ea.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice across the resume"
        got.update({(tag, e.step): e.value for e in ea.Scalars(tag)})
    for key, v in evals.items():
        assert got[key] == pytest.approx(v, rel=1e-6)
    for s, d in exploits:
        assert got[f"events/exploit/{worker_tag(d.worker, 8)}", s] == d.source
    for s, d in successes:
        assert got[f"events/success/{worker_tag(d.target, 8)}", s] == d.evaluator
    texts = " ".join(e.tensor_proto.string_val[0].decode()
                     for e in ea.Tensors("events/text_summary"))
    s, d = successes[0]
    assert f"step {s}: evaluator {d.evaluator} succeeded" in texts
    assert ("subpop/P2/lr", 600) in got and ("best/objective", 600) in got


def test_mlflow_written_and_read_back(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, folder = tmp_path / "exp", tmp_path / "ml"
    out = cli_run(store, f"mlflow:{folder}")
    assert out.returncode == 0, out.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    (run_,) = client.search_runs([client.get_experiment_by_name("firepbt").experiment_id])
    assert run_.info.run_name == "exp" and run_.info.status == "FINISHED"
    assert run_.data.params["method"] == "fire" and run_.data.params["workers"] == "8"
    evals, exploits, successes = expected(store)
    for s, d in exploits:
        hist = client.get_metric_history(run_.info.run_id,
                                         f"events/exploit/{worker_tag(d.worker, 8)}")
        assert (s, d.source) in [(m.step, m.value) for m in hist]
    for s, d in successes:
        hist = client.get_metric_history(run_.info.run_id,
                                         f"events/success/{worker_tag(d.target, 8)}")
        assert (s, d.evaluator) in [(m.step, m.value) for m in hist]
    hist = client.get_metric_history(run_.info.run_id, "objective/w00")
    assert sorted((m.step, m.value) for m in hist) == sorted(
        (s, pytest.approx(v)) for (t, s), v in evals.items() if t == "objective/w00")
    # the schedule, as a metric (parameters are write-once)
    lr = client.get_metric_history(run_.info.run_id, "hparams/lr/w00")
    assert [m.step for m in lr] == [0] + list(range(60, 601, 60))


def test_wandb_offline_written_and_read_back(tmp_path):
    pytest.importorskip("wandb")
    store = tmp_path / "exp"
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    out = cli_run(store, "wandb:firepbt-test", env=env)
    assert out.returncode == 0, out.stderr
    (f,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = {}
    for rec, _end in wandb_files.records(f):
        row = wandb_files.history_row(rec)
        if row is not None:
            rows.setdefault(row["_step"], {}).update(row)
    evals, exploits, successes = expected(store)
    for s, d in exploits:
        assert rows[s][f"events/exploit/{worker_tag(d.worker, 8)}"] == d.source
    for s, d in successes:
        assert rows[s][f"events/success/{worker_tag(d.target, 8)}"] == d.evaluator
    for (tag, s), v in evals.items():
        assert rows[s][tag] == pytest.approx(v)
    st = Store.open(store, readonly=True)
    try:
        run_id = json.loads(st.meta("tracking"))["wandb:firepbt-test"]["run_id"]
    finally:
        st.close()
    assert f.name == f"run-{run_id}.wandb"


def test_a_missing_extra_is_one_line(tmp_path):
    # a tracker whose library cannot be imported (its module hidden): one line, nothing written
    code = ("import sys; sys.modules['torch.utils.tensorboard'] = None; "
            "from firepbt.cli import main; sys.exit(main(['run', 'nqm', '--store', "
            f"{str(tmp_path / 's')!r}, '--log', 'tensorboard:x']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert "pip install 'firepbt[tensorboard]'" in out.stderr
    assert not (tmp_path / "s").exists()


def test_make_tracker_refuses_unknown_kinds():
    with pytest.raises(ConfigError, match="got 'tb:x'"):
        make_tracker("tb:x")
    with pytest.raises(ConfigError):
        make_tracker("tensorboard:")


# -- the live report -------------------------------------------------------------------------

def test_a_snapshot_sees_no_round_committed_after_it_began(full, tmp_path):
    import shutil

    path = tmp_path / "s"
    shutil.copytree(full[0], path)
    writer = Store.open(path)
    reader = Store.open(path, readonly=True)
    try:
        last = writer.last_round()
        writer.discard_after(last.round - 1)  # one round fewer, then written back below
        n_evals = len(reader.evaluations())
        with reader.snapshot():
            before = reader.last_round().round
            writer.commit_round(last, [(0, 10**6, 1.0)], [], [])  # a round commits meanwhile
            assert len(reader.evaluations()) == n_evals  # ...unseen inside the snapshot
            assert reader.last_round().round == before
        assert reader.last_round().round == before + 1  # ...seen after it
        assert len(reader.evaluations()) == n_evals + 1
    finally:
        reader.close()
        writer.close()


def test_live_report_follows_a_running_experiment_in_chromium(tmp_path):
    import re
    import signal

    from browser import Browser, chromium

    if chromium() is None:
        if os.environ.get("FIREPBT_REQUIRE_BROWSER"):  # (.ci/run installs it)
            pytest.fail("Chromium is not installed, and FIREPBT_REQUIRE_BROWSER is set")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; CI installs it)")
    store = tmp_path / "exp"
    writer = subprocess.Popen(
        [sys.executable, "-m", "firepbt", "run", "nqm", "--method", "fire", "--workers", "8",
         "--steps", "6000", "--ready-interval", "60", "--eval-interval", "5", "--store",
         str(store), "--no-progress", "--executor", "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watcher = browser = None
    try:
        from firepbt.report.live import last_round

        deadline = time.monotonic() + 60
        while not (store / "experiment.sqlite").exists() or last_round(store)[0] < 1:
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.2)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "firepbt", "report", str(store), "--watch", "--port", "0",
             "--every", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = watcher.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + watcher.stderr.read()
        browser = Browser()
        browser.open(url.group(0))
        shown = re.compile(r"Live: round (\d+) of 100 \(step (\d+) of 6000\)")
        first = browser.wait_text(lambda t: shown.search(t) is not None)
        r1 = int(shown.search(first).group(1))
        assert "Winning schedule" in first and "Each sub-population" in first  # the report
        # two rounds later, the page (reloading itself) shows the new step
        later = browser.wait_text(lambda t: bool(shown.search(t))
                                  and int(shown.search(t).group(1)) >= r1 + 2, timeout=90)
        r2, step2 = map(int, shown.search(later).groups())
        assert step2 == 60 * r2 > 60 * r1
        assert writer.poll() is None or writer.returncode == 0  # the writer was never blocked
    finally:
        if browser is not None:
            browser.close()
        # SIGTERM, not SIGINT: under pytest-xdist the workers' children inherit an ignored
        # SIGINT (Python then installs no KeyboardInterrupt handler); the CLI stops on SIGTERM
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=60)
        writer.send_signal(signal.SIGTERM)
        writer.wait(timeout=60)
    assert watcher.returncode == 143, watcher.stderr.read()
    assert writer.returncode in (0, 143), writer.stderr.read()
