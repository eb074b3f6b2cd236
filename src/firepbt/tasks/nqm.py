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

The moments are float64 tensors on the run's device (``device``, :mod:`firepbt.devices`); the
expected loss is summed in numpy on the CPU, so a member's value does not depend on the device
or on whether it trained alone or batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..executors.batched import NotVectorizable, register_batched
from ..space import LogUniform, Space

SPACE = Space({"lr": LogUniform(0.1, 3.0, bounds=(1e-4, 3.8))})


class NQMTrainable:
    """Exact expected dynamics of momentum SGD on the noisy quadratic model."""

    mode = "min"

    def __init__(self, seed: int, *, dims: int = 10_000, batch_size: int = 128,
                 momentum: float = 0.9, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.h = (1.0 / torch.arange(1, dims + 1, dtype=torch.float64)).to(self.device)
        self.h_np = self.h.cpu().numpy()
        self.noise = self.h / batch_size
        self.beta = momentum
        self.exx = torch.ones(dims, dtype=torch.float64, device=self.device)
        self.exv = torch.zeros(dims, dtype=torch.float64, device=self.device)
        self.evv = torch.zeros(dims, dtype=torch.float64, device=self.device)
        self.seed = seed

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        lr = float(hparams["lr"])
        self.exx, self.exv, self.evv = _steps(lr * self.h, lr * lr * self.noise, self.beta,
                                              self.exx, self.exv, self.evv, steps)

    def evaluate(self) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(0.5 * np.sum(self.h_np * self.exx.cpu().numpy()))
        return value if np.isfinite(value) else float("nan")

    def test(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"exx": self.exx.cpu().clone(), "exv": self.exv.cpu().clone(),
                "evv": self.evv.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        def load(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x,
                                   dtype=torch.float64).to(self.device).clone()

        self.exx, self.exv, self.evv = load(state["exx"]), load(state["exv"]), load(state["evv"])


def _steps(lh: torch.Tensor, s: torch.Tensor, b: float, exx: torch.Tensor, exv: torch.Tensor,
           evv: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` updates of the moments (module doc) with ``lh = lr * h`` and ``s = lr^2 *
    Var(eps)``; the same operations, in the same order, for one member or a batch of them."""
    a = 1.0 - lh
    for _ in range(steps):
        nxx = a * a * exx + 2 * a * b * exv + b * b * evv + s
        nvv = lh * lh * exx - 2 * lh * b * exv + b * b * evv + s
        nxv = -a * lh * exx + (a - lh) * b * exv + b * b * evv + s
        exx, exv, evv = nxx, nxv, nvv
    return exx, exv, evv


class NQMPopulation:
    """The batched NQM (:mod:`firepbt.executors.batched`): the moments of N members as ``(N, dims)``
    tensors, updated by the same operations, in the same order, as :meth:`NQMTrainable.train`
    (bitwise equal to the local executor). Settings per step: the learning rate."""

    @classmethod
    def check(cls, members: Sequence[NQMTrainable]) -> None:
        first = members[0]
        for m in members[1:]:
            if len(m.h) != len(first.h) or m.beta != first.beta or m.device != first.device \
                    or not torch.equal(m.noise, first.noise):
                raise NotVectorizable("all NQM members must have the same dims, batch size, "
                                      "momentum and device")

    @staticmethod
    def settings(member: NQMTrainable, hparams: Mapping[str, Any]) -> tuple[float]:
        return (float(hparams["lr"]),)

    def __init__(self, members: Sequence[NQMTrainable]) -> None:
        self.members = list(members)
        first = members[0]
        self.h, self.noise, self.beta = first.h, first.noise, first.beta
        self.exx = torch.stack([m.exx for m in members])
        self.exv = torch.stack([m.exv for m in members])
        self.evv = torch.stack([m.evv for m in members])

    def train(self, settings: torch.Tensor) -> None:
        lr = settings[..., 0].to(self.h.device)  # (steps, N)
        k = 0
        while k < len(lr):  # runs of steps with the same learning rates
            same = k + 1
            while same < len(lr) and torch.equal(lr[same], lr[k]):
                same += 1
            rate = lr[k][:, None]
            self.exx, self.exv, self.evv = _steps(rate * self.h, rate * rate * self.noise,
                                                  self.beta, self.exx, self.exv, self.evv,
                                                  same - k)
            k = same

    def evaluate(self) -> list[float]:
        self.write_back()
        return [m.evaluate() for m in self.members]

    def snapshot(self, i: int) -> None:
        return None

    def test_at(self, i: int, snapshot: object) -> None:
        return None

    def write_back(self) -> None:
        for i, m in enumerate(self.members):
            m.exx, m.exv, m.evv = self.exx[i].clone(), self.exv[i].clone(), self.evv[i].clone()


register_batched(NQMTrainable, NQMPopulation)
