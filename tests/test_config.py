"""ExperimentConfig refuses a bad value for every field, naming it."""

from __future__ import annotations

import pytest

from firepbt.config import ExperimentConfig
from firepbt.errors import ConfigError

GOOD = dict(task="nqm", method="pbt", workers=8, steps=200, ready_interval=50, eval_interval=10)


@pytest.mark.parametrize("field, value", [
    ("task", ""),
    ("method", "bayes"),
    ("workers", 0),
    ("workers", 1),  # too small for truncation to select anyone
    ("workers", 2.5),
    ("steps", -10),
    ("steps", 230),  # not a multiple of ready_interval
    ("ready_interval", 0),
    ("ready_interval", 55),  # not a multiple of eval_interval
    ("eval_interval", -1),
    ("seed", -1),
    ("quantile", 0.7),
    ("factors", (0.5, -2.0)),
    ("p_stat", 1.5),
    ("max_eval_steps", 0),
    ("min_steps_before_eval", -5),
    ("n_subpopulations", 1),
    ("threads", -1),
    ("threads", 1.5),
])
def test_bad_field_is_refused_with_its_name(field, value):
    kwargs = dict(GOOD, **{field: value})
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} must be ")
    assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize(("workers", "n_sub", "smallest"), [(5, None, 6), (9, 3, 10),
                                                         (13, 4, 14)])
def test_fire_refuses_a_layout_in_which_a_subpopulation_cannot_evolve(workers, n_sub, smallest):
    # truncation selects one of two ranked members: every sub-population needs 2 members and
    # the parent sub-populations 2 evaluators each (5 workers = 2 + 2 + 1: P2 ranks one)
    with pytest.raises(ConfigError, match=f"workers must be an int >= {smallest} for FIRE PBT "
                       f"with {n_sub or 2} sub-populations"):
        ExperimentConfig(**dict(GOOD, method="fire", workers=workers, n_subpopulations=n_sub))
    ExperimentConfig(**dict(GOOD, method="fire", workers=smallest, n_subpopulations=n_sub))
    # the PBT-Zoo benchmark's 8 workers (3 + 3 + 2), at any truncation fraction
    for quantile in (0.25, 0.5, 0.1):
        ExperimentConfig(**dict(GOOD, method="fire", workers=8, quantile=quantile))


def test_min_steps_before_eval_is_per_subpopulation():
    fire = dict(GOOD, method="fire", workers=36)
    cfg = ExperimentConfig(**fire, min_steps_before_eval=[0, 100, 150])
    assert cfg.min_steps_before_eval == (0, 100, 150)
    assert cfg.to_dict()["min_steps_before_eval"] == [0, 100, 150]
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"min_steps_before_eval must be an int >= 0, or one "
                       r"per sub-population \(3 ints"):
        ExperimentConfig(**fire, min_steps_before_eval=[0, 100])


def test_round_trip_through_dict():
    cfg = ExperimentConfig(**GOOD, factors=(0.8, 1.25))
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="config must be keys among"):
        ExperimentConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def _rule_cases():
    from firepbt.config import FIELD_RULES

    return [(r.field, v) for r in FIELD_RULES for v in r.bad_values()]


@pytest.mark.parametrize("field, value", _rule_cases())
def test_every_declared_rule_refuses_its_bad_values_naming_the_field(field, value):
    """Generated from FIELD_RULES: each field's declared constraint refuses the wrong type and
    the values just outside its bounds or choices, with the declared text."""
    from firepbt.config import FIELD_RULES

    rule = next(r for r in FIELD_RULES if r.field == field)
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**dict(GOOD, **{field: value}))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} must be {rule.allowed}")


def test_every_field_has_a_rule_or_a_relational_check():
    from dataclasses import fields

    from firepbt.config import FIELD_RULES

    relational = {"factors", "min_steps_before_eval", "task_options", "schedule", "hand_tuned"}
    declared = {r.field for r in FIELD_RULES}
    assert declared | relational == {f.name for f in fields(ExperimentConfig)}
    assert all(r.ok(GOOD.get(r.field, getattr(ExperimentConfig(**GOOD), r.field)))
               for r in FIELD_RULES)
