"""Built-in tasks: data, state round trips (exact continuation), objectives, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from firepbt.supervised import macro_f1
from firepbt.tasks import get_task
from firepbt.tasks.mnist1d import MNIST1DTrainable, load_data
from firepbt.tasks.nqm import NQMTrainable


def test_mnist1d_data_split_and_cache(tmp_path, monkeypatch):
    d = load_data()
    assert d.x_train.shape == (43_000, 40) and d.x_val.shape == (5_000, 40)
    assert d.x_test.shape == (12_000, 40)
    assert set(d.y_train.unique().tolist()) == set(range(10))
    from firepbt.tasks.mnist1d import cache_dir

    assert any(cache_dir().glob("mnist1d-60000-42.npz"))
    state = np.random.get_state()[1][:5].tolist()
    from firepbt.tasks.mnist1d import generate

    generate(200, seed=1)
    assert np.random.get_state()[1][:5].tolist() == state  # global RNG untouched


def test_mnist1d_state_round_trip_continues_exactly():
    a = MNIST1DTrainable(1, hidden=32)
    a.train({"lambda": 0.1}, 400)  # crosses an epoch boundary? no: 400*128 > 43000 -> yes
    saved = a.state_dict()
    b = MNIST1DTrainable(2, hidden=32)
    b.load_state_dict(saved)
    a.train({"lambda": 0.1}, 30)
    b.train({"lambda": 0.1}, 30)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.evaluate() == b.evaluate()


def test_mnist1d_learns_and_f1_objective():
    t = MNIST1DTrainable(0, hidden=64)
    before = t.evaluate()
    t.train({"lambda": 0.2}, 300)
    after = t.evaluate()
    # chance is 10%; 300 steps of SGD reach well above 40% on MNIST-1D (typically ~60%)
    assert before < 0.2 and after > 0.4
    f = MNIST1DTrainable(0, hidden=64, objective="f1")
    f.load_state_dict(t.state_dict())
    assert 0.3 < f.evaluate() <= 1.0
    with pytest.raises(ValueError, match="objective must be one of"):
        MNIST1DTrainable(0, objective="auc")


def test_macro_f1_known_values():
    y = torch.tensor([0, 0, 1, 1])
    assert macro_f1(torch.tensor([0, 0, 1, 1]), y, 2) == 1.0
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 2, fp 1, fn 0 -> 4/5
    assert macro_f1(torch.tensor([0, 1, 1, 1]), y, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_nqm_matches_monte_carlo_and_shows_short_horizon_bias():
    # exact moments vs a sampled run of the same dynamics (8 dims, 4000 samples)
    t = NQMTrainable(0, dims=8)
    t.train({"lr": 0.5}, 20)
    rng = np.random.default_rng(0)
    h, var = t.h.cpu().numpy(), t.noise.cpu().numpy()
    x = rng.choice([-1.0, 1.0], size=(4000, 8))
    v = np.zeros_like(x)
    for _ in range(20):
        eps = rng.normal(size=x.shape) * np.sqrt(var)
        v = 0.9 * v - 0.5 * (h * x + eps)
        x = x + v
    mc = 0.5 * np.sum(h * (x ** 2).mean(0))
    # 4000 samples: relative standard error of the mean of a chi-square-like sum ~ 2%
    assert t.evaluate() == pytest.approx(mc, rel=0.1)
    # greedy decay helps now but hurts later (the phenomenon the task exists for)
    early = NQMTrainable(0)
    early.train({"lr": 2.0}, 100)
    early.train({"lr": 0.2}, 2900)
    kept = NQMTrainable(0)
    kept.train({"lr": 2.0}, 2400)
    kept.train({"lr": 0.2}, 600)
    probe = NQMTrainable(0)
    probe.train({"lr": 2.0}, 100)
    short = NQMTrainable(0)
    short.load_state_dict(probe.state_dict())
    short.train({"lr": 0.2}, 50)
    probe.train({"lr": 2.0}, 50)
    assert short.evaluate() < probe.evaluate()  # decaying looks better in the short run
    assert kept.evaluate() < early.evaluate()  # but keeping the rate high wins at the end


def test_registry():
    assert get_task("mnist1d").schedule_param == "lambda"
    assert get_task("nqm").make(0, dims=10).mode == "min"
    from firepbt.errors import ConfigError

    with pytest.raises(ConfigError, match="task must be one of"):
        get_task("cifar")


@pytest.mark.parametrize("name", ["mnist1d", "mnist", "nqm", "vmpo", "vmpo-ant", "vmpo-humanoid"])
def test_every_task_default_is_a_fire_layout_that_evolves(name):
    """Each task's defaults (and presets) must be accepted for FIRE PBT: a layout in which a
    sub-population could never evolve is refused (11 workers used to be the default)."""
    from firepbt.config import ExperimentConfig
    from firepbt.controllers.fire_layout import fire_split

    task = get_task(name)
    for preset in task.presets or (None,):
        for comparison in (False, True):
            d = task.settings(preset, comparison=comparison)
            cfg = ExperimentConfig(task=name, method="fire", **d)
            n_sub, size, n_eval = fire_split(cfg.workers, cfg.n_subpopulations, cfg.quantile)
            assert size >= 2 and n_eval >= 2 * (n_sub - 1)
