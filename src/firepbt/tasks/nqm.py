"""Noisy quadratic model (Zhang et al. 2019; Wu et al. 2018 "short-horizon bias").

A milliseconds-fast analytic task where greedy learning-rate decay hurts. The loss is
``L(x) = 1/2 sum_i h_i x_i^2`` with curvatures ``h_i = 1/i`` (``i = 1..dims``) and stochastic
gradients ``h_i x_i + eps_i`` with ``Var(eps_i) = h_i / batch_size``. Training is heavy-ball
momentum (0.9) with learning rate ``lr``; instead of sampling, the *exact* first and second
moments of ``(x_i, v_i)`` are propagated, so the objective - the expected loss
``1/2 sum_i h_i E[x_i^2]`` (mode "min") - is deterministic. Every run starts from
``E[x_i^2] = 1`` with zero velocity, so the seed has no effect here: members differ only by
their hyperparameters.

The update per step, with ``a = 1 - lr*h`` and ``s = lr^2 * Var(eps)``:
``x' = a x + beta v - lr eps``, ``v' = -lr h x + beta v - lr eps``, giving
``E[x'^2] = a^2 Exx + 2 a beta Exv + beta^2 Evv + s``,
``E[v'^2] = (lr h)^2 Exx - 2 lr h beta Exv + beta^2 Evv + s``,
``E[x'v'] = -a lr h Exx + (a - lr h) beta Exv + beta^2 Evv + s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..batched import NotVectorizable, register_batched
from ..space import LogUniform, Space

SPACE = Space({"lr": LogUniform(0.1, 3.0, bounds=(1e-4, 3.8))})


class NQMTrainable:
    """Exact expected dynamics of momentum SGD on the noisy quadratic model."""

    mode = "min"

    def __init__(self, seed: int, *, dims: int = 10_000, batch_size: int = 128,
                 momentum: float = 0.9) -> None:
        self.h = 1.0 / np.arange(1, dims + 1, dtype=np.float64)
        self.noise = self.h / batch_size
        self.beta = momentum
        self.exx = np.ones(dims)
        self.exv = np.zeros(dims)
        self.evv = np.zeros(dims)
        self.seed = seed

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        lr = float(hparams["lr"])
        b = self.beta
        lh = lr * self.h
        a = 1.0 - lh
        s = lr * lr * self.noise
        exx, exv, evv = self.exx, self.exv, self.evv
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(steps):
                nxx = a * a * exx + 2 * a * b * exv + b * b * evv + s
                nvv = lh * lh * exx - 2 * lh * b * exv + b * b * evv + s
                nxv = -a * lh * exx + (a - lh) * b * exv + b * b * evv + s
                exx, exv, evv = nxx, nxv, nvv
        self.exx, self.exv, self.evv = exx, exv, evv

    def evaluate(self) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(0.5 * np.sum(self.h * self.exx))
        return value if np.isfinite(value) else float("nan")

    def test(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"exx": torch.from_numpy(self.exx.copy()), "exv": torch.from_numpy(self.exv.copy()),
                "evv": torch.from_numpy(self.evv.copy())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.exx = np.asarray(state["exx"], dtype=np.float64).copy()
        self.exv = np.asarray(state["exv"], dtype=np.float64).copy()
        self.evv = np.asarray(state["evv"], dtype=np.float64).copy()


class NQMPopulation:
    """The batched NQM (:mod:`firepbt.batched`): the moments of N members as ``(N, dims)``
    arrays, updated by the same operations, in the same order, as :meth:`NQMTrainable.train`
    (bitwise equal to the local executor). Settings per step: the learning rate."""

    @classmethod
    def check(cls, members: Sequence[NQMTrainable]) -> None:
        first = members[0]
        for m in members[1:]:
            if len(m.h) != len(first.h) or m.beta != first.beta or \
                    not np.array_equal(m.noise, first.noise):
                raise NotVectorizable("all NQM members must have the same dims, batch size and "
                                      "momentum")

    @staticmethod
    def settings(member: NQMTrainable, hparams: Mapping[str, Any]) -> tuple[float]:
        return (float(hparams["lr"]),)

    def __init__(self, members: Sequence[NQMTrainable]) -> None:
        self.members = list(members)
        first = members[0]
        self.h, self.noise, self.beta = first.h, first.noise, first.beta
        self.exx = np.stack([m.exx for m in members])
        self.exv = np.stack([m.exv for m in members])
        self.evv = np.stack([m.evv for m in members])

    def train(self, settings: Any) -> None:
        b = self.beta
        lr_np = np.asarray(settings[..., 0])  # (steps, N)
        exx, exv, evv = self.exx, self.exv, self.evv
        with np.errstate(over="ignore", invalid="ignore"):
            k = 0
            while k < len(lr_np):
                same = k + 1
                while same < len(lr_np) and np.array_equal(lr_np[same], lr_np[k]):
                    same += 1
                rate = lr_np[k][:, None]
                lh = rate * self.h
                a = 1.0 - lh
                s = rate * rate * self.noise
                for _ in range(same - k):
                    nxx = a * a * exx + 2 * a * b * exv + b * b * evv + s
                    nvv = lh * lh * exx - 2 * lh * b * exv + b * b * evv + s
                    nxv = -a * lh * exx + (a - lh) * b * exv + b * b * evv + s
                    exx, exv, evv = nxx, nxv, nvv
                k = same
        self.exx, self.exv, self.evv = exx, exv, evv

    def evaluate(self) -> list[float]:
        self.write_back()
        return [m.evaluate() for m in self.members]

    def snapshot(self, i: int) -> None:
        return None

    def test_at(self, i: int, snapshot: object) -> None:
        return None

    def write_back(self) -> None:
        for i, m in enumerate(self.members):
            m.exx, m.exv, m.evv = self.exx[i].copy(), self.exv[i].copy(), self.evv[i].copy()


register_batched(NQMTrainable, NQMPopulation)
