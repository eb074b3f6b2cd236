"""A supervised-learning trainable from a module, a loss and tensors: the vectorizable kind.

:class:`SupervisedTrainable` is a complete :class:`~firepbt.trainable.Trainable` for the
common case - a ``torch.nn.Module``, a loss, training/validation(/test) tensors, SGD with
momentum and weight decay, shuffled epochs - and is what the vectorized executor
(:mod:`firepbt.executors.vectorized`) knows how to train as one batched model: its batched
population, :class:`SupervisedPopulation`, is registered here
(:func:`firepbt.executors.batched.register_batched`). Write::

    def make(seed):
        return SupervisedTrainable(seed, model=MyNet(), data=SupervisedData(x, y, xv, yv),
                                   loss=torch.nn.functional.cross_entropy)

and pass ``make`` as the factory; add ``executor="vectorized"`` to train the population at once.

Hyperparameters: the learning rate is ``hparams[lr_param] * lr_scale`` (the built-in tasks use
``lambda`` with scale ``batch_size / 256``, paper 4.1.1); optional ``momentum`` and
``weight_decay`` hyperparameters override the constructor's values when present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .executors.batched import NotVectorizable, register_batched
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


# -- the batched population of the family (the vectorized executor trains it) ----------------

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU,
                nn.Identity, nn.Flatten)

def _fast_path(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *_ACTIVATIONS)) for m in model) and any(
        isinstance(m, nn.Linear) for m in model)




class SupervisedPopulation:
    """Stacked parameters, momentum buffers and data orders of N
    :class:`~firepbt.supervised.SupervisedTrainable` members for one round (SGD with momentum
    and weight decay; settings per step: learning rate, momentum, weight decay)."""

    @classmethod
    def check(cls, trainables: Sequence[object]) -> None:
        """Raise :class:`NotVectorizable` (saying why) unless these can train as one model."""
        first = trainables[0]
        assert isinstance(first, SupervisedTrainable)
        shapes = [tuple(p.shape) for p in first.model.parameters()]
        for t in trainables[1:]:
            assert isinstance(t, SupervisedTrainable)
            if [tuple(p.shape) for p in t.model.parameters()] != shapes:
                raise NotVectorizable("all members must have the same network shape; use the "
                                      "local executor for populations of different "
                                      "architectures")
            if t.data is not first.data and not torch.equal(t.data.x_train, first.data.x_train):
                raise NotVectorizable("all members must train on the same data tensors")
            if t.batch_size != first.batch_size:
                raise NotVectorizable("all members must use the same batch size")
        buffers = [n for n, _ in first.model.named_buffers()]
        if buffers and not _fast_path(first.model):
            raise NotVectorizable(
                f"the network has buffers ({', '.join(buffers[:3])}) that training updates in "
                "place (batch-norm running statistics, for instance), which torch.func.vmap "
                "cannot batch; use the local executor, or a norm layer without running "
                "statistics")

    @staticmethod
    def settings(member: SupervisedTrainable, hparams: Mapping[str, object]
                 ) -> tuple[float, float, float]:
        return member.optimizer_settings(hparams)

    def __init__(self, members: Sequence[SupervisedTrainable]) -> None:
        self.members = list(members)
        first = members[0]
        self.n = len(members)
        self.loss = first.loss
        self.data = first.data
        self.batch = first.batch_size
        self.fast = _fast_path(first.model)
        self.device = first.device
        self.names = [name for name, _ in first.model.named_parameters()]
        params_per_member = [list(m.model.parameters()) for m in members]
        self.params = [torch.stack([pm[i].detach() for pm in params_per_member]).requires_grad_()
                       for i in range(len(self.names))]
        self.bufs = []
        has_all = []
        for i in range(len(self.names)):
            col, has = [], []
            for m, pm in zip(members, params_per_member, strict=True):
                b = m.opt.state.get(pm[i], {}).get("momentum_buffer")
                has.append(b is not None)
                col.append(torch.zeros_like(pm[i]) if b is None else b.detach())
            self.bufs.append(torch.stack(col))
            has_all.append(has)
        # which members have a momentum buffer, per tensor: one copy to the device
        self.has_buf = list(torch.tensor(has_all).to(self.device).unbind(0))
        # data order: each member's current permutation and position
        self.perms = torch.stack([m.perm for m in members])
        self.pos = torch.tensor([m.pos for m in members])  # on the CPU: when epochs end
        # the same positions on the device, moved along there: a step's batch indices cost no
        # transfer (a copy from the host waits for the device's queue to drain)
        self.pos_dev = self.pos.to(self.device, copy=True)
        self.steps_dev = torch.arange(self.batch, device=self.device)
        self.n_train = len(self.data.x_train)
        if not self.fast:
            from torch.func import functional_call, grad, vmap

            base = first.model
            loss_fn = self.loss

            def member_loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                            x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return loss_fn(functional_call(base, (params, buffers), (x,)), y)

            def member_out(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                           x: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = functional_call(base, (params, buffers), (x,))
                return out

            self.buffers = {k: torch.stack([dict(m.model.named_buffers())[k] for m in members])
                            for k, _ in base.named_buffers()}
            self._grad = vmap(grad(member_loss))
            self._out = vmap(member_out, in_dims=(0, 0, None))

    # -- data -------------------------------------------------------------------------------

    def _next_indices(self) -> torch.Tensor:
        wrap = (self.pos + self.batch > self.n_train).nonzero().flatten().tolist()
        if wrap:  # members start a new shuffled epoch, as SupervisedTrainable does
            new = []
            for i in wrap:
                m = self.members[i]
                m.epoch_state = m.gen.get_state()
                new.append(torch.randperm(self.n_train, generator=m.gen))
            moved = torch.stack(new).to(self.device)  # one copy for all of them
            for r, i in enumerate(wrap):
                self.perms[i] = moved[r]
                self.pos[i] = 0
                self.pos_dev[i] = 0
        offsets = self.pos_dev[:, None] + self.steps_dev[None, :]
        self.pos += self.batch
        self.pos_dev += self.batch
        return torch.gather(self.perms, 1, offsets)

    # -- training ---------------------------------------------------------------------------

    def _sequence(self) -> list[nn.Module]:
        """The fast path's layers (its members' models are nn.Sequential)."""
        return list(cast(nn.Sequential, self.members[0].model))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path: x is (N, B, in)."""
        return self._layers(x, self._sequence(), 0)

    def _layers(self, h: torch.Tensor, layers: list[nn.Module], i: int) -> torch.Tensor:
        """Apply ``layers`` to the stacked activations ``h`` (N, B, features); ``i`` indexes the
        first stacked parameter they use."""
        for layer in layers:
            if isinstance(layer, nn.Linear):
                w = self.params[i]
                if layer.bias is not None:
                    h = torch.baddbmm(self.params[i + 1].unsqueeze(1), h, w.transpose(1, 2))
                    i += 2
                else:
                    h = torch.bmm(h, w.transpose(1, 2))
                    i += 1
            elif isinstance(layer, nn.Flatten):
                h = h.flatten(2)
            else:
                h = layer(h)
        return h

    def train(self, settings: torch.Tensor) -> None:
        """Train ``len(settings)`` steps; settings is (steps, N, 3): lr, momentum, weight decay."""
        lr, mom, wd = settings[..., 0], settings[..., 1], settings[..., 2]
        x_all, y_all = self.data.x_train, self.data.y_train
        dt = self.params[0].dtype
        # one copy to the device: (3, steps, N), each row contiguous
        lr_t, mom_t, wd_t = settings.to(device=self.device, dtype=dt).permute(2, 0, 1) \
            .contiguous()
        use_wd = bool((wd != 0).any())
        moving = mom_t != 0  # (steps, N): members with momentum at each step
        # a member without momentum keeps its buffer as torch.optim.SGD does (it skips it)
        keep_bufs = bool((mom == 0).any())
        shapes = [(-1,) + (1,) * (p.dim() - 1) for p in self.params]
        for k in range(len(lr)):
            idx = self._next_indices()
            xb, yb = x_all[idx], y_all[idx]
            if self.fast:
                out = self._forward(xb)
                if self.loss is nn.functional.cross_entropy:
                    total = nn.functional.cross_entropy(out.flatten(0, 1), yb.flatten(),
                                                        reduction="sum") / self.batch
                else:
                    total = torch.stack([self.loss(out[i], yb[i]) for i in range(self.n)]).sum()
                grads = list(torch.autograd.grad(total, self.params))
            else:
                g = self._grad(dict(zip(self.names, self.params, strict=True)), self.buffers,
                               xb, yb)
                grads = [g[n] for n in self.names]
            with torch.no_grad():
                for j, (p, d_p) in enumerate(zip(self.params, grads, strict=True)):
                    # torch.optim.SGD: d_p = g + wd * p; buf = m * buf + d_p (buf = d_p on the
                    # first step: buf is zero there and m is masked); p -= lr * buf
                    shape = shapes[j]
                    if use_wd:
                        d_p.addcmul_(wd_t[k].view(shape), p)
                    m = torch.where(self.has_buf[j], mom_t[k], torch.zeros_like(mom_t[k]))
                    buf = self.bufs[j]
                    if keep_bufs:
                        on = moving[k].view(shape)
                        step = torch.where(on, buf * m.view(shape) + d_p, d_p)
                        buf.copy_(torch.where(on, step, buf))
                    else:
                        step = buf.mul_(m.view(shape)).add_(d_p)
                    p.addcmul_(lr_t[k].view(shape), step, value=-1.0)
                    self.has_buf[j] = self.has_buf[j] | moving[k]
        self._last = (lr[-1], mom[-1], wd[-1])

    # -- evaluation -------------------------------------------------------------------------

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.fast:
                chunk = max(1, 4_000_000 // max(1, self.n * 256))
                return torch.cat([self._forward_shared(x[i:i + chunk])
                                  for i in range(0, len(x), chunk)], dim=1)
            params = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
            # all members at once on a chunk of the inputs: activations grow with N x chunk
            chunk = max(1, 8 * self.members[0].eval_batch // self.n)
            return torch.cat([self._out(params, self.buffers, x[i:i + chunk])
                              for i in range(0, len(x), chunk)], dim=1)

    def _forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path on inputs shared by all members: x is (B, in). The first Linear layer of
        every member is one (B, in) x (in, N*out) matrix multiply."""
        layers = self._sequence()
        first = next(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
        h = x.flatten(1) if any(isinstance(m, nn.Flatten) for m in layers[:first]) else x
        w = self.params[0]  # (N, out, in)
        n, out_f, _ = w.shape
        h = (h @ w.reshape(n * out_f, -1).t()).view(len(x), n, out_f).transpose(0, 1)
        i = 1
        if layers[first].bias is not None:
            h = h + self.params[1].unsqueeze(1)
            i = 2
        return self._layers(h, layers[first + 1:], i)

    def evaluate(self) -> list[float]:
        """Every member on the validation set: one batched forward pass, and for accuracy one
        batched comparison (one transfer of N values from the device)."""
        out = self._outputs(self.data.x_val)
        metric = self.members[0].metric
        finite = torch.isfinite(out).flatten(1).all(1)
        if metric is accuracy:
            acc = (out.argmax(-1) == self.data.y_val).double().mean(-1)
            acc = torch.where(finite, acc, torch.full_like(acc, math.nan))
            return [float(v) for v in acc.cpu()]
        ok = finite.cpu().tolist()
        return [float(metric(out[i], self.data.y_val)) if ok[i] else float("nan")
                for i in range(self.n)]

    def snapshot(self, i: int) -> list[torch.Tensor] | None:
        """Member i's parameters now (None when there is nothing to test)."""
        if self.data.x_test is None:
            return None
        return [p[i].detach().clone() for p in self.params]

    def test_at(self, i: int, params: list[torch.Tensor] | None) -> float | None:
        """Test member i with ``params`` (None: its current, written-back parameters)."""
        m = self.members[i]
        if self.data.x_test is None or self.data.y_test is None:
            return None
        if params is None:
            return m.test()
        current = [p.detach().clone() for p in m.model.parameters()]
        with torch.no_grad():
            for p, v in zip(m.model.parameters(), params, strict=True):
                p.copy_(v)
        try:
            return m.test()
        finally:
            with torch.no_grad():
                for p, v in zip(m.model.parameters(), current, strict=True):
                    p.copy_(v)

    # -- back to the members ------------------------------------------------------------------

    def write_back_one(self, i: int) -> None:
        m = self.members[i]
        with torch.no_grad():
            for p, stacked in zip(m.model.parameters(), self.params, strict=True):
                p.copy_(stacked[i])

    def write_back(self) -> None:
        has_buf = torch.stack(self.has_buf).cpu()  # one transfer, not one per member and tensor
        for i, m in enumerate(self.members):
            self.write_back_one(i)
            params = list(m.model.parameters())
            for j, p in enumerate(params):
                if bool(has_buf[j, i]):
                    m.opt.state[p]["momentum_buffer"] = self.bufs[j][i].detach().clone()
            if hasattr(self, "_last"):
                lr, mom, wd = (float(t[i]) for t in self._last)
                for group in m.opt.param_groups:
                    group.update(lr=lr, momentum=mom, weight_decay=wd)
            m.perm = self.perms[i].clone()
            m.pos = int(self.pos[i])


register_batched(SupervisedTrainable, SupervisedPopulation)
