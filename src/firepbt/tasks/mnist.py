"""Real MNIST from the four standard IDX files, with a small CNN.

The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are read from a folder the user names
(``--data-dir`` or ``$FIREPBT_MNIST_DIR``); firepbt never downloads them. They are published
at https://yann.lecun.com/exdb/mnist/ and mirrored by most frameworks' dataset caches.

As in the paper (4.1) 10,000 training images are held out as the validation set the
objective is measured on; the t10k set is the test set. CNN: conv 5x5 x16, pool, conv 5x5 x32,
pool, linear 512-10; SGD momentum 0.9, batch 128, learning rate ``lambda * 128 / 256``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..supervised import SupervisedData, SupervisedTrainable
from .mnist1d import SPACE

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
N_VALIDATION = 10_000
_TYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

__all__ = ["SPACE", "read_idx", "load_mnist", "MNISTTrainable"]


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file (gzipped when its name ends in .gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ConfigError(f"IDX file {path.name}", "a file starting with the IDX magic 00 00",
                          data[:4].hex())
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise ConfigError(f"IDX file {path.name} type code", f"one of {sorted(_TYPES)}", code)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ConfigError(f"IDX file {path.name}", f"at least {header} bytes of header",
                          len(data))
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ConfigError(f"IDX file {path.name}", f"{expected} bytes of data for shape {shape}",
                          len(data) - header)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError("data_dir", f"a folder holding {stem} (or {stem}.gz)",
                      f"{folder} without {stem}")


_CACHE: dict[str, SupervisedData] = {}


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> SupervisedData:
    """Train / validation / test tensors (images scaled to [0, 1], shape N x 1 x 28 x 28)."""
    given = data_dir or os.environ.get("FIREPBT_MNIST_DIR", "")
    folder = Path(given)
    if not given or not folder.is_dir():
        raise ConfigError("data_dir", "a folder with the four MNIST IDX files "
                          "(--data-dir or FIREPBT_MNIST_DIR)",
                          str(given) if given else "neither (no folder given)")
    key = str(folder.resolve())
    if key not in _CACHE:
        arr = {k: read_idx(_find(folder, stem)) for k, stem in FILES.items()}
        for split in ("train", "test"):
            n_img, n_lab = len(arr[f"{split}_images"]), len(arr[f"{split}_labels"])
            if n_img != n_lab:
                raise ConfigError(f"{split} labels", f"{n_img} labels, one per image", n_lab)
        x = torch.from_numpy(arr["train_images"].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(arr["train_labels"].astype(np.int64))
        xt = torch.from_numpy(arr["test_images"].astype(np.float32) / 255.0).unsqueeze(1)
        yt = torch.from_numpy(arr["test_labels"].astype(np.int64))
        n_val = min(N_VALIDATION, len(x) // 6)
        cut = len(x) - n_val
        _CACHE[key] = SupervisedData(x[:cut], y[:cut], x[cut:], y[cut:], xt, yt)
    return _CACHE[key]


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 10))


class MNISTTrainable(SupervisedTrainable):
    """The small CNN on MNIST (learning rate ``lambda * batch_size / 256``)."""

    def __init__(self, seed: int, *, data_dir: str | None = None, batch_size: int = 128,
                 momentum: float = 0.9, weight_decay: float = 0.0, objective: str = "accuracy",
                 full_train: bool = False, device: str = "cpu") -> None:
        with torch.random.fork_rng(devices=[]):
            model = cnn()
        super().__init__(seed, model=model, data=load_mnist(data_dir), metric=objective,
                         batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                         lr_param="lambda", lr_scale=batch_size / 256, full_train=full_train,
                         eval_batch=2000, device=device)
