"""Truncation selection and explore (paper section 2; 4.1.1 "Exploit" and "Explore").

Pure functions over plain mappings and an explicit random generator.

Non-finite policy: a member whose fitness is NaN or +-inf is ranked below every finite one
(it diverged) and is never a source, whatever its sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .errors import check


def rank_key(value: float) -> float:
    """The value used to rank a fitness: non-finite values rank lowest."""
    return value if math.isfinite(value) else -math.inf


def members_needed(quantile: float) -> int:
    """The fewest ranked members truncation selection at ``quantile`` selects in:
    ``ceil(1 / quantile)`` (4 at 25%), so that the bottom and top sets hold one member each.
    The single source of this bound for PBT, FIRE PBT's layouts and the configuration."""
    check(isinstance(quantile, (int, float)) and not isinstance(quantile, bool)
          and 0 < quantile <= 0.5, "quantile", "in (0, 0.5]", quantile)
    return math.ceil(1 / quantile - 1e-9)


def truncation(fitness: Mapping[int, float], rng: np.random.Generator,
               quantile: float = 0.25) -> list[tuple[int, int]]:
    """Truncation selection: each member of the bottom ``quantile`` picks a random member of
    the top ``quantile`` to copy. Returns ``(loser, source)`` pairs in loser order.

    ``floor(quantile * n)`` members form each of the bottom and top sets (so fewer than
    ``1 / quantile`` ranked members means no selection). Ties are broken at random with
    ``rng``. Sources are chosen only among members with a finite fitness.
    """
    check(0 < quantile <= 0.5, "quantile", "in (0, 0.5]", quantile)
    ids = sorted(fitness)
    k = int(math.floor(quantile * len(ids) + 1e-9))
    if k == 0:
        return []
    tiebreak = rng.permutation(len(ids))
    order = sorted(range(len(ids)), key=lambda i: (rank_key(fitness[ids[i]]), tiebreak[i]))
    ranked = [ids[i] for i in order]  # ascending fitness
    bottom = ranked[:k]
    top = [w for w in ranked[-k:] if math.isfinite(fitness[w])]
    if not top:
        return []
    pairs = []
    for loser in sorted(bottom):
        pairs.append((loser, top[int(rng.integers(len(top)))]))
    return pairs
