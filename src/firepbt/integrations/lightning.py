"""Train a LightningModule under firepbt: the module and DataModule you have, Lightning's own
``Trainer`` doing each stretch of training (``pip install 'firepbt[lightning]'``)::

    from firepbt.integrations.lightning import lightning_factory

    factory = lightning_factory(lambda: MyModule(), lambda: MyDataModule(), metric="val_acc",
                                mode="max")
    run(ExperimentConfig(task="my-lightning-task", method="fire", workers=12, steps=3000,
                         ready_interval=120, eval_interval=10),
        "runs/lit", factory=factory, space=Space({"lr": LogUniform(1e-3, 1e-1)}))

**What a call does.** ``train(hparams, steps)`` runs ``Trainer.fit`` for exactly ``steps``
optimizer steps (``max_steps`` = the steps so far + ``steps``; repeated ``fit`` calls on one
Trainer with ``max_steps`` train nothing, Lightning#11425, so each call is a fresh Trainer
resumed from the worker's checkpoint). The hyperparameters are applied *after* Lightning has
restored that checkpoint (``on_train_start``), so a checkpoint never brings old values back
(ray#36660): each name that is a key of the optimizers' parameter groups (``lr``,
``weight_decay``, ``momentum``, ...) is set in every group, ``lr`` also as the base rate of each
learning-rate scheduler, and every name is written to ``module.hparams`` (for modules that read
``self.hparams`` in ``training_step``). ``evaluate()`` runs Lightning's validation loop
(``Trainer.validate`` on the DataModule's ``val_dataloader``) and returns the logged ``metric``;
``test()`` the same with ``test_metric`` on ``test_dataloader`` when given.

**State** (``state_dict``): Lightning's own checkpoint (weights, optimizers, schedulers, loops,
callbacks) plus the data position. The data order is firepbt's: each worker draws its batches
from the DataModule's training dataset (its ``train_dataloader()``'s dataset, batch size and
collate function) in shuffled epochs seeded by the worker's seed, and the position in that
stream is part of the state, so a stopped and resumed run draws exactly the same batches and
a copied member gets a stream of its own (``reseed``). Each ``train`` call is one Lightning
epoch of ``steps`` batches: schedulers with ``interval="epoch"`` step once per call (use
``"step"``).

**Not supported, and why.** More than one device or process per worker (``devices`` > 1,
DDP: a worker is one process here; the Ray executor spreads workers instead), manual
optimization's schedulers, ``IterableDataset`` training data (no positions to keep), and
randomness inside the module (dropout) drawn from the global torch generator, which Lightning
does not checkpoint: resumes are then not bit-exact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any, cast

import torch

from ..errors import ConfigError, require_extra
from ._data import Stream


def _lightning() -> Any:
    return require_extra("lightning", "the Lightning adapter", "the 'lightning' package",
                         "lightning")


class _Batches(torch.utils.data.Sampler[list[int]]):
    """``count`` batches of the worker's stream from ``position`` (samples drawn so far):
    epochs of a permutation seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, position: int, count: int) -> None:
        self.n, self.batch_size, self.seed, self.position, self.count = (
            n, batch_size, seed, position, count)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        stream = Stream(self.n, self.seed, self.position)
        for _ in range(self.count):
            yield stream.take(self.batch_size)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """Lightning's start-up lines (GPU available, tips) and its warnings about this use (no
    logger, few batches), once per call: not what a firepbt run prints."""
    stack = contextlib.ExitStack()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        lg = logging.getLogger(name)
        old = lg.level
        lg.setLevel(logging.ERROR)
        stack.callback(lg.setLevel, old)
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?|pytorch_lightning(\..*)?")
    return stack


