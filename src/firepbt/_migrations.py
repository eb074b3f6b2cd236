"""The one place a store written by an earlier schema version is converted to the current one
(:data:`firepbt.store.SCHEMA_VERSION`), when it is opened: in place for a writer (one
transaction), in an in-memory copy for a reader (the file is left as it is). Every other module
sees one shape.

Version 1 (firepbt 0.1.0 development builds up to main at 6085c41) to 2:

- each round's worker states: the runner's JSON ``{"workers": {w: {"role", "sub", "hparams",
  "schedule", "active"}}, "best_score"}`` becomes two columns, ``workers`` (each a
  :class:`~firepbt.records.WorkerState`, ``subpopulation`` spelt out) and ``best_score``; the
  initial states (meta ``initial_runner_state``) likewise (meta ``initial_workers``);
- FIRE PBT's controller states spell ``subpopulation`` out (members' ``sub``) and carry the
  rules the run was started under (:class:`~firepbt.controllers.fire.FireRules`; version 1
  predates ``receivers_as_targets`` and ``ties``, so its runs go on as they began: ``False``
  and ``"exploit"``);
- the run's facts, kept under five keys and partly derived at read time from the
  configuration and the task registry, become one record written once (meta ``run``:
  :class:`~firepbt.records.RunFacts`);
- the random-search schedule's words (meta ``random_schedule``) are no longer stored: a report
  says them from the configuration and the facts.

Earlier development stores than that last version 1 (checkpoints without digests, FIRE states
holding whole curves, evaluator successes without their comparison, no ``device_last``) are
refused in one line: they cannot be converted without guessing.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import StoreError


def migrate(conn: sqlite3.Connection, root: Path, version: int, target: int) -> None:
    """Convert the database behind ``conn`` from schema ``version`` to ``target``, each step in
    one transaction (converted, or left as it was). SQLite's errors are the caller's to
    translate (the store's)."""
    while version < target:
        step = MIGRATIONS[version]
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn, root)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                         (str(version + 1),))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        version += 1


def _refuse(root: Path, why: str) -> StoreError:
    return StoreError(f"store {str(root)!r} was written by an early development build of "
                      f"firepbt ({why}); it cannot be converted to this version's store - "
                      "run the experiment again")


def _v1_to_v2(conn: sqlite3.Connection, root: Path) -> None:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "checkpoint_digests" not in tables:
        raise _refuse(root, "its checkpoints have no digests")
    for (payload,) in conn.execute("SELECT payload FROM decisions WHERE kind="
                                   "'evaluator_success'"):
        if json.loads(payload).get("comparison") is None:
            raise _refuse(root, "its evaluator successes do not carry their comparison")
    config = json.loads(meta["config"])
    rows = conn.execute("SELECT round, step, finished_at, train_seconds, eval_seconds, "
                        "decide_seconds, controller_state, runner_state, checkpoint FROM rounds "
                        "ORDER BY round").fetchall()
    if rows and "device_last" not in meta:
        raise _refuse(root, "it does not record the device of its last run")
    converted = []
    for *head, controller, runner, checkpoint in rows:
        state = json.loads(runner)
        converted.append((*head, json.dumps(_controller(root, json.loads(controller))),
                          json.dumps(_workers(state["workers"])), float(state["best_score"]),
                          checkpoint))
    conn.execute("CREATE TABLE rounds_v2 (round INTEGER PRIMARY KEY, step INTEGER NOT NULL, "
                 "finished_at REAL NOT NULL, train_seconds REAL NOT NULL, eval_seconds REAL "
                 "NOT NULL, decide_seconds REAL NOT NULL, controller_state TEXT NOT NULL, "
                 "workers TEXT NOT NULL, best_score REAL NOT NULL, checkpoint TEXT)")
    conn.executemany("INSERT INTO rounds_v2 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", converted)
    conn.execute("DROP TABLE rounds")
    conn.execute("ALTER TABLE rounds_v2 RENAME TO rounds")
    initial = meta.get("initial_runner_state")
    if initial is not None:
        workers = json.loads(initial)["workers"]
        if "mode" not in meta:
            raise _refuse(root, "it does not record its objective's mode")
        facts = _facts(config, meta, workers)
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            ("run", json.dumps(facts)), ("initial_workers", json.dumps(_workers(workers)))])
    conn.executemany("DELETE FROM meta WHERE key=?", [
        (k,) for k in ("initial_runner_state", "mode", "executor", "space", "random_schedule")])


