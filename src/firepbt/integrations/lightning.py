"""Train a LightningModule under firepbt: the module and DataModule you have, Lightning's own
``Trainer`` doing each stretch of training (``pip install 'firepbt[lightning]'``)::

    from firepbt.integrations.lightning import lightning_factory

    factory = lightning_factory(lambda: MyModule(), lambda: MyDataModule(), metric="val_acc",
                                mode="max")
    run(ExperimentConfig(task="my-lightning-task", method="fire", workers=12, steps=3000,
                         ready_interval=120, eval_interval=10),
        "runs/lit", factory=factory, space=Space({"lr": LogUniform(1e-3, 1e-1)}))

**What you give.** ``module`` and ``datamodule`` are zero-argument callables (a class, a
``lambda``) that build one worker's LightningModule and DataModule; ``metric`` is a name the
module logs in ``validation_step`` (``self.log``), the objective; ``test_metric`` one it logs
in ``test_step`` on the DataModule's ``test_dataloader`` - without it there is no test score
anywhere (``test()`` is None); ``trainer_kwargs`` go to
every ``Trainer`` (``precision``, ``gradient_clip_val``, ``accumulate_grad_batches``, an
``accelerator``). The batch size and collate function are those of the DataModule's
``train_dataloader()`` (its ``shuffle``/sampler are replaced by firepbt's data order, below).

**What a call does.** ``train(hparams, steps)`` runs ``Trainer.fit`` for exactly ``steps``
optimizer steps (``max_steps`` = the steps so far + ``steps``; repeated ``fit`` calls on one
Trainer with ``max_steps`` train nothing, Lightning#11425, so each call is a fresh Trainer
resumed from the worker's checkpoint: about 25 ms per call for a small module on a 2-core
machine, more as the checkpoint grows, plus Lightning's validation set-up for each
``evaluate()``). The hyperparameters are applied *after* Lightning has restored that
checkpoint (``on_train_start``), so a checkpoint never brings old values back (ray#36660): each
name that is a key of the optimizers' parameter groups (``lr``, ``weight_decay``,
``momentum``, ...) is set in every group, and every name is written to ``module.hparams``
(for modules that read ``self.hparams`` in ``training_step``). ``evaluate()`` runs Lightning's
validation loop (``Trainer.validate`` on the DataModule's ``val_dataloader``) and returns the
logged ``metric``; ``test()`` the same with ``test_metric`` on ``test_dataloader``.

**Your scheduler keeps working.** A learning-rate scheduler returned by
``configure_optimizers`` multiplies the tuned rate: the tuned value is the base rate (each
scheduler's ``base_lrs``), and the factor the scheduler has reached stays on it - a group whose
rate a scheduler took from 0.1 to 0.025 (a factor 0.25) runs at ``0.25 * new`` when the tuned
value becomes ``new`` (for chainable schedulers such as ``StepLR``, ``ExponentialLR``,
``MultiStepLR``: ``tuned * gamma ** k``; ``LambdaLR``: ``tuned * lambda(step)``). The factor
is kept in the checkpoint, so resumes and copies continue it (a copy continues its source's
factor with its own tuned value). Each ``train`` call is one Lightning epoch of ``steps``
batches: schedulers with ``interval="epoch"`` step once per call (use ``"step"``). Other
group keys (``weight_decay``, ``momentum``) are kept the same way where something changes
them between calls, and set as given otherwise.

**Hyperparameters that reach nothing are refused.** A name of the space must be a key of an
optimizer's parameter groups or a name the module's code reads from ``self.hparams`` (an item,
an attribute, ``get``; in ``configure_optimizers``, a step or a hook, at the worker's first
``train`` call or an evaluation before it): else firepbt would "tune" it while every member
trains the same, and the first call raises :class:`~firepbt.errors.ConfigError` naming it, the
groups' keys and the names read (before the first round is committed: no store is left).
Reads in ``__init__`` do not count (they happen before the tuned value exists). A module whose
``hparams`` is no dict (an OmegaConf container) is not checked; ``check_hparams=False`` turns
the check off (a module that reads a name only after its first call).

**Misconfigurations in one line** (:class:`~firepbt.errors.ConfigError`, before the first
round): a DataModule without ``train_dataloader`` or ``val_dataloader`` (or ``None``, or
Lightning's default that is not implemented), without ``test_dataloader`` or a module without
``test_step`` when ``test_metric`` is given, a module without ``validation_step``, a
``Trainer`` setting this machine cannot run (``accelerator="gpu"`` without a GPU), a module
that moves itself to CUDA on a machine without it, a ``metric`` the module does not log.

**State** (``state_dict``): Lightning's own checkpoint (weights, optimizers, schedulers, loops,
callbacks), the data position and the last hyperparameters applied. The data order is
firepbt's: each worker draws its batches from the DataModule's training dataset in shuffled
epochs seeded by the worker's seed, and the position in that stream is part of the state, so
a stopped and resumed run draws exactly the same batches and a copied member gets a stream of
its own (``reseed``). Randomness inside the module (dropout) draws from torch's global
generator, which Lightning does not checkpoint: each ``train`` call seeds it from the worker's
seed and data position (both in the state; the process's own generator state is restored
after the call), so runs repeat and resumes are exact with dropout too.

**Not supported, and why.** More than one device or process per worker (``devices`` > 1,
DDP: a worker is one process here; the Ray executor spreads workers instead), manual
optimization's schedulers, ``IterableDataset`` training data (no positions to keep).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any, cast

import torch

from ..errors import ConfigError, require_extra
from ._data import Stream, seeded
from ._reads import track


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
                 trainer_kwargs: Mapping[str, Any] | None = None,
                 check_hparams: bool = True) -> None:
        L = _lightning()
        if not isinstance(module, L.LightningModule):
            raise ConfigError("module", "a lightning.LightningModule (the factory's result)",
                              type(module).__name__)
        if mode not in ("max", "min"):
            raise ConfigError("mode", "'max' or 'min'", mode)
        _check_hooks(module, datamodule, test_metric)
        self.module, self.datamodule = module, datamodule
        self.metric, self.mode, self.test_metric = metric, mode, test_metric
        self.trainer_kwargs = dict(trainer_kwargs or {})
        try:  # Lightning checks its settings (accelerator, devices, precision) when built
            with _quiet():
                self._trainer()
        except Exception as exc:  # noqa: BLE001 - whatever Lightning refuses, in one line
            raise ConfigError("trainer_kwargs", "settings Lightning's Trainer accepts on this "
                              f"machine (Lightning: {_line(exc)})", self.trainer_kwargs) from exc
        self.seed, self.position = int(seed), 0
        self.checkpoint: dict[str, Any] | None = None  # Lightning's, after the last fit
        self.global_step = 0
        # the hyperparameters the last call applied: the previous base of a scheduler's factor
        self.applied: dict[str, Any] = {}
        self._reads: set[str] = set()  # the names the module's code read from self.hparams
        self._tracked = track(module.hparams, self._reads)
        self._names_checked = not check_hparams
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

        hp, applied = dict(hparams), self.applied
        trained = [0]
        keys: set[str] = set()  # the optimizers' parameter-group keys
        # (again: a module may have replaced its hparams since, e.g. in setup())
        self._tracked = self._tracked and track(self.module.hparams, self._reads)

        class Apply(Callback):  # after the checkpoint is restored: the new values win
            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                keys.update(_apply(trainer, pl_module, hp, applied))

            def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
                trained[0] += 1

        accumulate = int(self.trainer_kwargs.get("accumulate_grad_batches", 1))
        loader = torch.utils.data.DataLoader(
            self._dataset, batch_sampler=_Batches(self._n, self._batch_size, self.seed,
                                                  self.position, steps * accumulate),
            collate_fn=self._collate)
        with _quiet(), _no_cuda(), seeded(self.seed, self.position), \
                tempfile.TemporaryDirectory(prefix="firepbt-lightning-") as tmp:
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
        self.applied = hp
        if not self._names_checked:
            self._names_checked = True
            self._check_names(hp, keys)

    def _check_names(self, hparams: Mapping[str, Any], keys: set[str]) -> None:
        """Each hyperparameter reaches the training: a key of the optimizers' parameter groups,
        or a name the module's code read from ``self.hparams`` (in this first call, or an
        evaluation before it); else it would be "tuned" while every member trains the same."""
        if not self._tracked:  # (hparams that are no dict: their reads are unknown)
            return
        for name in hparams:
            if name not in keys and name not in self._reads:
                groups = ", ".join(sorted(keys)) or "no optimizer"
                read = ", ".join(sorted(self._reads)) or "nothing"
                raise ConfigError("hyperparameter", "a key of the optimizers' parameter groups "
                                  f"({groups}) or a name the module reads from self.hparams "
                                  f"(it read: {read}): tuning a name that reaches neither "
                                  "changes nothing (one read only later: check_hparams=False)",
                                  name)

    def _validate(self, loader_name: str, metric: str, stage: str) -> float:
        loader = getattr(self.datamodule, loader_name)()
        if loader is None:
            raise ConfigError(loader_name, "a DataModule method returning a DataLoader", None)
        with _quiet(), _no_cuda():
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
        if self.test_metric is None:
            return None
        return self._validate("test_dataloader", self.test_metric, "test")

    def reseed(self, seed: int) -> None:
        self.seed, self.position = int(seed), 0

    def state_dict(self) -> dict[str, Any]:
        # (Lightning's AttributeDicts become plain dicts in the store, as every dict subclass)
        return {"checkpoint": self.checkpoint, "weights": self.module.state_dict(),
                "seed": self.seed, "position": self.position, "global_step": self.global_step,
                "applied": dict(self.applied)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])  # now: evaluate() sees the copy
        self.checkpoint = None if state["checkpoint"] is None else dict(state["checkpoint"])
        self.seed, self.position = int(state["seed"]), int(state["position"])
        self.global_step = int(state["global_step"])
        self.applied = dict(state.get("applied") or {})  # (stores before it: none)


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


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _on_top(current: Any, tuned: Any, previous: Any) -> Any:
    """A group's value for the ``tuned`` one, keeping the factor a scheduler (or anything
    else) applied to the ``previous`` tuned value since: ``tuned * current / previous``, exact
    where nothing changed it (``tuned``) or the tuned value is the same (``current``)."""
    if previous is None or not (_number(current) and _number(tuned) and _number(previous)):
        return tuned
    if current == previous or previous == 0:
        return tuned
    if tuned == previous:
        return current
    return tuned * (current / previous)


def _apply(trainer: Any, module: Any, hparams: Mapping[str, Any],
           applied: Mapping[str, Any]) -> set[str]:
    """The hyperparameters into the optimizers' groups (on top of their schedulers' factors),
    the schedulers' base rates and ``module.hparams`` (see the module docstring); the groups'
    keys."""
    keys: set[str] = set()
    for opt in trainer.optimizers:
        scheds = [c.scheduler for c in trainer.lr_scheduler_configs
                  if getattr(c.scheduler, "optimizer", None) is opt]
        bases = [s.base_lrs for s in scheds if isinstance(getattr(s, "base_lrs", None), list)]
        for i, group in enumerate(opt.param_groups):
            keys.update(str(k) for k in group if k != "params")
            for k, v in hparams.items():
                if k in group:
                    previous = applied.get(k)
                    if previous is None and k == "lr" and bases and i < len(bases[0]):
                        previous = bases[0][i]  # a first call: configure_optimizers's rate
                    group[k] = _on_top(group[k], v, previous)
            if "lr" in hparams and "initial_lr" in group:
                group["initial_lr"] = hparams["lr"]
        if "lr" in hparams:
            for sched in scheds:
                if isinstance(getattr(sched, "base_lrs", None), list):
                    sched.base_lrs = [hparams["lr"]] * len(sched.base_lrs)
                if isinstance(getattr(sched, "_last_lr", None), list):
                    sched._last_lr = [g["lr"] for g in opt.param_groups]
    with contextlib.suppress(AttributeError, TypeError):
        for k, v in hparams.items():
            module.hparams[k] = v
    return keys


def _line(exc: BaseException) -> str:
    """An exception as one line: its type and its message's words."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


