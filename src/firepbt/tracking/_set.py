"""The driver's side of tracking (see :mod:`firepbt.tracking`): each committed round given to
every tracker once, the bookkeeping kept in the store, the rounds a tracker missed given on
resume."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..records import Decision, WorkerState
from ..selection import running_top, score_of
from ..store import TRACKING, RoundRow
from ._base import RoundReport, RunInfo, as_tracker

log = logging.getLogger("firepbt")


def _workers(workers: Mapping[int, WorkerState]) -> tuple[WorkerState, ...]:
    return tuple(workers[w] for w in sorted(workers))


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
        self._initial: tuple[WorkerState, ...] | None = None
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
            book = json.loads(store.meta(TRACKING) or "{}")
        except ValueError:
            book = {}
        self._book = {t.key: dict(book.get(t.key) or {"round": 0}) for t in self.trackers}
        for entry in self._book.values():  # a round given, then discarded (a fallback)
            entry["round"] = min(int(entry.get("round", 0)), current_round)
        for key, entry in book.items():
            self._book.setdefault(key, entry)  # (other trackers' entries are kept)
        self._initial = _workers(store.worker_states(0))
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
            if current_round == 0:  # a new run: nothing trained yet, so refused, not dropped
                try:
                    start(info)
                except Exception as exc:  # noqa: BLE001 - said in one line
                    why = (str(exc).strip().splitlines() or [""])[0][:200]
                    raise ConfigError("--log", "a tracker that can start (a new run does "
                                      "not begin without one it was given)",
                                      f"{t.key} ({type(exc).__name__}: {why})") from None
            elif not self._call(t, start, info, "start"):
                continue
            kept = getattr(t, "kept", None)  # what it still holds after a crash (W&B)
            if kept is not None and t.key not in self.disabled:
                try:
                    held = int(kept(info))
                except Exception as exc:  # noqa: BLE001 - said, and every round given again
                    log.warning("tracker %s could not say what it holds (%s: %s); it is given "
                                "every round again", t.key, type(exc).__name__, exc)
                    held = 0
                self._book[t.key]["round"] = min(int(self._book[t.key]["round"]), held)
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
            self._give(row, evals, tests, got["d"])

    # -- a round --------------------------------------------------------------------------

    def round_committed(self, row: RoundRow, evaluations: Sequence[tuple[int, int, float]],
                        tests: Sequence[tuple[int, int, float]],
                        decisions: Sequence[Decision]) -> None:
        """Give the round the store has just committed (``row``, its records) to every
        tracker that has not seen it."""
        if not self.trackers:
            return
        t0 = time.perf_counter()
        self._give(row, sorted(evaluations), sorted(tests), decisions)
        self.seconds += time.perf_counter() - t0

    def _give(self, row: RoundRow, evals: list[tuple[int, int, float]],
              tests: list[tuple[int, int, float]], decisions: Sequence[Decision]) -> None:
        assert self._best is not None
        self._best.add(evals)
        cfg = self._config
        r = row.round
        report = RoundReport(r, cfg.rounds, row.step, cfg.steps, self._mode, tuple(evals),
                             tuple(tests), tuple(decisions), _workers(row.workers),
                             self._best.point, float(row.train_seconds),
                             float(row.eval_seconds), self._initial if r == 1 else None,
                             float(row.finished_at))
        given = False
        for t in self._live():
            if int(self._book[t.key]["round"]) >= r:
                continue
            if self._call(t, t.on_round, report, f"round {r}"):
                self._book[t.key]["round"] = r
                given = True
        if given:
            self.store.set_meta(TRACKING, json.dumps(self._book))

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
        self.store.set_meta(TRACKING, json.dumps(self._book))

    def close(self) -> None:
        for t in self.trackers:
            close = getattr(t, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # noqa: BLE001
                if t.key not in self.disabled:  # (a disabled one was said already, once)
                    log.warning("tracker %s failed to close (%s: %s)", t.key,
                                type(exc).__name__, exc)
