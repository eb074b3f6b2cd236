"""Drive FIRE PBT from your own loop: the controller's ask/tell API.

``firepbt.run`` trains, decides, applies and stores for you. When the training lives somewhere
else - jobs on a cluster scheduler, a notebook, your own process pool - drive the controller
yourself; it is pure decision logic and never trains, copies or stores anything:

1. ``specs = controller.start()``: one ``WorkerSpec`` per worker - ``role`` (``"member"`` or
   ``"evaluator"``), its sub-population and initial hyperparameters (evaluators start idle).
2. Each round, train every active worker ``ready_interval`` steps, evaluating every
   ``eval_interval`` (members also at step 0 in round 1), and tell the controller what it
   measured: ``decisions = controller.decide(step, {worker: [(step, score), ...]})``, scores
   maximised (negate a loss).
3. Apply the decisions *in order*: ``Exploit`` (the loser copies the source's state and takes
   ``new_hparams``), ``AssignEvaluator`` (the evaluator copies the parent's state, takes
   ``hparams`` and becomes active), ``EvaluatorSuccess`` (the target copies the evaluator's
   state; the evaluator becomes idle), ``StopEvaluator`` (the evaluator becomes idle). After a
   copy, give the receiver a data stream of its own (``reseed``).
4. ``controller.state_dict()`` after each round is what you keep to resume:
   ``controller.load_state_dict(state, history)`` on a controller built the same way, with
   ``history`` every observation told so far.

With the seeds ``firepbt.run`` derives (``worker_seeds``, ``copy_seed``, and the controller
from ``build_controller``), this loop makes exactly the decisions ``firepbt.run`` makes on the
same observations (``tests/test_ask_tell.py`` checks it).

    python examples/ask_tell.py          # FIRE PBT, 8 workers, on the noisy quadratic model
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firepbt import (
    AssignEvaluator,
    EvaluatorSuccess,
    ExperimentConfig,
    Exploit,
    StopEvaluator,
    build_controller,
    copy_seed,
    worker_seeds,
)
from firepbt.trainable import clone_state


def drive(config: ExperimentConfig, make: Callable[[int], Any], space: Any,
          controller: Any = None) -> tuple[list[Any], dict[int, list[tuple[int, float]]]]:
    """Run ``config`` (PBT or FIRE PBT) with trainables from ``make(seed)``: every decision,
    in order, and every worker's observations (scores, maximised)."""
    controller = controller or build_controller(config, space, None)
    specs = controller.start()
    seeds = worker_seeds(config.seed, len(specs))
    nets = {s.worker: make(seeds[s.worker]) for s in specs}  # your jobs' state, one per worker
    hparams = {s.worker: s.hparams for s in specs}
    active = {s.worker for s in specs if s.role == "member"}
    sign = -1.0 if getattr(nets[0], "mode", "max") == "min" else 1.0
    ready, every = config.ready_interval, config.eval_interval
    decisions: list[Any] = []
    seen: dict[int, list[tuple[int, float]]] = {}
    for r in range(1, config.steps // ready + 1):
        observations = {}
        for w in sorted(active):  # a job each: train a round, evaluating as it goes
            points = [(0, sign * nets[w].evaluate())] if r == 1 else []  # (members only)
            for k in range(ready // every):
                nets[w].train(hparams[w], every)
                points.append(((r - 1) * ready + (k + 1) * every, sign * nets[w].evaluate()))
            observations[w] = points
            seen.setdefault(w, []).extend(points)
        told = controller.decide(r * ready, observations)
        for i, d in enumerate(told):  # in order: each copy sees the ones before it
            if isinstance(d, Exploit):
                copy(nets, d.source, d.worker, copy_seed(config.seed, r, i))
                hparams[d.worker] = dict(d.new_hparams)
            elif isinstance(d, AssignEvaluator):
                copy(nets, d.parent, d.evaluator, copy_seed(config.seed, r, i))
                hparams[d.evaluator] = dict(d.hparams)
                active.add(d.evaluator)
            elif isinstance(d, EvaluatorSuccess):
                copy(nets, d.evaluator, d.target, copy_seed(config.seed, r, i))
                active.discard(d.evaluator)
            elif isinstance(d, StopEvaluator):
                active.discard(d.evaluator)
        decisions.extend(told)
    return decisions, seen


def copy(nets: dict[int, Any], source: int, dest: int, seed: int) -> None:
    """``dest`` continues from an independent copy of ``source``'s state, on a data stream of
    its own."""
    nets[dest].load_state_dict(clone_state(nets[source].state_dict()))
    if hasattr(nets[dest], "reseed"):
        nets[dest].reseed(seed)


if __name__ == "__main__":
    from firepbt.tasks.nqm import SPACE, NQMTrainable

    config = ExperimentConfig(task="nqm", method="fire", workers=8, steps=1200,
                              ready_interval=60, eval_interval=5)
    decisions, seen = drive(config, lambda seed: NQMTrainable(seed, dims=1000), SPACE)
    kinds: dict[str, int] = {}
    for d in decisions:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    best = max(v for w in range(3) for _s, v in seen[w])
    print(f"{len(decisions)} decisions: {kinds}; best P1 expected loss {-best:.4f}")
