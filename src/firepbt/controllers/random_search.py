"""Random search (the paper's RS baseline, 4.1.1).

Every member samples its hyperparameters once and follows a fixed schedule with no
exploitation: by default the hand-tuned schedule of :func:`firepbt.schedule.hand_tuned` applied
to ``schedule_param`` (warmup, then /10 at 30/90, 60/90, 80/90 of training), or constant
hyperparameters when ``schedule_param`` is None. A user schedule can be given instead
(``fixed_schedule``), which is how a replayed schedule is trained as a plain run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import check
from ..records import MEMBER, Decision, WorkerState
from ..schedule import Schedule, hand_tuned, hand_tuned_settings
from ..space import Space
from .base import Controller, Observations, load_rng_state, make_rng, rng_state


def check_schedule(space: Space, schedule: Schedule, total_steps: int) -> None:
    """A fixed schedule must name the space's hyperparameters, give each a finite number (or
    one of its choices) and cover the run's ``total_steps``. Values outside the space's bounds
    are allowed: a replayed schedule may decay below the range the search samples from."""
    from ..space import Categorical

    for i, seg in enumerate(schedule.segments):
        names = sorted(seg.hparams)
        check(names == sorted(space.params), f"schedule.segments[{i}].hparams",
              f"a mapping with keys {sorted(space.params)}", names)
        for name, p in space.params.items():
            v = seg.hparams[name]
            if isinstance(p, Categorical):
                p.validate(f"schedule.segments[{i}].hparams[{name!r}]", v)
            else:
                check(isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v), f"schedule.segments[{i}].hparams[{name!r}]",
                      "a finite number", v)
    check(schedule.total_steps == total_steps, "schedule",
          f"a schedule of {total_steps} steps (the run's steps)",
          f"{schedule.total_steps} steps")


class RandomSearch(Controller):
    """Independent members, each with its own sampled (or given) schedule."""

    method = "random"

    def __init__(self, space: Space, n_members: int, total_steps: int, *,
                 schedule_param: str | None = None, fixed_schedule: Schedule | None = None,
                 seed: int | np.random.Generator = 0,
                 shape: Mapping[str, Any] | None = None, grain: int = 1) -> None:
        check(isinstance(n_members, int) and n_members >= 1, "workers", "an int >= 1", n_members)
        check(schedule_param is None or schedule_param in space.params, "schedule_param",
              f"one of {sorted(space.params)} or None", schedule_param)
        if fixed_schedule is not None:
            check_schedule(space, fixed_schedule, total_steps)
        self.space = space
        self.n_members = n_members
        self.total_steps = total_steps
        self.schedule_param = schedule_param
        self.fixed_schedule = fixed_schedule
        self.shape = hand_tuned_settings(shape)  # the hand-tuned schedule's fractions
        self.grain = grain  # its warm-up's shortest piece: the evaluation interval
        self.rng = make_rng(seed)

    @property
    def n_workers(self) -> int:
        return self.n_members

    def start(self) -> list[WorkerState]:
        specs = []
        for w in range(self.n_members):
            if self.fixed_schedule is not None:
                sched = self.fixed_schedule
            else:
                hp = self.space.sample(self.rng)
                sched = (hand_tuned(hp, self.schedule_param, self.total_steps, **self.shape,
                                    grain=self.grain)
                         if self.schedule_param else Schedule.constant(hp, self.total_steps))
            specs.append(WorkerState(w, MEMBER, 0, sched.hparams_at(0), sched))
        return specs

    def decide(self, step: int, observations: Observations) -> list[Decision]:
        return []

    def best_candidates(self) -> list[int]:
        return list(range(self.n_members))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any],
                        history: Observations | None = None) -> None:
        load_rng_state(self.rng, state["rng"])
