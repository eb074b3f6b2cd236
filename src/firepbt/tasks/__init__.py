"""Built-in tasks: each is a trainable factory, a hyperparameter space and sensible defaults.

``get_task(name)`` returns a :class:`Task`. CLI names: ``mnist1d``, ``nqm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..space import Space
from ..trainable import Trainable


@dataclass(frozen=True)
class Task:
    """A built-in task.

    ``make(seed, **options)`` builds one worker's trainable; ``schedule_param`` is the
    hyperparameter the hand-tuned schedule (random search) applies to; ``defaults`` are the
    run settings of the README's small default experiment.
    """

    name: str
    description: str
    make: Callable[..., Trainable]
    space: Space
    schedule_param: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    has_test: bool = True
    options: tuple[str, ...] = ()


def _mnist1d(seed: int, **options: Any) -> Trainable:
    from .mnist1d import MNIST1DTrainable

    return MNIST1DTrainable(seed, **options)


def _mnist(seed: int, **options: Any) -> Trainable:
    from .mnist import MNISTTrainable

    return MNISTTrainable(seed, **options)


def _nqm(seed: int, **options: Any) -> Trainable:
    from .nqm import NQMTrainable

    return NQMTrainable(seed, **options)


def _space(module: str) -> Space:
    if module == "mnist1d":
        from .mnist1d import SPACE
    else:
        from .nqm import SPACE
    return SPACE


TASKS: dict[str, Task] = {
    "mnist1d": Task("mnist1d", "MNIST-1D, MLP 40-256-256-10, SGD momentum 0.9, batch 128; "
                    "objective: validation accuracy (or macro F1)", _mnist1d, _space("mnist1d"),
                    "lambda", {"workers": 11, "steps": 1500, "ready_interval": 125,
                               "eval_interval": 25}, True,
                    ("objective", "weight_decay", "full_train")),
    "mnist": Task("mnist", "MNIST from the four IDX files in --data-dir (no download), small "
                  "CNN, SGD momentum 0.9, batch 128; objective: validation accuracy (or macro F1)",
                  _mnist, _space("mnist1d"), "lambda",
                  {"workers": 11, "steps": 1500, "ready_interval": 125, "eval_interval": 25},
                  True, ("objective", "weight_decay", "full_train", "data_dir")),
    "nqm": Task("nqm", "noisy quadratic model, 10,000 dims, h_i = 1/i, exact expected loss "
                "(min), momentum 0.9", _nqm, _space("nqm"), "lr",
                {"workers": 16, "steps": 3000, "ready_interval": 50, "eval_interval": 10}, False,
                ("dims",)),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError("task", f"one of {sorted(TASKS)}", name)
    return TASKS[name]
