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
  error) and disabled for the rest of this call; the run goes on. ``KeyboardInterrupt`` and
  other ``BaseException``\\ s are not caught.
- **Each round once, none missed.** The store remembers, per callback (:attr:`Tracker.key`),
  the last round it was given (meta ``tracking``). ``resume`` first gives each callback the
  committed rounds it has not seen - those a crash, a disabled callback, or a first run without
  that callback left - read back from the store (a :class:`RoundReport` equal to the live one),
  then goes on live. A round discarded by a checkpoint fallback and trained again is given
  again only to a callback that had not seen it.

Built-in trackers are made from a spec, as ``--log`` takes it (:func:`make_tracker`):
``tensorboard:DIR``, ``wandb:PROJECT`` and ``mlflow:URI`` (a tracking URI such as
``sqlite:///mlflow.db``, or a folder, which gets ``mlflow.db`` inside). Each writes, per
worker, the objective at every evaluation and each hyperparameter at every round
(``objective/w03``, ``hparams/lambda/w03``), the top so far (``best/objective``), each
sub-population's median of each hyperparameter (``subpop/P2/lambda``), and the round's events:
a copy as ``events/exploit/w05`` = the source worker at the step it happened, an evaluator's
success as ``events/success/w07`` = the evaluator whose weights the target ``w07`` took, and
counts per round (``events/exploits``, ``events/successes``).
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..executor import score_of
from ..records import (
    AssignEvaluator,
    Decision,
    EvaluatorSuccess,
    Exploit,
    StopEvaluator,
    WorkerFailure,
)
from ..results import running_top

log = logging.getLogger("firepbt")

META_KEY = "tracking"  # store meta: {tracker key: {"round": last round given, ...saved}}


@dataclass(frozen=True)
class WorkerInfo:
    """One worker after a round's decisions: its role (``member`` / ``evaluator``), its
    sub-population (None for an idle evaluator), the hyperparameters it trains with from this
    step on, and whether it trains next round."""

    worker: int
    role: str
    subpopulation: int | None
    hparams: Mapping[str, Any]
    active: bool


@dataclass(frozen=True)
class RoundReport:
    """What one committed round recorded (see the module docstring).

    ``evaluations`` and ``tests`` are ``(worker, step, raw value)`` in worker, step order (raw:
    as ``evaluate()`` returned it, a loss stays a loss); ``decisions`` in the order they were
    applied; ``workers`` after the decisions; ``best`` the population's top point so far,
    ``(worker, step, raw value)`` over the best-effort members (P1 for FIRE PBT), None before a
    finite one; ``initial`` the workers before the first round (round 1 only, else None)."""

    round: int
    rounds: int
    step: int
    steps: int
    mode: str
    evaluations: tuple[tuple[int, int, float], ...]
    tests: tuple[tuple[int, int, float], ...]
    decisions: tuple[Decision, ...]
    workers: tuple[WorkerInfo, ...]
    best: tuple[int, int, float] | None
    train_seconds: float = field(compare=False)  # (timings: not part of a report's equality)
    eval_seconds: float = field(compare=False)
    initial: tuple[WorkerInfo, ...] | None = None

    def of_kind(self, kind: type) -> list[Any]:
        """The round's decisions of one kind, e.g. ``report.of_kind(Exploit)``."""
        return [d for d in self.decisions if isinstance(d, kind)]

    def events(self) -> list[tuple[int, str]]:
        """The round's decisions in words, ``(worker concerned, text)``, for text logs."""
        out = []
        for d in self.decisions:
            if isinstance(d, Exploit):
                out.append((d.worker, f"step {self.step}: worker {d.worker} (P{d.subpopulation + 1})"
                                      f" copied worker {d.source}, hyperparameters "
                                      f"{_hp(d.old_hparams)} -> {_hp(d.new_hparams)}"))
            elif isinstance(d, AssignEvaluator):
                out.append((d.evaluator, f"step {self.step}: evaluator {d.evaluator} took parent "
                                         f"{d.parent} (P{d.parent_subpopulation + 1}) to train "
                                         f"with {_hp(d.hparams)} against target {d.target}"))
            elif isinstance(d, EvaluatorSuccess):
                out.append((d.target, f"step {self.step}: evaluator {d.evaluator} succeeded "
                                      f"(p = {d.p_value:.3g}, score diff {d.score_diff:.3g}); "
                                      f"worker {d.target} took its weights"))
            elif isinstance(d, StopEvaluator):
                out.append((d.evaluator, f"step {self.step}: evaluator {d.evaluator} stopped "
                                         f"({d.reason})"))
            elif isinstance(d, WorkerFailure):
                out.append((d.worker, f"step {self.step}: worker {d.worker} failed ({d.error}); "
                                      f"{d.action}"))
        return out


def _hp(h: Mapping[str, Any] | None) -> str:
    return "{" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((h or {}).items())) + "}"


