"""MNIST-1D (Greydanus 2020): the built-in image-classification stand-in for the paper's 4.1.

The data are generated locally with the ``mnist1d`` package's ``make_dataset`` (never its
download path) and cached on disk as ``.npz`` (``$FIREPBT_CACHE`` or ``~/.cache/firepbt``).
60,000 samples: 48,000 for training, of which the last 5,000 are held out as the validation
set the objective is measured on, and 12,000 kept apart as the test set.

The network is an MLP 40-256-256-10 with ReLU, trained by SGD with momentum 0.9 and batch 128.
The tuned hyperparameter is ``lambda``: learning rate ``lambda * batch_size / 256`` (paper
4.1.1), sampled log-uniformly in [1e-2, 3e-1] as in the paper (this range suits the task as it
is, so it is not rescaled), with perturbation bounds [1e-4, 3].
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..space import LogUniform, Space

SPACE = Space({"lambda": LogUniform(1e-2, 3e-1, bounds=(1e-4, 3.0))})
N_SAMPLES = 60_000
N_VALIDATION = 5_000
OBJECTIVES = ("accuracy", "f1")


def cache_dir() -> Path:
    return Path(os.environ.get("FIREPBT_CACHE", Path.home() / ".cache" / "firepbt"))


@dataclass(frozen=True)
class MNIST1DData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def full_train(self) -> MNIST1DData:
        """Training plus validation split (used by schedule replay, paper 4.1)."""
        return MNIST1DData(torch.cat([self.x_train, self.x_val]),
                           torch.cat([self.y_train, self.y_val]),
                           self.x_val, self.y_val, self.x_test, self.y_test)


_DATA: dict[tuple[int, int], MNIST1DData] = {}


def generate(num_samples: int = N_SAMPLES, seed: int = 42) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` without touching the caller's global random state."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.num_samples = num_samples
        args.seed = seed
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


def load_data(num_samples: int = N_SAMPLES, seed: int = 42,
              n_validation: int = N_VALIDATION) -> MNIST1DData:
    """The dataset, generated once and cached on disk and in memory."""
    key = (num_samples, seed)
    if key not in _DATA:
        path = cache_dir() / f"mnist1d-{num_samples}-{seed}.npz"
        if path.is_file():
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            arrays = generate(num_samples, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
        cut = len(x) - n_validation
        _DATA[key] = MNIST1DData(x[:cut], y[:cut], x[cut:], y[cut:],
                                 torch.from_numpy(arrays["x_test"]),
                                 torch.from_numpy(arrays["y_test"]))
    return _DATA[key]


def mlp(hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(40, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> float:
    """Macro-averaged F1 score (classes absent from both prediction and truth are skipped)."""
    conf = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    conf = conf.reshape(n_classes, n_classes).double()
    tp = conf.diag()
    denom = conf.sum(0) + conf.sum(1)
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean())


class MNIST1DTrainable:
    """One MLP on MNIST-1D. ``objective`` is ``accuracy`` (top-1) or ``f1`` (macro F1)."""

    mode = "max"

    def __init__(self, seed: int, *, data: MNIST1DData | None = None, hidden: int = 256,
                 batch_size: int = 128, momentum: float = 0.9, weight_decay: float = 0.0,
                 objective: str = "accuracy", full_train: bool = False,
                 model: nn.Module | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
        data = load_data() if data is None else data
        self.data = data.full_train() if full_train else data
        self.batch_size = batch_size
        self.objective = objective
        torch.manual_seed(seed)  # parameter init only; data order uses self.gen
        g = torch.Generator().manual_seed(seed)
        self.model = mlp(hidden) if model is None else model
        with torch.no_grad():
            for p in self.model.parameters():
                # re-initialise from the explicit generator so init does not depend on globals
                if p.dim() > 1:
                    bound = 1.0 / p.shape[1] ** 0.5
                    p.uniform_(-bound, bound, generator=g)
                else:
                    p.uniform_(-0.05, 0.05, generator=g)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=momentum,
                                   weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(seed + 1_000_003)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_state = self.gen.get_state()
        self.perm = torch.randperm(len(self.data.x_train), generator=self.gen)
        self.pos = 0

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        lr = float(hparams["lambda"]) * self.batch_size / 256
        for group in self.opt.param_groups:
            group["lr"] = lr
        x_all, y_all = self.data.x_train, self.data.y_train
        loss_fn = nn.functional.cross_entropy
        self.model.train()
        for _ in range(steps):
            if self.pos + self.batch_size > len(self.perm):
                self._new_epoch()
            idx = self.perm[self.pos:self.pos + self.batch_size]
            self.pos += self.batch_size
            loss = loss_fn(self.model(x_all[idx]), y_all[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def _score(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(x)
        if not torch.isfinite(logits).all():
            return float("nan")
        pred = logits.argmax(1)
        if self.objective == "f1":
            return macro_f1(pred, y)
        return float((pred == y).double().mean())

    def evaluate(self) -> float:
        return self._score(self.data.x_val, self.data.y_val)

    def test(self) -> float:
        return self._score(self.data.x_test, self.data.y_test)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.clone() for k, v in self.model.state_dict().items()},
                "opt": _clone(self.opt.state_dict()),
                "epoch_state": self.epoch_state.clone(), "pos": self.pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(_clone(state["opt"]))
        self.gen.set_state(state["epoch_state"])
        self.perm = torch.randperm(len(self.data.x_train), generator=self.gen)
        self.epoch_state = state["epoch_state"].clone()
        self.pos = int(state["pos"])


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj
