"""Schedule replay (paper 4.1): train a new network from scratch with a found schedule.

The paper retraces the schedule that led to the top validation score and retrains it on the
full training set (training plus validation split), reporting the final test score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .build import is_builtin, replay_factory
from .config import ExperimentConfig
from .errors import ConfigError
from .lineage import schedule as lineage_schedule
from .results import top_measures
from .schedule import Schedule
from .store import LAUNCH, REPLAY, Store
from .trainable import TrainableFactory, load_factory, mode_of, test_of


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
    try:
        trainable = factory(seed)
    except Exception as exc:  # noqa: BLE001 - the user's factory: said in one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError("factory", "a callable seed -> Trainable", f"{_name(factory)} "
                          f"(calling it raised {type(exc).__name__}: {first})") from None
    check_trainable_factory(factory, trainable)
    mode_of(trainable)
    for seg in schedule.segments:
        trainable.train(dict(seg.hparams), seg.steps)
    return float(trainable.evaluate()), test_of(trainable)


def _name(factory: Any) -> str:
    return getattr(factory, "__qualname__", None) or type(factory).__name__


def check_trainable_factory(factory: Any, trainable: Any) -> None:
    """What a factory returned keeps the trainable contract (one line naming the factory
    otherwise, e.g. for None)."""
    from .trainable import check_trainable

    try:
        check_trainable(trainable)
    except ConfigError as exc:
        raise ConfigError("factory", "a callable seed -> Trainable", f"{_name(factory)} "
                          f"({exc.got})") from None


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
    ``evaluate()`` and ``test()`` after the last step are the result; a run started with
    ``--factory module:callable`` remembers it, and it is loaded again when none is given. ``device``: where a
    built-in task retrains (default: the stored configuration's; the same seed gives the same
    initial network and batches on every device, while the arithmetic of a GPU, e.g. TF32
    convolutions, may round differently)."""
    st = Store.open(path)
    try:
        cfg = ExperimentConfig.from_dict(st.config)
        spec = (st.meta_json(LAUNCH) or {}).get("factory")
        if factory is None and spec and not is_builtin(cfg.task):  # the run's --factory
            factory = load_factory(str(spec))
        if factory is None and not is_builtin(cfg.task):
            raise ConfigError("factory", "the trainable factory the experiment ran with (task "
                              f"{cfg.task!r} is not built in): replay_store(path, factory=...) "
                              "or 'firepbt replay STORE --factory module:callable'", None)
        sched, worker, step = top_schedule(st)
        if factory is None:
            factory = replay_factory(cfg, device, options)
        seed = replay_seed(cfg.seed)
        value, test = train_schedule(factory, sched, seed)
        result = ReplayResult(sched, seed, value, test, worker, step)
        if record:
            st.set_meta(REPLAY, json.dumps({
                "schedule": json.loads(sched.to_json()), "seed": seed, "value": value,
                "test": test, "worker": worker, "step": step}))
        return result
    finally:
        st.close()
