"""Errors raised by firepbt, with one message format for bad input.

Every invalid value is reported as ``<field> must be <allowed>, got <value>`` so that a
user (and the CLI, which prints it on one line with exit code 2) sees the field, the allowed
range and the value received.
"""

from __future__ import annotations

from typing import Any


class FirePBTError(Exception):
    """Base class of firepbt's own errors."""


class ConfigError(FirePBTError, ValueError):
    """A user-supplied value is outside its allowed range."""

    def __init__(self, field: str, allowed: str, got: Any) -> None:
        self.field = field
        self.allowed = allowed
        self.got = got
        super().__init__(f"{field} must be {allowed}, got {got!r}")

    def __reduce__(self) -> tuple[type, tuple[str, str, Any]]:  # crosses process boundaries
        return (type(self), (self.field, self.allowed, self.got))


class StoreError(FirePBTError):
    """The experiment store is missing, not ours, or inconsistent."""


class StoreLocked(StoreError):
    """Another process holds the store (its writer lock, or SQLite's lock on its database);
    nothing is damaged: the command can be run again once that process lets go."""


class StoreDamaged(StoreError):
    """The store's database (or a checkpoint) cannot be read as firepbt wrote it."""


class MissingExtra(FirePBTError, ImportError):
    """An optional feature's library is not installed; the message names the extra."""


class TrainableError(FirePBTError):
    """A user trainable raised; carries the worker, the step and the original traceback."""

    def __init__(self, worker: int, step: int, traceback_text: str) -> None:
        self.worker = worker
        self.step = step
        self.traceback_text = traceback_text
        super().__init__(f"trainable of worker {worker} failed at step {step}:\n{traceback_text}")

    def __reduce__(self) -> tuple[type, tuple[int, int, str]]:  # crosses process boundaries
        return (type(self), (self.worker, self.step, self.traceback_text))


def check(condition: bool, field: str, allowed: str, got: Any) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, allowed, got)


def require_extra(module: str, what: str, package: str, extra: str) -> Any:
    """``module`` imported, or a :class:`MissingExtra` naming what needs it, the package and
    the extra that installs it (one line)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{what} needs {package}, which is not installed: "
                           f"pip install 'firepbt[{extra}]'") from exc
