"""Batching as a capability a trainable family declares: the one door to the vectorized executor.

A *batched population* trains N members of one trainable family as one model for a round
(stacked weights, one forward/backward per step). A family declares it by registering a class
for its trainable type::

    from firepbt.batched import register_batched
    register_batched(MyTrainable, MyPopulation)

The vectorized executor looks up the population class along each trainable's type hierarchy
(so subclasses inherit it), asks it whether these members can train together
(:meth:`BatchedPopulation.check`), and then, each round, builds one from the members, feeds it
the members' per-step settings and writes the result back into the members, so copies,
checkpoints and the store are exactly those of the local executor. Built in:
:class:`firepbt.supervised.SupervisedTrainable` (``firepbt.vectorized``: MLPs on a batched
matrix-multiply path, other modules through ``torch.func``) and the NQM
(``firepbt.tasks.nqm``). This module imports neither torch nor a task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class NotVectorizable(TypeError):
    """The trainables cannot be trained as one batched model (the message says why)."""


class BatchedPopulation(Protocol):
    """N members of one family trained together for one round (see the module doc).

    ``settings`` turns a member's hyperparameters into the numbers that change per step (for
    SGD: learning rate, momentum, weight decay); ``train`` receives them for a run of steps as
    a ``(steps, N, k)`` float64 tensor. ``evaluate`` returns one value per member (NaN for a
    diverged one); ``snapshot(i)`` keeps member i's weights now for a later ``test_at(i, snap)``
    (None: nothing to test, or test the written-back weights); ``write_back`` puts the batched
    state back into the member trainables.
    """

    def __init__(self, members: Sequence[Any]) -> None: ...

    @classmethod
    def check(cls, members: Sequence[Any]) -> None:
        """Raise :class:`NotVectorizable` unless ``members`` can train as one model."""

    @staticmethod
    def settings(member: Any, hparams: Mapping[str, Any]) -> tuple[float, ...]: ...

    def train(self, settings: Any) -> None: ...

    def evaluate(self) -> list[float]: ...

    def snapshot(self, i: int) -> Any: ...

    def test_at(self, i: int, snapshot: Any) -> float | None: ...

    def write_back(self) -> None: ...


_REGISTRY: dict[type, type] = {}


def register_batched(trainable_type: type, population_type: type) -> None:
    """Declare that ``trainable_type`` (and its subclasses) train batched as
    ``population_type`` (a :class:`BatchedPopulation`)."""
    if not isinstance(trainable_type, type) or not isinstance(population_type, type):
        raise TypeError("register_batched(trainable_type, population_type) takes two classes")
    _REGISTRY[trainable_type] = population_type


def population_type(trainables: Sequence[Any]) -> type:
    """The batched population class for these trainables, checked; :class:`NotVectorizable`
    (saying why) when the family declares none, the members mix families, or the family's
    check refuses them."""
    if not trainables:
        raise NotVectorizable("no trainables to batch")
    found = {_lookup(type(t)) for t in trainables}
    if None in found:
        name = next(type(t).__name__ for t in trainables if _lookup(type(t)) is None)
        raise NotVectorizable(
            f"the vectorized executor trains families that declare a batched population "
            f"(SupervisedTrainable: a module, a loss and tensors; the NQM; or your own through "
            f"firepbt.batched.register_batched), got {name}; use the local executor "
            "(executor='local') for other trainables")
    if len(found) > 1:
        raise NotVectorizable("all members must be of one trainable family to train as one "
                              "batched model; use the local executor")
    pop: type = found.pop()  # type: ignore[assignment]
    pop.check(list(trainables))  # type: ignore[attr-defined]
    return pop


def _lookup(t: type) -> type | None:
    for klass in t.__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None
