"""Construction: from a configuration to the objects a run needs (controller, executor,
per-worker seeds, the task's trainable factory) and from a task's defaults to a
configuration. The runner, the CLI and ``compare`` build through here; nothing here runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ExperimentConfig
from .controllers import PBT, Controller, FirePBT, RandomSearch
from .controllers.fire_layout import fire_split, sizing_note
from .devices import resolve_device
from .errors import ConfigError, check
from .executors import Executor, LocalExecutor
from .records import MEMBER, WorkerState
from .schedule import Schedule, Segment
from .space import Space
from .trainable import TrainableFactory


@dataclass(frozen=True)
class ResolvedTask:
    """What a run trains: the trainable ``factory`` (``seed -> Trainable``), the search
    ``space``, the hyperparameter random search's hand-tuned schedule applies to
    (``schedule_param``), where it trains in words (``device``: a built-in task's resolved
    device; your own trainable chooses for itself) and whether it is a reinforcement-learning
    task (``reinforcement``: its objective is an average episode return)."""

    factory: TrainableFactory
    space: Space
    schedule_param: str | None = None
    device: str = "chosen by the trainable"
    reinforcement: bool = False


def run_space(config: ExperimentConfig, space: Space) -> Space:
    """The space a run samples and explores: ``space`` with the configuration's explore
    factors (``config.factors``)."""
    return space if config.factors is None else space.with_factors(config.factors)


def build_controller(config: ExperimentConfig, space: Space,
                     schedule_param: str | None) -> Controller:
    """The controller a configuration names, seeded from ``config.seed``."""
    space = run_space(config, space)
    seed = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    if config.method == "pbt":
        return PBT(space, config.workers, quantile=config.quantile, seed=seed)
    if config.method == "random":
        fixed = None
        if config.schedule is not None:
            fixed = Schedule(tuple(Segment(s["hparams"], int(s["steps"]))
                                   for s in config.schedule["segments"]))
        return RandomSearch(space, config.workers, config.steps, schedule_param=schedule_param,
                            fixed_schedule=fixed, seed=seed, shape=config.hand_tuned,
                            grain=config.eval_interval)
    n_sub, size, n_eval = fire_split(config.workers, config.n_subpopulations, config.quantile)
    return FirePBT(space, ready_interval=config.ready_interval, n_subpopulations=n_sub,
                   subpopulation_size=size, n_evaluators=n_eval,
                   max_eval_steps=config.max_eval_steps, p_stat=config.p_stat,
                   min_steps_before_eval=config.min_steps_before_eval,
                   quantile=config.quantile, seed=seed)


def make_executor(config: ExperimentConfig, factory: TrainableFactory,
                  ray_address: str | None = None) -> Executor:
    """The executor a configuration names (``auto``: the vectorized one, which trains the
    trainables one after another where their family declares no batched population)."""
    if config.executor == "local":
        return LocalExecutor(factory)
    if config.executor == "ray":
        from .executors.ray import RayExecutor

        return RayExecutor(factory, address=ray_address,
                           gpus_per_worker=config.gpus_per_worker,
                           cpus_per_actor=float(config.threads or 1),
                           round_timeout=config.round_timeout)
    from .executors.vectorized import VectorizedExecutor

    return VectorizedExecutor(factory, strict=config.executor == "vectorized")


def fire_sizing_note(config: ExperimentConfig) -> str | None:
    """The note a FIRE PBT run too small for its evaluators gets before it starts
    (:func:`~firepbt.controllers.fire_layout.sizing_note`); None for other methods."""
    if config.method != "fire":
        return None
    return sizing_note(config.workers, config.steps // config.ready_interval,
                       config.ready_interval // config.eval_interval,
                       config.n_subpopulations, config.quantile)


def worker_seeds(seed: int, n_workers: int) -> dict[int, int]:
    """Independent per-worker seeds derived from the experiment seed."""
    children = np.random.SeedSequence([seed, 0]).generate_state(n_workers)
    return {w: int(s) for w, s in enumerate(children)}


def _ray_device(config: ExperimentConfig) -> str:
    """The device spec Ray's actors resolve where they run. Ray gives a GPU only to an actor
    that declares one: without ``gpus_per_worker`` ``auto`` is the CPU and ``cuda`` is refused
    (:class:`ConfigError` naming ``device``)."""
    if config.gpus_per_worker > 0:
        return config.device
    if config.device.startswith("cuda"):
        raise ConfigError("device", "cpu or auto on Ray actors that declare no GPU (Ray gives "
                          "a GPU only to an actor that declares one: start the run with "
                          "--gpus-per-worker, e.g. 1, or 0.25 for four actors per GPU)",
                          config.device)
    return "cpu"


def check_device(config: ExperimentConfig) -> str | None:
    """The device a run or resume trains on, resolved (None on Ray, whose actors resolve it
    where they run: a CPU-only driver may drive GPU nodes); an absent device, or a GPU on Ray
    actors that declare none, is refused (:class:`ConfigError` naming ``device``). Checked when
    a run starts or resumes, not when a stored configuration is read."""
    if config.executor != "ray":
        return resolve_device(config.device)
    _ray_device(config)
    return None


def main_param(schedule_param: str | None, workers: Iterable[WorkerState]) -> str:
    """The hyperparameter a run is summed up by (the report's main figure): the schedule
    parameter, else ``lr``, else the first numeric one of the members' hyperparameters (else
    the first)."""
    if schedule_param:
        return schedule_param
    for st in workers:
        hp = st.hparams
        if st.role == MEMBER and hp:
            if "lr" in hp:
                return "lr"
            numeric = [str(k) for k in sorted(hp) if isinstance(hp[k], (int, float))
                       and not isinstance(hp[k], bool) and not math.isnan(float(hp[k]))]
            return (numeric or [str(k) for k in sorted(hp)])[0]
    return "lr"


def subpopulations(workers: Iterable[WorkerState]) -> int:
    """How many sub-populations the members form (1 for PBT and random search)."""
    return len({st.subpopulation for st in workers if st.role == MEMBER}) or 1


def resolve_task(config: ExperimentConfig, factory: TrainableFactory | None,
                 space: Space | None, schedule_param: str | None) -> ResolvedTask:
    """What a run trains (:class:`ResolvedTask`): the factory, space and schedule parameter
    given for your own trainable, else the built-in task's (``config.task``) with
    ``config.task_options``, on ``config.device`` (:mod:`firepbt.devices`; an absent device is
    refused here, before anything is written)."""
    # the Ray executor builds trainables in its actors, which resolve the device where they run
    # (a CPU-only driver may drive GPU nodes); elsewhere an absent device is refused now
    lazy = config.executor == "ray"
    device = check_device(config)
    check(schedule_param is None or config.method == "random", "schedule_param",
          f"given only with method 'random' (the hand-tuned schedule of random search; PBT and "
          f"FIRE PBT find their own schedules; method is {config.method!r})", schedule_param)
    if factory is not None:
        if space is None:
            raise ConfigError("space", "a Space when a custom factory is given", None)
        check(isinstance(space, Space), "space", "a firepbt.Space, e.g. Space({'lr': "
              "LogUniform(1e-4, 1e-1)})", f"a {type(space).__name__}")
        check(callable(factory), "factory", "a callable seed -> trainable",
              f"a {type(factory).__name__}")
        return ResolvedTask(factory, space, schedule_param)
    from .tasks import get_task

    task = get_task(config.task)
    options: dict[str, Any] = dict(config.task_options)
    bad = set(options) - set(task.options)
    if bad:
        raise ConfigError("task_options", f"keys among {list(task.options)}", sorted(bad))
    spec = _ray_device(config) if lazy else config.device
    if not task.on_device and spec not in ("auto", "cpu"):
        raise ConfigError("device", f"cpu or auto for task {task.name!r} (it trains on the "
                          "CPU)", config.device)

    def make(seed: int) -> Any:
        if not task.on_device:
            return task.make(seed, **options)
        return task.make(seed, device=device or resolve_device(spec), **options)

    # what the store and report say the task trained on
    said = ("cpu" if not task.on_device else device if device is not None
            else "resolved on each Ray actor" if spec == "auto" else spec)
    return ResolvedTask(make, space or task.space, schedule_param or task.schedule_param,
                        said, task.reinforcement)


def is_builtin(task: str) -> bool:
    """Whether ``task`` names a built-in task (else a run of your own trainable)."""
    from .tasks import TASKS

    return task in TASKS


def replay_factory(config: ExperimentConfig, device: str | None = None,
                   options: Mapping[str, Any] | None = None) -> TrainableFactory:
    """A built-in task's factory as schedule replay retrains it (paper 4.1): on the full
    training set where the task has that option (training plus validation split), in this
    process, on ``device`` (default the configuration's), with ``options`` on top."""
    from .tasks import get_task

    task = get_task(config.task)
    opts = dict(config.task_options)
    if "full_train" in task.options:
        opts["full_train"] = True
    opts.update(options or {})
    replayed = dataclasses.replace(config, executor="local", gpus_per_worker=0.0,
                                   device=device or config.device,
                                   task_options=opts)
    return resolve_task(replayed, None, None, None).factory


def task_config(task: str, *, preset: str | None = None, comparison: bool = False,
                **fields: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` for a built-in task: the task's settings (its defaults, a
    preset's, or with ``comparison=True`` the ones ``firepbt compare`` uses, see
    ``firepbt tasks``), overridden by ``fields`` that are not None."""
    from .tasks import get_task

    t = get_task(task)
    settings = t.settings(preset, fields.get("steps"), comparison=comparison)
    given = {k: v for k, v in fields.items() if v is not None}
    return ExperimentConfig(task=t.name, **{**settings, **given})
