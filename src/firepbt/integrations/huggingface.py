"""Train a Hugging Face ``transformers`` model under firepbt
(``pip install 'firepbt[huggingface]'``)::

    from transformers import GPT2Config, GPT2LMHeadModel
    from firepbt.integrations.huggingface import TrainingSettings, huggingface_factory

    factory = huggingface_factory(lambda: GPT2LMHeadModel(GPT2Config(n_layer=2)),
                                  train_dataset, eval_dataset,
                                  settings=TrainingSettings(per_device_train_batch_size=16))
    space = Space({"learning_rate": LogUniform(1e-4, 3e-3),
                   "weight_decay": LogUniform(1e-4, 1e-1)})

**What you give.** ``model`` is a zero-argument callable building one worker's model (a
``lambda``, a function; called with torch's generator seeded from the worker's seed); the
datasets are shared; the batch sizes are :class:`TrainingSettings`'; the collate function is
``collate_fn`` (default: stacking equal-length examples, ``labels = input_ids`` for language
models); ``compute_metric`` replaces the mean evaluation loss.

**What a call does.** ``train(hparams, steps)`` takes exactly ``steps`` optimizer steps of
AdamW on the model's own loss (the model is called with the collated batch, as
``transformers.Trainer`` calls it: ``model(**batch).loss``). The settings are those of
``TrainingArguments`` that a training loop needs (:class:`TrainingSettings`: batch size,
AdamW's betas and epsilon, gradient clipping, gradient accumulation, the scheduler type); any
of ``learning_rate``, ``weight_decay``, ``warmup_steps`` and ``max_grad_norm`` can instead be
a hyperparameter of the space, applied at every call (weight decay on every parameter but
biases and norm weights, as the Trainer does). Any other name is refused at the first call,
before any step, as a :class:`~firepbt.errors.ConfigError` naming it and these four (it would
reach nothing: every member would train the same while the run reports a schedule). The
learning rate at step ``t`` is ``learning_rate`` times the scheduler's factor
(``constant_with_warmup``: a linear warmup over ``warmup_steps``; ``linear``: the warmup, then
a linear decay to 0 at ``total_steps``), a function of the step, so a new learning rate
applies at once and a checkpoint needs only the step. ``evaluate()`` is the mean loss over
``eval_dataset`` (``mode = "min"``), or ``compute_metric(model, eval_dataset)`` when given
(with its ``mode``). A config's ``loss_type`` (``GPT2Config(loss_type="ForCausalLM")``) is made
the model's: transformers 5 takes it from the class name only and warns where that names none.

**State**: the model's weights, AdamW's state, the step and the data position: each worker
draws batches from ``train_dataset`` (any map-style dataset: a ``datasets.Dataset``, a list, a
torch ``Dataset``) in shuffled epochs seeded by its seed, so a resumed run draws exactly the
same batches and a copy gets its own stream (``reseed``).

**Dropout.** The model's dropout draws from torch's global generator, which no checkpoint
holds: each ``train`` call seeds it from the worker's seed and data position (both in the
state; the process's generator is restored after the call), so with dropout on, two runs give
the same evaluations and a stopped and resumed run the uninterrupted one's (tested with the
example's GPT-2, dropout 0.1). What does not hold: ``train(h, 10)`` and two calls
``train(h, 4)``, ``train(h, 6)`` draw different masks (firepbt's calls are the same in a run
and its resume: the rounds and the evaluation interval fix them).

**Not supported, and why.** ``transformers.Trainer`` itself (each call would be a Trainer
resumed from a checkpoint written to disk, seconds per call; the loop here is the part of it
PBT needs), several devices per worker, ``IterableDataset`` training data (no positions to
keep).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from typing import Any, cast

import torch

from ..errors import ConfigError, check, require_extra
from ._data import Stream, seeded


def _transformers() -> Any:
    return require_extra("transformers", "the Hugging Face adapter", "the 'transformers' "
                         "package", "huggingface")


@dataclass(frozen=True)
class TrainingSettings:
    """The ``TrainingArguments`` a training loop needs, with the Trainer's defaults. Names a
    space also holds (``learning_rate``, ``weight_decay``, ``warmup_steps``, ``max_grad_norm``)
    are taken from the hyperparameters instead."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = "constant_with_warmup"
    total_steps: int | None = None

    def __post_init__(self) -> None:
        check(self.lr_scheduler_type in ("constant_with_warmup", "linear", "constant"),
              "lr_scheduler_type", "'constant_with_warmup', 'linear' or 'constant'",
              self.lr_scheduler_type)
        check(self.lr_scheduler_type != "linear" or (self.total_steps or 0) > 0,
              "total_steps", "an int > 0 with lr_scheduler_type 'linear' (the step the decay "
              "reaches 0: the run's steps)", self.total_steps)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps"):
            check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name,
                  "an int >= 1", getattr(self, name))

    def lr_factor(self, step: int) -> float:
        """The scheduler's factor at ``step`` (0-based, the step about to be taken)."""
        w = float(self.warmup_steps)
        if self.lr_scheduler_type == "constant":
            return 1.0
        if step < w:
            return (step + 1) / (w + 1)
        if self.lr_scheduler_type == "linear":
            total = float(self.total_steps or 1)
            return max(0.0, (total - step) / max(1.0, total - w))
        return 1.0


HPARAMS = ("learning_rate", "weight_decay", "warmup_steps", "max_grad_norm")


