"""Many comparisons at once, as array operations over the pairs: the numbers of
:mod:`~firepbt.curves._compare`, bit for bit (see :mod:`firepbt.curves`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._compare import (
    N_DELTAS,
    Comparison,
    best_score_diff,
    binom_pvalue,
    compare,
    prepare_pair,
)
from ._curve import Curve
from ._gp import fits

# --------------------------------------------------------------------------------------------
# Many comparisons at once: every pair of Φ (3.1.2) and every evaluator against its target (3.2)
# --------------------------------------------------------------------------------------------

# A curve with a value (raw or smoothed) beyond this magnitude is compared one pair at a time:
# below it no difference the comparison forms can overflow, so the array operations never meet
# an inf or a NaN (which numpy's max propagates and Python's max does not).
_ARRAY_BOUND = 1e300


def pairwise_best_score_diff(curves: Sequence[Curve], *, separated_only: bool = False,
                             widened_range: bool = True) -> np.ndarray:
    """:func:`best_score_diff` of every pair of ``curves`` (3.1.2's fitness sums them).

    Returns the antisymmetric matrix ``out`` with ``out[i, j] == best_score_diff(curves[i],
    curves[j])`` for ``i < j``, ``out[j, i] == -out[i, j]`` and a zero diagonal: the numbers of
    :func:`best_score_diff`, bit for bit (tested), computed as :func:`compare_many` does.
    """
    k = len(curves)
    a, b = np.triu_indices(k, 1)
    rows, ra, rb = _pair_rows(curves, a, b)
    by_rows = ra >= 0
    diff = np.zeros(a.size)
    diff[by_rows] = _compare_rows(rows, ra[by_rows], rb[by_rows], separated_only,
                                  widened_range)[3]
    for p in np.flatnonzero(~by_rows).tolist():
        diff[p] = best_score_diff(curves[a[p]], curves[b[p]], separated_only=separated_only,
                                  widened_range=widened_range)
    out = np.zeros((k, k))
    out[a, b] = diff
    out[b, a] = -diff
    return out


def compare_many(pairs: Sequence[tuple[Curve, Curve]], *, separated_only: bool = False,
                 widened_range: bool = True) -> list[Comparison]:
    """``[compare(eta, kappa) for eta, kappa in pairs]``, the same numbers bit for bit (tested).

    The pairs are prepared as :func:`compare` prepares them (a curve with a non-finite value is
    floored for each pair, see the module doc; one without is smoothed once for all its pairs),
    then go through :func:`compare`'s floating-point operations elementwise, over all pairs and
    all penalties of the no-overlap search at once (a section's maximum is taken over two
    overlapping spans, exact since a maximum depends on no order). A pair with an empty curve,
    no finite value or a value beyond ``_ARRAY_BOUND`` goes through :func:`compare` itself.
    """
    curves = [c for pair in pairs for c in pair]
    rows, ra, rb = _pair_rows(curves, np.arange(0, len(curves), 2),
                              np.arange(1, len(curves), 2))
    by_rows = ra >= 0
    overlapping, k, n, diff = _compare_rows(rows, ra[by_rows], rb[by_rows], separated_only,
                                            widened_range)
    out: list[Comparison] = []
    j = 0
    for (eta, kappa), fast in zip(pairs, by_rows.tolist(), strict=True):
        if not fast:
            out.append(compare(eta, kappa, separated_only=separated_only,
                               widened_range=widened_range))
            continue
        if overlapping[j]:
            kj, nj = int(k[j]), int(n[j])
            out.append(Comparison(True, kj, nj, binom_pvalue(kj, nj), float(diff[j])))
        else:
            out.append(Comparison(False, 0, 0, 1.0, float(diff[j])))
        j += 1
    return out


@dataclass(frozen=True, slots=True)
class _Rows:
    """Prepared curves (:func:`~firepbt.curves._compare.prepare_pair`: floored, smoothed) as padded rows for the array
    comparisons: raw values ``y`` and smoothed values ``s`` in each row's first ``n`` points
    (``inside``) - those of the rows a pair refers to all finite and within ``_ARRAY_BOUND``
    (the others are never read) -, their extremes, ``y_spans``:
    ``y_spans[k, i, j] = max(y[i, j:j + 2**k])`` (-inf past the row's end), and ``s_run``:
    the running maximum of ``s`` along each row (+inf past its end)."""

    y: np.ndarray
    s: np.ndarray
    n: np.ndarray
    inside: np.ndarray
    y_min: np.ndarray
    y_max: np.ndarray
    s_min: np.ndarray
    s_max: np.ndarray
    s_abs: np.ndarray
    y_spans: np.ndarray
    s_run: np.ndarray


def _pair_rows(curves: Sequence[Curve], a: np.ndarray, b: np.ndarray
               ) -> tuple[_Rows, np.ndarray, np.ndarray]:
    """The pairs ``curves[a[p]]``, ``curves[b[p]]`` prepared as rows: pair p compares row
    ``ra[p]`` with row ``rb[p]``, both -1 where the pair must be compared one at a time."""
    raw: list[np.ndarray] = []
    smoothed: list[np.ndarray] = []

    def row(y: np.ndarray, s: np.ndarray) -> int:  # (y, s: of one length, at least 1)
        raw.append(y)
        smoothed.append(s)
        return len(raw) - 1

    unfloored = np.array([len(c) > 0 and bool(np.isfinite(c.values).all()) for c in curves],
                         dtype=bool)
    fits.fill([c for c, u in zip(curves, unfloored.tolist(), strict=True) if u])
    # a curve that needs no floor has one row, shared by its pairs (its fit: smooth's, cached)
    own = np.full(len(curves), -1)
    for c in sorted(set(a.tolist()) | set(b.tolist())):
        if unfloored[c]:
            cv = curves[c]
            own[c] = row(cv.values, fits(cv.steps.tobytes(), cv.values.tobytes()))
    both = unfloored[a] & unfloored[b]
    ra, rb = np.where(both, own[a], -1), np.where(both, own[b], -1)
    for p in np.flatnonzero(~both).tolist():
        i, j = int(a[p]), int(b[p])
        prepared = prepare_pair(curves[i], curves[j])
        if prepared is None or len(curves[i]) == 0 or len(curves[j]) == 0:
            continue
        ya, sa, yb, sb = prepared
        ra[p], rb[p] = row(ya, sa), row(yb, sb)
    n = np.array([len(y) for y in raw], dtype=np.int64)
    width = int(n.max()) if len(n) else 1
    y, s = np.zeros((len(raw), width)), np.zeros((len(raw), width))
    for i, (yi, si) in enumerate(zip(raw, smoothed, strict=True)):
        y[i, :len(yi)], s[i, :len(si)] = yi, si
    inside = np.arange(width) < n[:, None]
    # a row with a value beyond the bound (or NaN: never within it) is compared one pair at a
    # time, as is a pair without rows
    within = np.append((np.where(inside, np.abs(y), 0.0).max(axis=1) <= _ARRAY_BOUND)
                       & (np.where(inside, np.abs(s), 0.0).max(axis=1) <= _ARRAY_BOUND), False)
    apart = ~(within[ra] & within[rb])  # (row -1: the appended False)
    ra[apart], rb[apart] = -1, -1
    spans = [np.where(inside, y, -np.inf)]
    while 1 << len(spans) <= width:
        half = 1 << (len(spans) - 1)
        spans.append(np.full(y.shape, -np.inf))
        spans[-1][:, :width - half] = np.maximum(spans[-2][:, :width - half], spans[-2][:, half:])
    rows = _Rows(y, s, n, inside, np.where(inside, y, np.inf).min(axis=1),
                 np.where(inside, y, -np.inf).max(axis=1),
                 np.where(inside, s, np.inf).min(axis=1), np.where(inside, s, -np.inf).max(axis=1),
                 np.where(inside, np.abs(s), 0.0).max(axis=1), np.stack(spans),
                 np.where(inside, np.maximum.accumulate(s, axis=1), np.inf))
    return rows, ra, rb


def _compare_rows(rows: _Rows, a: np.ndarray, b: np.ndarray, separated_only: bool = False,
                  widened_range: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`compare`'s ``overlap``, ``k``, ``n`` and ``diff`` of rows ``a[p]`` against rows
    ``b[p]`` for every p: ``overlap_of_smoothed``, ``trials`` and ``best_score_diff_arrays``
    elementwise, with the scalar code's float operations and tie-breaks (``min``, ``max``,
    ``linspace``)."""
    y, s, n, inside = rows.y, rows.s, rows.n, rows.inside
    # steps 2-3 (overlap_of_smoothed): level starts, or the lower curve's first point that
    # reaches the higher start
    tol = 1e-9 * np.maximum(np.maximum(1.0, rows.s_abs[a]), rows.s_abs[b])
    sa0, sb0 = s[a, 0], s[b, 0]
    level = np.abs(sa0 - sb0) <= tol
    a_higher = sa0 > sb0
    lower = np.where(a_higher, b, a)
    reach = (s[lower] >= (np.where(a_higher, sa0, sb0) - tol)[:, None]) & inside[lower]
    overlapping = level | reach.any(axis=1)
    first = reach.argmax(axis=1)
    r = np.where(level | a_higher, 0, first)
    q = np.where(level | ~a_higher, 0, first)
    m = np.minimum(n[a] - r, n[b] - q)  # >= 1, also where there is no overlap
    # step 4, and the binomial test's count of the points past the start pair where a lies
    # above b (3.2: m - 1 trials)
    diff = _section_max(rows, a, r, m) - _section_max(rows, b, q, m)
    points = np.arange(y.shape[1])
    last = y.shape[1] - 1
    k = ((y[a[:, None], np.minimum(r[:, None] + points, last)]
          > y[b[:, None], np.minimum(q[:, None] + points, last)])
         & (points >= 1) & (points < m[:, None])).sum(1)
    apart = np.flatnonzero(~overlapping)
    chunk = max(1, (1 << 20) // (N_DELTAS * y.shape[1]))  # bounds the (pairs, deltas, points)
    for lo in range(0, apart.size, chunk):
        at = apart[lo:lo + chunk]
        diff[at] = _penalised_rows(rows, a[at], b[at], a_higher[at], separated_only,
                                   widened_range)
    return overlapping, np.where(overlapping, k, 0), np.where(overlapping, m - 1, 0), diff


def _penalised_rows(rows: _Rows, a: np.ndarray, b: np.ndarray, a_higher: np.ndarray,
                    separated_only: bool = False, widened_range: bool = True) -> np.ndarray:
    """The penalty search of ``best_score_diff_arrays`` for pairs without overlap, over
    (pair, delta, point) arrays, with ``overlaps_penalised``'s operations."""
    s, n = rows.s, rows.n
    h, low = np.where(a_higher, a, b), np.where(a_higher, b, a)
    lo = rows.y_min[h] - rows.y_max[low]
    hi = rows.y_min[h] - rows.y_min[low]
    if widened_range:
        lo = _py_min(lo, s[h, 0] - rows.s_max[low])
        hi = _py_max(hi, s[h, 0] - s[low, 0])
    deltas = linspace_rows(lo, hi, N_DELTAS)  # (pairs, deltas)
    # max |sh - delta| is at sh's minimum or maximum: rounding keeps sh - delta monotone in sh
    shd_abs = np.maximum(np.abs(rows.s_min[h][:, None] - deltas),
                         np.abs(rows.s_max[h][:, None] - deltas))
    tol = 1e-9 * np.maximum(np.maximum(1.0, shd_abs), rows.s_abs[low][:, None])
    start, sl0 = s[h, 0][:, None] - deltas, s[low, 0][:, None]  # sh[0] - delta
    level = np.abs(start - sl0) <= tol
    higher = start > sl0
    # the first point of a row reaching a level is the first of its running maximum to reach
    # it, and the points before it are those whose running maximum lies below (+inf past the
    # row's end, so none is counted there): the scalar code's first hit, as a count; for the
    # higher curve, sh - delta rounds monotonically in sh, so the same holds of it. Each
    # (pair, delta) needs one of the two: the lower curve's hit where the penalised start is
    # higher, the higher curve's where it is lower (level starts need neither)
    run = rows.s_run
    below_l, below_h = np.zeros(start.shape, np.int64), np.zeros(start.shape, np.int64)
    p, d = np.nonzero(higher & ~level)
    below_l[p, d] = np.count_nonzero(run[low[p]] < (start - tol)[p, d][:, None], axis=1)
    p, d = np.nonzero(~higher & ~level)
    below_h[p, d] = np.count_nonzero(run[h[p]] - deltas[p, d][:, None]
                                     < (sl0 - tol)[p, d][:, None], axis=1)
    reach_l, reach_h = below_l < n[low][:, None], below_h < n[h][:, None]
    found = level | np.where(higher, reach_l, reach_h)
    r = np.where(level | higher | ~reach_h, 0, below_h)  # (argmax of no hit: 0)
    q = np.where(level | ~higher | ~reach_l, 0, below_l)
    m = np.minimum(n[h][:, None] - r, n[low][:, None] - q)
    score = (_section_max(rows, h[:, None], r, m) - deltas) - _section_max(rows, low[:, None], q, m)
    best = np.where(found, score, -np.inf).max(axis=1)
    if separated_only:  # the paper's special case only: strictly separated raw values
        best = np.where(rows.y_min[h] > rows.y_max[low], best, -np.inf)
    return np.where(best > 0, np.where(a_higher, best, -best), 0.0)


def _section_max(rows: _Rows, i: np.ndarray, start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``rows.y[i, start:start + n].max()`` elementwise (``1 <= n``, ``start + n`` within the
    row): the larger of the two maxima over ``2**k <= n`` points that cover the section from
    its two ends, exact as the maximum does not depend on the order or on repeats."""
    k = np.frexp(n)[1] - 1  # floor(log2(n))
    out: np.ndarray = np.maximum(rows.y_spans[k, i, start],
                                 rows.y_spans[k, i, start + n - (1 << k)])
    return out


def _py_min(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Python's ``min(x, y)`` elementwise: x unless y < x (which decides a signed zero)."""
    return np.where(y < x, y, x)


def _py_max(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Python's ``max(x, y)`` elementwise: x unless y > x."""
    return np.where(y > x, y, x)


def linspace_rows(lo: np.ndarray, hi: np.ndarray, num: int) -> np.ndarray:
    """``np.linspace(lo[p], hi[p], num)`` as row p, bit for bit: numpy's formula, its branch
    chosen per row (``np.linspace`` over arrays takes its denormal branch for every row when
    one row's step is 0)."""
    delta = hi - lo
    step = delta / (num - 1)
    ramp = np.arange(num, dtype=np.float64)
    out: np.ndarray = np.where((step == 0)[:, None], ramp / (num - 1) * delta[:, None],
                               ramp * step[:, None])
    out += lo[:, None]
    out[:, -1] = hi
    return out
