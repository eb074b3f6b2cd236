"""V-MPO loss pieces on small fixed inputs with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from firepbt.rl.vmpo import (
    kl_covariance,
    kl_mean,
    lagrange_loss,
    n_step_returns,
    policy_loss,
    sample_weights,
    temperature_loss,
    top_half,
)


def test_top_half_selects_the_largest_advantages():
    a = torch.tensor([0.5, -1.0, 2.0, 0.1, 3.0, -0.2])
    assert top_half(a).tolist() == [True, False, True, False, True, False]
    assert top_half(torch.tensor([1.0])).tolist() == [True]
    assert top_half(torch.tensor([1.0, 2.0, 3.0])).tolist() == [False, False, True]


def test_temperature_dual_value_and_gradient():
    a = torch.tensor([1.0, 3.0])
    eta = torch.tensor(2.0, requires_grad=True)
    loss = temperature_loss(eta, a, 0.1)
    # eta*eps + eta*log(mean(exp(a/eta))) = 0.2 + 2*log((e^0.5 + e^1.5)/2)
    expected = 0.2 + 2 * math.log((math.exp(0.5) + math.exp(1.5)) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/d eta = eps + log(mean exp(a/eta)) - sum(w_i a_i)/eta with w = softmax(a/eta)
    w = torch.softmax(a / 2.0, 0)
    grad = 0.1 + math.log((math.exp(0.5) + math.exp(1.5)) / 2) - float((w * a).sum()) / 2.0
    assert eta.grad.item() == pytest.approx(grad, rel=1e-5)


def test_sample_weights_and_policy_loss():
    a = torch.tensor([0.0, math.log(3.0)])
    w = sample_weights(a, torch.tensor(1.0))
    assert w.tolist() == pytest.approx([0.25, 0.75])
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = policy_loss(logp, w)
    assert loss.item() == pytest.approx(0.25 * 1.0 + 0.75 * 2.0)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.25, -0.75])


def test_decoupled_gaussian_kl_terms():
    mu_old = torch.tensor([[0.0, 1.0]])
    mu = torch.tensor([[0.5, 1.0]])
    std_old = torch.tensor([[0.5, 2.0]])
    # 0.5 * (0.5^2 / 0.5^2 + 0) = 0.5
    assert kl_mean(mu_old, mu, std_old).item() == pytest.approx(0.5)
    std = torch.tensor([[1.0, 2.0]])
    # 0.5 * ((0.25/1 - 1 + 2 log 2) + 0)
    assert kl_covariance(std_old, std).item() == pytest.approx(0.5 * (0.25 - 1 + 2 * math.log(2)))
    assert kl_covariance(std_old, std_old.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # matches torch.distributions' full KL when only one part differs
    from torch.distributions import Independent, Normal, kl_divergence

    full = kl_divergence(Independent(Normal(mu_old, std_old), 1), Independent(Normal(mu, std_old), 1))
    assert kl_mean(mu_old, mu, std_old).item() == pytest.approx(full.item())


def test_lagrange_multiplier_gradients():
    alpha = torch.tensor(0.5, requires_grad=True)
    kl = torch.tensor(0.02, requires_grad=True)
    loss = lagrange_loss(alpha, kl, 0.01)
    assert loss.item() == pytest.approx(0.5 * (0.01 - 0.02) + 0.5 * 0.02)
    loss.backward()
    assert alpha.grad.item() == pytest.approx(0.01 - 0.02)  # KL above epsilon: alpha grows
    assert kl.grad.item() == pytest.approx(0.5)


def test_n_step_returns_with_done():
    r = torch.tensor([[1.0], [2.0], [3.0]])
    d = torch.tensor([[0.0], [1.0], [0.0]])
    out = n_step_returns(r, d, torch.tensor([10.0]), 0.5)
    # t=2: 3 + 0.5*10 = 8; t=1: done -> 2; t=0: 1 + 0.5*2 = 2
    assert out.flatten().tolist() == pytest.approx([2.0, 2.0, 8.0])