def _workers(workers: Mapping[str, Any]) -> dict[str, Any]:
    return {w: {"role": v["role"], "subpopulation": v["sub"], "hparams": v["hparams"],
                "schedule": v["schedule"], "active": v["active"]} for w, v in workers.items()}


def _controller(root: Path, state: dict[str, Any]) -> dict[str, Any]:
    """FIRE PBT's members with ``subpopulation`` spelt out and its rules as version 1 ran
    them; other controllers as they are."""
    members = state.get("members")
    if not isinstance(members, dict):
        return state
    for entry in [*members.values(), *(state.get("evaluators") or {}).values()]:
        if "curve" in entry:
            raise _refuse(root, "its FIRE PBT states hold whole curves")
    state["members"] = {w: {("subpopulation" if k == "sub" else k): v for k, v in m.items()}
                        for w, m in members.items()}
    state.setdefault("rules", dict(V1_FIRE_RULES))
    return state


# FIRE PBT's rules in every version-1 store (main up to 6085c41): the defaults of then
V1_FIRE_RULES = {"evaluated_since": "start", "target_curve": "continues",
                 "separated_only": False, "widened_range": True,
                 "receivers_as_targets": False, "ties": "exploit"}


def _facts(config: Mapping[str, Any], meta: Mapping[str, str],
           workers: Mapping[str, Any]) -> dict[str, Any]:
    """The run facts a version-1 store kept in parts, or derived when read: the mode, the
    executor and the space as stored; the best-effort workers and sub-populations from FIRE
    PBT's layout (version 1 knew no other controllers' candidates); the main hyperparameter
    and the schedule's as version 1 derived them (the task's schedule parameter, else ``lr``,
    else the first numeric one)."""
    from .controllers.fire_layout import fire_split
    from .tasks import TASKS

    n_workers = int(config["workers"])
    if config["method"] == "fire":
        n_sub, size, _ = fire_split(n_workers, config.get("n_subpopulations"),
                                    float(config.get("quantile", 0.25)))
        candidates, subs = list(range(size)), n_sub
    else:
        candidates, subs = list(range(n_workers)), 1
    task = TASKS.get(config["task"])
    schedule_param = task.schedule_param if task is not None else None
    words = meta.get("random_schedule") or ""
    if task is None and " followed the hand-tuned schedule" in words:
        schedule_param = words.split(" followed the hand-tuned schedule")[0]
    main = schedule_param if task is not None and schedule_param else _main_param(workers)
    return {"mode": meta["mode"], "executor": meta.get("executor") or config["executor"],
            "best_candidates": candidates, "subpopulations": subs, "main_param": main,
            "schedule_param": schedule_param if config["method"] == "random" else None,
            "space": json.loads(meta.get("space") or "[]"),
            "reinforcement": bool(task is not None and task.reinforcement)}


def _main_param(workers: Mapping[str, Any]) -> str:
    for v in workers.values():
        hp = v.get("hparams")
        if hp:
            if "lr" in hp:
                return "lr"
            numeric = [str(k) for k in sorted(hp) if isinstance(hp[k], (int, float))
                       and not isinstance(hp[k], bool) and not math.isnan(float(hp[k]))]
            return (numeric or [str(k) for k in sorted(hp)])[0]
    return "lr"


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, Path], None]] = {1: _v1_to_v2}
