"""Comparing two curves (paper 3.1.1 steps 2-4, Assumption 2) and the binomial test (3.2);
see :mod:`firepbt.curves`."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._curve import Curve, floor_non_finite
from ._gp import smoothed

# --------------------------------------------------------------------------------------------
# Comparing two curves (3.1.1 steps 2-4, Assumption 2) and the binomial test (3.2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Where two curves overlap: ``a[r:r+n]`` is compared with ``b[s:s+n]``."""

    r: int
    s: int
    n: int



def overlap_of_smoothed(sa: np.ndarray, sb: np.ndarray) -> Overlap | None:
    """Steps 2 and 3 of 3.1.1 on smoothed values.

    The curve with the higher smoothed start sets the level (equal starts, within rounding,
    overlap from both beginnings, which keeps the result antisymmetric); the other curve's section starts at its first smoothed point that
    reaches the level. The length is the *smaller* number of points either curve has from its
    start (the paper prints ``max``, but its Figure 3 explanation - the curve with fewer steps
    past its start constrains the length - and the need for both sections to exist mean min).
    """
    if len(sa) == 0 or len(sb) == 0:
        return None
    # Rounding tolerance: values within tol count as level, so adding a constant to both
    # curves (which moves every value by a rounding error) cannot flip a decision.
    tol = 1e-9 * max(1.0, float(np.abs(sa).max()), float(np.abs(sb).max()))
    if abs(sa[0] - sb[0]) <= tol:
        r, s = 0, 0
    elif sa[0] > sb[0]:
        hits = np.nonzero(sb >= sa[0] - tol)[0]
        if hits.size == 0:
            return None
        r, s = 0, int(hits[0])
    else:
        hits = np.nonzero(sa >= sb[0] - tol)[0]
        if hits.size == 0:
            return None
        r, s = int(hits[0]), 0
    n = min(len(sa) - r, len(sb) - s)
    return Overlap(r, s, n)


