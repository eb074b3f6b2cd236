"""Train the whole population as one batched model (stacked weights, one forward/backward).

:class:`VectorizedExecutor` takes the same trainable factory as the local executor, provided
its trainables belong to a family that declares a batched population
(:mod:`firepbt.batched`: ``register_batched``); the executor itself knows no task. This module
registers :class:`SupervisedPopulation` for
:class:`~firepbt.supervised.SupervisedTrainable` workers (same data, batch size and network
shape; each its own weights, data order and hyperparameters). During a round the members'
parameters, momentum buffers and data orders are stacked along a leading member dimension and
trained together:

- ``nn.Sequential`` stacks of ``Linear`` layers and element-wise activations take a fast path of
  batched matrix multiplies (``torch.baddbmm``);
- any other module goes through ``torch.func`` (``stack_module_state``, ``functional_call``,
  ``vmap``), which needs a module without in-place buffer updates (no batch-norm running
  statistics); others are refused with a clear error that suggests the local executor.

SGD with momentum and weight decay is applied with per-member learning rate, momentum and
weight decay tensors, exactly as ``torch.optim.SGD`` does it (``buf = m * buf + (g + wd * p)``,
``p -= lr * buf``). At the end of a round the results are written back into the per-member
trainables, so copies (exploit, evaluators), checkpoints and the store are exactly those of the
local executor. Results agree with the local executor to floating-point rounding: batched and
single matrix multiplies round differently (tests run both in float64 and compare).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from .batched import NotVectorizable, population_type, register_batched
from .errors import TrainableError
from .executor import BestPoint, LocalExecutor, TrainJob, TrainResult, build_population, score_of
from .supervised import SupervisedTrainable, accuracy
from .trainable import Trainable, TrainableFactory, mode_of

_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU,
                nn.Identity, nn.Flatten)

__all__ = ["NotVectorizable", "SupervisedPopulation", "VectorizedExecutor"]


def _fast_path(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *_ACTIVATIONS)) for m in model) and any(
        isinstance(m, nn.Linear) for m in model)


class VectorizedExecutor(LocalExecutor):
    """Trains all workers of a synchronous round as one batched model (see module doc).

    Copies, tests and checkpoints act on the per-member trainables, as in the local executor
    (the batched state is written back into them at the end of every round).

    Args:
        factory: ``seed -> SupervisedTrainable``.
        threads: torch intra-op threads while training (None: leave torch's setting).
    """

    def __init__(self, factory: TrainableFactory, threads: int | None = None) -> None:
        super().__init__(factory)
        self.threads = threads

    # -- executor contract ----------------------------------------------------------------

    def setup(self, seeds: Mapping[int, int],
              built: Mapping[int, Trainable] | None = None) -> None:
        made = dict(built) if built else build_population(self.factory, seeds)
        self.trainables = made  # kept when refused: the local executor adopts them
        self.population = population_type(list(made.values()))
        self.mode = {mode_of(t) for t in made.values()}.pop()

    def train_round(self, jobs: Sequence[TrainJob], best_score: float,
                    progress: Callable[[int], None] | None = None,
                    best: BestPoint | None = None) -> list[TrainResult]:
        """The round's jobs as one batched model; the round's best point is offered to
        ``best`` (default: a new :class:`~firepbt.executor.BestPoint` from ``best_score``, which
        :meth:`test_best` then asks)."""
        if best is None:  # (one given by the caller is the caller's to ask and let go)
            self.best = best = BestPoint(best_score)
        if not jobs:
            return []
        # (who trains, as a round deadline names it: all of them at once)
        self.current = f"the batched population (workers {jobs[0].worker}-{jobs[-1].worker})"
        old_threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._train_round(jobs, best, progress)
        finally:
            if self.threads is not None:
                torch.set_num_threads(old_threads)

    # -- the batched round -----------------------------------------------------------------

    def _train_round(self, jobs: Sequence[TrainJob], best: BestPoint,
                     progress: Callable[[int], None] | None) -> list[TrainResult]:
        workers = [j.worker for j in jobs]
        members = [self.trainables[w] for w in workers]
        start = jobs[0].start
        n_steps = sum(n for _, n in jobs[0].pieces)
        eval_interval = jobs[0].eval_interval
        for j in jobs:
            if j.start != start or sum(n for _, n in j.pieces) != n_steps or \
                    j.eval_interval != eval_interval:
                raise ValueError("a vectorized round needs every job to cover the same steps")
        # per-step settings of every member as runs of (settings, steps); the (steps, N, k)
        # tensors are built one chunk at a time, so a long round costs no memory
        pop = self.population(members)
        runs = [[(tuple(pop.settings(m, h)), n) for h, n in j.pieces]
                for m, j in zip(members, jobs, strict=True)]
        # the round's best point worth a test (firepbt.executor.BestPoint), its parameters
        # kept (a snapshot, or None at the round's end), offered to ``best`` if the round ends
        cand: tuple[float, int, int, int, Any] | None = None  # score, step, worker, i, snapshot
        evals: dict[int, list[tuple[int, float]]] = {w: [] for w in workers}
        t_train = t_eval = 0.0
        end = start + n_steps

        def evaluate(step: int) -> None:
            nonlocal t_eval, cand
            t0 = time.perf_counter()
            values = pop.evaluate()
            for i, (w, j) in enumerate(zip(workers, jobs, strict=True)):
                evals[w].append((step, values[i]))
                sc = score_of(values[i], self.mode)
                if j.wants_test and best.beats(sc, step, w) and \
                        (cand is None or (sc, -step, -w) > (cand[0], -cand[1], -cand[2])):
                    cand = (sc, step, w, i, None if step == end else pop.snapshot(i))
            t_eval += time.perf_counter() - t0

        step = start
        try:
            if any(j.evaluate_start for j in jobs):
                evaluate(step)
            k = 0
            while k < n_steps:
                to_eval = eval_interval - (step % eval_interval)
                n = min(to_eval, n_steps - k, _CHUNK)
                settings = _settings_chunk(runs, k, n)
                t0 = time.perf_counter()
                pop.train(settings)
                t_train += time.perf_counter() - t0
                k += n
                step += n
                if progress is not None:
                    progress(n * len(jobs))
                if step % eval_interval == 0:
                    evaluate(step)
        except Exception as exc:  # the batched model cannot tell which member failed
            import traceback

            raise TrainableError(-1, step, traceback.format_exc()) from exc
        pop.write_back()
        held = None
        if cand is not None and best.beats(cand[0], cand[1], cand[2]):
            sc, at, held, i, snap = cand
            best.hold(sc, at, held, lambda: pop.test_at(i, snap))
        share = 1.0 / len(jobs)
        return [TrainResult(w, tuple(evals[w]), (), t_train * share, t_eval * share, w == held)
                for w in workers]


_CHUNK = 1024  # steps whose per-step settings are materialised at once


def _settings_chunk(runs: Sequence[Sequence[tuple[tuple[float, ...], int]]], k: int,
                    n: int) -> torch.Tensor:
    """The settings of steps ``k .. k+n`` of a round: one ``(n, N, k)`` float64 tensor, from
    each member's runs of ``(settings, steps)``."""
    cols = []
    for member_runs in runs:
        col: list[tuple[float, ...]] = []
        pos = 0
        for settings, m in member_runs:
            lo, hi = max(k, pos), min(k + n, pos + m)
            if lo < hi:
                col += [settings] * (hi - lo)
            pos += m
            if pos >= k + n:
                break
        cols.append(col)
    return torch.tensor(cols, dtype=torch.float64).permute(1, 0, 2)  # (n, N, k)


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
