"""Classic PBT (paper section 2; the settings of 4.1.1).

Every ready interval (one synchronous round) each member's fitness is its latest evaluation of
the objective; truncation selection makes each member of the bottom 25% copy the weights and
hyperparameters of a random member of the top 25%, then explore multiplies each float
hyperparameter by one of the space's factors (default ``[0.5, 0.8, 1.25, 2.0]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import check
from ..records import MEMBER, Decision, Exploit, FitnessRecord, WorkerState
from ..selection import members_needed, truncation
from ..space import Space
from .base import Controller, Observations, load_rng_state, make_rng, rng_state


class PBT(Controller):
    """Population based training with truncation selection and multiplicative explore.

    Args:
        space: the hyperparameters, their initial ranges and bounds.
        n_members: population size; at least ``ceil(1 / quantile)`` so selection can happen.
        quantile: fraction of members in each of the bottom and top sets, in (0, 0.5].
        seed: seed or generator for sampling, selection and explore.
    """

    method = "pbt"

    def __init__(self, space: Space, n_members: int, *, quantile: float = 0.25,
                 seed: int | np.random.Generator = 0) -> None:
        need = members_needed(quantile)
        check(isinstance(n_members, int) and n_members >= need, "n_members",
              f"an int >= {need} (so that {quantile:.0%} truncation selects at least one member)",
              n_members)
        self.space = space
        self.n_members = n_members
        self.quantile = quantile
        self.rng = make_rng(seed)
        self.hparams: dict[int, dict[str, Any]] = {}
        self.latest: dict[int, float] = {}

    @property
    def n_workers(self) -> int:
        return self.n_members

    def start(self) -> list[WorkerState]:
        specs = []
        for w in range(self.n_members):
            self.hparams[w] = self.space.sample(self.rng)
            specs.append(WorkerState(w, MEMBER, 0, dict(self.hparams[w])))
        return specs

    def decide(self, step: int, observations: Observations) -> list[Decision]:
        for w, points in observations.items():
            if points:
                self.latest[w] = float(points[-1][1])
        fitness = {w: self.latest[w] for w in range(self.n_members) if w in self.latest}
        decisions: list[Decision] = [FitnessRecord(0, dict(fitness))]
        for loser, source in truncation(fitness, self.rng, self.quantile):
            new = self.space.perturb(self.hparams[source], self.rng)
            decisions.append(Exploit(loser, source, 0, dict(self.hparams[loser]),
                                     dict(self.hparams[source]), new, fitness[loser],
                                     fitness[source]))
            self.hparams[loser] = new
            self.latest[loser] = self.latest[source]
        return decisions

    def best_candidates(self) -> list[int]:
        return list(range(self.n_members))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng),
                "hparams": {str(k): v for k, v in self.hparams.items()},
                "latest": {str(k): v for k, v in self.latest.items()}}

    def load_state_dict(self, state: Mapping[str, Any],
                        history: Observations | None = None) -> None:
        load_rng_state(self.rng, state["rng"])
        self.hparams = {int(k): dict(v) for k, v in state["hparams"].items()}
        self.latest = {int(k): float(v) for k, v in state["latest"].items()}
