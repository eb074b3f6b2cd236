"""Time limits of a run: the experiment's wall-clock budget and a round's deadline.

**Budget** (``ExperimentConfig.time_budget``, ``--time-budget``): the seconds the experiment's
rounds may take, summed over every ``run``/``resume`` of it (the store keeps the sum, meta
``elapsed``, committed with each round). Before a round starts, a spent budget ends the run
there: the committed rounds are all kept, the store says why it ended (meta ``ended``), and
``resume`` with a larger budget continues exactly where an uninterrupted run would.

**Round deadline** (``ExperimentConfig.round_timeout``, ``--round-timeout``, default off): the
seconds one round's training may take. A ``train()`` that hangs would otherwise hold a
synchronous experiment forever. What can be done depends on where members train:

- On Ray, each actor's calls are waited for up to the deadline; the actors still busy then are
  killed, their members retired for the round as failing members are (NaN evaluations, which
  truncation selection refills by exploitation), and new actors take them over from the
  round's start states (:mod:`firepbt.ray_executor`).
- In this process (the local and vectorized executors) a running ``train()`` cannot be
  cancelled from outside: Python can only interrupt the main thread between bytecodes or in
  an interruptible system call (a sleep, a read). At the deadline firepbt delivers SIGALRM to
  the main thread, whose handler raises :class:`RoundTimeout`: a ``train()`` in Python code or
  PyTorch operations, or sleeping, stops there, and the run ends with its last committed round
  intact, said in one line naming the worker (``resume`` continues; the round trains again).
  A ``train()`` that catches the interruption (``except Exception`` around its own retries)
  does not change that: the round it was in is never committed (:class:`Deadline`).
  A ``train()`` stuck inside one C call that never returns (a deadlock in a native library) is
  beyond any in-process remedy: the deadline is still noticed and reported on stderr by a
  watchdog thread, naming the worker, and only killing the process ends it (nothing committed
  is lost). Runs driven from another thread than the main one get the watchdog's report only.

Times come from :data:`clock` (``time.monotonic``), which tests replace.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from .errors import FirePBTError

clock: Callable[[], float] = time.monotonic

# the longest duration firepbt takes (about 31.7 years): beyond it the timers that enforce one
# (SIGALRM's itimer, a thread's wait) overflow
MAX_SECONDS = 1e9


class RoundTimeout(FirePBTError):
    """A round's training passed its deadline (``round_timeout``) in this process."""

    def __init__(self, round_: int, seconds: float, worker: str) -> None:
        self.round, self.seconds, self.worker = round_, seconds, worker
        super().__init__(f"round {round_} passed its deadline of {seconds:g} s while {worker} "
                         "trained; the run stopped with its last committed round intact "
                         "('firepbt resume' trains the round again)")


def _who(current: Callable[[], str | None]) -> str:
    try:
        return current() or "a worker"
    except Exception:  # noqa: BLE001 - a description, never a failure
        return "a worker"


class Deadline:
    """A round's deadline as :func:`round_deadline` keeps it: whether it fired, and the error
    it raised (:func:`round_deadline` raises it again when its block exits, so a ``train()``
    that catches the :class:`RoundTimeout` - ``except Exception`` around a user's own retries -
    can never let the interrupted round be committed)."""

    def __init__(self) -> None:
        self.fired: RoundTimeout | None = None

    def check(self) -> None:
        """Raise the deadline's :class:`RoundTimeout` if it fired."""
        if self.fired is not None:
            raise self.fired


@contextlib.contextmanager
def round_deadline(seconds: float | None, round_: int,
                   current: Callable[[], str | None]) -> Iterator[Deadline]:
    """While the block trains round ``round_``: after ``seconds``, raise
    :class:`RoundTimeout` in the main thread (SIGALRM) and, should that not end the block,
    report the overrun on the ``firepbt`` logger from a watchdog thread (module doc).
    ``current()`` names who is training (e.g. ``"worker 3"``). The :class:`Deadline` yielded
    says whether it fired; the block ending normally after it did is raised too, when the block
    exits. No deadline: nothing."""
    deadline = Deadline()
    if seconds is None:
        yield deadline
        return
    log = logging.getLogger("firepbt")
    done = threading.Event()

    def watchdog() -> None:
        if done.wait(seconds):
            return
        if done.wait(min(1.0, seconds)):  # the main thread's handler had its chance
            return
        log.warning("round %d passed its deadline of %g s while %s trained and cannot be "
                    "interrupted in this process (a call that never returns); kill the "
                    "process to stop it - the committed rounds are kept and 'firepbt resume' "
                    "continues", round_, seconds, _who(current))
        print(f"firepbt: round {round_} is past its deadline of {seconds:g} s: {_who(current)} "
              "is still training", file=sys.stderr, flush=True)

    alarm = threading.current_thread() is threading.main_thread()
    previous = None
    if alarm:
        def on_alarm(signum: int, frame: object) -> None:
            deadline.fired = RoundTimeout(round_, seconds, _who(current))
            raise deadline.fired

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    guard = threading.Thread(target=watchdog, name="firepbt-round-deadline", daemon=True)
    guard.start()
    try:
        yield deadline
    finally:
        done.set()
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    deadline.check()  # fired, and the block went on as if it had not (caught and swallowed)


def parse_seconds(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1.5h"`` -> seconds (the command line's budgets); a
    number in ASCII digits only (Python's ``float`` also reads other scripts' digits)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    factor = units.get(t[-1:], None)
    number = t[:-1] if factor is not None else t
    if not number.isascii():
        raise ValueError(f"not a number in ASCII digits: {text!r}")
    value = float(number)
    return value * (factor or 1.0)
