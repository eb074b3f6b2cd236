"""Watching a run where you already look: a callback after each committed round, and trackers
for TensorBoard, Weights & Biases and MLflow (:mod:`firepbt.tracking.tensorboard`,
:mod:`~firepbt.tracking.wandb`, :mod:`~firepbt.tracking.mlflow`; each an optional extra).

The contract:

- **What a callback sees.** After the driver has *committed* a round to the store it calls
  each callback with a :class:`RoundReport`: the round's evaluations and tests, its decisions
  in the order they were applied (exploits, evaluator assignments, successes, stops, failures),
  every worker's role, sub-population and hyperparameters after those decisions, and the
  population's top point so far. A callback is a function ``report -> None``, or an object with
  ``on_round(report)`` and optionally ``start(info)`` (a :class:`RunInfo`, once per ``run`` /
  ``resume`` call, before the first report) and ``close()`` (once at the end, also after a
  failure).
- **Nothing is lost to a callback.** The round is in the store before a callback sees it. A
  callback that raises is warned about (on the ``firepbt`` logger, naming it, the round and the
  error) and disabled for the rest of this call; the run goes on. One whose ``start`` raises
  when a new run begins is a :class:`~firepbt.errors.ConfigError` instead (nothing is trained
  yet, and no store is left). ``KeyboardInterrupt`` and other ``BaseException``\\ s are not
  caught.
- **Each round once, none missed.** The store remembers, per callback (:attr:`Tracker.key`),
  the last round it was given (meta ``tracking``). ``resume`` first gives each callback the
  committed rounds it has not seen - those a crash, a disabled callback, or a first run without
  that callback left - read back from the store (a :class:`RoundReport` equal to the live one),
  then goes on live. A round discarded by a checkpoint fallback and trained again is given
  again only to a callback that had not seen it. A tracker that hands its records to another
  process (W&B's service writes them a little later) may lose the last ones to a ``SIGKILL``;
  such a tracker says, after ``start``, the last round it still holds (``kept(info) ->
  round``), and is given again every round after it.

Built-in trackers are made from a spec, as ``--log`` takes it (:func:`make_tracker`):
``tensorboard:DIR``, ``wandb:PROJECT`` and ``mlflow:URI`` (a tracking URI such as
``sqlite:///mlflow.db``, or a folder, which gets ``mlflow.db`` inside). Each writes, per
worker, the objective at every evaluation and each hyperparameter at every round's step, as it
is from that step on, and where a schedule (random search's) changes it inside a round, at the
step of the change (``objective/w03``, ``hparams/lambda/w03``), the top so far
(``best/objective``), each
sub-population's median of each hyperparameter (``subpop/P2/lambda``), and the round's events:
a copy as ``events/exploit/w05`` = the source worker at the step it happened, an evaluator's
success as ``events/success/w07`` = the evaluator whose weights the target ``w07`` took, and
counts per round (``events/exploits``, ``events/successes``).
"""

from __future__ import annotations

from ..records import WorkerState
from ._base import RoundReport, RunInfo, Tracker, as_tracker
from ._scalars import scalars, worker_tag
from ._set import TrackerSet
from ._specs import KINDS, callbacks_of, make_tracker

__all__ = ["KINDS", "RoundReport", "RunInfo", "Tracker", "TrackerSet", "WorkerState",
           "as_tracker", "callbacks_of", "make_tracker", "scalars", "worker_tag"]
