"""Built-in trackers made from ``--log`` specs (see :mod:`firepbt.tracking`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError

# -- specs, as --log takes them --------------------------------------------------------------

KINDS = {"tensorboard": "DIR", "wandb": "PROJECT", "mlflow": "URI"}


def make_tracker(spec: str) -> Any:
    """A built-in tracker from a ``--log`` spec: ``tensorboard:DIR``, ``wandb:PROJECT`` or
    ``mlflow:URI`` (see the module docstring)."""
    kind, sep, arg = str(spec).partition(":")
    if kind not in KINDS or not sep or not arg.strip():
        raise ConfigError("--log", "tensorboard:DIR, wandb:PROJECT or mlflow:URI", spec)
    if kind == "tensorboard":
        from .tensorboard import TensorBoardTracker

        return TensorBoardTracker(arg)
    if kind == "wandb":
        from .wandb import WandbTracker

        return WandbTracker(arg)
    from .mlflow import MLflowTracker

    return MLflowTracker(arg)


def callbacks_of(specs_or_callbacks: Iterable[Any] | None) -> list[Any]:
    """``--log`` specs made into trackers; callbacks and trackers as they are."""
    return [make_tracker(c) if isinstance(c, str) else c for c in specs_or_callbacks or ()]
