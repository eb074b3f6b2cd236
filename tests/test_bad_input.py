"""Bad input, verb by verb: one line naming the field or file, exit code 2, and nothing on disk
changed (table-driven; the store cases use one small finished store)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tree

from firepbt.api import resume, run
from firepbt.cli import main
from firepbt.config import ExperimentConfig
from firepbt.errors import ConfigError
from firepbt.space import Categorical, LogUniform, Space
from firepbt.store import Store
from firepbt.trainable import function_trainable


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a finished small store, a file, and schedule files."""
    base = tmp_path_factory.mktemp("ws")
    cfg = ExperimentConfig(task="nqm", method="pbt", workers=4, steps=100, ready_interval=50,
                           eval_interval=10, task_options={"dims": 100})
    run(cfg, base / "store")
    (base / "afile").write_text("not a folder")
    (base / "garbage.json").write_text("{ this is not json")

    def sched(hp, steps):
        (base / f"sched-{len(list(base.glob('sched-*')))}.json").write_text(
            json.dumps({"segments": [{"hparams": hp, "steps": steps}]}))

    sched({"lr": 0.5}, 100)  # sched-0: good for 100 steps
    sched({"momentum": 0.5}, 100)  # sched-1: unknown hyperparameter
    (base / "sched-2.json").write_text('{"segments": [{"hparams": {"lr": NaN}, "steps": 100}]}')
    sched({"lr": 0.5}, 70)  # sched-3: shorter than the run
    return base


RUN = ["run", "nqm", "--steps", "100", "--ready-interval", "50", "--eval-interval", "10",
       "--no-progress"]

