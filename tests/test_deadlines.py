"""Time limits: the experiment's budget (an injected clock) and a round's deadline (short real
timeouts, a trainable whose train() sleeps forever)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from firepbt import ExperimentConfig, LogUniform, Space
from firepbt.api import resume, run
from firepbt.cli import main
from firepbt.deadlines import RoundTimeout, parse_seconds
from firepbt.store import Store

CFG = dict(task="nqm", method="pbt", workers=4, steps=600, ready_interval=60, eval_interval=20,
           seed=3, task_options={"dims": 200}, executor="local")


def _rows(path):
    st = Store.open(path, readonly=True)
    try:
        return (st.evaluations(), [(r, s, d) for r, s, d in st.decisions()], st.last_round())
    finally:
        st.close()


@pytest.fixture()
def clock(monkeypatch):
    """Every reading of the clock moves it 5 s on: each round takes 5 s (it reads the clock
    when it starts and before its commit)."""
    import firepbt.deadlines

    now = [0.0]

    def tick():
        now[0] += 5.0
        return now[0]

    monkeypatch.setattr(firepbt.deadlines, "clock", tick)
    return now


def test_a_budget_ends_the_run_before_a_round_and_a_larger_one_continues_exactly(tmp_path,
                                                                                 clock, capsys):
    whole = tmp_path / "whole"
    run(ExperimentConfig(**CFG), whole, progress=False)
    ref_evals, ref_decisions, _ = _rows(whole)

    budgeted = tmp_path / "b"
    s = run(ExperimentConfig(**CFG, time_budget=12.0), budgeted, progress=False)
    # rounds of 5 s: after round 3 the rounds took 15 s >= 12, so round 4 never starts
    assert not s.finished and s.steps_done == 180
    assert s.ended == {"reason": "time_budget", "budget": 12.0, "elapsed": 15.0, "round": 3}
    assert main(["status", str(budgeted)]) == 0
    out = capsys.readouterr().out
    assert "stopped: its time budget of 12 s was spent: the rounds took 15 s" in out
    # resume without a larger budget trains nothing and says why
    assert main(["resume", str(budgeted), "--no-progress"]) == 0
    assert "ended by itself (its time budget of 12 s was spent" in capsys.readouterr().out
    assert _rows(budgeted)[2].round == 3
    # a larger budget continues; every round counts, those of the first run too
    s = resume(budgeted, time_budget=32.0, progress=False)
    assert s.steps_done == 420 and s.ended["elapsed"] == 35.0 and s.ended["round"] == 7
    s = resume(budgeted, time_budget=1000.0, progress=False)
    assert s.finished and s.ended is None
    evals, decisions, last = _rows(budgeted)
    assert evals == ref_evals and decisions == ref_decisions  # exactly the uninterrupted run
    assert Store.open(budgeted, readonly=True).config["time_budget"] == 1000.0


def test_the_budget_and_the_deadline_are_validated(tmp_path, capsys):
    for field, value in (("time_budget", 0), ("time_budget", float("inf")),
                         ("round_timeout", -1.0), ("round_timeout", "10")):
        with pytest.raises(Exception, match=f"{field} must be"):
            ExperimentConfig(**{**CFG, field: value})
    assert parse_seconds("90") == 90 and parse_seconds("15m") == 900
    assert parse_seconds("1.5h") == 5400
    code = None
    try:
        main(["run", "nqm", "--time-budget", "soon", "--store", str(tmp_path / "x")])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "time_budget must be seconds in (0, 1e+09]" in capsys.readouterr().err


SLEEPER = textwrap.dedent("""
    import time
    import torch
    from firepbt import function_trainable

    def _train(state, hparams, steps):
        state["calls"] += 1
        if state["hang"] and state["calls"] == 3:  # the second round of worker 2
            time.sleep(3600)
        state["w"] += hparams["lr"] * steps

    def init(seed):
        return {"w": torch.zeros(1), "calls": 0, "hang": seed == SEED_OF_2}

    make = function_trainable(init, _train, lambda s: float(s["w"][0]))