@contextlib.contextmanager
def _no_cuda() -> Iterator[None]:
    """A module's own move to CUDA on a machine without it, as one line (not a traceback)."""
    try:
        yield
    except (AssertionError, RuntimeError) as exc:
        if torch.cuda.is_available() or not re.search(r"CUDA|NVIDIA|cuda", str(exc)):
            raise
        raise ConfigError("module", "a LightningModule that runs without CUDA, which this "
                          "machine lacks (the Trainer moves the module to its device: leave "
                          ".to('cuda') / .cuda() out of it)", _line(exc)) from exc


def _check_hooks(module: Any, datamodule: Any, test_metric: str | None) -> None:
    """The DataModule's loaders and the module's steps the adapter calls, each refused in one
    line where it is missing (None, or Lightning's default that raises)."""
    from lightning.pytorch.core.hooks import DataHooks
    from lightning.pytorch.utilities.model_helpers import is_overridden

    loaders = [("train_dataloader", "the training DataLoader (firepbt draws the batches from "
                "its dataset, with its batch size and collate function)"),
               ("val_dataloader", "the validation DataLoader (evaluate() runs Trainer.validate "
                "on it)")]
    if test_metric is not None:
        loaders.append(("test_dataloader", "the test DataLoader (test() runs Trainer.test on "
                        "it for test_metric)"))
    for name, what in loaders:
        fn = getattr(datamodule, name, None)
        if not callable(fn):
            raise ConfigError(name, f"a method of the DataModule returning {what}", fn)
        if getattr(fn, "__func__", None) is getattr(DataHooks, name):
            raise ConfigError(name, f"a method of the DataModule returning {what}",
                              f"Lightning's default, which is not implemented "
                              f"({type(datamodule).__name__} does not define it)")
    steps = [("validation_step", "evaluate() runs Trainer.validate")]
    if test_metric is not None:
        steps.append(("test_step", "test() runs Trainer.test for test_metric"))
    for name, why in steps:
        if not is_overridden(name, module):
            raise ConfigError("module", f"a LightningModule with a {name} that logs the metric "
                              f"({why})", f"{type(module).__name__} without {name}")


