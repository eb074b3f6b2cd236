"""The experiment store: SQLite, written by the driver process only.

Layout of a store folder ``PATH``::

    PATH/experiment.sqlite    config, evaluations, decisions, completed rounds
    PATH/checkpoints/round-NNNNNN.pt   worker states after the last completed round(s)
    PATH/checkpoints/round-NNNNNN.parts/   the same, written in parts by several processes
        part-KKK.pt ...                    (the Ray actors, each its members' states) and
        manifest.json                      sealed by the driver: each part's SHA-256

A round is committed atomically: its checkpoint file is written (to a temporary name, flushed
to disk with ``fsync``, then renamed), then one SQLite transaction records its evaluations,
decisions, the round row and the checkpoint's SHA-256 digest. ``resume`` continues from the last
round row with a checkpoint; anything after it is discarded (and trained again, exactly). A
checkpoint may also be bound to its round after the round was committed
(:meth:`Store.attach_checkpoint`: the Ray executor's actors write it while the next round
trains). Non-finite values round-trip exactly (NaN is stored
as NULL in the value columns, which are never NULL otherwise; +-inf are native REALs); a zero
loses its sign (SQLite keeps none), which is why controllers observe unsigned zeros
(:func:`~firepbt.executor.observed_score`).

Integrity (what a crash, a second process or a damaged file cannot do silently):

- **Creation is atomic.** The database is built under a temporary name and renamed into place
  last, so a folder without ``experiment.sqlite`` was never a store: ``run`` treats such an
  unfinished folder as new.
- **One writer.** A writer (``run``, ``resume``, ``replay``) holds an exclusive ``flock`` on
  ``PATH/writer.lock`` while the store is open; a second writer is refused in one line, and
  ``status`` tells running from stopped by it (local filesystems; where ``fcntl`` is missing,
  as on Windows, there is no lock).
- **Checkpoints are bound to their round.** Each checkpoint's digest is recorded with its round
  and checked when it is read; an unreadable, truncated or stale checkpoint is refused with a
  one-line :class:`~firepbt.errors.StoreError` (``resume`` then falls back on the previous
  round's checkpoint, see :meth:`firepbt.runner.Runner.restore`).
- **A damaged database is noticed** (:meth:`Store.check_integrity`, SQLite's ``quick_check``)
  before anything is written to it.
- **Checkpoints hold CPU tensors**, whatever device trained them, so a store made on a GPU
  machine resumes, reports and replays on a CPU-only one (and back).
- **Every checkpoint has its digest.** A checkpoint whose round records no digest is never
  read (:meth:`Store.read_checkpoint`).
- **One shape.** The schema has a version (``SCHEMA_VERSION``); a store written by an earlier
  version is converted when it is opened, in one place (:mod:`firepbt._migrations`: in place
  for a writer, in memory for a reader), so every other module sees one shape.
- **Errors in the store's terms.** Every SQLite error leaves the store as a
  :class:`~firepbt.errors.StoreError`: :class:`~firepbt.errors.StoreLocked` (another process
  holds the database) or :class:`~firepbt.errors.StoreDamaged`.
- **Checkpoints hold only data.** They are read with ``torch.load(weights_only=True)``, so a
  store never unpickles arbitrary objects; numpy arrays and numpy scalars in a state are encoded
  as tensors and decoded back, and anything else that is not a tensor, a number, a string,
  ``None``, ``bytes`` or a list/tuple/dict of those is refused before any round is committed,
  naming the key (``_encode``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import StoreDamaged, StoreError, StoreLocked
from .records import (
    Decision,
    FinalMember,
    RunFacts,
    WorkerState,
    decision_from_dict,
    decision_to_dict,
)

SCHEMA_VERSION = 2
DB_NAME = "experiment.sqlite"
LOCK_NAME = "writer.lock"
KEEP_CHECKPOINTS = 2
# seconds the driver waits for another process's lock on the database (a reader's snapshot,
# sqlite3's shell) before it gives up; Python's default is 5
BUSY_TIMEOUT = 30.0
PARTS_SUFFIX = ".parts"  # a checkpoint written in parts (a folder, see Store.parts_folder)
MANIFEST = "manifest.json"

# -- the meta table: one named key each, written by one owner (tests/test_architecture.py) ------
FORMAT = "format"                  # store: "firepbt"
SCHEMA = "schema_version"          # store
CONFIG = "config"                  # store: the configuration (JSON), replaced by set_config
CREATED_AT = "created_at"          # store
RUN = "run"                        # runner, once (start_run): RunFacts (JSON)
INITIAL_WORKERS = "initial_workers"  # runner, once (start_run): WorkerState per worker (JSON)
DEVICE = "device"                  # runner: where the run trained, in words
DEVICE_LAST = "device_last"        # runner: the device of its last run or resume
THREADS_USED = "threads_used"      # runner: PyTorch threads chosen by the first run
ELAPSED = "elapsed"                # runner, with each round: seconds the rounds took
FINAL = "final"                    # runner, with the last round: FinalMember (JSON)
LAST_ERROR = "last_error"          # runner: {"round", "error"} of what stopped it, or null
ENDED = "ended"                    # runner: why a run ended by itself (its budget), or null
LAUNCH = "launch"                  # runner: how the run was started (factory, trackers)
REPLAY = "replay"                  # replay: the top schedule retrained (JSON)
TRACKING = "tracking"              # tracking: per tracker, the last round given (JSON)
META_OWNERS = {
    "firepbt.store": (FORMAT, SCHEMA, CONFIG, CREATED_AT),
    "firepbt.runner": (RUN, INITIAL_WORKERS, DEVICE, DEVICE_LAST, THREADS_USED, ELAPSED, FINAL,
                       LAST_ERROR, ENDED, LAUNCH),
    "firepbt.replay": (REPLAY,),
    "firepbt.tracking._set": (TRACKING,),
}
DERIVED_FROM_END = (FINAL, REPLAY)  # what a longer run or a discarded last round removes

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY, step INTEGER NOT NULL, finished_at REAL NOT NULL,
    train_seconds REAL NOT NULL, eval_seconds REAL NOT NULL, decide_seconds REAL NOT NULL,
    controller_state TEXT NOT NULL, workers TEXT NOT NULL, best_score REAL NOT NULL,
    checkpoint TEXT);
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
CREATE TABLE checkpoint_digests (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
"""


