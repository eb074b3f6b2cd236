"""Training-curve mathematics of FIRE PBT (paper sections 3.1.1 and 3.2).

Pure functions over a small frozen record, :class:`Curve`. Nothing here trains, stores or
decides; the FIRE PBT controller arranges these calls.

Non-finite policy (tested): a NaN or +-inf evaluation means the network diverged. Before two
curves are compared, each non-finite value is replaced by a *floor* strictly below every finite
value of both curves (``min - max(range, 1)`` of their finite values), so a diverged section
can never look better than a finite one, and the replacement shifts with the curves (adding a
constant to both leaves every result unchanged). When neither curve has a finite value there is
no evidence: ``best_score_diff`` returns 0.0 and ``binom_test`` returns 1.0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .errors import ConfigError

__all__ = ["Curve", "smooth", "best_score_diff", "binom_test", "overlap"]


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
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


@functools.lru_cache(maxsize=4096)
def _smooth_cached(steps_bytes: bytes, values_bytes: bytes) -> np.ndarray:
    x = np.frombuffer(steps_bytes, dtype=np.int64).astype(np.float64)
    y = np.frombuffer(values_bytes, dtype=np.float64)
    out = _smooth_finite(x, y)
    out.flags.writeable = False
    return out


def _smooth_finite(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = len(y)
    if n <= 2:
        return y.copy()
    mean = float(y.mean())
    scale = float(y.std())
    if not scale > 1e-12 * max(1.0, abs(mean)):
        return np.full(n, mean)
    z = (y - mean) / scale
    span = float(x[-1] - x[0])
    t = (x - x[0]) / span
    d = np.abs(t[:, None] - t[None, :])
    corr = _matern52(d, _LENGTHSCALES)  # (L, n, n)
    # One eigendecomposition per lengthscale, R = Q diag(lam) Q^T, gives every noise ratio g
    # at once: (R + g I)^-1 = Q diag(1 / (lam + g)) Q^T, log|R + g I| = sum log(lam + g).
    lam, q = np.linalg.eigh(corr)  # (L, n), (L, n, n)
    lam = np.clip(lam, 0.0, None)
    c = np.einsum("lji,j->li", q, z)  # Q^T z, (L, n)
    denom = lam[:, None, :] + _NOISE_RATIOS[None, :, None]  # (L, G, n)
    quad = np.sum(c[:, None, :] ** 2 / denom, axis=-1)  # z^T (R + g I)^-1 z
    logdet = np.sum(np.log(denom), axis=-1)
    # Profile likelihood: sigma^2 = quad / n; log L = -n/2 log(quad/n) - 1/2 logdet + const.
    loglik = -0.5 * n * np.log(quad / n) - 0.5 * logdet
    li, gi = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
    # posterior mean of the latent function at the data: R (R + g I)^-1 z
    fitted = q[li] @ (lam[li] / denom[li, gi] * c[li])
    return fitted * scale + mean


def smooth(curve: Curve) -> np.ndarray:
    """Posterior mean of a GP fitted through ``curve`` (3.1.1 step 1), at the curve's steps.

    Matérn-5/2 kernel plus a white-noise term; lengthscale, signal and noise variance chosen
    by maximising the marginal likelihood (empirical Bayes, see ``_LENGTHSCALES``). The values
    are normalised to zero mean and unit variance first, so the result is invariant to adding a
    constant to the curve (and to scaling it). Non-finite points are left out of the fit and
    predicted by it; a curve of at most two finite points, or a constant one, is returned as is.
    """
    values = curve.values
    finite = np.isfinite(values)
    if finite.all():
        return _smooth_cached(curve.steps.tobytes(), values.tobytes()).copy()
    if finite.sum() == 0:
        return values.astype(np.float64).copy()
    xs = curve.steps[finite]
    fitted = _smooth_cached(xs.tobytes(), values[finite].tobytes())
    return np.interp(curve.steps, xs, fitted)


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
    sa = smooth(Curve(a.steps, ya)) if len(ya) else ya
    sb = smooth(Curve(b.steps, yb)) if len(yb) else yb
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
                            sb: np.ndarray) -> float:
    ov = _overlap_smoothed(sa, sb)
    if ov is not None:
        return float(ya[ov.r:ov.r + ov.n].max() - yb[ov.s:ov.s + ov.n].max())
    # No overlapping section: one curve lies above the other (Assumption 2). Penalise the
    # higher curve by a constant delta and keep the best positive score it then shows.
    a_higher = bool(sa[0] > sb[0])
    yh, sh, yl, sl = (ya, sa, yb, sb) if a_higher else (yb, sb, ya, sa)
    # The paper's range is on raw values; smoothing can move a start by a noise amplitude and
    # leave every paper delta without an overlap, so the range is widened to include the
    # penalties that align the smoothed curves (the high start down to the low curve's maximum,
    # and the two starts level).
    lo = min(float(yh.min() - yl.max()), float(sh[0] - sl.max()))
    hi = max(float(yh.min() - yl.min()), float(sh[0] - sl[0]))
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


def best_score_diff(eta: Curve, kappa: Curve) -> float:
    """How much faster ``eta`` improves than ``kappa`` (paper 3.1.1); positive when eta is faster.

    1. smooth both curves (:func:`smooth`); 2. the curve with the higher smoothed start sets
    the level and the other's section starts at its first smoothed point reaching it; 3. the
    sections are as long as the shorter remainder; 4. return the difference of the *raw* maxima
    within the two sections. When the smoothed curves never overlap (one lies above the other,
    Assumption 2), the higher curve is penalised by each delta in
    ``[min(y_high) - max(y_low), min(y_high) - min(y_low)]`` (widened to include the deltas that
    level the smoothed starts, see the code) and the highest positive score found
    is returned (0.0 if none): a higher curve wins only when it is improving faster too, and the
    lower curve is never judged faster. Antisymmetric: ``best_score_diff(a, b) ==
    -best_score_diff(b, a)``. Empty curves or curves without a finite value give 0.0.
    """
    prepared = _prepared(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return 0.0
    return _best_score_diff_arrays(*prepared)


def binom_test(eta: Curve, rho: Curve) -> float:
    """One-sided binomial-test p-value that ``eta`` lies above ``rho`` (paper 3.2).

    Over the overlapping sections of 3.1.1, count the k points where ``eta[r+i] > rho[s+i]``
    (ties count against eta) and return ``scipy.stats.binomtest(k, n, 0.5,
    alternative="greater").pvalue``. When the curves do not overlap (the paper leaves this
    open): 0.0 if every value of eta lies above every value of rho - an evaluator that is simply
    better may still succeed, since success also needs ``best_score_diff > 0`` - and 1.0
    otherwise. No finite value in either curve, or an empty curve, gives 1.0 (no evidence).
    """
    prepared = _prepared(eta, rho)
    if prepared is None or len(eta) == 0 or len(rho) == 0:
        return 1.0
    ya, sa, yb, sb = prepared
    ov = _overlap_smoothed(sa, sb)
    if ov is None:
        return 0.0 if float(ya.min()) > float(yb.max()) else 1.0
    k = int(np.sum(ya[ov.r:ov.r + ov.n] > yb[ov.s:ov.s + ov.n]))
    return float(stats.binomtest(k, ov.n, 0.5, alternative="greater").pvalue)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One curve against another, computed once (paper 3.1.1-3.2), as an evaluator's decision
    carries it: ``overlap`` - whether the smoothed curves have overlapping sections; ``k`` of
    the ``n`` overlapping points where the first curve lies above (0 of 0 without overlap);
    ``p`` - :func:`binom_test`; ``diff`` - :func:`best_score_diff`."""

    overlap: bool
    k: int
    n: int
    p: float
    diff: float


def compare(eta: Curve, kappa: Curve) -> Comparison:
    """``eta`` against ``kappa``: the same numbers as :func:`overlap`, :func:`binom_test` and
    :func:`best_score_diff`, from one preparation of the two curves."""
    prepared = _prepared(eta, kappa)
    if prepared is None or len(eta) == 0 or len(kappa) == 0:
        return Comparison(False, 0, 0, 1.0, 0.0)
    ya, sa, yb, sb = prepared
    diff = _best_score_diff_arrays(ya, sa, yb, sb)
    ov = _overlap_smoothed(sa, sb)
    if ov is None:
        return Comparison(False, 0, 0, 0.0 if float(ya.min()) > float(yb.max()) else 1.0, diff)
    k = int(np.sum(ya[ov.r:ov.r + ov.n] > yb[ov.s:ov.s + ov.n]))
    p = float(stats.binomtest(k, ov.n, 0.5, alternative="greater").pvalue)
    return Comparison(True, k, ov.n, p, diff)
