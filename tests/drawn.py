"""Checks that a PNG figure shows its data: pixels of the data's line colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# matplotlib's default colour cycle, first two entries (C0, C1)
C0 = (0x1F, 0x77, 0xB4)
C1 = (0xFF, 0x7F, 0x0E)


def colour_pixels(path: Path, rgb: tuple[int, int, int], tol: int = 8) -> int:
    """How many pixels of the PNG at ``path`` are within ``tol`` of ``rgb``."""
    from matplotlib import image

    img = image.imread(str(path))[..., :3]
    img = np.round(img * 255).astype(int)
    return int(np.all(np.abs(img - np.array(rgb)) <= tol, axis=-1).sum())
