"""PyTorch's intra-op threads while a run trains (``ExperimentConfig.threads``).

Small models on few cores are slowed down several times by oversubscribed threads
(``benchmarks/threads.py``, docs/site/benchmarks.md), so a run chooses its thread count
deliberately: the cores idle when it starts, unless ``OMP_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator


def auto_threads(window: float = 0.25) -> int | None:
    """The default intra-op thread count: the cores that are idle when the run starts (the
    CPUs available to this process, less the busy share that ``/proc/stat`` shows over
    ``window`` seconds - other processes' work, since this one is not training yet - and at
    least 1; the 1-minute load average where ``/proc/stat`` is missing). None (leave PyTorch's
    setting) when ``OMP_NUM_THREADS`` is set: an explicit choice wins.

    Why (``benchmarks/threads.py``, docs/site/benchmarks.md): on a quiet 2-core machine two threads
    train `make run`'s population faster than one, while threads beyond the free cores
    oversubscribe them and slow small models down several times."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    busy = _busy_cores(window)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (OSError, AttributeError):  # pragma: no cover
            busy = 0.0
    return max(1, min(cpus, int(cpus - busy + 0.5)))


def _busy_cores(window: float) -> float | None:
    """How many cores' worth of work the machine did over ``window`` seconds (/proc/stat)."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    a = sample()
    if a is None:
        return None
    time.sleep(window)
    b = sample()
    if b is None or b[0] <= a[0]:
        return None
    total_cpus = os.cpu_count() or 1
    return total_cpus * (1.0 - (b[1] - a[1]) / (b[0] - a[0]))


@contextlib.contextmanager
def training_threads(threads: int | None, in_process: bool) -> Iterator[None]:
    """PyTorch's intra-op threads while this process trains (``ExperimentConfig.threads``:
    None for :func:`auto_threads`, 0 for PyTorch's own setting), restored afterwards."""
    n = auto_threads() if threads is None else threads
    if not in_process or not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