def lightning_factory(module: Callable[[], Any], datamodule: Callable[[], Any], *, metric: str,
                      mode: str = "max", test_metric: str | None = None,
                      trainer_kwargs: Mapping[str, Any] | None = None,
                      seed_everything: bool = True,
                      check_hparams: bool = True) -> Callable[[int], LightningTrainable]:
    """The factory ``seed -> trainable`` for ``run(..., factory=...)``: ``module()`` and
    ``datamodule()`` build one worker's LightningModule and DataModule (called with torch's
    generator seeded from the worker's seed when ``seed_everything``, so workers start from
    different weights); ``trainer_kwargs`` go to every ``Trainer`` (e.g. ``precision``,
    ``gradient_clip_val``, ``accumulate_grad_batches``); ``check_hparams=False`` turns off the
    check that each hyperparameter reaches the training (for a module that reads one only after
    its first call, e.g. from a step count on)."""
    L = _lightning()
    if mode not in ("max", "min"):
        raise ConfigError("mode", "'max' or 'min'", mode)
    for name, fn, built in (("module", module, L.LightningModule),
                            ("datamodule", datamodule, L.LightningDataModule)):
        if isinstance(fn, built) or not callable(fn):
            raise ConfigError(name, f"a zero-argument callable that builds one worker's "
                              f"{built.__name__} (its class, a lambda)", type(fn).__name__)

    def make(seed: int) -> LightningTrainable:
        with torch.random.fork_rng(devices=[]), _no_cuda():
            if seed_everything:
                torch.manual_seed(seed)
            mod, dm = module(), datamodule()
        return LightningTrainable(mod, dm, seed, metric=metric, mode=mode,
                                  test_metric=test_metric, trainer_kwargs=trainer_kwargs,
                                  check_hparams=check_hparams)

    return make