# (argv with {ws} for the workspace, words the one line must contain)
CASES = [
    (["run", "mnist1d", "--objective", "bogus", "--store", "{ws}/new"], "objective must be one of"),
    ([*RUN, "--method", "random", "--schedule", "{ws}/garbage.json", "--store", "{ws}/new"],
     "schedule must be a JSON file"),
    ([*RUN, "--method", "random", "--schedule", "{ws}/missing.json", "--store", "{ws}/new"],
     "schedule must be a JSON file"),
    ([*RUN, "--method", "random", "--schedule", "{ws}/sched-1.json", "--store", "{ws}/new"],
     "schedule.segments[0].hparams must be a mapping with keys ['lr']"),
    ([*RUN, "--method", "random", "--schedule", "{ws}/sched-2.json", "--store", "{ws}/new"],
     "schedule.segments[0].hparams['lr'] must be a finite number"),
    ([*RUN, "--method", "random", "--schedule", "{ws}/sched-3.json", "--store", "{ws}/new"],
     "schedule must be a schedule of 100 steps"),
    ([*RUN, "--method", "pbt", "--schedule", "{ws}/sched-0.json", "--store", "{ws}/new"],
     "schedule must be given only with --method random"),
    ([*RUN, "--method", "fire", "--workers", "12", "--schedule", "{ws}/sched-0.json", "--store",
      "{ws}/new"], "schedule must be given only with --method random"),
    ([*RUN, "--store", ""], "store must be a folder path, got ''"),
    ([*RUN, "--store", "sqlite:relative"], "store must be a folder path or sqlite:///PATH"),
    ([*RUN, "--store", "{ws}/afile/sub"], "cannot be written"),
    ([*RUN, "--store", "{ws}/store"], "never overwrites"),
    ([*RUN, "--method", "fire", "--workers", "5", "--store", "{ws}/new"],
     "workers must be an int >= 6 for FIRE PBT"),
    ([*RUN, "--method", "fire", "--workers", "12", "--min-steps-before-eval", "0", "100",
      "--store", "{ws}/new"], "min_steps_before_eval must be below steps (100)"),
    ([*RUN, "--method", "pbt", "--workers", "100000", "--store", "{ws}/new"],
     "workers must be at most"),
    (["lineage", "{ws}/store", "--worker", "999"], "worker must be an int in [0, 4)"),
    (["lineage", "{ws}/store", "--worker", "-1"], "worker must be an int in [0, 4)"),
    (["report", "{ws}/store", "--out", "{ws}/afile/sub"], "afile"),
    (["status", "{ws}/afile"], "store must be a folder made by 'firepbt run'"),
    (["resume", "{ws}/nothing"], "store must be a folder made by 'firepbt run'"),
    (["replay", "{ws}/nothing"], "store must be a folder made by 'firepbt run'"),
]


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[c[1][:40] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_changed(workspace, capsys, argv, words):
    before = tree(workspace)
    code = main([a.replace("{ws}", str(workspace)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firepbt: error: "), err
    assert words in lines[0], lines[0]
    assert tree(workspace) == before
    assert not (workspace / "new").exists()


def test_an_evaluate_that_returns_a_non_number_is_refused(tmp_path):
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10)
    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    for i, bad in enumerate(("0.5", True, None)):
        class Bad:  # returns ``bad`` from evaluate(), which must not pass as a float
            def __init__(self, seed, b=bad):
                self.b = b

            def train(self, hparams, steps):
                pass

            def evaluate(self):
                return self.b

            def state_dict(self):
                return {}

            def load_state_dict(self, state):
                pass

        with pytest.raises(ConfigError, match=r"evaluate\(\) must be a float"):
            run(cfg, tmp_path / f"s{i}", factory=Bad, space=space)
        assert not (tmp_path / f"s{i}").exists()  # nothing written


def test_report_with_only_a_categorical_string_hyperparameter(tmp_path):
    pytest.importorskip("matplotlib")
    from firepbt.report import report

    def init(seed):
        return {"w": torch.tensor([float(seed % 7)])}

    def train(state, hparams, steps):
        state["w"] += {"sgd": 0.1, "adam": 0.2}[hparams["opt"]] * steps

    factory = function_trainable(init, train, lambda st: float(st["w"][0]))
    space = Space({"opt": Categorical(("sgd", "adam"))})
    cfg = ExperimentConfig(task="toy", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10)
    run(cfg, tmp_path / "s", factory=factory, space=space)
    page = report(tmp_path / "s", tmp_path / "out")
    assert "Winning schedule" in page.read_text()


def test_vectorized_settings_are_built_a_chunk_at_a_time():
    """A round of 10**12 steps must not materialise per-step settings (it used to build
    Python lists of every step)."""
    from firepbt.executors.vectorized import _CHUNK, _settings_chunk

    runs = [[((0.1, 0.9, 0.0), 10**12)], [((0.2, 0.9, 0.0), 5), ((0.3, 0.0, 0.0), 10**12)]]
    settings = _settings_chunk(runs, 0, _CHUNK)
    lr, mom = settings[..., 0], settings[..., 1]
    assert settings.shape == (_CHUNK, 2, 3) and _CHUNK <= 4096
    assert lr[:, 0].eq(0.1).all() and lr[:5, 1].eq(0.2).all() and lr[5:, 1].eq(0.3).all()
    assert mom[4, 1] == 0.9 and mom[5, 1] == 0.0
    lr = _settings_chunk(runs, 10**11, 3)[..., 0]
    assert lr.tolist() == [[0.1, 0.3]] * 3


def test_fixture_store_is_untouched_by_readers(workspace, capsys):
    before = tree(workspace)
    for argv in (["status", "{ws}/store", "--json"], ["lineage", "{ws}/store"]):
        assert main([a.replace("{ws}", str(workspace)) for a in argv]) == 0
    capsys.readouterr()
    assert tree(workspace) == before
    shutil.rmtree(workspace / "new", ignore_errors=True)
    assert Store.writer_pid(workspace / "store") is None


def test_a_sqlite_url_names_the_store_folder(tmp_path, capsys):
    # sqlite:////ABS/x (SQLAlchemy's absolute form) is the folder /ABS/x, not a tree 'sqlite:'
    code = main([*RUN, "--method", "pbt", "--workers", "4", "--store",
                 f"sqlite:///{tmp_path}/viasqlite"])
    capsys.readouterr()
    assert code == 0
    assert (tmp_path / "viasqlite" / "experiment.sqlite").is_file()
    assert not any(p.name.startswith("sqlite:") for p in tmp_path.iterdir())
    assert not Path("sqlite:").exists()


CFG = dict(task="toy", method="pbt", workers=4, steps=60, ready_interval=10, eval_interval=5,
           seed=1, executor="local")


def test_absurd_sizes_are_refused_at_once(capsys):
    with pytest.raises(ConfigError, match=r"workers must be an int in \[1, 100001\)"):
        ExperimentConfig(**{**CFG, "workers": 10**7})
    for args in (["--workers", "99999999999999999999999999"], ["--threads", "100000"]):
        assert main(["run", "nqm", *args, "--store", "never"]) == 2
        assert "must be an int in" in capsys.readouterr().err

def test_duplicates_empty_paths_and_bad_schedule_steps_are_refused(tmp_path, capsys):
    cases = [
        (["compare", "nqm", "--out", str(tmp_path / "c"), "--seeds", "0", "0"],
         "seeds must be each seed once"),
        (["compare", "nqm", "--out", str(tmp_path / "c"), "--methods", "pbt", "pbt"],
         "methods must be each method once"),
        (["run", "nqm", "--factors", "lr=0.5,2", "lr=3", "--store", str(tmp_path / "f")],
         "factors must be each hyperparameter named once"),
        (["report", str(tmp_path), "--out", ""], "out must be a folder path"),
    ]
    for args, why in cases:
        assert main(args) == 2, args
        assert why in capsys.readouterr().err
    sched = tmp_path / "sched.json"
    for steps in (200.9, True, "200"):
        sched.write_text(json.dumps({"segments": [{"hparams": {"lr": 0.5}, "steps": steps}]}))
        assert main(["run", "nqm", "--method", "random", "--steps", "200", "--ready-interval",
                     "50", "--eval-interval", "10", "--schedule", str(sched), "--store",
                     str(tmp_path / "r")]) == 2
        assert "schedule.segments[0].steps must be an int > 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="schedule must be given only with method 'random'"):
        ExperimentConfig(**{**CFG, "schedule": {"segments": []}})
    # a comparison's folder is not an experiment's store
    run(ExperimentConfig(**{**CFG, "task": "nqm", "task_options": {"dims": 50}}),
        tmp_path / "st", progress=False, max_rounds=1)
    assert main(["compare", "nqm", "--out", str(tmp_path / "st"), "--seeds", "0"]) == 2
    assert "out must be a folder for the comparison, not an experiment's store" in \
        capsys.readouterr().err
    assert not (tmp_path / "st" / "comparison.json").exists()

def test_a_full_disk_a_failing_factory_module_and_an_overflowing_schedule_are_one_line(tmp_path, monkeypatch, capsys):
    import torch as _torch

    # a full disk while a checkpoint is written (torch raises RuntimeError): one line, the
    # committed rounds kept
    cfg = ExperimentConfig(**{**CFG, "task": "nqm", "task_options": {"dims": 50}})
    run(cfg, tmp_path / "s", progress=False, max_rounds=2)
    real = _torch.save

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0"
                           "\nNo space left on device")

    monkeypatch.setattr(_torch, "save", full)
    assert main(["resume", str(tmp_path / "s"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint round-000003.pt cannot be written" in err[0]
    assert "(No space left on device)" in err[0] and "inline_container" not in err[0]
    monkeypatch.setattr(_torch, "save", real)
    assert resume(tmp_path / "s", progress=False).finished
    # a --factory whose module raises, or exits, as it is imported
    (tmp_path / "raising.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "exiting.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "broken.py").write_text("def make(:\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, why in (("raising:make", "raised RuntimeError: boom at import"),
                      ("exiting:make", "raised SystemExit: 3"),
                      ("broken:make", "raised SyntaxError")):
        assert main(["replay", str(tmp_path / "s"), "--factory", spec]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
    # a schedule whose numbers overflow, or nested too deep for JSON
    for text in ('{"segments": [{"hparams": {"lr": 0.5}, "steps": 1e999}]}',
                 "[" * 50000 + "]" * 50000):
        (tmp_path / "sched.json").write_text(text)
        assert main(["run", "nqm", "--method", "random", "--schedule", "sched.json",
                     "--store", "r"]) == 2
        err = capsys.readouterr().err
        assert "schedule" in err and " must be " in err and len(err.strip().splitlines()) == 1

def test_a_comparison_whose_runs_fail_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "failing.py").write_text(
        "from firepbt import LogUniform, Space\n"
        "SPACE = Space({'lr': LogUniform(1e-3, 1e-1)})\n"
        "class T:\n"
        "    def train(self, hparams, steps): raise ValueError('always')\n"
        "    def evaluate(self): return 0.0\n"
        "    def state_dict(self): return {}\n"
        "    def load_state_dict(self, state): pass\n"
        "def make(seed): return T()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["compare", "failing", "--factory", "failing:make", "--out", "c", "--methods",
                 "pbt", "--workers", "4", "--seeds", "0", "--steps", "20", "--ready-interval",
                 "10", "--eval-interval", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "1 of the comparison's runs failed: pbt-w4-s0" in err[0]


def test_durations_beyond_what_a_timer_holds_and_non_ascii_digits_are_one_line(tmp_path,
                                                                              capsys):
    for args in (["run", "nqm", "--round-timeout", "1e300"],
                 ["run", "nqm", "--time-budget", "\u0663"],  # an Arabic-Indic 3
                 ["report", str(tmp_path), "--watch", "--every", "1e300"]):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--store", str(tmp_path / "never")] if args[0] == "run" else args)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "must be seconds in (0, 1e+09]" in err[0], err
    with pytest.raises(ConfigError, match=r"round_timeout must be in \(0, 1e\+09\]"):
        ExperimentConfig(**{**CFG, "round_timeout": 1e300})
    assert not (tmp_path / "never").exists()


def test_tracker_specs_that_would_write_where_they_should_not_are_refused(tmp_path, capsys):
    pytest.importorskip("mlflow")
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")  # SQLite would take it for an empty database and write over it
    cases = [("tensorboard: ", "--log must be tensorboard:DIR"),
             (f"mlflow:sqlite:///{afile}", "a file that is not a database"),
             (f"mlflow:sqlite:///{tmp_path}/no/such/dir/x.db", "in a folder that exists"),
             # a tracker that cannot start: a new run does not begin without it
             (f"tensorboard:{afile}", "--log must be a tracker that can start"),
             (f"mlflow:{afile}/x", "Not a directory")]
    for spec, why in cases:
        code = main(["run", "nqm", "--method", "pbt", "--workers", "4", "--steps", "120",
                     "--store", str(tmp_path / "s"), "--log", spec, "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and why in err[0], (spec, err)
    assert afile.read_bytes() == b"x" and not (tmp_path / "no").exists()
    assert not (tmp_path / "s").exists() and not (tmp_path / " ").exists()


def test_report_watch_refuses_an_out_folder_it_would_ignore(tmp_path, capsys):
    run(ExperimentConfig(**{**CFG, "task": "nqm", "task_options": {"dims": 20}}),
        tmp_path / "s", progress=False)
    assert main(["report", str(tmp_path / "s"), "--watch", "--out", str(tmp_path / "x")]) == 2
    assert "--out must be given without --watch" in capsys.readouterr().err


def test_a_replay_factory_that_fails_when_called_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "factories.py").write_text(
        "def returns_none(seed):\n    return None\n"
        "def raises(seed):\n    raise ValueError('no data here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run(ExperimentConfig(**{**CFG, "task": "nqm", "task_options": {"dims": 20}}),
        tmp_path / "s", progress=False)
    for spec, why in (("factories:returns_none", "returns_none (a factory that returned None)"),
                      ("factories:raises", "raises (calling it raised ValueError: no data here)"),
                      ("os.path:join", "calling it raised TypeError")):
        assert main(["replay", "s", "--factory", spec]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], (spec, err)
