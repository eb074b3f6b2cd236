"""The V-MPO loss (Song et al. 2020, "V-MPO: on-policy maximum a posteriori policy
optimization"), as pure functions over tensors - the pieces the paper's section 4.2 tunes.

For a batch of transitions with advantages ``A``:

- the policy is fitted only on the **top half** of the advantages (:func:`top_half`);
- each selected sample gets the weight ``psi_i = softmax(A_i / eta)`` (:func:`sample_weights`)
  and the policy loss is ``-sum_i psi_i log pi(a_i | s_i)`` (:func:`policy_loss`);
- the temperature ``eta`` is learned through the dual
  ``L_eta = eta * epsilon_eta + eta * log(mean_i exp(A_i / eta))`` over the top half
  (:func:`temperature_loss`); ``epsilon_eta`` is the hyperparameter FIRE PBT tunes;
- a KL trust region keeps the new Gaussian policy near the old one, decoupled into mean and
  covariance parts (:func:`kl_mean`, :func:`kl_covariance`), each with a Lagrange multiplier
  ``alpha`` learned through ``alpha * (epsilon - sg[KL]) + sg[alpha] * KL``
  (:func:`lagrange_loss`); the paper fixes ``epsilon_alpha_mu = 7.5e-3`` and
  ``epsilon_alpha_sigma = 1e-5``;
- the value function regresses n-step returns (:func:`n_step_returns`).

The agent that uses them is :class:`firepbt.rl.agent.VMPOTrainable`; the built-in tasks are
in :mod:`firepbt.tasks.vmpo`.
"""

from __future__ import annotations

import math

import torch

EPSILON_ALPHA_MU = 7.5e-3
EPSILON_ALPHA_SIGMA = 1e-5


def top_half(advantages: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``max(1, n // 2)`` largest advantages (ties broken by position)."""
    n = advantages.numel()
    k = max(1, n // 2)
    idx = torch.topk(advantages.flatten(), k, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask.view_as(advantages)


def temperature_loss(eta: torch.Tensor, advantages: torch.Tensor,
                     epsilon_eta: float) -> torch.Tensor:
    """The temperature dual over the selected advantages (gradients flow to ``eta`` only).

    ``eta * epsilon_eta + eta * (logsumexp(A / eta) - log k)``, computed stably.
    """
    a = advantages.detach().flatten()
    return eta * epsilon_eta + eta * (torch.logsumexp(a / eta, 0) - math.log(a.numel()))


def sample_weights(advantages: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """``softmax(A / eta)`` over the selected samples, with no gradient."""
    return torch.softmax(advantages.detach().flatten() / eta.detach(), 0)


def policy_loss(log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted maximum likelihood: ``-sum_i psi_i log pi(a_i | s_i)``."""
    return -(weights.detach() * log_probs.flatten()).sum()


def kl_mean(mu_old: torch.Tensor, mu: torch.Tensor, std_old: torch.Tensor) -> torch.Tensor:
    """Mean part of KL(old || new) for diagonal Gaussians, the covariance held at the old one:
    ``0.5 * sum_d (mu - mu_old)^2 / std_old^2``, averaged over the batch."""
    return (0.5 * ((mu - mu_old.detach()) ** 2 / std_old.detach() ** 2).sum(-1)).mean()


def kl_covariance(std_old: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Covariance part of KL(old || new), means equal:
    ``0.5 * sum_d (std_old^2 / std^2 - 1 + 2 log(std / std_old))``, averaged over the batch."""
    so = std_old.detach()
    return (0.5 * (so ** 2 / std ** 2 - 1 + 2 * torch.log(std / so)).sum(-1)).mean()


def lagrange_loss(alpha: torch.Tensor, kl: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``alpha * (epsilon - sg[kl]) + sg[alpha] * kl``: raises alpha while the KL exceeds
    epsilon and lets alpha penalise the KL in the policy's gradient."""
    return alpha * (epsilon - kl.detach()) + alpha.detach() * kl


def n_step_returns(rewards: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor,
                   gamma: float) -> torch.Tensor:
    """Discounted returns of a (T, B) rollout, bootstrapped from the values ``bootstrap`` (B,)
    of the state after the last step; a done at step t cuts the return after t."""
    out = torch.zeros_like(rewards)
    running = bootstrap
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running * (1.0 - dones[t].to(rewards.dtype))
        out[t] = running
    return out
