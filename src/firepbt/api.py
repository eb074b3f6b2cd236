"""The Python API's two entry points: :func:`run` a new experiment, :func:`resume` a stopped
one. Each trains through the runner (:mod:`firepbt.runner`, which writes the store) and returns
what the read side makes of the store (:class:`~firepbt.results.Summary`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .build import fire_sizing_note
from .config import ExperimentConfig
from .errors import StoreError
from .results import Summary, open_experiment, summarize
from .runner import ProgressFn, resume_store, run_store
from .space import Space
from .store import Store
from .trainable import TrainableFactory


def _summary(path: Path) -> Summary:
    """The summary of a store the run has just closed, read as its writer was (so the store is
    left cleanly closed: a read-only connection to an SQLite database in WAL mode leaves its
    -wal and -shm files behind); through a reader if another process holds it now."""
    try:
        st = Store.open(path)
    except StoreError:  # another process holds it now, or it cannot be written any more
        with open_experiment(path) as exp:
            return exp.summary()
    try:
        return summarize(st)
    finally:
        st.close()


def run(config: ExperimentConfig, store: str | Path, *, factory: TrainableFactory | None = None,
        space: Space | None = None, schedule_param: str | None = None,
        progress: ProgressFn | bool | None = None, max_rounds: int | None = None,
        ray_address: str | None = None, callbacks: Sequence[Any] | None = None) -> Summary:
    """Run a new experiment into a new store and return its summary.

    Args:
        config: what to run (:class:`~firepbt.config.ExperimentConfig`).
        store: a new (or empty) folder for the experiment's store.
        factory: your own trainable, ``seed -> Trainable`` (built-in tasks need none).
        space: your trainable's search space (:class:`~firepbt.space.Space`).
        schedule_param: random search: the hyperparameter the hand-tuned schedule applies to.
        progress: None shows a progress bar when standard output is a terminal, False none,
            True always; or a function ``progress(step, total, info)``
            (:mod:`firepbt.progress`).
        max_rounds: stop after this many rounds (``resume`` continues).
        ray_address: a Ray cluster for ``executor="ray"`` (default ``RAY_ADDRESS``, else a
            local Ray instance).
        callbacks: functions ``report -> None``, tracker objects, or ``--log`` specs
            (``"tensorboard:DIR"``, ``"wandb:PROJECT"``, ``"mlflow:URI"``), each given every
            committed round (:mod:`firepbt.tracking`).

    A FIRE PBT run too small for its evaluators to do much is said first, in a warning of the
    ``firepbt`` logger (:func:`firepbt.build.fire_sizing_note`).
    """
    note = fire_sizing_note(config)
    if note is not None:
        logging.getLogger("firepbt").warning(note)
    path = run_store(config, store, factory=factory, space=space,
                     schedule_param=schedule_param, progress=progress, max_rounds=max_rounds,
                     ray_address=ray_address, callbacks=callbacks)
    return _summary(path)


def resume(store: str | Path, *, factory: TrainableFactory | None = None,
           space: Space | None = None, schedule_param: str | None = None,
           progress: ProgressFn | bool | None = None, max_rounds: int | None = None,
           ray_address: str | None = None, device: str | None = None,
           steps: int | None = None, time_budget: float | None = None,
           callbacks: Sequence[Any] | None = None) -> Summary:
    """Continue a stopped or killed experiment from its last completed round and return its
    summary.

    Args:
        store: the experiment's store folder.
        factory, space, schedule_param: as for :func:`run`, for your own trainable.
        progress, max_rounds, ray_address: as for :func:`run`.
        device: train the rest elsewhere than the stored configuration says (e.g. ``"cpu"``
            for a store begun on a GPU machine; checkpoints hold CPU tensors).
        steps: extend the run to that many steps per worker (PBT and FIRE PBT; random search
            follows schedules fixed to the run's length): a finished run continues from its
            last round, and its final member and replay, which were the old end's, are taken
            again then.
        time_budget: replaces the experiment's budget (:mod:`firepbt.deadlines`: all of its
            rounds count, those of earlier runs too).
        callbacks: as for :func:`run`; each is first given the committed rounds it has not
            seen, then the new ones. None: the ``--log`` specs the run was started with
            (the store remembers them), an empty list: none.
    """
    path = resume_store(store, factory=factory, space=space, schedule_param=schedule_param,
                        progress=progress, max_rounds=max_rounds, ray_address=ray_address,
                        device=device, steps=steps, time_budget=time_budget,
                        callbacks=callbacks)
    return _summary(path)
