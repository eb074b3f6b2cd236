"""Training-curve mathematics of FIRE PBT (paper sections 3.1.1 and 3.2).

Pure functions over a small frozen record, :class:`Curve`. Nothing here trains, stores or
decides; the FIRE PBT controller arranges these calls.

Non-finite policy (tested): a NaN or +-inf evaluation means the network diverged. Before two
curves are compared, each non-finite value is replaced by a *floor* strictly below every finite
value of both curves (``min - max(range, 1)`` of their finite values), so a diverged section
can never look better than a finite one, and the replacement shifts with the curves (adding a
constant to both leaves every result unchanged). When neither curve has a finite value there is
no evidence: ``best_score_diff`` returns 0.0 and ``binom_test`` returns 1.0.

Many comparisons at once (all pairs of a sub-population's evaluators, every evaluator against
its target): :func:`pairwise_best_score_diff` and :func:`compare_many` give the numbers of
:func:`best_score_diff` and :func:`compare` bit for bit, from array operations over the pairs.

The package: :mod:`._curve` (the record and the non-finite floor), :mod:`._gp` (smoothing),
:mod:`._compare` (one pair), :mod:`._batched` (many pairs, the same numbers).
"""

from __future__ import annotations

from ._batched import compare_many, pairwise_best_score_diff
from ._compare import Comparison, Overlap, best_score_diff, binom_test, compare, overlap
from ._curve import Curve
from ._gp import smooth

__all__ = ["Curve", "smooth", "best_score_diff", "binom_test", "overlap", "compare",
           "compare_many", "pairwise_best_score_diff", "Comparison", "Overlap"]