""")


def _sleeper(tmp_path, monkeypatch, body=SLEEPER):
    from firepbt.build import worker_seeds

    seed_of_2 = worker_seeds(0, 4)[2]
    (tmp_path / "sleeper.py").write_text(body.replace("SEED_OF_2", str(seed_of_2)))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sleeper", None)
    import sleeper

    return sleeper


def test_a_hung_train_cannot_hold_the_run_past_its_deadline_in_this_process(tmp_path,
                                                                           monkeypatch):
    sleeper = _sleeper(tmp_path, monkeypatch)
    cfg = ExperimentConfig(task="sleep", method="pbt", workers=4, steps=40, ready_interval=10,
                           eval_interval=5, executor="local", round_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(RoundTimeout, match="round 2 passed its deadline of 1 s while worker 2 "
                       "trained; the run stopped with its last committed round intact"):
        run(cfg, tmp_path / "s", factory=sleeper.make,
            space=Space({"lr": LogUniform(1e-3, 1e-1)}), progress=False)
    assert time.monotonic() - t0 < 30  # not an hour
    _, _, last = _rows(tmp_path / "s")
    assert last.round == 1  # the last round intact
    st = Store.open(tmp_path / "s", readonly=True)
    assert "RoundTimeout: round 2 passed its deadline" in st.meta("last_error")
    st.close()


SWALLOWER = SLEEPER.replace("""        time.sleep(3600)""", """        try:  # a user's own retry wrapper: it catches the deadline too
            time.sleep(30)
        except Exception:
            pass""")
assert SWALLOWER != SLEEPER


def test_a_deadline_a_trainable_swallows_never_commits_the_round_it_interrupted(tmp_path,
                                                                                monkeypatch):
    sleeper = _sleeper(tmp_path, monkeypatch, SWALLOWER)
    cfg = ExperimentConfig(task="sleep", method="pbt", workers=4, steps=40, ready_interval=10,
                           eval_interval=5, executor="local", round_timeout=1.0)
    with pytest.raises(RoundTimeout, match="round 2 passed its deadline of 1 s while worker 2"):
        run(cfg, tmp_path / "s", factory=sleeper.make,
            space=Space({"lr": LogUniform(1e-3, 1e-1)}), progress=False)
    _, _, last = _rows(tmp_path / "s")
    assert last.round == 1  # round 2 trained on, but was not committed


def test_a_call_that_cannot_be_interrupted_is_still_reported(tmp_path):
    # a train() that swallows the interruption and sleeps on: only a kill ends it, but the
    # deadline is noticed and said on stderr, naming the worker
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import time, torch
        from firepbt import ExperimentConfig, LogUniform, Space, function_trainable, run

        def _train(state, hparams, steps):
            state["calls"] += 1
            while state["calls"] == 3:  # the second round
                try:
                    time.sleep(3600)
                except BaseException:
                    pass

        make = function_trainable(lambda seed: {"w": torch.zeros(1), "calls": 0}, _train,
                                  lambda s: float(s["w"][0]))
        cfg = ExperimentConfig(task="stuck", method="pbt", workers=2, steps=20,
                               ready_interval=10, eval_interval=5, executor="local",
                               round_timeout=1.0)
        run(cfg, "store", factory=make, space=Space({"lr": LogUniform(1e-3, 1e-1)}),
            progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0, seen = time.monotonic(), ""
        while time.monotonic() - t0 < 60:
            line = proc.stderr.readline()
            seen += line
            if "is past its deadline" in line:
                break
        assert "firepbt: round 2 is past its deadline of 1 s: worker 0 is still training" in seen
        assert proc.poll() is None  # still stuck: only a kill ends it
    finally:
        proc.kill()
        proc.wait()
    _, _, last = _rows(tmp_path / "store")
    assert last.round == 1