@dataclass(frozen=True)
class RunInfo:
    """What a tracker's ``start`` is told: the store, its configuration, the objective's mode,
    the round the run goes on from (0 for a new run), and what this tracker saved in the store
    before (``saved``; :meth:`save` keeps more, e.g. a W&B or MLflow run id for a resume)."""

    store: Path
    name: str
    config: Mapping[str, Any]
    mode: str
    rounds: int
    steps: int
    ready_interval: int
    start_round: int
    last_given: int
    saved: Mapping[str, Any]
    _save: Callable[[str, Any], None] = field(repr=False, compare=False)

    def save(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) in the store under this tracker, for the next ``resume``."""
        self._save(key, value)


@runtime_checkable
class Tracker(Protocol):
    """A callback object (see the module docstring). ``key`` names it in the store's
    bookkeeping: two trackers with the same key are one tracker to ``resume``."""

    key: str

    def on_round(self, report: RoundReport) -> None: ...


class _Function:
    """A plain function as a tracker."""

    def __init__(self, fn: Callable[[RoundReport], Any]) -> None:
        self.fn = fn
        self.key = "callable:" + ".".join(
            x for x in (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
                        or type(fn).__name__) if x)

    def on_round(self, report: RoundReport) -> None:
        self.fn(report)


def as_tracker(cb: Any) -> Any:
    """A callback as a tracker: objects with ``on_round`` as they are, functions wrapped."""
    if hasattr(cb, "on_round"):
        if not isinstance(getattr(cb, "key", None), str):
            try:
                cb.key = f"{type(cb).__module__}.{type(cb).__qualname__}"
            except AttributeError as exc:
                raise ConfigError("callbacks", "objects with a str attribute 'key' (or one that "
                                  "can be set)", type(cb).__name__) from exc
        return cb
    if callable(cb):
        return _Function(cb)
    raise ConfigError("callbacks", "functions report -> None, objects with on_round(report), or "
                      "--log specs such as 'tensorboard:DIR'", type(cb).__name__)


def _workers(runner_state: Mapping[str, Any]) -> tuple[WorkerInfo, ...]:
    ws = runner_state["workers"]
    return tuple(WorkerInfo(int(k), v["role"], v.get("sub"), dict(v["hparams"] or {}),
                            bool(v["active"])) for k, v in sorted(ws.items(), key=lambda kv:
                                                                  int(kv[0])))


class _Best:
    """The running top over best-effort members, as the runner keeps it: points in (step,
    worker) order, a new top only when strictly higher and finite."""

    def __init__(self, candidates: Iterable[int], mode: str) -> None:
        self.candidates = set(candidates)
        self.mode = mode
        self.score = -float("inf")
        self.point: tuple[int, int, float] | None = None

    def add(self, evaluations: Iterable[tuple[int, int, float]]) -> None:
        raw = {(s, w): v for w, s, v in evaluations if w in self.candidates}
        self.score, tops = running_top(((s, w, score_of(v, self.mode))
                                        for (s, w), v in raw.items()), self.score)
        if tops:
            s, w, _sc = tops[-1]
            self.point = (w, s, raw[s, w])


class TrackerSet:
    """The driver's side: gives each committed round to every tracker, once, and keeps the
    bookkeeping in the store (used by :class:`firepbt.runner.Runner`)."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self.trackers = [as_tracker(c) for c in callbacks]
        keys = [t.key for t in self.trackers]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError("callbacks", "trackers with different keys (each is remembered "
                              "by its key in the store)", f"{dup[0]!r} twice")
        self.disabled: set[str] = set()
        self.seconds = 0.0  # driver time spent in the trackers (and building their reports)
        self.store: Any = None
        self._book: dict[str, dict[str, Any]] = {}
        self._best: _Best | None = None
        self._initial: tuple[WorkerInfo, ...] | None = None
        self._config: Any = None
        self._mode = "max"

    def __bool__(self) -> bool:
        return bool(self.trackers)

    # -- start: bookkeeping, then the rounds a tracker has not seen ---------------------

    def start(self, store: Any, config: Any, mode: str, candidates: Iterable[int],
              current_round: int) -> None:
        if not self.trackers:
            return
        t0 = time.perf_counter()
        self.store, self._config, self._mode = store, config, mode
        try:
            book = json.loads(store.meta(META_KEY) or "{}")
        except ValueError:
            book = {}
        self._book = {t.key: dict(book.get(t.key) or {"round": 0}) for t in self.trackers}
        for entry in self._book.values():  # a round given, then discarded (a fallback)
            entry["round"] = min(int(entry.get("round", 0)), current_round)
        for key, entry in book.items():
            self._book.setdefault(key, entry)  # (other trackers' entries are kept)
        init = store.meta("initial_runner_state")
        self._initial = _workers(json.loads(init)) if init else None
        self._best = _Best(candidates, mode)
        for t in self.trackers:
            start = getattr(t, "start", None)
            if start is None:
                continue
            saved = {k: v for k, v in self._book[t.key].items() if k != "round"}
            info = RunInfo(Path(store.path), Path(store.path).name, dict(config.to_dict()),
                           mode, config.rounds, config.steps, config.ready_interval,
                           current_round, int(self._book[t.key]["round"]), saved,
                           _save=functools.partial(self._save, t.key))
            self._call(t, start, info, "start")
        behind = min((int(self._book[t.key]["round"]) for t in self._live()),
                     default=current_round)
        if current_round > 0:
            self._backfill(behind, current_round)
        self.seconds += time.perf_counter() - t0

    def _backfill(self, behind: int, current: int) -> None:
        """The committed rounds up to ``current``: the top so far is built from all of them,
        trackers behind are given the rounds they have not seen."""
        st = self.store
        per: dict[int, dict[str, list[Any]]] = {}
        for r, w, s, v in st.evaluations():
            per.setdefault(r, {"e": [], "t": [], "d": []})["e"].append((w, s, v))
        for r, w, s, v in st.tests():
            per.setdefault(r, {"e": [], "t": [], "d": []})["t"].append((w, s, v))
        for r, _s, d in st.decisions():
            per.setdefault(r, {"e": [], "t": [], "d": []})["d"].append(d)
        for row in st.rounds():
            if row.round > current:
                break
            got = per.get(row.round, {"e": [], "t": [], "d": []})
            evals = sorted(got["e"])  # worker, step order
            tests = sorted(got["t"])
            if row.round <= behind:
                assert self._best is not None
                self._best.add(evals)
                continue
            self._give(row.round, row.step, evals, tests, got["d"], row.runner_state,
                       row.train_seconds, row.eval_seconds)

    # -- a round --------------------------------------------------------------------------

    def round_committed(self, r: int, step: int, evaluations: Sequence[tuple[int, int, float]],
                        tests: Sequence[tuple[int, int, float]], decisions: Sequence[Decision],
                        runner_state: Mapping[str, Any], train_seconds: float,
                        eval_seconds: float) -> None:
        if not self.trackers:
            return
        t0 = time.perf_counter()
        self._give(r, step, sorted(evaluations), sorted(tests), decisions, runner_state,
                   train_seconds, eval_seconds)
        self.seconds += time.perf_counter() - t0

    def _give(self, r: int, step: int, evals: list[tuple[int, int, float]],
              tests: list[tuple[int, int, float]], decisions: Sequence[Decision],
              runner_state: Mapping[str, Any], train_seconds: float, eval_seconds: float
              ) -> None:
        assert self._best is not None
        self._best.add(evals)
        cfg = self._config
        report = RoundReport(r, cfg.rounds, step, cfg.steps, self._mode, tuple(evals),
                             tuple(tests), tuple(decisions), _workers(runner_state),
                             self._best.point, float(train_seconds), float(eval_seconds),
                             self._initial if r == 1 else None)
        given = False
        for t in self._live():
            if int(self._book[t.key]["round"]) >= r:
                continue
            if self._call(t, t.on_round, report, f"round {r}"):
                self._book[t.key]["round"] = r
                given = True
        if given:
            self.store.set_meta(META_KEY, json.dumps(self._book))

    # -- helpers --------------------------------------------------------------------------

    def _live(self) -> list[Any]:
        return [t for t in self.trackers if t.key not in self.disabled]

    def _call(self, t: Any, fn: Callable[[Any], Any], arg: Any, what: str) -> bool:
        try:
            fn(arg)
            return True
        except Exception as exc:  # noqa: BLE001 - a tracker never costs the run
            self.disabled.add(t.key)
            log.warning("tracker %s failed at %s (%s: %s); it is disabled for the rest of this "
                        "run, which goes on (the round is in the store; resume gives the "
                        "tracker the rounds it missed)", t.key, what, type(exc).__name__, exc)
            return False

    def _save(self, key: str, k: str, v: Any) -> None:
        self._book[key][k] = v
        self.store.set_meta(META_KEY, json.dumps(self._book))

    def close(self) -> None:
        for t in self.trackers:
            close = getattr(t, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # noqa: BLE001
                log.warning("tracker %s failed to close (%s: %s)", t.key, type(exc).__name__, exc)


# -- what the built-in trackers write ------------------------------------------------------

def worker_tag(worker: int, n_workers: int) -> str:
    """``w03`` for worker 3 of 22 (zero-padded so that tags sort)."""
    return f"w{worker:0{max(2, len(str(max(0, n_workers - 1))))}d}"


def scalars(report: RoundReport) -> list[tuple[str, int, float]]:
    """The ``(tag, step, value)`` series every built-in tracker writes for a round (see the
    module docstring), in step order; numbers only (a non-numeric hyperparameter is left out)."""
    n = len(report.workers)
    out: list[tuple[str, int, float]] = []
    for w, s, v in report.evaluations:
        out.append((f"objective/{worker_tag(w, n)}", s, float(v)))
    for w, s, v in report.tests:
        out.append((f"test/{worker_tag(w, n)}", s, float(v)))

    def hparams(workers: Sequence[WorkerInfo], step: int) -> None:
        subs: dict[tuple[int, str], list[float]] = {}
        for info in workers:
            for k, v in info.hparams.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append((f"hparams/{k}/{worker_tag(info.worker, n)}", step, float(v)))
                    if info.role == "member" and info.subpopulation is not None:
                        subs.setdefault((info.subpopulation, k), []).append(float(v))
        for (sub, k), vs in sorted(subs.items()):
            out.append((f"subpop/P{sub + 1}/{k}", step, statistics.median(vs)))

    if report.initial is not None:
        hparams(report.initial, 0)
    hparams(report.workers, report.step)
    if report.best is not None:
        out.append(("best/objective", report.step, float(report.best[2])))
    exploits = report.of_kind(Exploit)
    successes = report.of_kind(EvaluatorSuccess)
    for d in exploits:
        out.append((f"events/exploit/{worker_tag(d.worker, n)}", report.step, float(d.source)))
    for d in successes:
        out.append((f"events/success/{worker_tag(d.target, n)}", report.step,
                    float(d.evaluator)))
    out.append(("events/exploits", report.step, float(len(exploits))))
    out.append(("events/successes", report.step, float(len(successes))))
    out.sort(key=lambda x: x[1])
    return out


# -- specs, as --log takes them --------------------------------------------------------------

KINDS = {"tensorboard": "DIR", "wandb": "PROJECT", "mlflow": "URI"}


def make_tracker(spec: str) -> Any:
    """A built-in tracker from a ``--log`` spec: ``tensorboard:DIR``, ``wandb:PROJECT`` or
    ``mlflow:URI`` (see the module docstring)."""
    kind, sep, arg = str(spec).partition(":")
    if kind not in KINDS or not sep or not arg:
        raise ConfigError("--log", "tensorboard:DIR, wandb:PROJECT or mlflow:URI", spec)
    if kind == "tensorboard":
        from .tensorboard import TensorBoardTracker

        return TensorBoardTracker(arg)
    if kind == "wandb":
        from .wandb import WandbTracker

        return WandbTracker(arg)
    from .mlflow import MLflowTracker

    return MLflowTracker(arg)


def callbacks_of(specs_or_callbacks: Iterable[Any] | None) -> list[Any]:
    """``--log`` specs made into trackers; callbacks and trackers as they are."""
    return [make_tracker(c) if isinstance(c, str) else c for c in specs_or_callbacks or ()]

