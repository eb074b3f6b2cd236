"""Schedule replay (paper 4.1): train a new network from scratch with a found schedule.

The paper retraces the schedule that led to the top validation score and retrains it on the
full training set (training plus validation split), reporting the final test score.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .config import ExperimentConfig
from .devices import resolve_device
from .errors import ConfigError
from .lineage import schedule as lineage_schedule
from .results import top_measures
from .schedule import Schedule
from .store import Store
from .trainable import TrainableFactory, mode_of, test_of


@dataclass(frozen=True, slots=True)
class ReplayResult:
    schedule: Schedule
    seed: int
    value: float
    test: float | None
    worker: int
    step: int


def train_schedule(factory: TrainableFactory, schedule: Schedule, seed: int) -> tuple[float, float | None]:
    """Train one network from ``seed`` through ``schedule``; return (validation, test) values.

    This is exactly a plain run with a fixed schedule: no evaluation is interleaved, so the
    result depends only on the schedule, the seed and the trainable.
    """
    trainable = factory(seed)
    mode_of(trainable)
    for seg in schedule.segments:
        trainable.train(dict(seg.hparams), seg.steps)
    return float(trainable.evaluate()), test_of(trainable)


def replay_seed(experiment_seed: int) -> int:
    """The seed a replay of an experiment trains with: its own branch of the experiment's seed
    sequence, so no worker of the experiment started from it (workers use branch 0, copies'
    data streams branch 2) and the replay is an independent retraining."""
    return int(np.random.SeedSequence([experiment_seed, 3]).generate_state(1)[0])


def top_schedule(store: Store) -> tuple[Schedule, int, int]:
    """The schedule behind the top validation score of a store, with its worker and step."""
    top = top_measures(store)
    if top is None:
        raise ValueError("the store has no evaluation yet")
    worker, step = top.worker, top.step
    return lineage_schedule(store, worker, step), worker, step


def replay_store(path: str, *, factory: TrainableFactory | None = None,
                 options: Mapping[str, Any] | None = None, record: bool = True,
                 device: str | None = None) -> ReplayResult:
    """Replay the top schedule of a store from scratch and record its result.

    Built-in tasks train on the full training set (training plus validation split, paper
    4.1). For an experiment run on your own trainable, give the ``factory`` it was run with
    (``seed -> Trainable``; to replay on more data, a factory that builds it so): its
    ``evaluate()`` and ``test()`` after the last step are the result. ``device``: where a
    built-in task retrains (default: the stored configuration's; the same seed gives the same
    initial network and batches on every device, while the arithmetic of a GPU, e.g. TF32
    convolutions, may round differently)."""
    from .tasks import TASKS

    st = Store.open(path)
    try:
        cfg = ExperimentConfig.from_dict(st.config)
        if factory is None and cfg.task not in TASKS:
            raise ConfigError("factory", "the trainable factory the experiment ran with (task "
                              f"{cfg.task!r} is not built in): replay_store(path, factory=...) "
                              "or 'firepbt replay STORE --factory module:callable'", None)
        sched, worker, step = top_schedule(st)
        if factory is None:
            task = TASKS[cfg.task]
            opts = dict(cfg.task_options)
            if task.on_device:
                opts["device"] = resolve_device(device or cfg.device)
            if "full_train" in task.options:
                opts["full_train"] = True
            opts.update(options or {})

            def factory(seed: int) -> Any:
                return task.make(seed, **opts)

        seed = replay_seed(cfg.seed)
        value, test = train_schedule(factory, sched, seed)
        result = ReplayResult(sched, seed, value, test, worker, step)
        if record:
            st.set_meta("replay", json.dumps({
                "schedule": json.loads(sched.to_json()), "seed": seed, "value": value,
                "test": test, "worker": worker, "step": step}))
        return result
    finally:
        st.close()


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
