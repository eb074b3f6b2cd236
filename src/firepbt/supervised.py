"""A supervised-learning trainable from a module, a loss and tensors: the vectorizable kind.

:class:`SupervisedTrainable` is a complete :class:`~firepbt.trainable.Trainable` for the
common case - a ``torch.nn.Module``, a loss, training/validation(/test) tensors, SGD with
momentum and weight decay, shuffled epochs - and is what the vectorized executor
(:mod:`firepbt.vectorized`) knows how to train as one batched model. Write::

    def make(seed):
        return SupervisedTrainable(seed, model=MyNet(), data=SupervisedData(x, y, xv, yv),
                                   loss=torch.nn.functional.cross_entropy)

and pass ``make`` as the factory; add ``executor="vectorized"`` to train the population at once.

Hyperparameters: the learning rate is ``hparams[lr_param] * lr_scale`` (the built-in tasks use
``lambda`` with scale ``batch_size / 256``, paper 4.1.1); optional ``momentum`` and
``weight_decay`` hyperparameters override the constructor's values when present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .trainable import clone_state


@dataclass(frozen=True)
class SupervisedData:
    """Training, validation and (optionally) test tensors; first dimension = samples."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    def full_train(self) -> SupervisedData:
        """Training plus validation split (used by schedule replay, paper 4.1)."""
        key = (id(self), "full")
        if key not in _DERIVED:
            _DERIVED[key] = (self, SupervisedData(
                torch.cat([self.x_train, self.x_val]), torch.cat([self.y_train, self.y_val]),
                self.x_val, self.y_val, self.x_test, self.y_test))
        return _DERIVED[key][1]

    def to(self, device: str | torch.device) -> SupervisedData:
        """The same tensors on ``device`` (made once per data and device, then shared by every
        member, as the vectorized executor requires)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        key = (id(self), str(device))
        if key not in _DERIVED:
            def move(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t.to(device)

            _DERIVED[key] = (self, SupervisedData(
                self.x_train.to(device), self.y_train.to(device), self.x_val.to(device),
                self.y_val.to(device), move(self.x_test), move(self.y_test)))
        return _DERIVED[key][1]


# derived data (full training set, other devices), keyed by the source's id; the source is kept
# alive with it so an id is never reused while its entry exists
_DERIVED: dict[tuple[int, str], tuple[SupervisedData, SupervisedData]] = {}


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).double().mean())


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> float:
    """Macro-averaged F1 score (classes absent from both prediction and truth are skipped)."""
    conf = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    conf = conf.reshape(n_classes, n_classes).double()
    tp = conf.diag()
    denom = conf.sum(0) + conf.sum(1)
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean())


def f1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return macro_f1(logits.argmax(-1), y, logits.shape[-1])


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {"accuracy": accuracy,
                                                                      "f1": f1}


class SupervisedTrainable:
    """SGD (momentum, weight decay) on shuffled mini-batches of in-memory tensors.

    Args:
        seed: initialises the parameters (from an explicit generator: uniform
            ``+-1/sqrt(fan_in)`` for weights, ``+-0.05`` for biases) and the data order.
        model: the network (its own initialisation is replaced, see ``seed``).
        data: the tensors.
        loss: ``loss(outputs, targets)`` averaged over the batch (default cross-entropy).
        metric: ``"accuracy"``, ``"f1"`` or ``metric(outputs, targets) -> float`` for
            ``evaluate``/``test`` (higher is better unless ``mode="min"``).
        lr_param, lr_scale: learning rate = ``hparams[lr_param] * lr_scale``.
        full_train: train on training plus validation data (replay).
        eval_batch: evaluation chunk size.
        device: where the network, its optimizer state and the data live (``"cpu"``,
            ``"cuda"``, ``"cuda:N"``; default: the model's device); the initial weights and the
            data order come from CPU generators, so a seed gives the same network and batches
            on every device.
    """

    def __init__(self, seed: int, *, model: nn.Module, data: SupervisedData,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 metric: str | Callable[[torch.Tensor, torch.Tensor], float] = "accuracy",
                 batch_size: int = 128, momentum: float = 0.9, weight_decay: float = 0.0,
                 lr_param: str = "lr", lr_scale: float = 1.0, full_train: bool = False,
                 mode: str = "max", eval_batch: int = 10_000,
                 device: str | torch.device | None = None) -> None:
        if isinstance(metric, str) and metric not in METRICS:
            raise ValueError(f"objective must be one of {list(METRICS)}, got {metric!r}")
        self.metric = METRICS[metric] if isinstance(metric, str) else metric
        if device is None:  # where the model is
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.device = torch.device(device)
        self.data = (data.full_train() if full_train else data).to(self.device)
        self.loss = loss if loss is not None else nn.functional.cross_entropy
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_param = lr_param
        self.lr_scale = lr_scale
        self.mode = mode
        self.eval_batch = eval_batch
        g = torch.Generator().manual_seed(seed)
        self.model = model
        with torch.no_grad():
            for p in self.model.parameters():
                # drawn on the CPU (same numbers on every device), then copied in place
                draw = torch.empty(p.shape, dtype=p.dtype)
                if p.dim() > 1:
                    bound = 1.0 / (p[0].numel()) ** 0.5
                    draw.uniform_(-bound, bound, generator=g)
                else:
                    draw.uniform_(-0.05, 0.05, generator=g)
                p.copy_(draw)
        self.model.to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=momentum,
                                   weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(seed + 1_000_003)
        self._new_epoch()

    # -- hyperparameters --------------------------------------------------------------------

    def optimizer_settings(self, hparams: Mapping[str, Any]) -> tuple[float, float, float]:
        """(learning rate, momentum, weight decay) for these hyperparameters."""
        return (float(hparams[self.lr_param]) * self.lr_scale,
                float(hparams.get("momentum", self.momentum)),
                float(hparams.get("weight_decay", self.weight_decay)))

    # -- data order ---------------------------------------------------------------------------

    def _new_epoch(self) -> None:
        self.epoch_state = self.gen.get_state()
        self.perm = torch.randperm(len(self.data.x_train), generator=self.gen).to(self.device)
        self.pos = 0

    def next_batch(self) -> torch.Tensor:
        """Indices of the next mini-batch (a new shuffled epoch when the last is used up)."""
        if self.pos + self.batch_size > len(self.perm):
            self._new_epoch()
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    # -- the Trainable contract -----------------------------------------------------------------

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        lr, momentum, wd = self.optimizer_settings(hparams)
        for group in self.opt.param_groups:
            group.update(lr=lr, momentum=momentum, weight_decay=wd)
        x_all, y_all = self.data.x_train, self.data.y_train
        self.model.train()
        for _ in range(steps):
            idx = self.next_batch()
            loss: torch.Tensor = self.loss(self.model(x_all[idx]), y_all[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def _score(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), self.eval_batch):
                outs.append(self.model(x[i:i + self.eval_batch]))
        out = torch.cat(outs)
        if not torch.isfinite(out).all():
            return float("nan")
        return float(self.metric(out, y))

    def evaluate(self) -> float:
        return self._score(self.data.x_val, self.data.y_val)

    def test(self) -> float | None:
        if self.data.x_test is None or self.data.y_test is None:
            return None
        return self._score(self.data.x_test, self.data.y_test)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.clone() for k, v in self.model.state_dict().items()},
                "opt": clone_state(self.opt.state_dict()),
                "epoch_state": self.epoch_state.clone(), "pos": self.pos}

    def reseed(self, seed: int) -> None:
        """A new data stream (after receiving another member's weights): a fresh shuffled
        epoch from ``seed``; weights and optimizer state are untouched."""
        self.gen.manual_seed(int(seed))
        self._new_epoch()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(clone_state(state["opt"]))
        self.gen.set_state(state["epoch_state"].cpu())
        self.perm = torch.randperm(len(self.data.x_train), generator=self.gen).to(self.device)
        self.epoch_state = state["epoch_state"].cpu().clone()
        self.pos = int(state["pos"])

