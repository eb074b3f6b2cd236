"""The command line: shape, bad input (one line, exit 2, nothing written), status JSON."""

from __future__ import annotations

import json
import re

import pytest

from firepbt.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, field", [
    (["run", "imagenet"], "task"),
    (["run", "nqm", "--steps", "-5"], "steps"),
    (["run", "nqm", "--method", "pbt", "--workers", "1"], "workers"),
    (["run", "nqm", "--method", "pbt", "--workers", "\u0663"], "workers"),  # an Arabic 3
    (["run", "nqm", "--method", "pbt", "--steps", "1_000"], "steps"),
    (["run", "nqm", "--seed", "\u0663"], "seed"),
    (["run", "nqm", "--method", "pbt", "--subpopulations", "3"], "--subpopulations"),
    (["run", "nqm", "--method", "random", "--max-eval-steps", "100"], "--max-eval-steps"),
    (["run", "nqm", "--method", "bayes"], "method"),
    (["run", "nqm", "--ready-interval", "55", "--eval-interval", "10"], "ready_interval"),
    (["run", "nqm", "--steps", "1010", "--ready-interval", "50"], "steps"),
    (["run", "nqm", "--quantile", "0.9"], "quantile"),
    (["run", "nqm", "--objective", "f1"], "objective"),
    (["run", "nqm", "--preset", "paper"], "preset"),
    (["run", "vmpo", "--preset", "huge"], "preset"),
    (["run", "vmpo", "--steps", "1000"], "steps"),
    (["run", "vmpo", "--factors", "lr=0.5,x"], "factors['lr']"),
    (["run", "vmpo", "--factors", "momentum=0.5,2"], "factors"),
    (["run", "vmpo", "--factors", "lr=-1"], "factors['lr']"),
    (["run", "nqm", "--ray-address", "127.0.0.1:6379"], "ray_address"),  # executor not ray
    (["run", "nqm", "--gpus-per-worker", "0.5"], "gpus_per_worker"),  # executor not ray
    (["run", "nqm", "--executor", "ray", "--device", "cuda"], "device"),  # no GPU declared
    # nothing listens there (a port this test just freed): refused at once, not retried
    (["run", "nqm", "--executor", "ray", "--ray-address", "FREE_PORT"], "ray_address"),
    (["run", "nqm", "--executor", "ray", "--ray-address", "no-port"], "ray_address"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, field):
    if "FREE_PORT" in args:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = [f"127.0.0.1:{port}" if a == "FREE_PORT" else a for a in args]
    store = tmp_path / "store"
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main([*args, "--store", str(store), "--no-progress"]))
    err = capsys.readouterr().err
    assert info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firepbt: error: ")
    assert field in lines[0] and "must be" in lines[0] and ("got" in lines[0] or "invalid" in lines[0])
    assert not store.exists()


