"""The experiment store: SQLite, written by the driver process only.

Layout of a store folder ``PATH``::

    PATH/experiment.sqlite    config, evaluations, decisions, completed rounds
    PATH/checkpoints/round-NNNNNN.pt   worker states after the last completed round(s)

A round is committed atomically: its checkpoint file is written (to a temporary name, then
renamed), then one SQLite transaction records its evaluations, decisions and the round row.
``resume`` continues from the last round row; anything after it is discarded. Non-finite values
round-trip exactly (NaN is stored as NULL in the value columns, which are never NULL
otherwise; +-inf are native REALs). Checkpoints are read with ``torch.load(weights_only=True)``,
so a store never unpickles arbitrary objects. ``schema_version`` is checked on open.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StoreError
from .records import Decision, decision_from_dict, decision_to_dict

SCHEMA_VERSION = 1
DB_NAME = "experiment.sqlite"
KEEP_CHECKPOINTS = 2

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY, step INTEGER NOT NULL, finished_at REAL NOT NULL,
    train_seconds REAL NOT NULL, eval_seconds REAL NOT NULL, decide_seconds REAL NOT NULL,
    controller_state TEXT NOT NULL, runner_state TEXT NOT NULL, checkpoint TEXT);
CREATE TABLE evaluations (
    round INTEGER NOT NULL, worker INTEGER NOT NULL, step INTEGER NOT NULL, value REAL,
    PRIMARY KEY (worker, step, round));
CREATE TABLE tests (
    round INTEGER NOT NULL, worker INTEGER NOT NULL, step INTEGER NOT NULL, value REAL,
    PRIMARY KEY (worker, step, round));
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, step INTEGER NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX decisions_round ON decisions(round);
"""


def _to_db(x: float) -> float | None:
    return None if math.isnan(x) else x


def _from_db(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True, slots=True)
class RoundRow:
    round: int
    step: int
    finished_at: float
    train_seconds: float
    eval_seconds: float
    decide_seconds: float
    controller_state: dict[str, Any]
    runner_state: dict[str, Any]
    checkpoint: str | None