def _collate(items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stacks equal-length examples (dicts of lists or tensors) into a batch; language-model
    examples without ``labels`` get ``labels = input_ids`` (the model shifts them)."""
    batch = {k: torch.stack([torch.as_tensor(x[k]) for x in items]) for k in items[0]}
    if "labels" not in batch and "input_ids" in batch:
        batch["labels"] = batch["input_ids"].clone()
    return batch


class HuggingFaceTrainable:
    """One worker: a ``transformers`` model and its AdamW (see the module docstring). Build it
    through :func:`huggingface_factory`."""

    def __init__(self, model: Any, train_dataset: Any, eval_dataset: Any, seed: int, *,
                 settings: TrainingSettings | None = None,
                 collate_fn: Callable[[Sequence[Any]], Mapping[str, Any]] | None = None,
                 compute_metric: Callable[[Any, Any], float] | None = None,
                 mode: str = "min") -> None:
        transformers = _transformers()
        if not isinstance(model, transformers.PreTrainedModel):
            raise ConfigError("model", "a transformers PreTrainedModel (the factory's result)",
                              type(model).__name__)
        if mode not in ("max", "min"):
            raise ConfigError("mode", "'max' or 'min'", mode)
        if isinstance(train_dataset, torch.utils.data.IterableDataset):
            raise ConfigError("train_dataset", "a map-style dataset (an IterableDataset has no "
                              "positions to checkpoint)", type(train_dataset).__name__)
        self.model, self.train_dataset, self.eval_dataset = model, train_dataset, eval_dataset
        self.settings = settings or TrainingSettings()
        self.collate = collate_fn or _collate
        self.compute_metric, self.mode = compute_metric, mode
        self.step = 0
        self._n = len(cast(Sized, train_dataset))
        check(self._n > 0, "train_dataset", "a dataset with examples", self._n)
        self.model.train()
        _loss_type_of_config(self.model)
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        s = self.settings
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=s.learning_rate, betas=(s.adam_beta1, s.adam_beta2),
                                     eps=s.adam_epsilon)
        self._stream = Stream(self._n, int(seed))

    def _next_batch(self, size: int) -> dict[str, Any]:
        idx = self._stream.take(size)
        return dict(self.collate([self.train_dataset[i] for i in idx]))

    # -- the contract ---------------------------------------------------------------------

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        for name in hparams:
            if name not in HPARAMS:  # it would reach nothing: "tuned", and trained the same
                raise ConfigError("hyperparameter", f"one of {', '.join(HPARAMS)} (what the "
                                  "Hugging Face adapter applies; every other TrainingSettings "
                                  "field is fixed)", name)
        given = dict(hparams)
        s = replace(self.settings, **given) if given else self.settings
        for group in self.opt.param_groups[:1]:
            group["weight_decay"] = float(s.weight_decay)
        self.model.train()
        with seeded(self.seed, self.position):  # dropout's draws: a function of the state
            self._steps(s, steps)

    def _steps(self, s: TrainingSettings, steps: int) -> None:
        for _ in range(steps):
            lr = float(s.learning_rate) * s.lr_factor(self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            for _ in range(s.gradient_accumulation_steps):
                out = self.model(**self._next_batch(s.per_device_train_batch_size))
                (out.loss / s.gradient_accumulation_steps).backward()
            if s.max_grad_norm and s.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(s.max_grad_norm))
            self.opt.step()
            self.step += 1

    @torch.no_grad()
    def evaluate(self) -> float:
        if self.compute_metric is not None:
            return float(self.compute_metric(self.model, self.eval_dataset))
        self.model.eval()
        n = len(cast(Sized, self.eval_dataset))
        size = self.settings.per_device_eval_batch_size
        total, count = 0.0, 0
        for start in range(0, n, size):
            items = [self.eval_dataset[i] for i in range(start, min(n, start + size))]
            out = self.model(**self.collate(items))
            total += float(out.loss) * len(items)
            count += len(items)
        self.model.train()
        return total / count if count else math.nan

    def reseed(self, seed: int) -> None:
        self._stream = Stream(self._n, seed)

    @property
    def seed(self) -> int:
        return self._stream.seed

    @property
    def position(self) -> int:
        return self._stream.position

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "step": self.step, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self._stream = Stream(self._n, int(state["seed"]), int(state["position"]))


def _loss_type_of_config(model: Any) -> None:
    """The loss the config names (``GPT2Config(loss_type="ForCausalLM")``) as the model's:
    transformers 5 takes a model's loss type from its class name only, and warns "loss_type=None
    ... unrecognized" at the first forward of a class whose name holds none (GPT2LMHeadModel)."""
    named = getattr(getattr(model, "config", None), "loss_type", None)
    if getattr(model, "loss_type", "") is None and isinstance(named, str):
        try:
            from transformers.loss.loss_utils import LOSS_MAPPING
        except ImportError:  # (a transformers without it reads the config itself)
            return
        if named in LOSS_MAPPING:
            model.loss_type = named


def huggingface_factory(model: Callable[[], Any], train_dataset: Any, eval_dataset: Any, *,
                        settings: TrainingSettings | None = None,
                        collate_fn: Callable[[Sequence[Any]], Mapping[str, Any]] | None = None,
                        compute_metric: Callable[[Any, Any], float] | None = None,
                        mode: str = "min") -> Callable[[int], HuggingFaceTrainable]:
    """The factory ``seed -> trainable`` for ``run(..., factory=...)``: ``model()`` builds one
    worker's model (called with torch's generator seeded from the worker's seed, so workers
    start from different random initialisations); the datasets are shared."""
    _transformers()
    if mode not in ("max", "min"):
        raise ConfigError("mode", "'max' or 'min'", mode)

    def make(seed: int) -> HuggingFaceTrainable:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = model()
        return HuggingFaceTrainable(m, train_dataset, eval_dataset, seed, settings=settings,
                                    collate_fn=collate_fn, compute_metric=compute_metric,
                                    mode=mode)

    return make
