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
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

__all__ = ["Curve", "smooth", "best_score_diff", "binom_test", "overlap", "compare",
           "compare_many", "pairwise_best_score_diff"]


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


# --------------------------------------------------------------------------------------------
# Gaussian-process smoothing (3.1.1 step 1)
# --------------------------------------------------------------------------------------------

# Empirical Bayes on a fixed grid: the Matérn-5/2 lengthscale (in units of the curve's step
# range) and the noise-to-signal ratio are chosen to maximise the marginal likelihood, with the
# signal variance profiled out in closed form. A fixed grid is deterministic, never fails to
# converge, and costs one eigendecomposition per lengthscale, every noise ratio then being
# free (benchmarks/curve_smoothing.py compares it with scikit-learn's optimiser).
_LENGTHSCALES = np.geomspace(0.03, 3.0, 13)
_NOISE_RATIOS = np.geomspace(1e-4, 3.0, 11)


def _matern52(d: np.ndarray, lengthscale: np.ndarray) -> np.ndarray:
    r = math.sqrt(5.0) * d[None, :, :] / lengthscale[:, None, None]
    out: np.ndarray = (1.0 + r + r * r / 3.0) * np.exp(-r)
    return out


class _Fits:
    """The fits of curves of finite values, keyed by the bytes of their steps (int64) and
    values (float64), the least recently used dropped beyond ``size``. ``fill`` fits many
    curves at once, those of one step pattern together (:func:`_fit_rows`); a fit is the same
    either way (tested)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.data: OrderedDict[tuple[bytes, bytes], np.ndarray] = OrderedDict()

    def __call__(self, steps_bytes: bytes, values_bytes: bytes) -> np.ndarray:
        key = (steps_bytes, values_bytes)
        got = self.data.get(key)
        if got is not None:
            self.data.move_to_end(key)
            return got
        x = np.frombuffer(steps_bytes, dtype=np.int64).astype(np.float64)
        return self._put(key, _smooth_finite(x, np.frombuffer(values_bytes, dtype=np.float64)))

    def _put(self, key: tuple[bytes, bytes], fit: np.ndarray) -> np.ndarray:
        fit.flags.writeable = False
        self.data[key] = fit
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return fit

    def fill(self, curves: Sequence[Curve]) -> None:
        """Fit the curves (of finite values) not fitted yet."""
        groups: dict[bytes, dict[tuple[bytes, bytes], np.ndarray]] = {}
        for c in curves:
            key = (c.steps.tobytes(), c.values.tobytes())
            if len(c) <= 2 or key in self.data:
                continue
            x = c.steps.astype(np.float64)
            t = (x - x[0]) / float(x[-1] - x[0])
            groups.setdefault(t.tobytes(), {})[key] = c.values
        for t_bytes, todo in groups.items():
            fits = _fit_rows(np.frombuffer(t_bytes, dtype=np.float64), np.stack(list(todo.values())))
            for key, fit in zip(todo, fits, strict=True):
                self._put(key, fit)

    def cache_clear(self) -> None:
        self.data.clear()


_smooth_cached = _Fits()


def _correlation_eigen(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Matérn correlation matrices at normalised steps ``t``, one per lengthscale,
    decomposed: one eigendecomposition per lengthscale, R = Q diag(lam) Q^T, gives every noise
    ratio g at once: (R + g I)^-1 = Q diag(1 / (lam + g)) Q^T, log|R + g I| = sum log(lam + g).
    Returns ``lam`` (L, n), clipped at 0, ``Q`` (L, n, n), ``lam + g`` (L, G, n) and
    ``log|R + g I|`` (L, G): everything of the fit that does not depend on the values."""
    d = np.abs(t[:, None] - t[None, :])
    lam, q = np.linalg.eigh(_matern52(d, _LENGTHSCALES))
    lam = np.clip(lam, 0.0, None)
    denom = lam[:, None, :] + _NOISE_RATIOS[None, :, None]
    return lam, q, denom, np.sum(np.log(denom), axis=-1)


# The decomposition depends on the normalised steps alone, which curves of the same step pattern
# share (every evaluator curve of a given length, evaluated at a fixed interval): cached, for
# curves of up to 64 points (an entry then holds at most 13 x 64 x 64 floats, 0.4 MB).
_EIGEN_CACHE_POINTS = 64