class Store:
    """One experiment's store. Use :meth:`create` for a new one and :meth:`open` for an
    existing one; both refuse what is not theirs to touch."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # -- opening ----------------------------------------------------------------------------

    @staticmethod
    def resolve(path: str | os.PathLike[str]) -> Path:
        text = os.fspath(path)
        if text.startswith("sqlite:///"):
            text = text[len("sqlite:///"):]
            if text.endswith(".sqlite"):
                text = str(Path(text).parent)
        return Path(text)

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: Mapping[str, Any]) -> Store:
        root = cls.resolve(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise StoreError(f"store must be a new or empty folder, got {str(root)!r} "
                             "(it exists and is not empty; firepbt never overwrites a store)")
        root.mkdir(parents=True, exist_ok=True)
        (root / "checkpoints").mkdir(exist_ok=True)
        conn = sqlite3.connect(root / DB_NAME)
        conn.execute("PRAGMA journal_mode=WAL")  # 'status' and reports read while a run writes
        conn.executescript(_SCHEMA)
        with conn:
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", "firepbt"), ("schema_version", str(SCHEMA_VERSION)),
                ("config", json.dumps(dict(config))), ("created_at", repr(time.time()))])
        return cls(root, conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        root = cls.resolve(path)
        db = root / DB_NAME
        if not db.is_file():
            raise StoreError(f"store must be a folder made by 'firepbt run', got {str(root)!r} "
                             f"(no {DB_NAME} in it)")
        uri = f"file:{db}?mode=ro" if readonly else f"file:{db}"
        try:
            conn = sqlite3.connect(uri, uri=True)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store must be a firepbt store, got {str(root)!r} ({exc})") from exc
        if meta.get("format") != "firepbt":
            raise StoreError(f"store must be a firepbt store, got {str(root)!r}")
        version = int(meta.get("schema_version", "0"))
        if version != SCHEMA_VERSION:
            raise StoreError(f"store schema_version must be {SCHEMA_VERSION}, got {version}")
        return cls(root, conn)

    def close(self) -> None:
        self.conn.close()

    # -- reading -----------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        row = self.conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()
        return json.loads(row[0])

    def last_round(self) -> RoundRow | None:
        row = self.conn.execute("SELECT * FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        return None if row is None else _round_row(row)

    def rounds(self) -> list[RoundRow]:
        return [_round_row(r) for r in self.conn.execute("SELECT * FROM rounds ORDER BY round")]

    def evaluations(self, worker: int | None = None) -> list[tuple[int, int, int, float]]:
        """``(round, worker, step, raw value)`` in worker, step order."""
        q = "SELECT round, worker, step, value FROM evaluations"
        args: tuple[Any, ...] = ()
        if worker is not None:
            q += " WHERE worker = ?"
            args = (worker,)
        q += " ORDER BY worker, step, round"
        return [(r, w, s, _from_db(v)) for r, w, s, v in self.conn.execute(q, args)]

    def tests(self) -> list[tuple[int, int, int, float]]:
        return [(r, w, s, _from_db(v)) for r, w, s, v in self.conn.execute(
            "SELECT round, worker, step, value FROM tests ORDER BY step, worker")]

    def decisions(self, kinds: Iterable[str] | None = None) -> list[tuple[int, int, Decision]]:
        """``(round, step, decision)`` in the order they were applied."""
        rows = self.conn.execute("SELECT round, step, kind, payload FROM decisions ORDER BY id")
        wanted = None if kinds is None else set(kinds)
        return [(r, s, decision_from_dict(json.loads(p))) for r, s, k, p in rows
                if wanted is None or k in wanted]

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / name

    # -- writing (driver only) -------------------------------------------------------------

    def write_checkpoint(self, round_index: int, states: Mapping[int, Any]) -> str:
        import torch

        name = f"round-{round_index:06d}.pt"
        final = self.checkpoint_path(name)
        tmp = final.with_suffix(".tmp")
        torch.save({str(k): v for k, v in states.items()}, tmp)
        os.replace(tmp, final)
        return name

    def read_checkpoint(self, name: str) -> dict[int, Any]:
        import torch

        data = torch.load(self.checkpoint_path(name), weights_only=True)
        return {int(k): v for k, v in data.items()}

    def commit_round(self, row: RoundRow, evaluations: Iterable[tuple[int, int, float]],
                     tests: Iterable[tuple[int, int, float]], decisions: Iterable[Decision],
                     meta: Mapping[str, str] | None = None) -> None:
        """One round, atomically (with ``meta`` entries written in the same transaction)."""
        with self.conn:
            for key, value in (meta or {}).items():
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            self.conn.executemany("INSERT INTO evaluations VALUES (?, ?, ?, ?)",
                                  [(row.round, w, s, _to_db(v)) for w, s, v in evaluations])
            self.conn.executemany("INSERT INTO tests VALUES (?, ?, ?, ?)",
                                  [(row.round, w, s, _to_db(v)) for w, s, v in tests])
            self.conn.executemany(
                "INSERT INTO decisions (round, step, kind, payload) VALUES (?, ?, ?, ?)",
                [(row.round, row.step, d.kind, json.dumps(decision_to_dict(d))) for d in decisions])
            self.conn.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                row.round, row.step, row.finished_at, row.train_seconds, row.eval_seconds,
                row.decide_seconds, json.dumps(row.controller_state), json.dumps(row.runner_state),
                row.checkpoint))
        self._prune_checkpoints()

    def discard_after(self, round_index: int) -> None:
        """Drop anything recorded after ``round_index`` (a crash between writes)."""
        with self.conn:
            for table in ("evaluations", "tests", "decisions", "rounds"):
                self.conn.execute(f"DELETE FROM {table} WHERE round > ?", (round_index,))

    def set_meta(self, key: str, value: str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def _prune_checkpoints(self) -> None:
        keep = {r[0] for r in self.conn.execute(
            "SELECT checkpoint FROM rounds WHERE checkpoint IS NOT NULL ORDER BY round DESC LIMIT ?",
            (KEEP_CHECKPOINTS,))}
        for f in (self.path / "checkpoints").glob("round-*.pt"):
            if f.name not in keep:
                f.unlink(missing_ok=True)


def _round_row(row: tuple[Any, ...]) -> RoundRow:
    return RoundRow(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]),
                    json.loads(row[7]), row[8])
