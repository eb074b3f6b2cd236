"""The user contract: what firepbt needs from training code.

A *trainable factory* is any callable ``make(seed) -> Trainable``. firepbt creates one
trainable per worker, each from its own seed, and only ever calls the methods below, from one
thread, in this order: ``make(seed)``, then any sequence of ``train``/``evaluate``/``test``/
``state_dict``/``load_state_dict``.

- ``train(hparams, steps)`` trains ``steps`` more steps with these hyperparameters. It is
  called again whenever they change; apply them at every call (e.g. set the optimizer's
  learning rate), since ``load_state_dict`` may have brought another member's optimizer state.
- ``evaluate()`` returns the objective on the validation data (a float; NaN/inf mean
  diverged). Set ``mode = "min"`` on the trainable when lower is better; firepbt converts once.
- ``test()`` (optional) returns the objective on held-out test data, or None.
- ``state_dict()`` returns everything needed to continue exactly: weights, optimizer state and
  the data-order random state, made of tensors, numbers, strings and containers of them (it is
  saved with ``torch.save`` and loaded with ``weights_only=True``). ``load_state_dict`` takes one
  back. Copying a member (exploit, evaluator) is ``dst.load_state_dict(src.state_dict())``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Trainable(Protocol):
    """One worker's training state and the operations firepbt calls on it."""

    def train(self, hparams: Mapping[str, Any], steps: int) -> None: ...

    def evaluate(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


TrainableFactory = Callable[[int], Trainable]


def mode_of(trainable: object) -> str:
    """``"max"`` or ``"min"``: the trainable's declared direction (default max)."""
    mode = getattr(trainable, "mode", "max")
    if mode not in ("max", "min"):
        raise ValueError(f"Trainable.mode must be one of ['max', 'min'], got {mode!r}")
    return mode


def test_of(trainable: object) -> float | None:
    fn = getattr(trainable, "test", None)
    return None if fn is None else fn()


def _export(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Generator):
        return {"__generator__": obj.get_state()}
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return copy.deepcopy(obj.state_dict())
    if isinstance(obj, dict):
        return {k: _export(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    return copy.deepcopy(obj)


def _import(target: Any, saved: Any) -> Any:
    """Load ``saved`` into ``target`` in place where it can, returning the new value."""
    import torch

    if isinstance(target, torch.Generator):
        target.set_state(saved["__generator__"])
        return target
    if hasattr(target, "load_state_dict") and callable(target.load_state_dict):
        target.load_state_dict(copy.deepcopy(saved))
        return target
    if isinstance(target, dict):
        for k, v in saved.items():
            target[k] = _import(target[k], v) if k in target else copy.deepcopy(v)
        return target
    if isinstance(target, torch.Tensor):
        with torch.no_grad():
            target.copy_(saved)
        return target
    return copy.deepcopy(saved)


class FunctionTrainable:
    """Adapts three plain functions to the :class:`Trainable` contract.

    ``init(seed)`` returns a dict of the run's objects (modules, optimizers, torch generators,
    tensors, numbers); ``train(state, hparams, steps)`` trains in place; ``evaluate(state)``
    (and optionally ``test(state)``) return floats. Saving calls ``state_dict()`` of every
    object that has one (and ``get_state()`` of generators), so copies carry weights, optimizer
    state and data order.
    """

    def __init__(self, seed: int, init: Callable[[int], dict[str, Any]],
                 train: Callable[[dict[str, Any], Mapping[str, Any], int], Any],
                 evaluate: Callable[[dict[str, Any]], float],
                 test: Callable[[dict[str, Any]], float | None] | None = None,
                 mode: str = "max") -> None:
        self.state = init(seed)
        if not isinstance(self.state, dict):
            raise TypeError(f"init(seed) must return a dict, got {type(self.state).__name__}")
        self._train, self._evaluate, self._test = train, evaluate, test
        self.mode = mode
        mode_of(self)

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        out = self._train(self.state, hparams, steps)
        if isinstance(out, dict):
            self.state = out

    def evaluate(self) -> float:
        return float(self._evaluate(self.state))

    def test(self) -> float | None:
        return None if self._test is None else self._test(self.state)

    def state_dict(self) -> dict[str, Any]:
        return _export(self.state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = _import(self.state, dict(state))


def function_trainable(init: Callable[[int], dict[str, Any]],
                       train: Callable[[dict[str, Any], Mapping[str, Any], int], Any],
                       evaluate: Callable[[dict[str, Any]], float], *,
                       test: Callable[[dict[str, Any]], float | None] | None = None,
                       mode: str = "max") -> TrainableFactory:
    """A trainable factory from plain functions (see :class:`FunctionTrainable`)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be one of ['max', 'min'], got {mode!r}")

    def make(seed: int) -> Trainable:
        return FunctionTrainable(seed, init, train, evaluate, test, mode)

    return make