def prepare_pair(a: Curve, b: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    floored = floor_non_finite(a.values, b.values)
    if floored is None:
        return None
    ya, yb = floored
    sa = smoothed(a.steps, ya) if len(ya) else ya
    sb = smoothed(b.steps, yb) if len(yb) else yb
    return ya, sa, yb, sb


def overlap(eta: Curve, kappa: Curve) -> Overlap | None:
    """The overlapping sections of two curves (3.1.1 steps 1-3), or None when there are none."""
    prepared = prepare_pair(eta, kappa)
    if prepared is None:
        return None
    _, sa, _, sb = prepared
    return overlap_of_smoothed(sa, sb)


# Number of penalties delta tried across [min(y_h) - max(y_l), min(y_h) - min(y_l)].
N_DELTAS = 33


def best_score_diff_arrays(ya: np.ndarray, sa: np.ndarray, yb: np.ndarray,
                            sb: np.ndarray, separated_only: bool = False,
                            widened_range: bool = True) -> float:
    ov = overlap_of_smoothed(sa, sb)
    if ov is not None:
        return float(ya[ov.r:ov.r + ov.n].max() - yb[ov.s:ov.s + ov.n].max())
    # No overlapping section (Assumption 2): the paper's special case is a curve strictly
    # higher than the other, min(y_high) > max(y_low); the higher curve is penalised by each
    # delta of [min(y_high) - max(y_low), min(y_high) - min(y_low)] and the best positive
    # score it then shows is kept. Curves whose smoothed versions never overlap although the
    # raw values are not so separated (a curve dipping to the other's best and back) are a
    # case the paper does not define: the same search over the same formula's range, or 0
    # (no evidence) with separated_only.
    a_higher = bool(sa[0] > sb[0])
    yh, sh, yl, sl = (ya, sa, yb, sb) if a_higher else (yb, sb, ya, sa)
    if separated_only and not float(yh.min()) > float(yl.max()):
        return 0.0
    lo = float(yh.min() - yl.max())
    hi = float(yh.min() - yl.min())
    if widened_range:
        # the paper's range is on raw values, the overlap is found on smoothed ones: a smoothed
        # start a noise amplitude above the raw minimum leaves every paper delta without an
        # overlap (a rising curve above a flat one scores 0); widened, the range also holds
        # the penalties that align the smoothed curves (the high start down to the low
        # curve's maximum, and the two starts level)
        lo = min(lo, float(sh[0] - sl.max()))
        hi = max(hi, float(sh[0] - sl[0]))
    # maxima of the sections from running maxima: max(x - delta) == max(x) - delta exactly
    # (rounding is monotone), and a section starts at 0 or runs to the end but for one case
    pre_h, suf_h = np.maximum.accumulate(yh), np.maximum.accumulate(yh[::-1])[::-1]
    pre_l, suf_l = np.maximum.accumulate(yl), np.maximum.accumulate(yl[::-1])[::-1]

    def section_max(y: np.ndarray, pre: np.ndarray, suf: np.ndarray, start: int, n: int) -> float:
        if start == 0:
            return float(pre[n - 1])
        if start + n == len(y):
            return float(suf[start])
        return float(y[start:start + n].max())

    best = 0.0
    for delta, ov in zip(*overlaps_penalised(sh, sl, np.linspace(lo, hi, N_DELTAS)),
                         strict=True):
        if ov is None:
            continue
        high = np.float64(section_max(yh, pre_h, suf_h, ov.r, ov.n)) - delta
        score = float(high - section_max(yl, pre_l, suf_l, ov.s, ov.n))
        best = max(best, score)
    if best == 0.0:
        return 0.0
    return best if a_higher else -best


def overlaps_penalised(sh: np.ndarray, sl: np.ndarray, deltas: np.ndarray
                        ) -> tuple[np.ndarray, list[Overlap | None]]:
    """``overlap_of_smoothed(sh - delta, sl)`` for every delta at once: the same operations on
    the same values, row by row (so the same overlaps, exactly; tested), without a Python
    call per delta."""
    if len(sh) == 0 or len(sl) == 0:
        return deltas, [None] * len(deltas)
    shd = sh[None, :] - deltas[:, None]  # (deltas, points): sh - delta, elementwise
    sl_abs = float(np.abs(sl).max())
    tol = 1e-9 * np.maximum(np.maximum(1.0, np.abs(shd).max(axis=1)), sl_abs)
    start = shd[:, 0]
    level = np.abs(start - sl[0]) <= tol
    higher = start > sl[0]
    # first index where the lower curve reaches the higher start (or the other way round)
    reach_l = sl[None, :] >= (start - tol)[:, None]
    reach_h = shd >= (sl[0] - tol)[:, None]
    out: list[Overlap | None] = []
    for i in range(len(deltas)):
        if level[i]:
            r, s = 0, 0
        elif higher[i]:
            hits = np.nonzero(reach_l[i])[0]
            if hits.size == 0:
                out.append(None)
                continue
            r, s = 0, int(hits[0])
        else:
            hits = np.nonzero(reach_h[i])[0]
            if hits.size == 0:
                out.append(None)
                continue
            r, s = int(hits[0]), 0
        out.append(Overlap(r, s, min(len(sh) - r, len(sl) - s)))
    return deltas, out


def best_score_diff(eta: Curve, kappa: Curve, *, separated_only: bool = False,
                    widened_range: bool = True) -> float:
    """How much faster ``eta`` improves than ``kappa`` (paper 3.1.1); positive when eta is faster.

    1. smooth both curves (:func:`smooth`); 2. the curve with the higher smoothed start sets
    the level and the other's section starts at its first smoothed point reaching it; 3. the
    sections are as long as the shorter remainder; 4. return the difference of the *raw* maxima
    within the two sections. When the smoothed curves never overlap and one curve is strictly
    higher than the other, ``min(y_high) > max(y_low)`` (the paper's special case, Assumption
    2), the higher curve is penalised by each of ``N_DELTAS`` deltas spread over the paper's
    ``[min(y_high) - max(y_low), min(y_high) - min(y_low)]`` and the highest positive score
    found is returned (0.0 if none): a higher curve wins only when it is improving faster too,
    and the lower curve is never judged faster. Smoothed curves that never overlap although
    their values are not strictly separated (the paper does not define this case; it arises
    when a curve dips below the other's best and back, or when two curves start from the
    same value and part) go through the same penalty search over the same formula's range -
    or give 0.0, no evidence, with ``separated_only=True``.
    ``widened_range`` (the default) adds to the range the penalties that align the *smoothed*
    curves, the smoothed counterparts of the paper's two ends: the overlap is found on
    smoothed values, and a smoothed start a little above the raw minimum leaves every delta
    of the paper's range without an overlap - a rising curve above a *flat* one, the case the
    paper gives for this search ("degenerate neural network weights and flat training curves
    with a minimal score"), whose range is the single delta min(y_high) - level, then scores
    0. ``widened_range=False`` is the paper's range alone. The variants are measured against
    each other by ``benchmarks/fire_rules.py``. Antisymmetric:
    ``best_score_diff(a, b) == -best_score_diff(b, a)``. Empty curves or curves without a
    finite value give 0.0.
    """
    prepared = prepare_pair(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return 0.0
    return best_score_diff_arrays(*prepared, separated_only, widened_range)


def binom_test(eta: Curve, rho: Curve) -> float:
    """One-sided binomial-test p-value that ``eta`` lies above ``rho`` (paper 3.2).

    The trials are the points *past* the start pair of the overlapping sections of 3.1.1
    (3.2: "y^eta_{r+1} > y^rho_{s+1}, ..., y^eta_{r+n} > y^rho_{s+n} ... a binomial test with
    k successes and n trials"; the start pair is level by construction, step 2 aligns the
    curves there): k counts the ``i = 1 .. n`` with ``eta[r+i] > rho[s+i]`` (ties count
    against eta) and the result is ``scipy.stats.binomtest(k, n, 0.5,
    alternative="greater").pvalue``. With no trial - no overlapping section, or one that holds
    only its start pair - there is no evidence and the result is 1.0 (the paper defines the
    test over the overlap only), as for curves without a finite value or empty ones.
    """
    return compare(eta, rho).p


def trials(ya: np.ndarray, yb: np.ndarray, ov: Overlap) -> tuple[int, int]:
    """``(k, n)`` of the binomial test (:func:`binom_test`): the overlap's pairs past its
    start pair, and how many of them eta wins."""
    n = ov.n - 1
    k = int(np.sum(ya[ov.r + 1:ov.r + ov.n] > yb[ov.s + 1:ov.s + ov.n]))
    return k, n


@functools.lru_cache(maxsize=4096)
def binom_pvalue(k: int, n: int) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, 1/2)``: ``scipy.stats.binomtest``, one-sided
    (alternative "greater"); a function of ``(k, n)`` alone, so cached. (scipy.stats is
    imported here, when first needed: it takes ~0.6 s, paid by every process that imports
    firepbt otherwise - the Ray actors, ``firepbt --help``.)"""
    if n == 0:  # no trial: no evidence
        return 1.0
    from scipy import stats

    return float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One curve against another, computed once (paper 3.1.1-3.2), as an evaluator's decision
    carries it: ``overlap`` - whether the smoothed curves have overlapping sections; ``k`` of
    the ``n`` binomial trials (the overlap's points past its start pair, 3.2) where the first
    curve lies above (0 of 0 without overlap); ``p`` - :func:`binom_test` (1.0 without a
    trial); ``diff`` - :func:`best_score_diff`."""

    overlap: bool
    k: int
    n: int
    p: float
    diff: float


def compare(eta: Curve, kappa: Curve, *, separated_only: bool = False,
            widened_range: bool = True) -> Comparison:
    """``eta`` against ``kappa``: the same numbers as :func:`overlap`, :func:`binom_test` and
    :func:`best_score_diff`, from one preparation of the two curves."""
    prepared = prepare_pair(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return Comparison(False, 0, 0, 1.0, 0.0)
    ya, sa, yb, sb = prepared
    diff = best_score_diff_arrays(ya, sa, yb, sb, separated_only, widened_range)
    ov = overlap_of_smoothed(sa, sb)
    if ov is None:
        return Comparison(False, 0, 0, 1.0, diff)
    k, n = trials(ya, yb, ov)
    return Comparison(True, k, n, binom_pvalue(k, n), diff)
