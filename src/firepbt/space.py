"""Hyperparameter spaces: initial sampling, bounds and perturbation (paper section 2, explore).

A space is a mapping of names to parameters. Each parameter has an *initial range* from which
members sample their first value and *bounds* that every later value respects. Bounds default
to the initial range; widen them when a schedule must be able to leave it (a learning rate
decayed ten times by PBT, for instance).

Out-of-bounds perturbations are **clipped** to the bounds (never reflected, never resampled):
``2.0 * x`` past the upper bound becomes the upper bound. Clipping keeps a value that PBT has
pushed to an edge at that edge, which is what a user reading a schedule expects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, check

DEFAULT_FACTORS: tuple[float, ...] = (0.5, 0.8, 1.25, 2.0)

HParams = Mapping[str, Any]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class LogUniform:
    """A positive float sampled log-uniformly in ``[low, high]`` and kept within ``bounds``.

    Args:
        low, high: the initial sampling range, ``0 < low <= high``.
        bounds: (min, max) for every later value; defaults to ``(low, high)``.
        factors: explore multiplies the value by one of these, chosen uniformly.
    """

    low: float
    high: float
    bounds: tuple[float, float] | None = None
    factors: tuple[float, ...] = DEFAULT_FACTORS

    def __post_init__(self) -> None:
        check(_finite(self.low) and self.low > 0, "LogUniform.low", "a finite float > 0", self.low)
        check(_finite(self.high) and self.high >= self.low, "LogUniform.high",
              f"a finite float >= low ({self.low})", self.high)
        lo, hi = self.limits
        check(_finite(lo) and _finite(hi) and 0 < lo <= self.low and self.high <= hi,
              "LogUniform.bounds", f"(min, max) with 0 < min <= {self.low} and max >= {self.high}",
              self.bounds)
        _check_factors(self.factors)

    @property
    def limits(self) -> tuple[float, float]:
        return self.bounds if self.bounds is not None else (self.low, self.high)

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def perturb(self, value: float, rng: np.random.Generator) -> float:
        return _scaled(value, self.factors, self.limits, rng)

    def validate(self, name: str, value: Any) -> None:
        _check_float(name, value, self.limits)


@dataclass(frozen=True, slots=True)
class Uniform:
    """A float sampled uniformly in ``[low, high]``; explore multiplies it like ``LogUniform``."""

    low: float
    high: float
    bounds: tuple[float, float] | None = None
    factors: tuple[float, ...] = DEFAULT_FACTORS

    def __post_init__(self) -> None:
        check(_finite(self.low), "Uniform.low", "a finite float", self.low)
        check(_finite(self.high) and self.high >= self.low, "Uniform.high",
              f"a finite float >= low ({self.low})", self.high)
        lo, hi = self.limits
        check(_finite(lo) and _finite(hi) and lo <= self.low and self.high <= hi,
              "Uniform.bounds", f"(min, max) with min <= {self.low} and max >= {self.high}",
              self.bounds)
        _check_factors(self.factors)

    @property
    def limits(self) -> tuple[float, float]:
        return self.bounds if self.bounds is not None else (self.low, self.high)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def perturb(self, value: float, rng: np.random.Generator) -> float:
        return _scaled(value, self.factors, self.limits, rng)

    def validate(self, name: str, value: Any) -> None:
        _check_float(name, value, self.limits)


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer sampled uniformly in ``[low, high]``; explore multiplies, rounds and clips.

    A multiplied value that rounds back to itself moves by one step in the factor's direction,
    so explore always changes an integer that is not pinned at a bound.
    """

    low: int
    high: int
    bounds: tuple[int, int] | None = None
    factors: tuple[float, ...] = DEFAULT_FACTORS

    def __post_init__(self) -> None:
        check(isinstance(self.low, int) and not isinstance(self.low, bool), "IntRange.low",
              "an int", self.low)
        check(isinstance(self.high, int) and self.high >= self.low, "IntRange.high",
              f"an int >= low ({self.low})", self.high)
        lo, hi = self.limits
        check(lo <= self.low and self.high <= hi, "IntRange.bounds",
              f"(min, max) with min <= {self.low} and max >= {self.high}", self.bounds)
        _check_factors(self.factors)

    @property
    def limits(self) -> tuple[int, int]:
        return self.bounds if self.bounds is not None else (self.low, self.high)

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def perturb(self, value: int, rng: np.random.Generator) -> int:
        lo, hi = self.limits
        factor = self.factors[rng.integers(len(self.factors))]
        new = int(round(value * factor))
        if new == value:
            new = value + (1 if factor > 1 else -1)
        return int(min(hi, max(lo, new)))

    def validate(self, name: str, value: Any) -> None:
        lo, hi = self.limits
        check(isinstance(value, int) and lo <= value <= hi, name, f"an int in [{lo}, {hi}]", value)