def _to_db(x: float) -> float | None:
    return None if math.isnan(x) else x


def _from_db(x: float | None) -> float:
    if x is None:
        return math.nan
    if isinstance(x, (int, float)):
        return float(x)
    raise StoreDamaged(f"a stored evaluation holds {type(x).__name__} {str(x)[:40]!r}, not a "
                     "number: the store's database was edited or is damaged")


def _decoded(path: Path, text: Any, what: str) -> Any:
    """JSON the store wrote, or a one-line :class:`StoreError` naming what is damaged."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreDamaged(f"store {str(path)!r} is damaged: its {what} is not valid JSON "
                           f"({type(exc).__name__})") from None


@dataclass(frozen=True, slots=True)
class RoundRow:
    """One committed round: its step, timings, the controller's state after its decisions,
    every worker's state after them (:class:`~firepbt.records.WorkerState`), the running top
    score after it, and its checkpoint's name (None until one is bound)."""

    round: int
    step: int
    finished_at: float
    train_seconds: float
    eval_seconds: float
    decide_seconds: float
    controller_state: dict[str, Any]
    workers: dict[int, WorkerState]
    best_score: float
    checkpoint: str | None


def workers_to_json(workers: Mapping[int, WorkerState]) -> str:
    return json.dumps({str(w): st.to_dict() for w, st in sorted(workers.items())})