def test_run_refuses_to_overwrite_and_status_refuses_foreign_folders(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "file").write_text("x")
    code, _, err = run_cli(capsys, "run", "nqm", "--store", str(tmp_path / "s"), "--no-progress")
    assert code == 2 and "never overwrites" in err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["file"]
    code, _, err = run_cli(capsys, "status", str(tmp_path / "s"))
    assert code == 2 and "made by 'firepbt run'" in err
    code, _, err = run_cli(capsys, "resume", str(tmp_path / "nope"))
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_run_status_lineage_replay_on_nqm(tmp_path, capsys):
    store = str(tmp_path / "s")
    code, out, _ = run_cli(capsys, "run", "nqm", "--method", "fire", "--workers", "12",
                           "--steps", "300", "--ready-interval", "50", "--eval-interval", "10",
                           "--store", store, "--no-progress")
    assert code == 0
    assert "Best member: worker" in out and "Its schedule" in out and store in out
    # what FIRE PBT did: exploits per sub-population and evaluator successes, both > 0
    exploits = re.search(r"Exploits: \d+ \(P1 (\d+), P2 (\d+)\)", out)
    successes = re.search(r"Evaluators: \d+ assigned, (\d+) successes", out)
    assert exploits and successes, out
    assert int(exploits.group(2)) > 0 and int(successes.group(1)) > 0
    # no test set: the summary speaks of the objective, not of a validation/test pair
    assert "Top objective over the run" in out and "Top validation" not in out
    assert "test n/a" not in out and "validation" not in out
    code, out, _ = run_cli(capsys, "status", store, "--json")
    d = json.loads(out)
    assert {"task", "method", "steps_done", "steps_total", "finished", "best"} <= set(d)
    assert d["task"] == "nqm" and d["method"] == "fire" and d["finished"] is True
    assert d["steps_done"] == d["steps_total"] == 300
    assert set(d["best"]) == {"worker", "value", "test", "hparams"}
    assert d["best"]["test"] is None and d["best"]["worker"] in range(4)
    # values as evaluate() returned them (the NQM's loss: positive, lower is better), not the
    # maximised scores the controllers compare, and the direction said once
    assert d["mode"] == "min" and d["best"]["value"] > 0 and d["top"]["value"] > 0
    assert d["top"]["value"] <= d["best"]["value"]
    code, out, _ = run_cli(capsys, "lineage", store, "--json")
    sched = json.loads(out)
    assert sum(s["steps"] for s in sched["segments"]) == 300
    code, out, _ = run_cli(capsys, "replay", store, "--json")
    assert code == 0 and json.loads(out)["test"] is None
    code, out, _ = run_cli(capsys, "tasks")
    assert "mnist1d" in out and "nqm" in out


def test_min_steps_before_eval_per_subpopulation_on_the_command_line(tmp_path, capsys):
    store = tmp_path / "s"
    base = ["run", "nqm", "--method", "fire", "--workers", "20", "--subpopulations", "3",
            "--steps", "100", "--ready-interval", "50", "--eval-interval", "10", "--store",
            str(store), "--no-progress"]
    code, _, err = run_cli(capsys, *base, "--min-steps-before-eval", "0", "50")
    assert code == 2 and "min_steps_before_eval must be" in err and "(3 ints" in err
    assert len(err.strip().splitlines()) == 1 and not store.exists()
    code, _, _ = run_cli(capsys, *base, "--min-steps-before-eval", "0", "50", "90")
    assert code == 0
    code, out, _ = run_cli(capsys, "status", str(store), "--json")
    assert json.loads(out)["activity"]["assignments"] > 0


def test_the_summary_lists_a_subpopulation_that_did_not_evolve(tmp_path, capsys):
    # P2 may be evaluated only from step 299 of 300: it never evolves, and the summary says so
    code, out, _ = run_cli(capsys, "run", "nqm", "--method", "fire", "--workers", "12",
                           "--steps", "300", "--ready-interval", "50", "--eval-interval", "10",
                           "--min-steps-before-eval", "299", "--store", str(tmp_path / "s"),
                           "--no-progress")
    assert code == 0
    assert re.search(r"Exploits: \d+ \(P1 \d+, P2 0\)", out), out
    assert "Evaluators: 4 assigned, 0 successes" in out



def test_a_fire_run_too_small_for_its_evaluators_is_said_before_it_starts(tmp_path, capsys):
    # the newcomer's size (8 workers, 8 rounds of 6 evaluations: 0 successes on two seeds
    # there): the note comes before the run, not only in the summary after it
    import dataclasses
    import logging

    from firepbt import ExperimentConfig, run
    from firepbt.build import fire_sizing_note, task_config
    from firepbt.tasks import TASKS

    code, out, _ = run_cli(capsys, "run", "nqm", "--method", "fire", "--workers", "8",
                           "--steps", "480", "--ready-interval", "60", "--eval-interval", "10",
                           "--store", str(tmp_path / "s"), "--no-progress")
    assert code == 0
    lines = out.splitlines()
    (note,) = [i for i, x in enumerate(lines) if x.startswith("firepbt: note: FIRE PBT at this")]
    assert "8 workers: 3 + 3 members and 2 evaluators; 8 rounds of 6 evaluations" in lines[note]
    assert note < next(i for i, x in enumerate(lines) if x.startswith("Experiment finished"))
    # from Python, a warning; PBT and the built-in tasks' own protocols get none
    cfg = ExperimentConfig(task="nqm", method="fire", workers=8, steps=480, ready_interval=60,
                           eval_interval=10)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("firepbt").addHandler(handler)
    try:
        run(cfg, tmp_path / "p", progress=False)
    finally:
        logging.getLogger("firepbt").removeHandler(handler)
    assert any("FIRE PBT at this size" in x for x in seen)
    assert fire_sizing_note(dataclasses.replace(cfg, method="pbt")) is None
    assert fire_sizing_note(dataclasses.replace(cfg, steps=3000, eval_interval=5)) is None  # 50 rounds of 12
    for task in TASKS:
        for comparison in (False, True):
            assert fire_sizing_note(task_config(task, method="fire",
                                                comparison=comparison)) is None, task