@functools.lru_cache(maxsize=128)
def _correlation_eigen_cached(t_bytes: bytes
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    out = _correlation_eigen(np.frombuffer(t_bytes, dtype=np.float64))
    for a in out:
        a.flags.writeable = False
    return out


def _smooth_finite(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = len(y)
    if n <= 2:
        short: np.ndarray = y.copy()
        return short
    mean = float(y.mean())
    scale = float(y.std())
    if not scale > 1e-12 * max(1.0, abs(mean)):
        return np.full(n, mean)
    z = (y - mean) / scale
    span = float(x[-1] - x[0])
    t = (x - x[0]) / span
    lam, q, denom, logdet = (_correlation_eigen_cached(t.tobytes())
                              if n <= _EIGEN_CACHE_POINTS else _correlation_eigen(t))
    c = np.einsum("lji,j->li", q, z)  # Q^T z, (L, n)
    quad = np.sum(c[:, None, :] ** 2 / denom, axis=-1)  # z^T (R + g I)^-1 z
    # Profile likelihood: sigma^2 = quad / n; log L = -n/2 log(quad/n) - 1/2 logdet + const.
    loglik = -0.5 * n * np.log(quad / n) - 0.5 * logdet
    li, gi = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
    # posterior mean of the latent function at the data: R (R + g I)^-1 z
    fitted: np.ndarray = q[li] @ (lam[li] / denom[li, gi] * c[li])
    return fitted * scale + mean


def _fit_rows(t: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """:func:`_smooth_finite` of each row of ``y`` (curves of more than two finite points),
    all at the normalised steps ``t``, the same operations over a batch: every row's numbers
    are those of its fit alone, bit for bit (numpy's einsum and its reductions over a row's
    last axis do not depend on the other rows; tested)."""
    k, n = y.shape
    mean = y.mean(axis=1)
    scale = y.std(axis=1)
    out = [np.full(n, m) for m in mean.tolist()]  # a constant curve is its mean
    fit = np.flatnonzero(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))
    if fit.size == 0:
        return out
    z = (y[fit] - mean[fit, None]) / scale[fit, None]
    lam, q, denom, logdet = (_correlation_eigen_cached(t.tobytes())
                              if n <= _EIGEN_CACHE_POINTS else _correlation_eigen(t))
    c = np.einsum("lji,kj->kli", q, z)  # Q^T z per row, (k, L, n)
    quad = np.sum(c[:, :, None, :] ** 2 / denom, axis=-1)  # z^T (R + g I)^-1 z, (k, L, G)
    # Profile likelihood: sigma^2 = quad / n; log L = -n/2 log(quad/n) - 1/2 logdet + const.
    loglik = -0.5 * n * np.log(quad / n) - 0.5 * logdet
    best = np.argmax(loglik.reshape(fit.size, -1), axis=1).tolist()
    for row, (i, b) in enumerate(zip(fit.tolist(), best, strict=True)):
        li, gi = divmod(b, loglik.shape[2])
        # posterior mean of the latent function at the data: R (R + g I)^-1 z
        fitted = q[li] @ (lam[li] / denom[li, gi] * c[row, li])
        out[i] = fitted * scale[i] + mean[i]
    return out


def smooth(curve: Curve) -> np.ndarray:
    """Posterior mean of a GP fitted through ``curve`` (3.1.1 step 1), at the curve's steps.

    Matérn-5/2 kernel plus a white-noise term; lengthscale, signal and noise variance chosen
    by maximising the marginal likelihood (empirical Bayes, see ``_LENGTHSCALES``). The values
    are normalised to zero mean and unit variance first, so the result is invariant to adding a
    constant to the curve (and to scaling it). Non-finite points are left out of the fit and
    predicted by it; a curve of at most two finite points, or a constant one, is returned as is.
    """
    return _smoothed(curve.steps, curve.values)


def _smoothed(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`smooth` from a valid curve's arrays, without building the record (the
    comparisons' hot path)."""
    finite = np.isfinite(values)
    out: np.ndarray
    if finite.all():
        out = _smooth_cached(steps.tobytes(), values.tobytes()).copy()
    elif finite.sum() == 0:
        out = values.astype(np.float64).copy()
    else:
        xs = steps[finite]
        fitted = _smooth_cached(xs.tobytes(), values[finite].tobytes())
        out = np.interp(steps, xs, fitted)
    return out


# --------------------------------------------------------------------------------------------
# Comparing two curves (3.1.1 steps 2-4, Assumption 2) and the binomial test (3.2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Where two curves overlap: ``a[r:r+n]`` is compared with ``b[s:s+n]``."""

    r: int
    s: int
    n: int


def _floored(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    fa, fb = np.isfinite(a), np.isfinite(b)
    if fa.all() and fb.all():
        return a, b
    finite = np.concatenate([a[fa], b[fb]])
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    floor = lo - max(hi - lo, 1.0)
    return np.where(fa, a, floor), np.where(fb, b, floor)


def _overlap_smoothed(sa: np.ndarray, sb: np.ndarray) -> Overlap | None:
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


def _prepared(a: Curve, b: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    floored = _floored(a.values, b.values)
    if floored is None:
        return None
    ya, yb = floored
    sa = _smoothed(a.steps, ya) if len(ya) else ya
    sb = _smoothed(b.steps, yb) if len(yb) else yb
    return ya, sa, yb, sb


def overlap(eta: Curve, kappa: Curve) -> Overlap | None:
    """The overlapping sections of two curves (3.1.1 steps 1-3), or None when there are none."""
    prepared = _prepared(eta, kappa)
    if prepared is None:
        return None
    _, sa, _, sb = prepared
    return _overlap_smoothed(sa, sb)


# Number of penalties delta tried across [min(y_h) - max(y_l), min(y_h) - min(y_l)].
_N_DELTAS = 33


def _best_score_diff_arrays(ya: np.ndarray, sa: np.ndarray, yb: np.ndarray,
                            sb: np.ndarray, separated_only: bool = False,
                            widened_range: bool = True) -> float:
    ov = _overlap_smoothed(sa, sb)
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
    for delta, ov in zip(*_overlaps_penalised(sh, sl, np.linspace(lo, hi, _N_DELTAS)),
                         strict=True):
        if ov is None:
            continue
        high = np.float64(section_max(yh, pre_h, suf_h, ov.r, ov.n)) - delta
        score = float(high - section_max(yl, pre_l, suf_l, ov.s, ov.n))
        best = max(best, score)
    if best == 0.0:
        return 0.0
    return best if a_higher else -best


def _overlaps_penalised(sh: np.ndarray, sl: np.ndarray, deltas: np.ndarray
                        ) -> tuple[np.ndarray, list[Overlap | None]]:
    """``_overlap_smoothed(sh - delta, sl)`` for every delta at once: the same operations on
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
    2), the higher curve is penalised by each of ``_N_DELTAS`` deltas spread over the paper's
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
    prepared = _prepared(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return 0.0
    return _best_score_diff_arrays(*prepared, separated_only, widened_range)


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


def _trials(ya: np.ndarray, yb: np.ndarray, ov: Overlap) -> tuple[int, int]:
    """``(k, n)`` of the binomial test (:func:`binom_test`): the overlap's pairs past its
    start pair, and how many of them eta wins."""
    n = ov.n - 1
    k = int(np.sum(ya[ov.r + 1:ov.r + ov.n] > yb[ov.s + 1:ov.s + ov.n]))
    return k, n


@functools.lru_cache(maxsize=4096)
def _binom_pvalue(k: int, n: int) -> float:
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
    prepared = _prepared(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return Comparison(False, 0, 0, 1.0, 0.0)
    ya, sa, yb, sb = prepared
    diff = _best_score_diff_arrays(ya, sa, yb, sb, separated_only, widened_range)
    ov = _overlap_smoothed(sa, sb)
    if ov is None:
        return Comparison(False, 0, 0, 1.0, diff)
    k, n = _trials(ya, yb, ov)
    return Comparison(True, k, n, _binom_pvalue(k, n), diff)


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
            out.append(Comparison(True, kj, nj, _binom_pvalue(kj, nj), float(diff[j])))
        else:
            out.append(Comparison(False, 0, 0, 1.0, float(diff[j])))
        j += 1
    return out


@dataclass(frozen=True, slots=True)
class _Rows:
    """Prepared curves (``_prepared``: floored, smoothed) as padded rows for the array
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
    _smooth_cached.fill([c for c, u in zip(curves, unfloored.tolist(), strict=True) if u])
    # a curve that needs no floor has one row, shared by its pairs (its fit: smooth's, cached)
    own = np.full(len(curves), -1)
    for c in sorted(set(a.tolist()) | set(b.tolist())):
        if unfloored[c]:
            cv = curves[c]
            own[c] = row(cv.values, _smooth_cached(cv.steps.tobytes(), cv.values.tobytes()))
    both = unfloored[a] & unfloored[b]
    ra, rb = np.where(both, own[a], -1), np.where(both, own[b], -1)
    for p in np.flatnonzero(~both).tolist():
        i, j = int(a[p]), int(b[p])
        prepared = _prepared(curves[i], curves[j])
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
    ``b[p]`` for every p: ``_overlap_smoothed``, ``_trials`` and ``_best_score_diff_arrays``
    elementwise, with the scalar code's float operations and tie-breaks (``min``, ``max``,
    ``linspace``)."""
    y, s, n, inside = rows.y, rows.s, rows.n, rows.inside
    # steps 2-3 (_overlap_smoothed): level starts, or the lower curve's first point that
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
    chunk = max(1, (1 << 20) // (_N_DELTAS * y.shape[1]))  # bounds the (pairs, deltas, points)
    for lo in range(0, apart.size, chunk):
        at = apart[lo:lo + chunk]
        diff[at] = _penalised_rows(rows, a[at], b[at], a_higher[at], separated_only,
                                   widened_range)
    return overlapping, np.where(overlapping, k, 0), np.where(overlapping, m - 1, 0), diff


def _penalised_rows(rows: _Rows, a: np.ndarray, b: np.ndarray, a_higher: np.ndarray,
                    separated_only: bool = False, widened_range: bool = True) -> np.ndarray:
    """The penalty search of ``_best_score_diff_arrays`` for pairs without overlap, over
    (pair, delta, point) arrays, with ``_overlaps_penalised``'s operations."""
    s, n = rows.s, rows.n
    h, low = np.where(a_higher, a, b), np.where(a_higher, b, a)
    lo = rows.y_min[h] - rows.y_max[low]
    hi = rows.y_min[h] - rows.y_min[low]
    if widened_range:
        lo = _py_min(lo, s[h, 0] - rows.s_max[low])
        hi = _py_max(hi, s[h, 0] - s[low, 0])
    deltas = _linspace_rows(lo, hi, _N_DELTAS)  # (pairs, deltas)
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


def _linspace_rows(lo: np.ndarray, hi: np.ndarray, num: int) -> np.ndarray:
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