def workers_from_json(path: Path, text: Any, what: str) -> dict[int, WorkerState]:
    raw = _decoded(path, text, what)
    if not isinstance(raw, dict):
        raise StoreDamaged(f"store {str(path)!r} is damaged: {what} holds no workers")
    try:
        return {int(w): WorkerState.from_dict(int(w), d) for w, d in raw.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreDamaged(f"store {str(path)!r} is damaged: {what} cannot be read "
                           f"({type(exc).__name__}: {str(exc)[:100]})") from None


class _Database:
    """The store's SQLite connection. Every SQLite error leaves it in the store's terms:
    :class:`StoreLocked` when another process holds the database, a :class:`StoreError`
    saying what cannot be read or written, :class:`StoreDamaged` otherwise."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @contextlib.contextmanager
    def _sqlite(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise sqlite_error(self.path, exc) from None

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._sqlite():
            return self.conn.execute(sql, tuple(params)).fetchall()

    def one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self._sqlite():
            return self.conn.execute(sql, tuple(params)).fetchone()

    def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._sqlite():
            return self.conn.execute(sql, tuple(params)).rowcount

    def many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self._sqlite():
            self.conn.executemany(sql, [tuple(r) for r in rows])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together, or nothing does."""
        with self._sqlite(), self.conn:
            yield

    def rollback(self) -> None:
        with self._sqlite():
            self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


def sqlite_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """An SQLite error as the store's own: locked, unreadable or unwritable, or damaged."""
    why = " ".join(str(exc).split())
    where = f"store {str(path)!r}"
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in why or "busy" in why:
            return StoreLocked(f"{where} is locked by another process holding its database "
                               f"(SQLite: {why}); the store is not damaged: run the command "
                               "again once that process lets go ('firepbt resume' continues a "
                               "run)")
        if any(w in why for w in ("disk is full", "I/O error", "readonly", "unable to open")):
            return StoreError(f"{where} cannot be read or written (SQLite: {why}); nothing "
                              "committed is lost - free space or fix the folder's permissions, "
                              "then run the command again")
    return StoreDamaged(f"{where} is damaged (SQLite: {why}); keep a copy and recover it with "
                        "sqlite3's .recover")


class ExperimentStore(Protocol):
    """What the runner, resume and the read side need from a store (the contract that
    ``tests/test_store_contract.py`` checks for every backend; :class:`Store`, on SQLite, is
    the one there is).

    Opening: ``create(path, config)`` makes a new store (refusing an existing one) and holds
    the single writer's right until ``close()``; ``open(path)`` opens an existing one for
    writing (refused while another writer holds it), ``open(path, readonly=True)`` for reading
    (always allowed, also while a run writes; it refuses every write).

    Writing a round: ``write_checkpoint(round, states)`` stores the workers' states durably and
    returns a name; ``commit_round(row, evaluations, tests, decisions, meta)`` then records the
    round **atomically**: after it returns, the round row, its evaluations, tests, decisions
    (in order), the ``meta`` entries and the checkpoint's binding are all visible; if it raises,
    none of them is. ``attach_checkpoint(round, name)`` binds a checkpoint written after its
    round was committed (with its digest, atomically). A checkpoint may be written in parts by
    other processes: ``parts_folder(round)`` is the (emptied) folder they write their parts
    into with :func:`write_states`, ``seal_parts(round, {part: sha256})`` records them and
    returns the checkpoint's name; ``read_checkpoint`` reads either kind.
    ``discard_after(r)`` removes every round after ``r`` with its records (and the meta
    derived from the end of a run: ``final``, ``replay``). ``start_run(facts, workers)``
    writes the run's facts and its workers' initial states, once, together.

    Reading: ``config``, ``run_facts``, ``worker_states(round)`` (round 0: the initial states),
    ``final_member()``, ``meta(key)`` / ``meta_json(key)`` (each key a named constant of this
    module), ``rounds()`` / ``last_round()`` in round order, ``evaluations(worker=None)`` and
    ``tests()`` as ``(round, worker, step, value)`` with NaN round-tripping,
    ``decisions(kinds=None)`` as ``(round, step, decision)`` in commit order, equal to what was
    committed; ``read_checkpoint(name)`` returns the states written, or raises
    :class:`StoreError` for a missing, damaged or undigested checkpoint.
    """

    path: Path

    @property
    def config(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def meta(self, key: str) -> str | None: ...

    def meta_json(self, key: str) -> Any: ...

    def set_meta(self, key: str, value: str) -> None: ...

    @property
    def run_facts(self) -> RunFacts: ...

    def worker_states(self, round_index: int) -> dict[int, WorkerState]: ...

    def final_member(self) -> FinalMember | None: ...

    def start_run(self, facts: RunFacts, workers: Mapping[int, WorkerState]) -> None: ...

    def rounds(self) -> list[RoundRow]: ...

    def last_round(self) -> RoundRow | None: ...

    def evaluations(self, worker: int | None = None) -> list[tuple[int, int, int, float]]: ...

    def tests(self) -> list[tuple[int, int, int, float]]: ...

    def decisions(self, kinds: Iterable[str] | None = None
                  ) -> list[tuple[int, int, Decision]]: ...

    def write_checkpoint(self, round_index: int, states: Mapping[int, Any]) -> str: ...

    def read_checkpoint(self, name: str) -> dict[int, Any]: ...

    def parts_folder(self, round_index: int) -> Path: ...

    def seal_parts(self, round_index: int, digests: Mapping[str, str]) -> str: ...

    def attach_checkpoint(self, round_index: int, name: str) -> None: ...

    def commit_round(self, row: RoundRow, evaluations: Iterable[tuple[int, int, float]],
                     tests: Iterable[tuple[int, int, float]], decisions: Iterable[Decision],
                     meta: Mapping[str, str] | None = None) -> None: ...

    def discard_after(self, round_index: int) -> None: ...

    def check_integrity(self) -> None: ...


class Store:
    """One experiment's store. Use :meth:`create` for a new one and :meth:`open` for an
    existing one; both refuse what is not theirs to touch. A store opened for writing holds the
    writer lock until :meth:`close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: _WriterLock | None = None
                 ) -> None:
        self.path = path
        self.db = _Database(conn, path)
        self.lock = lock
        self._pending_digests: dict[str, str] = {}

    # -- opening ----------------------------------------------------------------------------

    @staticmethod
    def resolve(path: str | os.PathLike[str]) -> Path:
        """A store's folder: a path, or ``sqlite:///PATH`` (``sqlite:////ABS``), where a
        trailing ``.sqlite`` file name stands for its folder."""
        text = os.fspath(path)
        if not text.strip():
            raise StoreError("store must be a folder path, got '' (an empty path)")
        if text.startswith("sqlite:"):
            if not text.startswith("sqlite:///"):
                raise StoreError(f"store must be a folder path or sqlite:///PATH, got {text!r}")
            text = text[len("sqlite:///"):]
            if text.endswith(".sqlite"):
                text = str(Path(text).parent)
        return Path(text)

    @staticmethod
    def check_new(path: str | os.PathLike[str]) -> Path:
        """The folder a new store would be created in; refuses an existing store or a folder
        with anything else in it (a folder left by a creation that was killed counts as new)."""
        root = Store.resolve(path)
        if root.exists() and not root.is_dir():
            raise StoreError(f"store must be a new or empty folder, got {str(root)!r} (it is a "
                             "file)")
        if root.is_dir() and not _unfinished(root):
            raise StoreError(f"store must be a new or empty folder, got {str(root)!r} (it exists "
                             "and is not empty; firepbt never overwrites a store - use 'firepbt "
                             "resume' to continue)")
        return root

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: Mapping[str, Any]) -> Store:
        root = cls.check_new(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = _WriterLock.acquire(root)
        except OSError as exc:
            raise StoreError(f"store folder {str(root)!r} cannot be written "
                             f"({exc.strerror or exc})") from None
        try:
            for leftover in root.iterdir():  # of a creation that was killed
                if leftover.name.startswith(DB_NAME + ".tmp"):
                    leftover.unlink()
            tmp = root / (DB_NAME + ".tmp")
            conn = sqlite3.connect(_uri(tmp), uri=True)
            conn.execute("PRAGMA journal_mode=WAL")  # 'status' and reports read while a run writes
            conn.executescript(_SCHEMA)
            with conn:
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    (FORMAT, "firepbt"), (SCHEMA, str(SCHEMA_VERSION)),
                    (CONFIG, json.dumps(dict(config))), (CREATED_AT, repr(time.time()))])
            conn.close()
            (root / "checkpoints").mkdir(exist_ok=True)
            _fsync(tmp)
            os.replace(tmp, root / DB_NAME)  # the store exists from this rename on
            _fsync(root)
            conn = sqlite3.connect(_uri(root / DB_NAME), uri=True, timeout=BUSY_TIMEOUT)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(root, conn, lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        root = cls.resolve(path)
        db = root / DB_NAME
        if not db.is_file():
            why = (" (a 'firepbt run' was stopped while creating it: run it again)"
                   if root.is_dir() and _unfinished(root) and any(root.iterdir()) else "")
            raise StoreError(f"store must be a folder made by 'firepbt run', got {str(root)!r} "
                             f"(no {DB_NAME} in it{why})")
        lock = None
        if not readonly:
            if not os.access(db, os.W_OK) or not os.access(root, os.W_OK):
                raise StoreError(f"store {str(root)!r} is read-only; copy it somewhere writable "
                                 "to continue it ('status', 'lineage' and 'report' read it as is)")
            lock = _WriterLock.acquire(root)
        try:
            conn, meta = _connect(db, readonly)
        except sqlite3.DatabaseError as exc:
            if lock is not None:
                lock.release()
            if isinstance(sqlite_error(root, exc), StoreLocked):
                raise sqlite_error(root, exc) from None
            raise StoreError(f"store must be a firepbt store, got {str(root)!r} ({exc})") from None
        try:
            version = _version(root, meta)
            if version < SCHEMA_VERSION:  # written by an earlier version: converted once
                from ._migrations import migrate

                if readonly:  # a reader converts a copy in memory and leaves the file as is
                    memory = sqlite3.connect(":memory:")
                    conn.backup(memory)
                    conn.close()
                    conn = memory
                try:
                    migrate(conn, root, version, SCHEMA_VERSION)
                except sqlite3.DatabaseError as exc:
                    raise sqlite_error(root, exc) from None
        except BaseException:
            conn.close()
            if lock is not None:
                lock.release()
            raise
        if not readonly:
            for tmp in _own_entries(root / "checkpoints", "*.tmp", deep=True):  # killed writes
                tmp.unlink(missing_ok=True)
        return cls(root, conn, lock)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Store]:
        """Reads inside see one committed state of the store - a round is there with all its
        records or not at all - while a writer goes on (SQLite's WAL: readers never block it)."""
        self.db.run("BEGIN")
        try:
            yield self
        finally:
            self.db.rollback()

    def check_integrity(self) -> None:
        """Refuse a damaged database (SQLite's ``quick_check``) before anything is written."""
        try:
            rows = [r[0] for r in self.db.conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            first = " ".join(str(rows[0]).split())
            raise StoreDamaged(f"store {str(self.path)!r} is damaged (SQLite: {first}); nothing "
                               "was changed - keep a copy and recover it with sqlite3's .recover")

    @staticmethod
    def writer_pid(path: str | os.PathLike[str]) -> int | None:
        """The pid of the process writing the store now, or None when none is (stopped)."""
        return _WriterLock.holder(Store.resolve(path))

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- reading -----------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        row = self.db.one("SELECT value FROM meta WHERE key=?", (CONFIG,))
        if row is None:
            raise StoreError(f"store {str(self.path)!r} has no configuration (it is not a "
                             "complete firepbt store)")
        config = _decoded(self.path, row[0], "configuration")
        if not isinstance(config, dict):
            raise StoreError(f"store {str(self.path)!r} is damaged: its configuration is not a "
                             f"JSON object (got {type(config).__name__})")
        return config

    @property
    def run_facts(self) -> RunFacts:
        """What the run established when it started (:class:`~firepbt.records.RunFacts`)."""
        raw = self.meta_json(RUN)
        if raw is None:
            raise StoreError(f"store {str(self.path)!r} holds no run yet (its first state was "
                             "never written: a 'firepbt run' stopped before it started)")
        try:
            return RunFacts.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDamaged(f"store {str(self.path)!r} is damaged: its run facts cannot be "
                               f"read ({type(exc).__name__}: {str(exc)[:100]})") from None

    def worker_states(self, round_index: int) -> dict[int, WorkerState]:
        """Every worker's state after round ``round_index`` (0: before the first round)."""
        if round_index == 0:
            text = self.meta(INITIAL_WORKERS)
            if text is None:
                raise StoreError(f"store {str(self.path)!r} holds no run yet (its first state "
                                 "was never written)")
            return workers_from_json(self.path, text, "initial worker states")
        row = self.db.one("SELECT workers FROM rounds WHERE round=?", (round_index,))
        if row is None:
            raise StoreError(f"store {str(self.path)!r} has no round {round_index}")
        return workers_from_json(self.path, row[0], f"round {round_index}'s worker states")

    def start_run(self, facts: RunFacts, workers: Mapping[int, WorkerState]) -> None:
        """Write the run's facts and its workers' initial states: once, together."""
        with self.db.transaction():
            self.db.many("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                (RUN, json.dumps(facts.to_dict())), (INITIAL_WORKERS, workers_to_json(workers))])

    def final_member(self) -> FinalMember | None:
        """The final best-effort member, once the last round is committed."""
        raw = self.meta_json(FINAL)
        if raw is None:
            return None
        try:
            return FinalMember.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDamaged(f"store {str(self.path)!r} is damaged: its final member cannot "
                               f"be read ({type(exc).__name__})") from None

    def last_round(self) -> RoundRow | None:
        row = self.db.one("SELECT * FROM rounds ORDER BY round DESC LIMIT 1")
        return None if row is None else _round_row(row, self.path)

    def rounds(self) -> list[RoundRow]:
        return [_round_row(r, self.path) for r in self.db.all("SELECT * FROM rounds ORDER BY round")]

    def evaluations(self, worker: int | None = None) -> list[tuple[int, int, int, float]]:
        """``(round, worker, step, raw value)`` in worker, step order."""
        q = "SELECT round, worker, step, value FROM evaluations"
        args: tuple[Any, ...] = ()
        if worker is not None:
            q += " WHERE worker = ?"
            args = (worker,)
        q += " ORDER BY worker, step, round"
        return [(r, w, s, _from_db(v)) for r, w, s, v in self.db.all(q, args)]

    def tests(self) -> list[tuple[int, int, int, float]]:
        return [(r, w, s, _from_db(v)) for r, w, s, v in self.db.all(
            "SELECT round, worker, step, value FROM tests ORDER BY step, worker")]

    def decisions(self, kinds: Iterable[str] | None = None) -> list[tuple[int, int, Decision]]:
        """``(round, step, decision)`` in the order they were applied."""
        rows = self.db.all("SELECT round, step, kind, payload FROM decisions ORDER BY id")
        wanted = None if kinds is None else set(kinds)
        out = []
        for r, s, k, p in rows:
            if wanted is None or k in wanted:
                try:
                    out.append((r, s, decision_from_dict(_decoded(self.path, p, "decision"))))
                except (KeyError, TypeError, ValueError) as exc:
                    if isinstance(exc, StoreError):
                        raise
                    raise StoreDamaged(f"store {str(self.path)!r} is damaged: a decision of "
                                       f"round {r} cannot be read ({type(exc).__name__}: "
                                       f"{str(exc)[:100]})") from None
        return out

    def checkpoint_path(self, name: str) -> Path:
        """A checkpoint's file (or parts folder) by its name, which must be one the store
        writes (``round-NNNNNN.pt`` or ``.parts``): a name read from the database never points
        outside ``checkpoints/``."""
        if not _CHECKPOINT_NAME.fullmatch(name):
            raise StoreError(f"store {str(self.path)!r} names a checkpoint {name!r}, which is "
                             "not one firepbt writes (round-NNNNNN.pt or .parts); the database "
                             "was edited")
        return self.path / "checkpoints" / name

    # -- writing (driver only) -------------------------------------------------------------

    def write_checkpoint(self, round_index: int, states: Mapping[int, Any]) -> str:
        """Write the workers' states durably (temporary file, ``fsync``, rename); the digest is
        recorded by the :meth:`commit_round` (or :meth:`attach_checkpoint`) that names it.
        States must hold only what ``_encode`` accepts (module doc). Thread-safe with respect to
        the database: it touches only the checkpoint folder."""
        name = f"round-{round_index:06d}.pt"
        self._check_in_place()
        self._pending_digests[name] = write_states(self.checkpoint_path(name), states)
        return name

    def _check_in_place(self) -> None:
        """The writer's store is still at its path: the lock file there is the one this
        process holds. A store moved (or replaced) while its run goes on would otherwise take
        this run's checkpoints and prunes into whatever now lies at the old path."""
        if self.lock is None:
            return
        try:
            here = os.stat(self.path / LOCK_NAME)
        except OSError:
            here = None
        held = os.fstat(self.lock.fd)
        if here is None or (here.st_ino, here.st_dev) != (held.st_ino, held.st_dev):
            raise StoreError(f"store {str(self.path)!r} was moved or replaced while this run "
                             "wrote it; the run stopped without writing there - 'firepbt "
                             "resume' the store where it is now")

    def parts_folder(self, round_index: int) -> Path:
        """An empty folder for a checkpoint written in parts by several processes (the Ray
        actors, each its own members' states, with :func:`write_states`), then sealed by
        :meth:`seal_parts`. Anything left there by an earlier, unfinished attempt is removed."""
        folder = self.checkpoint_path(f"round-{round_index:06d}{PARTS_SUFFIX}")
        self._check_in_place()
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        _fsync(folder.parent)
        return folder

    def seal_parts(self, round_index: int, digests: Mapping[str, str]) -> str:
        """Close a checkpoint written in parts: its manifest (each part's file name and
        SHA-256) is written durably, and the manifest's digest is recorded by the
        :meth:`commit_round` or :meth:`attach_checkpoint` that names the checkpoint. Returns
        its name."""
        name = f"round-{round_index:06d}{PARTS_SUFFIX}"
        manifest = self.checkpoint_path(name) / MANIFEST
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parts": dict(sorted(digests.items()))}, indent=1))
        _fsync(tmp)
        os.replace(tmp, manifest)
        _fsync(manifest.parent)
        self._pending_digests[name] = _digest(manifest)
        return name

    def read_checkpoint(self, name: str) -> dict[int, Any]:
        """The states of a checkpoint, checked against the digest recorded with its round (for
        one written in parts: the manifest's, then each part against the manifest; for one
        this writer has written and not yet bound, the digest it took when writing it). Raises
        a one-line :class:`StoreError` when it is missing, damaged, stale or has no digest."""
        path = self.checkpoint_path(name)
        parts = name.endswith(PARTS_SUFFIX)
        head = path / MANIFEST if parts else path
        if not head.is_file():
            raise StoreError(f"checkpoint {name} of store {str(self.path)!r} is missing")
        expected = self._pending_digests.get(name)  # written by this writer, not yet bound
        if expected is None:
            row = self.db.one("SELECT sha256 FROM checkpoint_digests WHERE name=?", (name,))
            if row is None:
                raise StoreDamaged(f"checkpoint {name} of store {str(self.path)!r} has no "
                                   "digest recorded with its round; a checkpoint that cannot be "
                                   "checked is never read")
            expected = row[0]
        if _digest(head) != expected:
            raise StoreDamaged(f"checkpoint {name} of store {str(self.path)!r} does not match "
                               "the digest recorded for its round (damaged, or another round's "
                               "file)")
        if not parts:
            return self._load(name, path)
        try:
            listed = json.loads(head.read_text())["parts"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"checkpoint {name} of store {str(self.path)!r} has an unreadable "
                             "manifest") from None
        out: dict[int, Any] = {}
        for part, sha in sorted(listed.items()):
            file = path / part
            if not file.is_file():
                raise StoreError(f"checkpoint {name} of store {str(self.path)!r} is missing its "
                                 f"part {part}")
            if _digest(file) != sha:
                raise StoreError(f"checkpoint {name} of store {str(self.path)!r}: part {part} "
                                 "does not match its manifest (damaged)")
            out.update(self._load(f"{name}/{part}", file))
        return out

    def _load(self, name: str, path: Path) -> dict[int, Any]:
        try:
            return read_states(path)
        except StoreError as exc:
            raise StoreError(f"checkpoint {name} of store {str(self.path)!r} is unreadable "
                             f"({exc})") from None

    def attach_checkpoint(self, round_index: int, name: str) -> None:
        """Bind a checkpoint written after its round was committed (the Ray executor writes
        them while the next round trains) to that round, atomically with its digest. Until it
        is bound, ``resume`` continues from the checkpoint before."""
        with self.db.transaction():
            if name in self._pending_digests:
                self.db.run("INSERT OR REPLACE INTO checkpoint_digests VALUES (?, ?)",
                            (name, self._pending_digests.pop(name)))
            changed = self.db.run("UPDATE rounds SET checkpoint=? WHERE round=?",
                                  (name, round_index))
            if changed != 1:
                raise StoreError(f"round {round_index} of store {str(self.path)!r} is not "
                                 "committed; its checkpoint cannot be attached")
        self._prune_checkpoints()

    def commit_round(self, row: RoundRow, evaluations: Iterable[tuple[int, int, float]],
                     tests: Iterable[tuple[int, int, float]], decisions: Iterable[Decision],
                     meta: Mapping[str, str] | None = None) -> None:
        """One round, atomically (with ``meta`` entries written in the same transaction)."""
        self._check_in_place()
        with self.db.transaction():
            self.db.many("INSERT OR REPLACE INTO meta VALUES (?, ?)", (meta or {}).items())
            if row.checkpoint is not None and row.checkpoint in self._pending_digests:
                self.db.run("INSERT OR REPLACE INTO checkpoint_digests VALUES (?, ?)",
                            (row.checkpoint, self._pending_digests.pop(row.checkpoint)))
            self.db.many("INSERT INTO evaluations VALUES (?, ?, ?, ?)",
                         [(row.round, w, s, _to_db(v)) for w, s, v in evaluations])
            self.db.many("INSERT INTO tests VALUES (?, ?, ?, ?)",
                         [(row.round, w, s, _to_db(v)) for w, s, v in tests])
            self.db.many(
                "INSERT INTO decisions (round, step, kind, payload) VALUES (?, ?, ?, ?)",
                [(row.round, row.step, d.kind, json.dumps(decision_to_dict(d))) for d in decisions])
            self.db.run("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                row.round, row.step, row.finished_at, row.train_seconds, row.eval_seconds,
                row.decide_seconds, json.dumps(row.controller_state), workers_to_json(row.workers),
                row.best_score, row.checkpoint))
        if row.checkpoint is not None:  # (a checkpoint bound later is pruned for then)
            self._prune_checkpoints()

    def discard_after(self, round_index: int) -> None:
        """Drop anything recorded after ``round_index`` (a crash between writes, or a round
        whose checkpoint is unusable); what was derived from the end of the run (the final
        member, the replay) goes with those rounds."""
        with self.db.transaction():
            gone = self.db.one("SELECT COUNT(*) FROM rounds WHERE round > ?", (round_index,))[0]
            for table in ("evaluations", "tests", "decisions", "rounds"):
                self.db.run(f"DELETE FROM {table} WHERE round > ?", (round_index,))
            if gone:
                self.db.many("DELETE FROM meta WHERE key=?", [(k,) for k in DERIVED_FROM_END])
            # their checkpoints' digests too: a round trained again writes a checkpoint of the
            # same name, which is checked against its own digest, not the discarded one's
            stale = [n for (n,) in self.db.all("SELECT name FROM checkpoint_digests")
                     if _round_of(n) > round_index]
            self.db.many("DELETE FROM checkpoint_digests WHERE name=?", [(n,) for n in stale])
        for f in _own_entries(self.path / "checkpoints", "round-*"):  # those rounds' files
            if _round_of(f.name) > round_index:
                _remove(f)

    def set_meta(self, key: str, value: str) -> None:
        """Write a meta entry (``key``: one of this module's constants, written by its owner,
        :data:`META_OWNERS`)."""
        with self.db.transaction():
            self.db.run("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_config(self, config: Mapping[str, Any], *, new_end: bool = False) -> None:
        """A new configuration (``resume --time-budget``); with ``new_end`` (``resume
        --steps``: a longer run) what was derived from the old end (the final member, the
        replay) goes too, in the same transaction."""
        with self.db.transaction():
            self.db.run("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        (CONFIG, json.dumps(dict(config))))
            if new_end:
                self.db.many("DELETE FROM meta WHERE key=?", [(k,) for k in DERIVED_FROM_END])

    def meta(self, key: str) -> str | None:
        row = self.db.one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else row[0]

    def meta_json(self, key: str) -> Any:
        """A meta entry written as JSON, decoded (None when absent or ``null``); one that is
        not JSON is a one-line :class:`StoreDamaged`."""
        text = self.meta(key)
        return None if text is None else _decoded(self.path, text, f"meta {key!r}")

    def _prune_checkpoints(self) -> None:
        """Keep the last ``KEEP_CHECKPOINTS`` bound checkpoints and anything newer (a
        checkpoint still being written, bound after its round); remove the older ones."""
        self._check_in_place()
        keep = [r[0] for r in self.db.all(
            "SELECT checkpoint FROM rounds WHERE checkpoint IS NOT NULL ORDER BY round DESC LIMIT ?",
            (KEEP_CHECKPOINTS,))]
        if not keep:
            return
        oldest = min(_round_of(k) for k in keep)
        for f in _own_entries(self.path / "checkpoints", "round-*"):
            if f.name not in keep and _round_of(f.name) <= oldest:
                _remove(f)
        with self.db.transaction():
            self.db.run("DELETE FROM checkpoint_digests WHERE name NOT IN (SELECT checkpoint "
                        "FROM rounds WHERE checkpoint IS NOT NULL ORDER BY round DESC LIMIT ?)",
                        (KEEP_CHECKPOINTS,))


def _round_of(name: str) -> int:
    """The round of a checkpoint's name (``round-000012.pt``, ``round-000012.parts``)."""
    try:
        return int(name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


_CHECKPOINT_NAME = re.compile(r"round-\d{6,}(\.pt|" + re.escape(PARTS_SUFFIX) + ")")


def _own_entries(folder: Path, pattern: str, deep: bool = False) -> list[Path]:
    """The entries of ``folder`` matching ``pattern`` that are its own - never a symbolic link
    nor what lies behind one (a store received from someone else may hold links: removing
    through them would delete files outside the store); with ``deep``, also in its own
    sub-folders. Nothing when ``folder`` is itself a link."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        if entry.is_symlink():
            continue
        if entry.match(pattern):
            out.append(entry)
        if deep and entry.is_dir():
            out += [e for e in entry.iterdir() if not e.is_symlink() and e.match(pattern)]
    return out


def _uri(db: Path) -> str:
    """A database file as SQLite's URI, absolute and quoted: a store folder named ``file:x``,
    ``q?x`` or ``p%41`` is that folder (SQLite would read the first as a URI of its own), and
    one given through more ``..`` than there are folders above it is the folder it names."""
    from urllib.request import pathname2url

    return "file:" + pathname2url(os.path.abspath(db))


def _connect(db: Path, readonly: bool) -> tuple[sqlite3.Connection, dict[str, str]]:
    """The store's database and its meta table. The path goes into SQLite's URI quoted (a
    folder named ``q?x`` or ``p%41`` is that folder). Read-only: ``mode=ro``, and where SQLite
    cannot open a database in WAL mode read-only (a cleanly closed store on a read-only
    medium or folder: no ``-shm`` file to share), ``immutable=1`` - no other process can be
    writing it there."""
    base = _uri(db)
    if not readonly:
        conn = sqlite3.connect(base, uri=True, timeout=BUSY_TIMEOUT)
        return conn, dict(conn.execute("SELECT key, value FROM meta").fetchall())
    try:
        conn = sqlite3.connect(base + "?mode=ro", uri=True)
        return conn, dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        if os.access(db.parent, os.W_OK) and os.access(db, os.W_OK):
            raise
    conn = sqlite3.connect(base + "?immutable=1", uri=True)
    return conn, dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _remove(path: Path) -> None:
    if path.is_symlink():  # the link itself, never what it points to
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_states(path: Path, states: Mapping[int, Any]) -> str:
    """Write workers' states to ``path`` durably (temporary file, ``fsync``, rename) and return
    the file's SHA-256. What a checkpoint (or one part of it) is: ``{str(worker): state}``,
    states encoded by ``_encode`` (CPU tensors, numbers, strings, containers; refused
    otherwise, naming the key). Runs in the driver or in a Ray actor."""
    import torch

    data = {str(k): _encode(v, f"state of worker {k}") for k, v in states.items()}
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(data, tmp)
    except (RuntimeError, OSError) as exc:  # a full disk, a folder gone: torch says RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink()
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        full = getattr(exc, "errno", None) == 28 or any("No space left" in ln for ln in lines)
        with contextlib.suppress(OSError):
            full = full or shutil.disk_usage(path.parent).free < (1 << 20)
        # torch's own message names its internals ("enforce fail at inline_container.cc"):
        # the cause in words instead, when it is a full disk
        first = ("No space left on device" if full else
                 (lines or [type(exc).__name__])[0][:300])
        raise StoreError(f"checkpoint {path.name} cannot be written in {str(path.parent)!r} "
                         f"({first}); the rounds committed before are kept - free space or "
                         "restore the folder, then 'firepbt resume' continues") from None
    _fsync(tmp)
    digest = _digest(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
    return digest


def read_states(path: Path) -> dict[int, Any]:
    """The states :func:`write_states` wrote (``torch.load(weights_only=True)``: data only);
    a file that cannot be read raises :class:`StoreError` with the reason's first line."""
    import pickle

    import torch

    try:
        data = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise StoreError((str(exc).strip().splitlines() or [type(exc).__name__])[0]) from None
    return {int(k): _decode(v) for k, v in data.items()}


def _unfinished(root: Path) -> bool:
    """True for a folder that holds no store: empty, or only what a killed creation leaves."""
    for entry in root.iterdir():
        if entry.name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
            continue
        if entry.name == LOCK_NAME or entry.name.startswith(DB_NAME + ".tmp"):
            continue
        return False
    return True


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- what a checkpoint may hold ----------------------------------------------------------------

_NDARRAY = "__firepbt_ndarray__"


def _encode(obj: Any, where: str) -> Any:
    """A state with numpy arrays and scalars turned into tensors and plain numbers; anything
    that ``torch.load(weights_only=True)`` could not read back is refused, naming its key."""
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):  # checkpoints hold CPU tensors: portable across devices
        t = obj if obj.device.type == "cpu" else obj.cpu()
        if t.layout == torch.strided and t.untyped_storage().nbytes() > t.nbytes:
            # a view of a larger tensor: torch.save writes the whole storage, so the view alone
            t = t.clone()
        return t
    if obj is None or type(obj) in (bool, int, float, str, bytes) or isinstance(
            obj, (torch.dtype, torch.device, torch.Size)):
        return obj
    if not isinstance(obj, np.generic):  # IntEnum, str subclasses: the plain value, which
        if isinstance(obj, bool):        # weights_only reads (the first base that matches)
            return bool(obj)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, bytes):
            return bytes(obj)
    if isinstance(obj, (np.str_, np.bytes_)):
        return str(obj) if isinstance(obj, np.str_) else bytes(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf" or obj.dtype.byteorder == ">":
            raise StoreError(f"{where} must hold tensors, numbers, strings and containers of "
                             f"them; got a numpy array of dtype {obj.dtype}")
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise StoreError(f"{where} must have str or int keys; got {k!r}")
            out[k] = _encode(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise StoreError(f"{where} must hold tensors, numpy arrays, numbers, strings and lists/"
                     f"tuples/dicts of them (what a checkpoint can read back safely); got "
                     f"{type(obj).__name__}")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY}:
            return obj[_NDARRAY].numpy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode(v) for v in obj)
    return obj


class _WriterLock:
    """An exclusive ``flock`` on ``ROOT/writer.lock``, holding the writer's pid."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, root: Path) -> _WriterLock | None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return None
        path = root / LOCK_NAME
        if path.is_symlink():  # never write through a link (into a file outside the store)
            raise StoreError(f"store {str(root)!r} holds a symbolic link as its {LOCK_NAME}; "
                             "firepbt does not write through links - remove it")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"store {str(root)!r} cannot be written ({exc.strerror or exc}); "
                             "copy it somewhere writable to continue it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StoreLocked(f"store {str(root)!r} is being written by another firepbt process "
                              f"(pid {pid or '?'}); one writer at a time - wait for it or stop "
                              "it, then 'firepbt resume'") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(path, fd)

    @staticmethod
    def holder(root: Path) -> int | None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            return None
        path = root / LOCK_NAME
        if not path.is_file():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _round_row(row: tuple[Any, ...], path: Path = Path("?")) -> RoundRow:
    controller = _decoded(path, row[6], f"round {row[0]}'s controller state")
    workers = workers_from_json(path, row[7], f"round {row[0]}'s worker states")
    return RoundRow(row[0], row[1], row[2], row[3], row[4], row[5], controller, workers,
                    float(row[8]), row[9])


def _version(root: Path, meta: Mapping[str, str]) -> int:
    """The schema version of a store's meta table; refused when it is not a firepbt store or
    is newer than this firepbt."""
    if meta.get(FORMAT) != "firepbt":
        raise StoreError(f"store must be a firepbt store, got {str(root)!r}")
    try:
        version = int(meta.get(SCHEMA, "0"))
    except ValueError:
        version = 0
    if not 1 <= version <= SCHEMA_VERSION:
        raise StoreError(f"store schema_version must be at most {SCHEMA_VERSION} (this "
                         f"firepbt's), got {meta.get(SCHEMA)!r}: a newer firepbt wrote it")
    return version
