"""The data order the Lightning and Hugging Face adapters give each worker: shuffled epochs of
a map-style dataset, the permutation of epoch ``e`` seeded by (worker seed, e), so a position
(samples drawn so far) and a seed say exactly which examples come next - the state a
checkpoint keeps, and what a copy re-seeds."""

from __future__ import annotations

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
