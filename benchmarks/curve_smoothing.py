"""GP smoothing: firepbt's batched grid empirical Bayes vs scikit-learn's optimiser.

Both fit a Matérn-5/2 + white-noise GP by maximising the marginal likelihood and return the
posterior mean at the data. Timed side by side on the same noisy curves of 16, 60 and 240
points (a 3-ready-interval evaluator curve, a long target curve, a whole run), with the mean
absolute difference between the two smoothed curves relative to the noise level.
Needs scikit-learn (not a firepbt dependency): ``.venv/bin/pip install scikit-learn``.

    .venv/bin/python benchmarks/curve_smoothing.py
"""

from __future__ import annotations

import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from firepbt.curves import Curve, smooth  # noqa: E402
from firepbt.curves._gp import fits  # noqa: E402


def sklearn_smooth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    t = (x - x[0]) / (x[-1] - x[0])
    mean, scale = y.mean(), y.std()
    kernel = ConstantKernel(1.0) * Matern(length_scale=0.3, nu=2.5) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=2,
                                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit(t[:, None], (y - mean) / scale)
    return gp.predict(t[:, None]) * scale + mean


def main() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("scikit-learn is not installed: pip install scikit-learn")
        return
    rng = np.random.default_rng(0)
    print(f"{'points':>7s}{'firepbt ms':>12s}{'sklearn ms':>12s}{'speed-up':>10s}"
          f"{'|diff|/noise':>14s}")
    for n in (16, 60, 240):
        curves = []
        for _ in range(10):
            x = np.arange(n) * 25
            y = 0.6 + 0.3 * (1 - np.exp(-x / (x[-1] / 3))) + rng.normal(0, 0.01, n)
            curves.append((x, y))
        t0 = time.perf_counter()
        ours = []
        for x, y in curves:
            fits.cache_clear()
            ours.append(smooth(Curve(x, y)))
        t_ours = (time.perf_counter() - t0) / len(curves)
        t0 = time.perf_counter()
        theirs = [sklearn_smooth(x.astype(float), y) for x, y in curves]
        t_sk = (time.perf_counter() - t0) / len(curves)
        diff = np.mean([np.abs(a - b).mean() for a, b in zip(ours, theirs, strict=True)]) / 0.01
        print(f"{n:7d}{t_ours * 1e3:12.2f}{t_sk * 1e3:12.2f}{t_sk / t_ours:10.1f}{diff:14.3f}")


if __name__ == "__main__":
    main()