class LightningTrainable:
    """One worker: a LightningModule and its DataModule (see the module docstring). Build it
    through :func:`lightning_factory`."""

    def __init__(self, module: Any, datamodule: Any, seed: int, *, metric: str,
                 mode: str = "max", test_metric: str | None = None,
                 trainer_kwargs: Mapping[str, Any] | None = None) -> None:
        L = _lightning()
        if not isinstance(module, L.LightningModule):
            raise ConfigError("module", "a lightning.LightningModule (the factory's result)",
                              type(module).__name__)
        if mode not in ("max", "min"):
            raise ConfigError("mode", "'max' or 'min'", mode)
        self.module, self.datamodule = module, datamodule
        self.metric, self.mode, self.test_metric = metric, mode, test_metric
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.seed, self.position = int(seed), 0
        self.checkpoint: dict[str, Any] | None = None  # Lightning's, after the last fit
        self.global_step = 0
        if hasattr(datamodule, "prepare_data"):
            datamodule.prepare_data()
        if hasattr(datamodule, "setup"):
            datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        self._dataset = loader.dataset
        self._batch_size = int(loader.batch_size or 1)
        self._collate = loader.collate_fn
        if isinstance(self._dataset, torch.utils.data.IterableDataset):
            raise ConfigError("train_dataloader", "a map-style dataset (an IterableDataset has no "
                              "positions to checkpoint)", type(self._dataset).__name__)
        self._n = len(cast(Sized, self._dataset))

    # -- Lightning ------------------------------------------------------------------------

    def _trainer(self, **kwargs: Any) -> Any:
        L = _lightning()
        base = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                    devices=1)
        base.update(self.trainer_kwargs)
        base.update(kwargs)
        return L.Trainer(**base)

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        _lightning()
        from lightning.pytorch.callbacks import Callback

        hp = dict(hparams)
        trained = [0]

        class Apply(Callback):  # after the checkpoint is restored: the new values win
            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                _apply(trainer, pl_module, hp)

            def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
                trained[0] += 1

        accumulate = int(self.trainer_kwargs.get("accumulate_grad_batches", 1))
        loader = torch.utils.data.DataLoader(
            self._dataset, batch_sampler=_Batches(self._n, self._batch_size, self.seed,
                                                  self.position, steps * accumulate),
            collate_fn=self._collate)
        with _quiet(), tempfile.TemporaryDirectory(prefix="firepbt-lightning-") as tmp:
            ckpt = None
            if self.checkpoint is not None:
                ckpt = os.path.join(tmp, "in.ckpt")
                torch.save(self.checkpoint, ckpt)
            trainer = self._trainer(max_steps=self.global_step + steps, limit_val_batches=0,
                                    callbacks=[Apply(), *self.trainer_kwargs.get("callbacks",
                                                                                 [])])
            trainer.fit(self.module, train_dataloaders=loader, ckpt_path=ckpt)
            out = os.path.join(tmp, "out.ckpt")
            trainer.save_checkpoint(out)
            # written by this process a moment ago: Lightning's checkpoint holds its own types
            self.checkpoint = _epoch_done(torch.load(out, weights_only=False,
                                                     map_location="cpu"))
        self.global_step = int(trainer.global_step)
        self.position += trained[0] * self._batch_size

    def _validate(self, loader_name: str, metric: str, stage: str) -> float:
        loader = getattr(self.datamodule, loader_name)()
        with _quiet():
            trainer = self._trainer()
            run = trainer.validate if stage == "validate" else trainer.test
            results = run(self.module, dataloaders=loader, verbose=False)
        values = {k: v for r in results for k, v in r.items()}
        if metric not in values:
            raise ConfigError("metric", f"a metric the module logs in its {stage} step "
                              f"(it logged {sorted(values)})", metric)
        return float(values[metric])

    # -- the contract ---------------------------------------------------------------------

    def evaluate(self) -> float:
        return self._validate("val_dataloader", self.metric, "validate")

    def test(self) -> float | None:
        if self.test_metric is None or not hasattr(self.datamodule, "test_dataloader"):
            return None
        return self._validate("test_dataloader", self.test_metric, "test")

    def reseed(self, seed: int) -> None:
        self.seed, self.position = int(seed), 0

    def state_dict(self) -> dict[str, Any]:
        # (Lightning's AttributeDicts become plain dicts in the store, as every dict subclass)
        return {"checkpoint": self.checkpoint, "weights": self.module.state_dict(),
                "seed": self.seed, "position": self.position, "global_step": self.global_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])  # now: evaluate() sees the copy
        self.checkpoint = None if state["checkpoint"] is None else dict(state["checkpoint"])
        self.seed, self.position = int(state["seed"]), int(state["position"])
        self.global_step = int(state["global_step"])


def _epoch_done(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint as at the end of an epoch: a call's epoch is its ``steps`` batches, all
    trained. Left as saved (the last batch's progress still "current"), Lightning resumes it
    as an unfinished epoch and starts the next call's loader twice, training its first batch
    again."""
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    if isinstance(progress, dict) and isinstance(progress.get("current"), dict):
        progress["current"] = {k: 0 for k in progress["current"]}
        progress["is_last_batch"] = False
    return ckpt


def _apply(trainer: Any, module: Any, hparams: Mapping[str, Any]) -> None:
    """The hyperparameters into the optimizers' groups, the schedulers' base rates and
    ``module.hparams`` (see the module docstring)."""
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            for k, v in hparams.items():
                if k in group:
                    group[k] = v
    if "lr" in hparams:
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [hparams["lr"]] * len(sched.base_lrs)
    with contextlib.suppress(AttributeError, TypeError):
        for k, v in hparams.items():
            module.hparams[k] = v


def lightning_factory(module: Callable[[], Any], datamodule: Callable[[], Any], *, metric: str,
                      mode: str = "max", test_metric: str | None = None,
                      trainer_kwargs: Mapping[str, Any] | None = None,
                      seed_everything: bool = True) -> Callable[[int], LightningTrainable]:
    """The factory ``seed -> trainable`` for ``run(..., factory=...)``: ``module()`` and
    ``datamodule()`` build one worker's LightningModule and DataModule (called with torch's
    generator seeded from the worker's seed when ``seed_everything``, so workers start from
    different weights); ``trainer_kwargs`` go to every ``Trainer`` (e.g. ``precision``,
    ``gradient_clip_val``, ``accumulate_grad_batches``)."""
    _lightning()
    if mode not in ("max", "min"):
        raise ConfigError("mode", "'max' or 'min'", mode)

    def make(seed: int) -> LightningTrainable:
        with torch.random.fork_rng(devices=[]):
            if seed_everything:
                torch.manual_seed(seed)
            mod, dm = module(), datamodule()
        return LightningTrainable(mod, dm, seed, metric=metric, mode=mode,
                                  test_metric=test_metric, trainer_kwargs=trainer_kwargs)

    return make
