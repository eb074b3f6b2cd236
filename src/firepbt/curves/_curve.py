"""The training-curve record and the non-finite policy (see :mod:`firepbt.curves`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True, slots=True, eq=False)
class Curve:
    """One training curve: evaluations ``values`` of the objective at training ``steps``.

    ``steps`` are integers, strictly increasing; ``values`` are floats (non-finite allowed).
    Both are 1-D and of equal length (possibly zero). The arrays are stored read-only.
    Higher values are better (firepbt maximises internally everywhere).
    """

    steps: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        steps = np.asarray(self.steps)
        values = np.asarray(self.values, dtype=np.float64)
        if steps.ndim != 1:
            raise ConfigError("Curve.steps", "a 1-D sequence", f"array of shape {steps.shape}")
        if values.ndim != 1:
            raise ConfigError("Curve.values", "a 1-D sequence", f"array of shape {values.shape}")
        if len(steps) != len(values):
            raise ConfigError("Curve.values", f"of the same length as steps ({len(steps)})",
                              f"length {len(values)}")
        if len(steps) and not np.issubdtype(steps.dtype, np.integer):
            as_int = steps.astype(np.int64)
            if not np.all(as_int == steps):
                raise ConfigError("Curve.steps", "integers", steps.tolist())
            steps = as_int
        steps = steps.astype(np.int64)
        if len(steps) > 1 and not np.all(np.diff(steps) > 0):
            raise ConfigError("Curve.steps", "strictly increasing", steps.tolist())
        steps.flags.writeable = False
        values.flags.writeable = False
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Curve):
            return NotImplemented
        return bool(np.array_equal(self.steps, other.steps)
                    and np.array_equal(self.values, other.values, equal_nan=True))

    def __hash__(self) -> int:
        return hash((self.steps.tobytes(), self.values.tobytes()))

    def __repr__(self) -> str:
        return f"Curve(steps={self.steps.tolist()}, values={self.values.tolist()})"

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, float]]) -> Curve:
        """Build a curve from ``(step, value)`` pairs."""
        return cls(np.array([p[0] for p in pairs], dtype=np.int64),
                   np.array([p[1] for p in pairs], dtype=np.float64))

def floor_non_finite(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    fa, fb = np.isfinite(a), np.isfinite(b)
    if fa.all() and fb.all():
        return a, b
    finite = np.concatenate([a[fa], b[fb]])
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    floor = lo - max(hi - lo, 1.0)
    return np.where(fa, a, floor), np.where(fb, b, floor)
