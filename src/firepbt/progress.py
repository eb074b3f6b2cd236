"""Progress while an experiment runs: a rich progress bar over steps per worker.

The runner calls a progress function ``progress(step, total, info)``: ``step`` is the step every
worker has reached (the start of the round in flight), ``total`` the steps per worker, and
``info`` a dict with ``round``; after a worker's part of a round, ``advance`` (the fraction of
the round's work it was); when a round is committed, ``done=True`` and ``best``, the best
*maximised* score so far (for a ``mode = "min"`` objective it is the negated objective, so the
bar shows its absolute value).
"""

from __future__ import annotations

import math
import sys
from typing import Any


class ProgressBar:
    """A rich progress bar (a no-op when ``enabled`` is False); call :meth:`stop` at the end."""

    def __init__(self, enabled: bool, total: int, start: int = 0) -> None:
        self.enabled = enabled
        self.bar: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("steps", total=total, completed=start, best="")
            self.bar.start()

    def __call__(self, step: int, total: int, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if info.get("done"):
            best = info.get("best", math.nan)
            self.bar.update(self.task, completed=step,
                            best=f"round {info['round']}, best {abs(best):.4g}")
        else:  # a worker finished its part of the round
            done = self.bar.tasks[0].completed + info.get("advance", 0)
            self.bar.update(self.task, completed=min(total, done))

    def stop(self) -> None:
        if self.enabled:
            self.bar.stop()


def default_enabled() -> bool:
    """The Python API shows a bar by default only in a terminal."""
    return sys.stdout.isatty()