@dataclass(frozen=True, slots=True)
class Categorical:
    """One of ``choices``; explore moves to a neighbouring choice (in the given order)."""

    choices: tuple[Any, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check(len(self.choices) >= 1, "Categorical.choices", "a non-empty sequence", self.choices)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def perturb(self, value: Any, rng: np.random.Generator) -> Any:
        if len(self.choices) == 1:
            return value
        i = self.choices.index(value)
        j = i + (1 if rng.random() < 0.5 else -1)
        if j < 0 or j >= len(self.choices):
            j = i - (j - i)
        return self.choices[j]

    def validate(self, name: str, value: Any) -> None:
        check(value in self.choices, name, f"one of {list(self.choices)}", value)


Param = LogUniform | Uniform | IntRange | Categorical


def _scaled(value: float, factors: Sequence[float], limits: tuple[float, float],
            rng: np.random.Generator) -> float:
    """Multiply by a factor chosen uniformly, then clip to the limits."""
    lo, hi = limits
    return float(min(hi, max(lo, value * factors[int(rng.integers(len(factors)))])))


def _check_float(name: str, value: Any, limits: tuple[float, float]) -> None:
    lo, hi = limits
    check(_finite(value) and lo <= value <= hi, name, f"a float in [{lo}, {hi}]", value)


def _check_factors(factors: Sequence[float]) -> None:
    check(len(factors) >= 1 and all(_finite(f) and f > 0 for f in factors), "factors",
          "a non-empty sequence of finite floats > 0", tuple(factors))


@dataclass(frozen=True, slots=True)
class Space:
    """A named set of hyperparameters."""

    params: Mapping[str, Param]

    def __post_init__(self) -> None:
        check(len(self.params) >= 1, "space", "at least one hyperparameter", dict(self.params))
        for name, p in self.params.items():
            if not isinstance(p, (LogUniform, Uniform, IntRange, Categorical)):
                raise ConfigError(f"space[{name!r}]", "LogUniform, Uniform, IntRange or Categorical", p)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw every hyperparameter from its initial range, in name order."""
        return {name: self.params[name].sample(rng) for name in sorted(self.params)}

    def perturb(self, hparams: HParams, rng: np.random.Generator) -> dict[str, Any]:
        """PBT's explore: perturb every hyperparameter independently, within bounds."""
        return {name: self.params[name].perturb(hparams[name], rng) for name in sorted(self.params)}

    def validate(self, hparams: HParams) -> None:
        missing = set(self.params) - set(hparams)
        check(not missing, "hparams", f"a mapping with keys {sorted(self.params)}", dict(hparams))
        for name, p in self.params.items():
            p.validate(f"hparams[{name!r}]", hparams[name])

    def describe(self) -> list[dict[str, Any]]:
        """One row per hyperparameter, in name order, as plain JSON values (what the store
        keeps and the report shows): its kind, initial range, bounds and explore factors, or
        its choices."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.params):
            p = self.params[name]
            if isinstance(p, Categorical):
                rows.append({"name": name, "kind": "Categorical",
                             "choices": [c if isinstance(c, (int, float, str, bool)) or c is None
                                         else repr(c) for c in p.choices]})
            else:
                rows.append({"name": name, "kind": type(p).__name__, "initial": [p.low, p.high],
                             "bounds": list(p.limits), "factors": list(p.factors)})
        return rows

    def with_factors(self, factors: Mapping[str, Sequence[float]] | Sequence[float]) -> Space:
        """A copy whose float/int parameters use other explore factors (one list, or per name;
        names not given keep their own)."""
        if isinstance(factors, Mapping):
            unknown = sorted(set(factors) - set(self.params))
            check(not unknown, "factors", f"names among {sorted(self.params)}", unknown)
        out: dict[str, Param] = {}
        for name, p in self.params.items():
            f = factors.get(name) if isinstance(factors, Mapping) else factors
            if f is None or isinstance(p, Categorical):
                out[name] = p
            else:
                out[name] = type(p)(p.low, p.high, p.bounds, tuple(float(x) for x in f))  # type: ignore[arg-type]
        return Space(out)
