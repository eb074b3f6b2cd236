"""The data order the Lightning and Hugging Face adapters give each worker: shuffled epochs of
a map-style dataset, the permutation of epoch ``e`` seeded by (worker seed, e), so a position
(samples drawn so far) and a seed say exactly which examples come next - the state a
checkpoint keeps, and what a copy re-seeds.

The same two numbers seed torch's global generator for each training call (:func:`seeded`):
what the model draws from it (dropout) is then a function of the state too, so runs repeat and
resumes are exact with dropout on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


class Stream:
    """Indices into a dataset of ``n`` examples from ``position`` on (see the module
    docstring)."""

    def __init__(self, n: int, seed: int, position: int = 0) -> None:
        self.n, self.seed, self.position = n, int(seed), int(position)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, self.n)
            if epoch != self._epoch:
                self._perm, self._epoch = permutation(self.n, self.seed, epoch), epoch
            out.append(int(self._perm[i]))
            self.position += 1
        return out


def call_seed(seed: int, position: int) -> int:
    """The seed of the global generator for the training call of the worker with data seed
    ``seed`` that starts at ``position`` (a SplitMix64 mix of the two: no two calls of one
    worker share it, nor nearby workers' calls)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(position) + 0x632BE59BD9B4E019) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % 2**63


@contextlib.contextmanager
def seeded(seed: int, position: int) -> Iterator[None]:
    """torch's global generator (CPU, and CUDA's) seeded by :func:`call_seed` for the block,
    the CPU generator's (and an initialised CUDA's) previous state restored after it: the
    process's other draws are left as they were."""
    lazy: Any = torch.cuda  # (is_initialized carries no annotations)
    cuda = torch.cuda.is_available() and bool(lazy.is_initialized())
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(call_seed(seed, position))
        yield
