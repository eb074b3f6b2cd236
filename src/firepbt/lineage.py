"""Lineage: where a member's weights came from, and the schedule that trained them.

Reads only the store. A worker's weights at step ``t`` descend, through the weight copies the
runner applied (exploits, evaluator assignments, evaluator successes, in decision order), from
one initial network; the schedule is the hyperparameters every segment of that chain trained
with, as ``(hparams, steps)`` segments from step 0 (paper 4.1, schedule replay).
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import AssignEvaluator, EvaluatorSuccess, Exploit, WorkerState
from .schedule import Schedule, Segment
from .store import Store


@dataclass(frozen=True, slots=True)
class Link:
    """``worker`` trained ``[start, stop)`` with the weights it held, which it got at ``start``
    from ``received_from`` (None: its own initial network) through ``via`` (decision kind)."""

    worker: int
    start: int
    stop: int
    received_from: int | None
    via: str | None


def _copies(store: Store) -> dict[int, list[tuple[int, int, int, str]]]:
    """Per receiving worker: (decision order, step, source, kind)."""
    out: dict[int, list[tuple[int, int, int, str]]] = {}
    for order, (_r, step, d) in enumerate(store.decisions(
            ["exploit", "assign_evaluator", "evaluator_success"])):
        if isinstance(d, Exploit):
            dst, src = d.worker, d.source
        elif isinstance(d, AssignEvaluator):
            dst, src = d.evaluator, d.parent
        elif isinstance(d, EvaluatorSuccess):
            dst, src = d.target, d.evaluator
        else:  # pragma: no cover - filtered above
            continue
        out.setdefault(dst, []).append((order, step, src, d.kind))
    return out


def chain(store: Store, worker: int, step: int | None = None) -> list[Link]:
    """The copy chain of the network ``worker`` was evaluated with at ``step`` (default: the
    last completed step), oldest link first.

    A round evaluates first and copies after (the runner applies a round's decisions once its
    evaluations are recorded), so a copy made *at* ``step`` is not part of the network
    evaluated at ``step``: only copies at earlier steps count. Going back along the chain, the
    source of a copy contributes the copies it had received before that one, earlier decisions
    of the same round included (decision order).
    """
    last = store.last_round()
    if step is None:
        step = 0 if last is None else last.step
    copies = _copies(store)
    links: list[Link] = []
    w, t = worker, step
    events = [e for e in copies.get(w, []) if e[1] < t]
    while True:
        if not events:
            links.append(Link(w, 0, t, None, None))
            break
        order, s, src, kind = max(events)
        links.append(Link(w, s, t, src, kind))
        w, t = src, s
        events = [e for e in copies.get(w, []) if e[0] < order]
    return links[::-1]


def _states_by_round(store: Store) -> list[dict[int, WorkerState]]:
    """Worker states in force during each round: index r for the round training
    ``[r * ready_interval, (r + 1) * ready_interval)`` (the states after round r)."""
    return [store.worker_states(0)] + [row.workers for row in store.rounds()]


def schedule(store: Store, worker: int, step: int | None = None) -> Schedule:
    """The hyperparameter schedule that produced ``worker``'s weights at ``step``."""
    cfg = store.config
    ready = int(cfg["ready_interval"])
    per_round = _states_by_round(store)
    segs: list[Segment] = []
    for link in chain(store, worker, step):
        pos = link.start
        while pos < link.stop:
            r = pos // ready  # the round training [r*ready, (r+1)*ready)
            stop = min(link.stop, (r + 1) * ready)
            state = per_round[min(r, len(per_round) - 1)][link.worker]
            segs.extend(Segment(h, n) for h, n in state.pieces(pos, stop))
            pos = stop
    if not segs:
        raise ValueError(f"worker {worker} has not trained by step {step}")
    return Schedule(tuple(segs)).merged()
