"""The V-MPO tasks' settings: the paper's section 4.2 FIRE layout scaled to the training length,
per-hyperparameter explore factors, the comparison's FIRE arguments, Figure 5 (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import C0, C1, colour_pixels

from firepbt.build import build_controller
from firepbt.cli import _config_from_args, _parser
from firepbt.compare import RunSpec, markdown
from firepbt.config import ExperimentConfig
from firepbt.controllers.fire_layout import fire_split
from firepbt.errors import ConfigError
from firepbt.tasks import get_task
from firepbt.tasks.vmpo import EPSILON_ETA_FACTORS, LR_FACTORS, SPACE, fire_settings


def fire_layout(cfg):
    return fire_split(cfg.workers, cfg.n_subpopulations, cfg.quantile)


def test_fire_settings_scale_with_training_length():
    assert fire_settings(2000) == {"ready_interval": 20, "eval_interval": 5,
                                   "min_steps_before_eval": 340, "max_eval_steps": 200,
                                   "n_subpopulations": 2}
    s = fire_settings(120_000)
    assert s["ready_interval"] == 1200 and s["max_eval_steps"] == 12_000
    assert s["min_steps_before_eval"] == 20_400  # 1/6 = 20,000 rounded up to a ready interval
    with pytest.raises(ConfigError, match="steps"):
        fire_settings(1000)


@pytest.mark.parametrize("task", ["vmpo", "vmpo-ant", "vmpo-humanoid"])
def test_presets_give_the_papers_two_subpopulations(task):
    t = get_task(task)
    paper = ExperimentConfig(task=task, method="fire", **t.settings("paper"))
    assert fire_layout(paper) == (2, 18, 14)  # the paper's 18 + 18 + 14
    small = ExperimentConfig(task=task, method="fire", **t.settings())
    assert fire_layout(small) == (2, 4, 4)
    assert small.steps // small.ready_interval == 100
    assert t.schedule_param is None and not t.has_test


def test_cli_run_takes_the_preset_and_lets_flags_override_it():
    args = _parser().parse_args(["run", "vmpo", "--preset", "paper", "--steps", "4000",
                                 "--max-eval-steps", "300"])
    cfg = _config_from_args(args)
    assert (cfg.workers, cfg.steps, cfg.ready_interval, cfg.eval_interval) == (50, 4000, 40, 10)
    assert (cfg.min_steps_before_eval, cfg.max_eval_steps, cfg.n_subpopulations) == (680, 300, 2)
    nqm = _config_from_args(_parser().parse_args(["run", "nqm"]))
    assert (nqm.workers, nqm.min_steps_before_eval, nqm.n_subpopulations) == (16, 0, None)


def test_explore_uses_each_hyperparameters_own_factors():
    rng = np.random.default_rng(0)
    hp = {"lr": 1e-4, "epsilon_eta": 1e-2}
    seen_lr, seen_eps = set(), set()
    for _ in range(200):
        new = SPACE.perturb(hp, rng)
        seen_lr.add(round(new["lr"] / hp["lr"], 6))
        seen_eps.add(round(new["epsilon_eta"] / hp["epsilon_eta"], 6))
    assert seen_lr == set(LR_FACTORS) and seen_eps == set(EPSILON_ETA_FACTORS)


def test_per_name_factors_in_the_config_round_trip_and_reach_the_controller():
    cfg = ExperimentConfig(task="vmpo", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10, factors={"lr": [0.5, 2.0]})
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    ctl = build_controller(cfg, SPACE, None)
    assert ctl.space.params["lr"].factors == (0.5, 2.0)
    assert ctl.space.params["epsilon_eta"].factors == EPSILON_ETA_FACTORS  # kept its own
    bad = ExperimentConfig(task="vmpo", method="pbt", workers=4, steps=40, ready_interval=20,
                           eval_interval=10, factors={"momentum": [0.5]})
    with pytest.raises(ConfigError, match="momentum"):
        build_controller(bad, SPACE, None)
    cli = _config_from_args(_parser().parse_args(
        ["run", "vmpo", "--factors", "lr=0.5,0.8,1.25,2", "epsilon_eta=0.9,1.1"]))
    assert cli.factors == {"epsilon_eta": (0.9, 1.1), "lr": (0.5, 0.8, 1.25, 2.0)}


def test_comparison_passes_the_fire_settings_and_labels_constant_random_search():
    fire = RunSpec("vmpo", "fire", 12, 0, 2000, 20, 5, 200, 340, 2)
    cfg = fire.config()
    assert (cfg.min_steps_before_eval, cfg.n_subpopulations, cfg.max_eval_steps) == (340, 2, 200)
    assert (cfg.executor, cfg.threads) == ("local", 1)
    pbt = RunSpec("vmpo", "pbt", 12, 0, 2000, 20, 5, 200, 340, 2).config()
    assert (pbt.n_subpopulations, pbt.max_eval_steps) == (None, None)
    assert RunSpec("vmpo", "random", 12, 0, 2000, 20, 5).label == "Random search (constant)"
    assert RunSpec("mnist1d", "random", 22, 0, 6000, 125, 25).label == "RS hand-tuned schedule"


def test_table_without_a_test_set_shows_the_objective_columns():
    nan = (float("nan"), float("nan"))
    row = {"method": "PBT", "runs": 3, "top_value": (-150.0, 10.0), "top_test": nan,
           "replay_test": nan, "replay_value": (-300.0, 50.0), "final_test": nan,
           "final_value": (-200.0, 20.0), "train_cpu_s": 300.0, "controller_cpu_s": 0.1}
    md = markdown([row], percent=False)
    assert "Best member's final objective" in md
    assert "| PBT | 3 | -150 ± 10 | -200 ± 20 | -300 ± 50 | 300 | 0.1 |" in md


def test_figure5_draws_the_distribution_per_method(tmp_path):
    pytest.importorskip("matplotlib")
    from firepbt.report import figure5

    curves = {"PBT": [[(0, -1200.0), (10, -800.0)], [(0, -1300.0), (10, -700.0)]],
              "FIRE PBT (12)": [[(0, -1250.0), (10, -500.0)]]}
    path = figure5(curves, tmp_path / "f5.png")
    # one median line per method, in the first two cycle colours
    assert colour_pixels(path, C0) > 50 and colour_pixels(path, C1) > 50
    empty = figure5({"PBT": curves["PBT"]}, tmp_path / "one.png")
    assert colour_pixels(empty, C1) == 0