def test_every_option_of_every_verb_has_help():
    import argparse

    from firepbt.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{verb} {'/'.join(a.option_strings) or a.dest}"
               for verb, parser in sub.choices.items() for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


def test_replay_labels_what_it_measured(tmp_path, capsys):
    store = str(tmp_path / "s")
    assert run_cli(capsys, "run", "nqm", "--method", "pbt", "--workers", "4", "--steps", "100",
                   "--ready-interval", "50", "--eval-interval", "10", "--store", store,
                   "--no-progress")[0] == 0
    code, out, _ = run_cli(capsys, "replay", store)
    assert code == 0 and "final objective" in out and "validation-split" not in out


def test_status_says_which_rounds_a_resume_trains_again(tmp_path, capsys):
    """Stopped after round 3 with a checkpoint every 2 rounds: resume continues from round 2's
    checkpoint and trains round 3 again, and status says so."""
    from firepbt.api import run
    from firepbt.config import ExperimentConfig

    cfg = ExperimentConfig(task="nqm", method="pbt", workers=4, steps=300, ready_interval=50,
                           eval_interval=10, checkpoint_interval=2, task_options={"dims": 200})
    run(cfg, tmp_path / "s", progress=False, max_rounds=3)
    code, out, _ = run_cli(capsys, "status", str(tmp_path / "s"))
    assert code == 0
    assert "'firepbt resume' continues it from the checkpoint of round 2, training round 3 " \
           "again" in out, out
    code, out, _ = run_cli(capsys, "status", str(tmp_path / "s"), "--json")
    d = json.loads(out)
    assert (d["rounds_done"], d["checkpoint_round"]) == (3, 2)
    code, out, _ = run_cli(capsys, "resume", str(tmp_path / "s"), "--no-progress")
    assert code == 0
    assert ("resuming " + str(tmp_path / "s") + " at step 100/300 (from the checkpoint at step "
            "100; steps 100-150 are trained again)") in out, out


def test_lineage_replay_and_report_name_one_schedule(tmp_path, capsys):
    # the top point's schedule by default (what replay retrains and the report shows), the
    # best member's at the end with --best-member; each labelled
    from firepbt import open_experiment

    store = tmp_path / "s"
    code, _, err = run_cli(capsys, "run", "nqm", "--method", "pbt", "--workers", "4", "--steps",
                           "240", "--store", str(store), "--no-progress")
    assert code == 0, err
    with open_experiment(store) as exp:
        top, top_sched = exp.top(), exp.schedule()
        best = exp.summary().best_worker
    code, out, _ = run_cli(capsys, "lineage", str(store), "--json")
    assert json.loads(out) == json.loads(top_sched.to_json())
    code, out, _ = run_cli(capsys, "lineage", str(store))
    assert out.startswith(f"the top point, worker {top.worker} at step {top.step} ")
    code, out, _ = run_cli(capsys, "replay", str(store), "--json")
    assert json.loads(out)["schedule"] == json.loads(top_sched.to_json())
    code, out, _ = run_cli(capsys, "lineage", str(store), "--best-member")
    assert out.startswith(f"the best member at the end, worker {best}:")
