"""The public read side: open_experiment on a stored run, replaying a custom experiment (Python
API and ``firepbt replay --factory``), and ``compare`` following each task's settings."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from firepbt import ExperimentConfig, LogUniform, Space, open_experiment
from firepbt.api import run
from firepbt.cli import main
from firepbt.lineage import chain, schedule
from firepbt.records import Exploit
from firepbt.store import Store

# a custom trainable, importable as ``toy_factory:make`` once its folder is on sys.path
TOY = textwrap.dedent("""
    import torch
    from firepbt import function_trainable

    def _train(state, hparams, steps):
        for _ in range(steps):
            state["w"] += hparams["lr"] * (1.0 - state["w"])

    make = function_trainable(lambda seed: {"w": torch.zeros(1) + seed % 7 / 100}, _train,
                              lambda state: float(state["w"][0]))
""")


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_factory.py").write_text(TOY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_factory", None)
    import toy_factory

    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=40, ready_interval=10,
                           eval_interval=10, seed=2)
    store = tmp_path / "toy-store"
    run(cfg, store, factory=toy_factory.make, space=Space({"lr": LogUniform(1e-3, 1e-1)}),
        progress=False)
    return store


def test_open_experiment_answers_from_the_store(toy):
    with open_experiment(toy) as exp:
        s, top = exp.summary(), exp.top()
        assert s.finished and s.steps_done == 40 and exp.mode == "max"
        # the top point is the best evaluation of the run
        evals = exp.evaluations()
        assert top.value == max(v for _r, _w, _s, v in evals)
        assert (top.worker, top.step) in {(w, st) for _r, w, st, v in evals if v == top.value}
        # schedule and lineage of the top point, as the lineage module computes them
        assert exp.schedule() == schedule(exp.store, top.worker, top.step)
        assert exp.lineage() == chain(exp.store, top.worker, top.step)
        assert exp.schedule().total_steps == top.step
        exploits = exp.decisions(["exploit"])
        assert all(isinstance(d, Exploit) for _r, _s, d in exploits)
        assert exp.activity().exploits == {0: len(exploits)}
        assert exp.replay() is None
    # closed: the store can be opened for writing again
    Store.open(toy).close()


def test_replaying_a_custom_experiment_needs_its_factory(toy, capsys):
    assert main(["replay", str(toy)]) == 2
    err = capsys.readouterr().err
    assert "factory must be" in err and "--factory module:callable" in err
    # (started from Python with a function, so the store has no module:callable to remember)
    assert main(["resume", str(toy)]) == 2
    err = capsys.readouterr().err
    assert "--factory module:callable" in err and len(err.strip().splitlines()) == 1
    assert main(["replay", str(toy), "--factory", "toy_factory:nothing"]) == 2
    assert "has no 'nothing'" in capsys.readouterr().err
    assert main(["replay", str(toy), "--factory", "toy_factory:make", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with open_experiment(toy) as exp:
        top, replay = exp.top(), exp.replay()
        sched = exp.schedule()
    assert (out["worker"], out["step"]) == (top.worker, top.step)
    assert replay is not None and replay["value"] == out["value"]
    # the replay is the schedule trained from the replay seed, nothing else
    import toy_factory

    from firepbt.replay import train_schedule

    assert train_schedule(toy_factory.make, sched, out["seed"])[0] == out["value"]


@pytest.mark.parametrize("task,expected", [
    ("nqm", (16, 3000, 60, 5)),  # the task's own defaults ('firepbt tasks')
    ("mnist1d", (22, 6000, 120, 10)),  # the paper's Table 1 protocol
])
def test_compare_follows_the_task_settings(tmp_path, monkeypatch, task, expected):
    import firepbt.compare as compare

    seen = []
    monkeypatch.setattr(compare, "run_comparison", lambda out, specs, jobs, upd: (
        seen.extend(specs), (out / "table1.md").parent.mkdir(parents=True, exist_ok=True),
        (out / "table1.md").write_text("")))
    assert main(["compare", task, "--out", str(tmp_path / "c"), "--seeds", "0"]) == 0
    assert {(s.workers, s.steps, s.ready_interval, s.eval_interval) for s in seen} == {expected}
    seen.clear()
    assert main(["compare", task, "--out", str(tmp_path / "d"), "--seeds", "0", "--steps",
                 "1200", "--workers", "12"]) == 0
    assert {(s.workers, s.steps) for s in seen} == {(12, 1200)}



def test_the_summary_names_random_search_schedule(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy_factory.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_factory", None)
    import toy_factory

    space = Space({"lr": LogUniform(1e-3, 1e-1), "wd": LogUniform(1e-4, 1e-2)})
    cfg = ExperimentConfig(task="toy", method="random", workers=2, steps=90, ready_interval=10,
                           eval_interval=10)
    plain = run(cfg, tmp_path / "a", factory=toy_factory.make, space=space, progress=False)
    assert "stayed constant" in plain.random_schedule and "schedule_param" in plain.random_schedule
    tuned = run(cfg, tmp_path / "b", factory=toy_factory.make, space=space, progress=False,
                schedule_param="lr")
    assert tuned.random_schedule.startswith("lr followed the hand-tuned schedule")
    with open_experiment(tmp_path / "b") as exp:  # and it did: lr decays, wd is constant
        segs = exp.schedule(0).segments
    lrs = [s.hparams["lr"] for s in segs]
    assert len({s.hparams["wd"] for s in segs}) == 1 and lrs[-1] < max(lrs) and len(lrs) > 3
    assert main(["status", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["random_schedule"] == tuned.random_schedule
    # PBT has none
    pbt = run(ExperimentConfig(task="toy", method="pbt", workers=4, steps=20, ready_interval=10,
                               eval_interval=10), tmp_path / "c", factory=toy_factory.make,
              space=space, progress=False)
    assert pbt.random_schedule is None


def test_a_trainable_that_fails_leaves_nothing_or_says_why_it_stopped(tmp_path, capsys):
    """Failing in the first round: no store is left (nothing was committed). Failing later:
    the store keeps its rounds and status says what stopped it."""
    from firepbt.errors import TrainableError

    class Breaks:
        def __init__(self, seed, at=0):
            self.w, self.steps, self.at = 0.0, 0, at

        def train(self, hparams, steps):
            if self.steps + steps > self.at:
                raise KeyError("lr")
            self.steps += steps

        def evaluate(self):
            return self.w

        def state_dict(self):
            return {"w": self.w, "steps": self.steps}

        def load_state_dict(self, state):
            self.w, self.steps = state["w"], state["steps"]

    space = Space({"wd": LogUniform(1e-4, 1e-2)})
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=40, ready_interval=10,
                           eval_interval=10, executor="local")
    with pytest.raises(TrainableError):
        run(cfg, tmp_path / "first", factory=Breaks, space=space, progress=False)
    assert not (tmp_path / "first").exists()
    with pytest.raises(TrainableError):
        run(cfg, tmp_path / "later", factory=lambda s: Breaks(s, at=20), space=space,
            progress=False)
    assert main(["status", str(tmp_path / "later")]) == 0
    out = capsys.readouterr().out
    assert "stopped by an error in round 3: TrainableError" in out and "KeyError" in out
