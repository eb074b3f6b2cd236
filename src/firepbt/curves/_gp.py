"""Gaussian-process smoothing of a training curve (paper 3.1.1, step 1); see
:mod:`firepbt.curves`."""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ._curve import Curve

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


class Fits:
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


fits = Fits()


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
    return smoothed(curve.steps, curve.values)


def smoothed(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`smooth` from a valid curve's arrays, without building the record (the
    comparisons' hot path)."""
    finite = np.isfinite(values)
    out: np.ndarray
    if finite.all():
        out = fits(steps.tobytes(), values.tobytes()).copy()
    elif finite.sum() == 0:
        out = values.astype(np.float64).copy()
    else:
        xs = steps[finite]
        fitted = fits(xs.tobytes(), values[finite].tobytes())
        out = np.interp(steps, xs, fitted)
    return out
