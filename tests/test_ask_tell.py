"""The ask/tell API as examples/ask_tell.py drives it: the decisions firepbt.run makes on the
same observations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from firepbt import ExperimentConfig, open_experiment, run
from firepbt.tasks.nqm import SPACE, NQMTrainable

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ask_tell.py"


def _example():
    spec = importlib.util.spec_from_file_location("ask_tell_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("method", "workers"), [("fire", 8), ("fire", 12), ("pbt", 6)])
def test_your_own_loop_makes_the_decisions_run_makes(tmp_path, method, workers):
    config = ExperimentConfig(task="nqm", method=method, workers=workers, steps=960,
                              ready_interval=60, eval_interval=5, seed=4,
                              task_options={"dims": 300}, executor="local")

    def make(seed):
        return NQMTrainable(seed, dims=300)

    decisions, seen = _example().drive(config, make, SPACE)
    run(config, tmp_path / "s", progress=False)
    with open_experiment(tmp_path / "s") as exp:
        stored = [d for _r, _s, d in exp.decisions()]
        evals = exp.evaluations()
    assert decisions == stored
    wanted = {"exploit"} | ({"assign_evaluator"} if method == "fire" else set()) | (
        {"evaluator_success"} if workers >= 12 else set())  # every branch of the loop, there
    assert wanted <= {d.kind for d in stored}
    # the same observations too (min objective: scores are the negated losses)
    for _r, w, s, v in evals:
        assert (s, -v) in seen[w]
