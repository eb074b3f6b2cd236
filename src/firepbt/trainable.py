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
  back. It may return references to live tensors (``module.state_dict()`` does) and
  ``load_state_dict`` may keep the tensors it is given (``torch.optim.Optimizer.load_state_dict``
  does): firepbt always hands ``load_state_dict`` an independent deep copy
  (:func:`clone_state`), so no two workers ever share a tensor.
- ``reseed(seed)`` (optional, recommended) gives the worker a new data stream. Copying a member
  (exploit, evaluator assignment, evaluator success) is
  ``dst.load_state_dict(clone_state(src.state_dict()))`` followed by ``dst.reseed(seed)``, with
  a seed derived from the experiment seed, the round and the decision (so a resumed run draws
  exactly the same batches). Without it, the receiving worker continues the source's data
  order and the two draw identical batches from then on: correlated members, and correlated
  curve points in FIRE PBT's binomial test. Re-seed every generator that orders or augments
  data (the weights, the optimizer state and the hyperparameters stay as copied).
  :class:`~firepbt.supervised.SupervisedTrainable` and :class:`FunctionTrainable` implement it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast, runtime_checkable

from .errors import ConfigError


@runtime_checkable
class Trainable(Protocol):
    """One worker's training state and the operations firepbt calls on it."""

    def train(self, hparams: Mapping[str, Any], steps: int) -> None: ...

    def evaluate(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


TrainableFactory = Callable[[int], Trainable]

_REQUIRED = ("train", "evaluate", "state_dict", "load_state_dict")


def check_trainable(obj: Any) -> None:
    """Refuse, in one line naming the factory, an object that does not keep the contract (the
    first trainable a factory builds, before the first round): the four methods above, as
    callables."""

    what = ("a callable seed -> trainable with train(hparams, steps), evaluate(), "
            "state_dict() and load_state_dict(state) (see firepbt.trainable)")
    if obj is None:
        raise ConfigError("factory", what, "a factory that returned None")
    missing = [m for m in _REQUIRED if not callable(getattr(obj, m, None))]
    if missing:
        raise ConfigError("factory", what, f"one that returned a {type(obj).__name__} without "
                          f"{', '.join(m + '()' for m in missing)}")


def _rebuilt(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """``obj`` with its containers rebuilt (dicts, module state dicts with their version
    metadata, lists, tuples) and ``leaf`` applied to everything else."""
    if isinstance(obj, dict):
        out = {k: _rebuilt(v, leaf) for k, v in obj.items()}
        if isinstance(obj, OrderedDict):  # module state dicts keep their version metadata
            out = OrderedDict(out)
            if hasattr(obj, "_metadata"):
                setattr(out, "_metadata", copy.deepcopy(obj._metadata))  # noqa: B010
        return out
    if isinstance(obj, list):
        return [_rebuilt(v, leaf) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_rebuilt(v, leaf) for v in obj)
    return leaf(obj)


def cpu_state(obj: Any) -> Any:
    """The same state with every tensor on the CPU (tensors already there are not copied):
    what crosses processes and machines, which may have no GPU."""
    import torch

    def leaf(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.device.type != "cpu":
            return x.detach().cpu()
        return x

    return _rebuilt(obj, leaf)


def clone_state(obj: Any) -> Any:
    """An independent deep copy of a state: tensors cloned (detached), numpy arrays copied,
    containers rebuilt, anything else deep-copied. Nothing of the result is shared with ``obj``.
    """
    import numpy as np
    import torch

    def leaf(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().clone()
        if isinstance(x, np.ndarray):
            return x.copy()
        return copy.deepcopy(x)

    return _rebuilt(obj, leaf)


def copy_into(source: Any, dest: Any, seed: int | None) -> None:
    """Copy ``source``'s state into ``dest`` (an exploit or evaluator copy): an independent
    deep copy, then ``dest.reseed(seed)`` where the trainable has it and ``seed`` is given."""
    dest.load_state_dict(clone_state(source.state_dict()))
    if seed is not None:
        reseed_of(dest, seed)


def reseed_of(trainable: object, seed: int) -> bool:
    """Call ``trainable.reseed(seed)`` if it exists; True when it did."""
    fn = getattr(trainable, "reseed", None)
    if fn is None:
        return False
    fn(int(seed))
    return True


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
    if type(obj) in (list, tuple):  # element by element (named tuples: deep-copied below)
        return type(obj)(_export(v) for v in obj)
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
    if type(target) in (list, tuple) and type(saved) in (list, tuple) \
            and len(target) == len(saved):  # element by element: tensors keep their device
        loaded = [_import(t, s) for t, s in zip(target, saved, strict=True)]
        if isinstance(target, list):
            target[:] = loaded
            return target
        return tuple(loaded)
    if isinstance(target, torch.Tensor) and isinstance(saved, torch.Tensor):
        if saved.shape == target.shape and saved.dtype == target.dtype:
            with torch.no_grad():
                target.copy_(saved)  # in place: whatever holds it sees the loaded values
            return target
        return saved.detach().to(target.device).clone()  # another shape: the saved one, here
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
        out: dict[str, Any] = _export(self.state)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = _import(self.state, dict(state))

    def reseed(self, seed: int) -> None:
        """A new data stream: every ``torch.Generator`` of the state (in dicts, by key order,
        and in lists) is seeded from ``seed``. Keep data-order randomness in torch generators:
        other generator objects (numpy's) cannot be checkpointed safely and are refused."""
        _reseed_generators(self.state, [int(seed)])


def _reseed_generators(obj: Any, counter: list[int]) -> None:
    import torch

    if isinstance(obj, torch.Generator):
        obj.manual_seed(counter[0] % 2**63)
        counter[0] += 1_000_003
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _reseed_generators(obj[k], counter)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _reseed_generators(v, counter)


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


# -- your own code, named on the command line (run/resume/replay/compare --factory) ----------

def load_factory(spec: str) -> TrainableFactory:
    """``module:callable`` (e.g. ``my_training:make``) -> the callable, imported from the
    current directory or the Python path; a clear error naming ``factory`` otherwise."""
    import importlib
    import sys

    module, sep, name = spec.partition(":")
    what = "module:callable naming your trainable factory (seed -> Trainable)"
    if not sep or not module or not name:
        raise ConfigError("factory", what, spec)
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError("factory", what, f"{spec} (cannot import {module!r}: {exc})") from None
    except (Exception, SystemExit) as exc:  # the module fails as it is imported
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError("factory", what, f"{spec} (importing {module!r} raised "
                          f"{type(exc).__name__}: {first})") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ConfigError("factory", what, f"{spec} ({module!r} has no {name!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError("factory", what, f"{spec} (not callable)")
    return cast(Callable[..., Any], obj)


def load_experiment(spec: str) -> tuple[TrainableFactory, Any, str | None]:
    """``module:callable`` -> ``(factory, space, schedule_param)`` for the command line's
    ``--factory`` (``run``, ``resume``, ``compare``): the factory (:func:`load_factory`), its
    search space - the factory's ``space`` attribute, else the module's ``SPACE`` (a
    :class:`~firepbt.space.Space`, or a function returning one) - and the hyperparameter the
    hand-tuned schedule of random search applies to (``schedule_param`` on the factory, else
    the module's ``SCHEDULE_PARAM``; None when neither is set)."""
    import sys

    from .space import Space

    factory = load_factory(spec)
    module = sys.modules[spec.partition(":")[0]]
    space = getattr(factory, "space", None)
    if space is None:
        space = getattr(module, "SPACE", None)
    if callable(space) and not isinstance(space, Space):
        space = space()
    if not isinstance(space, Space):
        raise ConfigError("factory", "module:callable whose search space is a Space, as the "
                          "factory's 'space' attribute or the module's SPACE",
                          f"{spec} ({'no space' if space is None else type(space).__name__})")
    param = getattr(factory, "schedule_param", None) or getattr(module, "SCHEDULE_PARAM", None)
    return factory, space, param
