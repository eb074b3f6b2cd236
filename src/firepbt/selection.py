"""Truncation selection and explore (paper section 2; 4.1.1 "Exploit" and "Explore").

Pure functions over plain mappings and an explicit random generator.

How many members truncation selects (:func:`n_selected`): the paper's "bottom 25%" of ``n``
ranked members is ``floor(0.25 * n)`` - 2 of 8, 5 of 22, 12 of 50, as in every layout of its
experiments -, but at least one as soon as two members are ranked, so that a small group still
evolves (a FIRE PBT parent sub-population ranks only the members whose evaluator trained this
round: 2 or 3 of them at 8 workers, where ``floor`` selects nobody). It never exceeds
``floor(n / 2)``, so the bottom and top sets never share a member. Ray Tune's PBT takes
``ceil(n * quantile)`` capped at ``floor(n / 2)`` instead; that rule moves the paper's own
layouts (6 of 22 instead of 5; 2 of a parent sub-population's 5 or 6 ranked members instead of
1), this one changes only the groups ``floor`` would leave without selection.

Non-finite policy: a member whose fitness is NaN or +-inf is ranked below every finite one
(it diverged) and is never a source, whatever its sign.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import check


def score_of(value: float, mode: str) -> float:
    """The maximised score of a raw objective value (firepbt maximises internally everywhere:
    a ``"min"`` objective, such as a loss, is negated once, here)."""
    return value if mode == "max" else -value


def observed_score(value: float, mode: str) -> float:
    """The score a controller observes for a raw objective value: :func:`score_of` with a
    zero unsigned (the store keeps no sign of zero, and a resumed controller must observe
    exactly what it observed the first time)."""
    return score_of(value, mode) + 0.0


def rank_key(value: float) -> float:
    """The value used to rank a fitness: non-finite values rank lowest."""
    return value if math.isfinite(value) else -math.inf


def _check_quantile(quantile: float) -> None:
    check(isinstance(quantile, (int, float)) and not isinstance(quantile, bool)
          and 0 < quantile <= 0.5, "quantile", "in (0, 0.5]", quantile)


def n_selected(n: int, quantile: float = 0.25) -> int:
    """Members in each of the bottom and top sets of ``n`` ranked members (see the module
    doc): ``floor(quantile * n)``, at least 1 once ``n >= 2``, at most ``floor(n / 2)``."""
    _check_quantile(quantile)
    if n < 2:
        return 0
    return min(max(1, int(math.floor(quantile * n + 1e-9))), n // 2)


def members_needed(quantile: float) -> int:
    """The fewest ranked members truncation selection at ``quantile`` selects in (2, whatever
    the quantile: :func:`n_selected`). The single source of this bound for PBT, FIRE PBT's
    layouts and the configuration."""
    _check_quantile(quantile)
    return 2  # n_selected(1, q) == 0 and n_selected(2, q) == 1 for every q in (0, 0.5]


def truncation(fitness: Mapping[int, float], rng: np.random.Generator,
               quantile: float = 0.25) -> list[tuple[int, int]]:
    """Truncation selection: each member of the bottom ``quantile`` picks a random member of
    the top ``quantile`` to copy. Returns ``(loser, source)`` pairs in loser order.

    :func:`n_selected` members form each of the bottom and top sets (``floor(quantile * n)``,
    at least one from two ranked members on). Ties are broken at random with ``rng``. Sources
    are chosen only among members with a finite fitness.
    """
    ids = sorted(fitness)
    k = n_selected(len(ids), quantile)
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


def best_member(scores: Mapping[int, float]) -> int | None:
    """The worker with the highest score among ``scores`` (worker -> its latest score); a
    non-finite score ranks lowest (:func:`rank_key`) and ties go to the lowest worker. None
    when there is none. The one rule for "the best member now" (the run's final member, the
    summary's best member)."""
    if not scores:
        return None
    return max(sorted(scores), key=lambda k: (rank_key(scores[k]), -k))


def running_top(points: Iterable[tuple[int, int, float]], best: float
                ) -> tuple[float, list[tuple[int, int, float]]]:
    """The running top the driver keeps: over ``(step, worker, score)`` points taken in (step,
    worker) order, each finite point strictly above the top so far is a new top. Returns the
    top after the points and the new tops, in order (the runner tests them; the trackers report
    the last). The one rule for "the top point so far"."""
    tops = []
    for s, w, sc in sorted(points):
        if math.isfinite(sc) and sc > best:
            best = sc
            tops.append((s, w, sc))
    return best, tops
