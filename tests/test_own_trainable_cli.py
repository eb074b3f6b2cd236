"""Your own trainable from the command line (``--factory`` on run, resume and compare), the
trainable contract checked before the first round, and how a stopped or finished run speaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from firepbt import ExperimentConfig, LogUniform, Space
from firepbt.api import run
from firepbt.cli import main
from firepbt.errors import ConfigError
from firepbt.store import Store

MODULE = textwrap.dedent("""
    import torch
    from firepbt import LogUniform, Space, function_trainable

    SPACE = Space({"lr": LogUniform(1e-3, 1e-1)})
    SCHEDULE_PARAM = "lr"

    def _train(state, hparams, steps):
        for _ in range(steps):
            state["w"] += hparams["lr"] * (1.0 - state["w"])

    make = function_trainable(lambda seed: {"w": torch.zeros(1) + seed % 7 / 100}, _train,
                              lambda state: float(state["w"][0]))

    class NoState:
        def train(self, hparams, steps): pass
        def evaluate(self): return 0.5

    def no_state(seed):
        return NoState()

    no_state.space = SPACE

    nan = function_trainable(lambda seed: {"w": torch.zeros(1)}, _train,
                             lambda state: float("nan"))
""")

SMALL = ["--workers", "4", "--steps", "40", "--ready-interval", "10", "--eval-interval", "10",
         "--no-progress"]


@pytest.fixture()
def mine(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mine", None)
    return tmp_path


def call(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_resume_and_extend_your_own_trainable_from_the_command_line(mine, capsys):
    code, out, err = call(capsys, "run", "mine-exp", "--factory", "mine:make", "--method", "pbt",
                          "--store", "s", *SMALL)
    assert code == 0, err
    assert "Experiment finished: 40/40 steps" in out
    assert Store.open("s", readonly=True).config["task"] == "mine-exp"
    # the store remembers the factory: resume and replay without it load it again; a finished
    # run says so, and trains nothing
    code, out, err = call(capsys, "resume", "s", "--no-progress")
    assert code == 0 and "is finished (40/40 steps per worker); nothing to resume" in out, err
    code, out, err = call(capsys, "replay", "s", "--json")
    assert code == 0 and json.loads(out)["value"] is not None, err
    # extending it continues from its last round
    code, out, err = call(capsys, "resume", "s", "--factory", "mine:make", "--steps", "60",
                          "--no-progress")
    assert code == 0, err
    assert "resuming s at step 40/60" in out and "Experiment finished: 60/60 steps" in out
    st = Store.open("s", readonly=True)
    assert st.config["steps"] == 60 and st.last_round().round == 6
    assert json.loads(st.meta("final"))["step"] == 60
    st.close()
    # fewer steps, or steps off the ready interval: one line, nothing written
    for steps, why in (("50", "steps must be more than the run's 60"),
                       ("65", "steps must be a multiple of ready_interval (10)")):
        code, out, err = call(capsys, "resume", "s", "--factory", "mine:make", "--steps", steps)
        assert code == 2 and why in err and out == ""


def test_random_search_takes_the_modules_schedule_param_and_cannot_be_extended(mine, capsys):
    code, out, err = call(capsys, "run", "mine-rs", "--factory", "mine:make", "--method",
                          "random", "--store", "r", *SMALL)
    assert code == 0, err
    assert "lr followed the hand-tuned schedule" in out
    code, out, err = call(capsys, "resume", "r", "--factory", "mine:make", "--steps", "80")
    assert code == 2 and "steps must be the run's own for random search" in err


def test_compare_your_own_trainable(mine, capsys):
    code, out, err = call(capsys, "compare", "mine-cmp", "--factory", "mine:make", "--out", "c",
                          "--methods", "pbt", "fire", "--workers", "6", "--seeds", "0",
                          "--steps", "40", "--ready-interval", "10", "--eval-interval", "5")
    assert code == 0, err
    assert "| PBT | 1 |" in out and "| FIRE PBT (6) | 1 |" in out


def test_the_trainable_contract_is_checked_before_the_first_round(mine, capsys, tmp_path):
    import mine as m

    cfg = ExperimentConfig(task="mine", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10)
    with pytest.raises(ConfigError, match=r"factory must be a callable seed -> trainable with "
                       r".* got 'one that returned a NoState without state_dict\(\), "
                       r"load_state_dict\(\)"):
        run(cfg, tmp_path / "a", factory=m.no_state, space=m.SPACE, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match=r"space must be a firepbt.Space, .* got 'a dict'"):
        run(cfg, tmp_path / "b", factory=m.make, space={"lr": (1e-3, 1e-1)},  # type: ignore
            progress=False)
    with pytest.raises(ConfigError, match="schedule_param must be given only with method "
                       "'random'"):
        run(cfg, tmp_path / "c", factory=m.make, space=m.SPACE, schedule_param="lr",
            progress=False)
    code, out, err = call(capsys, "run", "x", "--factory", "mine:no_state", "--store", "d",
                          "--method", "pbt", *SMALL)
    assert code == 2 and "factory must be" in err and len(err.strip().splitlines()) == 1
    code, out, err = call(capsys, "run", "x", "--factory", "mine:SPACE", "--store", "e",
                          "--method", "pbt", *SMALL)
    assert code == 2 and "factory must be" in err


def test_a_run_without_one_finite_evaluation_says_so(mine, caplog):
    import mine as m

    cfg = ExperimentConfig(task="mine", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10)
    with caplog.at_level("WARNING", logger="firepbt"):
        s = run(cfg, mine / "n", factory=m.nan, space=Space({"lr": LogUniform(1e-3, 1e-1)}),
                progress=False)
    assert s.finished and s.top_value is None
    assert any("no evaluation of a best-effort member was finite" in r.message
               for r in caplog.records)


def test_abbreviated_options_are_refused(capsys):
    code, _out, err = call(capsys, "run", "nqm", "--step", "100")
    assert code == 2 and "unrecognized arguments: --step" in err


def test_ctrl_c_names_the_store_and_how_to_continue(tmp_path, capsys, monkeypatch):
    import firepbt.runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(firepbt.runner, "run_store", interrupted)
    store = tmp_path / "my store"
    code, _out, err = call(capsys, "run", "nqm", "--store", str(store), "--no-progress")
    assert code == 130
    assert err.strip() == (f"firepbt: interrupted; 'firepbt resume '{store}'' continues from "
                           "the last round")


def test_sigterm_stops_a_run_with_its_rounds_and_says_so(tmp_path):
    store = tmp_path / "st"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firepbt.cli", "run", "nqm", "--method", "pbt", "--workers", "4",
         "--steps", "300000", "--ready-interval", "60", "--eval-interval", "5", "--store",
         str(store), "--no-progress", "--executor", "local"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # until a round is committed
            if (store / "experiment.sqlite").exists():
                st = Store.open(store, readonly=True)
                try:
                    if st.last_round() is not None:
                        break
                finally:
                    st.close()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert f"firepbt: terminated (SIGTERM); 'firepbt resume {store}' continues" in err
    st = Store.open(store, readonly=True)
    assert st.last_round() is not None
    st.close()


def test_a_scheduled_members_hyperparameters_are_those_it_trains_with_now(tmp_path):
    # random search on the hand-tuned schedule: the best member's hyperparameters are the
    # schedule's at the last step (the sampled value / 1000 at the end), not its warm-up's first
    from firepbt import open_experiment

    cfg = ExperimentConfig(task="nqm", method="random", workers=4, steps=900, ready_interval=60,
                           eval_interval=5)
    s = run(cfg, tmp_path / "rs", progress=False)
    with open_experiment(tmp_path / "rs") as exp:
        sched = exp.schedule(s.best_worker, 900)
    assert s.best_hparams == sched.hparams_at(899)
    assert s.best_hparams["lr"] == pytest.approx(sched.hparams_at(450)["lr"] / 100)


def test_the_hand_tuned_schedules_shape_is_configurable(tmp_path, capsys):
    # warm-up 10%, decays by 0.5 at 50% and 75% (ExperimentConfig.hand_tuned, CLI flags)
    from firepbt import open_experiment

    code, out, err = call(capsys, "run", "nqm", "--method", "random", "--workers", "2",
                          "--steps", "600", "--warmup-fraction", "0.1", "--decay-at", "0.5",
                          "0.75", "--decay-factor", "0.5", "--store", str(tmp_path / "h"),
                          "--no-progress")
    assert code == 0, err
    assert "warmed up linearly over the first 0.1 of training, then multiplied by 0.5 at 0.5, " \
           "0.75" in out
    with open_experiment(tmp_path / "h") as exp:
        sched = exp.schedule(0, 600)
    base = sched.hparams_at(100)["lr"]
    assert sched.hparams_at(0)["lr"] < base and sched.hparams_at(59)["lr"] == base  # warm-up
    assert sched.hparams_at(299)["lr"] == base
    assert sched.hparams_at(300)["lr"] == pytest.approx(base / 2)
    assert sched.hparams_at(450)["lr"] == pytest.approx(base / 4)
    for bad, why in ((["--decay-at", "0.5", "0.4"], "hand_tuned['decay_fractions'] must be "
                      "increasing"), (["--decay-factor", "2"], "hand_tuned['decay_factor'] "
                      "must be a number in (0, 1]"), (["--method", "pbt", "--decay-factor",
                      "0.5"], "hand_tuned must be given only with method 'random'")):
        args = ["run", "nqm", "--method", "random", *bad, "--store", str(tmp_path / "x")]
        code, out, err = call(capsys, *args)
        assert code == 2 and why in err and not (tmp_path / "x").exists(), err


@pytest.mark.parametrize("steps", [120, 1800])
def test_a_fire_run_says_where_it_did_not_show_fire(tmp_path, capsys, steps):
    # no success (2 rounds: too short), or a parent sub-population whose median lr ended below
    # P1's: said in the summary (and the report's story); said only when true
    import numpy as np

    from firepbt.results import fire_caveats

    store = tmp_path / "f"
    # 2 rounds of 3 evaluations: at most 3 trials, p >= 1/8, so no success can happen
    every = "20" if steps == 120 else "5"
    code, out, err = call(capsys, "run", "nqm", "--method", "fire", "--workers", "8", "--steps",
                          str(steps), "--eval-interval", every, "--store", str(store),
                          "--no-progress")
    assert code == 0, err
    st = Store.open(store, readonly=True)
    try:
        notes = fire_caveats(st)
        successes = len(st.decisions(["evaluator_success"]))
        ws = st.last_round().workers
    finally:
        st.close()
    med = {sub: np.median([v.hparams["lr"] for v in ws.values()
                           if v.subpopulation == sub and v.role == "member"]) for sub in (0, 1)}
    assert any("No evaluator succeeded" in n for n in notes) == (successes == 0)
    assert any("is below P1's" in n for n in notes) == (med[1] < med[0])
    assert sum(f"Note: {n}" in out for n in notes) == len(notes)
    if steps == 120:
        assert successes == 0 and notes
