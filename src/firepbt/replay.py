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

from .config import ExperimentConfig
from .lineage import schedule as lineage_schedule
from .runner import _candidates, top_measures
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
    cfg = ExperimentConfig.from_dict(store.config)
    top = top_measures(store, _candidates(cfg))
    if top is None:
        raise ValueError("the store has no evaluation yet")
    worker, step = top[0], top[1]
    return lineage_schedule(store, worker, step), worker, step


def replay_store(path: str, *, factory: TrainableFactory | None = None,
                 options: Mapping[str, Any] | None = None, record: bool = True) -> ReplayResult:
    """Replay the top schedule of a store on the full training set (built-in tasks)."""
    from .tasks import get_task

    st = Store.open(path)
    try:
        cfg = ExperimentConfig.from_dict(st.config)
        sched, worker, step = top_schedule(st)
        if factory is None:
            task = get_task(cfg.task)
            opts = dict(cfg.task_options)
            if "full_train" in task.options:
                opts["full_train"] = True
            opts.update(options or {})

            def factory(seed: int):  # type: ignore[no-untyped-def]
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
