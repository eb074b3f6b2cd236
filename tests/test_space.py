"""Hyperparameter spaces: sampling, clipped perturbation, validation messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firepbt.errors import ConfigError
from firepbt.space import Categorical, IntRange, LogUniform, Space, Uniform


def test_log_uniform_samples_in_range_and_perturb_clips_to_bounds():
    p = LogUniform(1e-2, 3e-1, bounds=(1e-3, 1.0))
    rng = np.random.default_rng(0)
    xs = [p.sample(rng) for _ in range(2000)]
    assert min(xs) >= 1e-2 and max(xs) <= 3e-1
    # log-uniform: the median is near the geometric mean (5.5e-2); 2000 draws put the sample
    # median within 10% of it with overwhelming probability (std of log-median ~ 0.03).
    assert np.median(xs) == pytest.approx(math.sqrt(1e-2 * 3e-1), rel=0.1)
    value = 0.9
    for _ in range(200):
        value = p.perturb(value, rng)
        assert 1e-3 <= value <= 1.0
    assert p.perturb(1.0, np.random.default_rng(1)) <= 1.0


def test_perturb_multiplies_by_one_of_the_factors():
    p = Uniform(0.0, 10.0, factors=(0.5, 2.0))
    rng = np.random.default_rng(0)
    seen = {p.perturb(2.0, rng) for _ in range(100)}
    assert seen == {1.0, 4.0}


def test_int_and_categorical_perturbation_stay_valid_and_move():
    rng = np.random.default_rng(0)
    ip = IntRange(1, 8, bounds=(1, 16))
    for v in range(1, 17):
        w = ip.perturb(v, rng)
        assert 1 <= w <= 16
        if 1 < v < 16:
            assert w != v
    cp = Categorical(("sgd", "adam", "rmsprop"))
    for v in cp.choices:
        for _ in range(20):
            w = cp.perturb(v, rng)
            assert w in cp.choices and w != v


@pytest.mark.parametrize("make, field", [
    (lambda: LogUniform(0.0, 1.0), "LogUniform.low"),
    (lambda: LogUniform(1.0, 0.5), "LogUniform.high"),
    (lambda: LogUniform(0.1, 1.0, bounds=(0.2, 1.0)), "LogUniform.bounds"),
    (lambda: LogUniform(0.1, 1.0, factors=()), "factors"),
    (lambda: LogUniform(0.1, 1.0, factors=(0.5, -1.0)), "factors"),
    (lambda: Uniform(math.nan, 1.0), "Uniform.low"),
    (lambda: Uniform(0.0, -1.0), "Uniform.high"),
    (lambda: Uniform(0.0, 1.0, bounds=(0.5, 2.0)), "Uniform.bounds"),
    (lambda: IntRange(1.5, 3), "IntRange.low"),  # type: ignore[arg-type]
    (lambda: IntRange(3, 1), "IntRange.high"),
    (lambda: IntRange(1, 3, bounds=(2, 3)), "IntRange.bounds"),
    (lambda: Categorical(()), "Categorical.choices"),
    (lambda: Space({}), "space"),
    (lambda: Space({"x": 3}), "space['x']"),
])
def test_every_field_is_validated_with_one_message_format(make, field):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(f"{field} must be ")
    assert ", got " in str(info.value)


def test_space_sample_perturb_validate():
    space = Space({"lr": LogUniform(1e-3, 1e-1), "layers": IntRange(1, 4),
                   "opt": Categorical(("sgd", "adam"))})
    rng = np.random.default_rng(0)
    hp = space.sample(rng)
    space.validate(hp)
    for _ in range(50):
        hp = space.perturb(hp, rng)
        space.validate(hp)
    with pytest.raises(ConfigError, match=r"hparams\['lr'\] must be a float in"):
        space.validate({"lr": 5.0, "layers": 1, "opt": "sgd"})
    with pytest.raises(ConfigError, match="hparams must be a mapping with keys"):
        space.validate({"lr": 0.01})


def test_with_factors_per_name():
    space = Space({"a": LogUniform(0.1, 1.0), "b": LogUniform(0.1, 1.0)})
    s2 = space.with_factors({"b": (0.8, 1.2)})
    assert s2.params["a"].factors == (0.5, 0.8, 1.25, 2.0)
    assert s2.params["b"].factors == (0.8, 1.2)
