"""Test helpers: whether a PNG figure shows its data (pixels of the data's line colours), and
a folder's bytes (what "nothing on disk changed" compares)."""

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


# files through which processes coordinate, not store content: the writer lock (it holds the
# pid of the last writer) and SQLite's WAL index files, which any reader opens (empty, no data)
COORDINATION = ("writer.lock", "experiment.sqlite-shm", "experiment.sqlite-wal")


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes, less the :data:`COORDINATION` files."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in COORDINATION}
