"""The controller contract: pure decision logic, as an ask/tell loop - ``start()`` asks once,
``decide(step, observations)`` is tell and ask in one call (it is told the round's evaluations
and answers with the decisions to apply). Decisions are return values, never side effects: a
controller observes and returns typed decisions; only the runner applies them.

Who calls what, in which order (the runner, only):

1. ``start()`` once, for a new experiment: returns one :class:`~firepbt.records.WorkerState`
   per worker (role, sub-population, initial hyperparameters or schedule).
2. After every synchronous round, ``decide(step, observations)``: ``observations`` maps each
   worker that trained this round to its new ``(step, score)`` evaluations in step order
   (scores are maximised: the runner has already negated "min" objectives; the first round
   also carries the step-0 evaluations). It returns a list of decisions, which the runner
   applies *in order* (each copy sees the effects of the ones before it) and records.
3. ``state_dict()`` after ``decide``: a JSON-serialisable snapshot (random generator
   included); it may leave out what the observations so far hold (FIRE PBT keeps a curve by
   its first point). ``load_state_dict(state, history)`` on a freshly constructed controller,
   ``history`` mapping each worker to every observation ``decide`` was given up to the
   state's round (the store holds them), restores it exactly, which is how ``resume``
   continues a run bit for bit.

A controller never trains, copies weights or writes the store, and takes its randomness only
from the ``numpy.random.Generator`` it was given (or a seed), never from global state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..records import Decision, WorkerState

Observations = Mapping[int, Sequence[tuple[int, float]]]


def make_rng(seed: int | np.random.Generator) -> np.random.Generator:
    """A generator from a seed, or the generator itself."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


class Controller(ABC):
    """Base class of random search, PBT and FIRE PBT."""

    #: CLI name of the method.
    method: str = ""

    @abstractmethod
    def start(self) -> list[WorkerState]:
        """The initial workers; called once for a new experiment."""

    @abstractmethod
    def decide(self, step: int, observations: Observations) -> list[Decision]:
        """Record this round's evaluations and return the decisions to apply, in order."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything ``decide`` depends on."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any],
                        history: Observations | None = None) -> None:
        """Restore a snapshot taken by ``state_dict``, with the observations up to its round
        (``history``, in the form ``decide`` receives them, all rounds together)."""

    @abstractmethod
    def best_candidates(self) -> list[int]:
        """Workers whose network counts as the current best-effort model (FIRE PBT: P1)."""

    @property
    @abstractmethod
    def n_workers(self) -> int:
        """Total number of workers (members and evaluators)."""


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def load_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = dict(state)
