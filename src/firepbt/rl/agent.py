"""A compact V-MPO agent (Song et al. 2020) on Gymnasium continuous-control tasks.

A :class:`~firepbt.trainable.Trainable`: ``train(hparams, steps)`` runs ``steps`` learner
updates, each on a fresh on-policy batch of ``n_envs x unroll`` transitions; hyperparameters
``lr`` (Adam) and ``epsilon_eta`` (the temperature constraint); ``evaluate`` is the average
return of the last finished episodes (higher is better). Gaussian policy (state-dependent mean
and standard deviation), separate value network, n-step returns bootstrapped from the value,
the losses of :mod:`firepbt.rl.vmpo`. The environments' states are part of ``state_dict``, so a
copy or a resume continues exactly.

Status (issue 7): the agent and its short-run learning test exist; the built-in task with its
FIRE presets, the MuJoCo presets and Figure 5 do not yet.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .vmpo import (
    EPSILON_ALPHA_MU,
    EPSILON_ALPHA_SIGMA,
    kl_covariance,
    kl_mean,
    lagrange_loss,
    n_step_returns,
    policy_loss,
    sample_weights,
    temperature_loss,
    top_half,
)


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                         nn.Tanh(), nn.Linear(hidden, n_out))


class VMPOTrainable:
    """V-MPO on ``env_id`` with ``n_envs`` environments stepped in lockstep."""

    mode = "max"

    def __init__(self, seed: int, *, env_id: str = "Pendulum-v1", n_envs: int = 8,
                 unroll: int = 32, gamma: float = 0.95, hidden: int = 64,
                 reward_scale: float = 0.1, episodes_to_average: int = 10) -> None:
        import gymnasium as gym

        self.envs = [gym.make(env_id) for _ in range(n_envs)]
        self.obs = np.stack([e.reset(seed=seed * 1000 + i)[0] for i, e in enumerate(self.envs)])
        for i, e in enumerate(self.envs):
            e.action_space.seed(seed * 1000 + i)
        self.unroll, self.gamma, self.reward_scale = unroll, gamma, reward_scale
        self.episodes_to_average = episodes_to_average
        n_obs = self.envs[0].observation_space.shape[0]
        self.n_act = self.envs[0].action_space.shape[0]
        self.low = self.envs[0].action_space.low
        self.high = self.envs[0].action_space.high
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = _mlp(n_obs, 2 * self.n_act, hidden)
            self.value = _mlp(n_obs, 1, hidden)
        # softplus-parameterised temperature and Lagrange multipliers
        self.duals = nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
        params = [*self.policy.parameters(), *self.value.parameters(), self.duals]
        self.opt = torch.optim.Adam(params, lr=1e-3)
        self.gen = torch.Generator().manual_seed(seed + 17)
        self.ep_return = np.zeros(n_envs)
        self.finished: list[float] = []

    # -- acting -------------------------------------------------------------------------------

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(obs)
        mu, raw = out[..., :self.n_act], out[..., self.n_act:]
        return mu, nn.functional.softplus(raw) + 1e-3

    def _rollout(self) -> dict[str, torch.Tensor]:
        obs_l, act_l, rew_l, done_l = [], [], [], []
        for _ in range(self.unroll):
            obs_t = torch.as_tensor(self.obs, dtype=torch.float32)
            with torch.no_grad():
                mu, std = self._dist(obs_t)
                act = mu + std * torch.randn(mu.shape, generator=self.gen)
            a = np.clip(act.numpy(), self.low, self.high)
            rewards, dones, nxt = [], [], []
            for i, env in enumerate(self.envs):
                o, r, term, trunc, _ = env.step(a[i])
                self.ep_return[i] += r
                if term or trunc:
                    self.finished.append(float(self.ep_return[i]))
                    self.ep_return[i] = 0.0
                    o, _ = env.reset()
                rewards.append(r * self.reward_scale)
                dones.append(float(term or trunc))
                nxt.append(o)
            obs_l.append(obs_t)
            act_l.append(act)
            rew_l.append(torch.tensor(rewards, dtype=torch.float32))
            done_l.append(torch.tensor(dones))
            self.obs = np.stack(nxt)
        self.finished = self.finished[-100:]
        return {"obs": torch.stack(obs_l), "act": torch.stack(act_l), "rew": torch.stack(rew_l),
                "done": torch.stack(done_l),
                "last_obs": torch.as_tensor(self.obs, dtype=torch.float32)}

    # -- learning -----------------------------------------------------------------------------

    def _update(self, batch: dict[str, torch.Tensor], epsilon_eta: float) -> None:
        obs, act = batch["obs"], batch["act"]
        with torch.no_grad():
            boot = self.value(batch["last_obs"]).squeeze(-1)
            returns = n_step_returns(batch["rew"], batch["done"], boot, self.gamma)
            mu_old, std_old = self._dist(obs)
        values = self.value(obs).squeeze(-1)
        adv = (returns - values).detach().flatten()
        mask = top_half(adv)
        eta, alpha_mu, alpha_sigma = nn.functional.softplus(self.duals) + 1e-4
        mu, std = self._dist(obs)
        mu_f, std_f = mu.reshape(-1, self.n_act), std.reshape(-1, self.n_act)
        mu_old_f, std_old_f = mu_old.reshape(-1, self.n_act), std_old.reshape(-1, self.n_act)
        act_f = act.reshape(-1, self.n_act)
        # decoupled policy: fit the mean with the old std, the std with the old mean
        logp_mean = torch.distributions.Normal(mu_f, std_old_f).log_prob(act_f).sum(-1)
        logp_std = torch.distributions.Normal(mu_old_f, std_f).log_prob(act_f).sum(-1)
        w = sample_weights(adv[mask], eta)
        loss = (policy_loss(logp_mean[mask], w) + policy_loss(logp_std[mask], w)
                + temperature_loss(eta, adv[mask], epsilon_eta)
                + lagrange_loss(alpha_mu, kl_mean(mu_old_f, mu_f, std_old_f), EPSILON_ALPHA_MU)
                + lagrange_loss(alpha_sigma, kl_covariance(std_old_f, std_f),
                                EPSILON_ALPHA_SIGMA)
                + 0.5 * ((returns.flatten() - values.flatten()) ** 2).mean())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    # -- the Trainable contract ------------------------------------------------------------------

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        for group in self.opt.param_groups:
            group["lr"] = float(hparams["lr"])
        for _ in range(steps):
            self._update(self._rollout(), float(hparams["epsilon_eta"]))

    def evaluate(self) -> float:
        if not self.finished:
            return float("nan")
        return float(np.mean(self.finished[-self.episodes_to_average:]))

    def state_dict(self) -> dict[str, Any]:
        envs = []
        for e in self.envs:
            u = e.unwrapped
            envs.append({"state": torch.as_tensor(np.asarray(u.state, dtype=np.float64)),
                         "elapsed": int(e._elapsed_steps),  # TimeLimit wrapper
                         "rng": _rng_state(u.np_random)})
        return {"policy": copy.deepcopy(self.policy.state_dict()),
                "value": copy.deepcopy(self.value.state_dict()),
                "duals": self.duals.detach().clone(), "opt": copy.deepcopy(self.opt.state_dict()),
                "gen": self.gen.get_state(), "obs": torch.as_tensor(self.obs),
                "ep_return": torch.as_tensor(self.ep_return),
                "finished": torch.tensor(self.finished, dtype=torch.float64), "envs": envs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        with torch.no_grad():
            self.duals.copy_(state["duals"])
        self.opt.load_state_dict(copy.deepcopy(state["opt"]))
        self.gen.set_state(state["gen"])
        self.obs = np.asarray(state["obs"]).copy()
        self.ep_return = np.asarray(state["ep_return"]).copy()
        self.finished = [float(x) for x in state["finished"]]
        for e, s in zip(self.envs, state["envs"], strict=True):
            e.unwrapped.state = np.asarray(s["state"]).copy()
            e._elapsed_steps = int(s["elapsed"])
            e.unwrapped.np_random.bit_generator.state = _from_tensor_rng(s["rng"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": int(st["state"]["state"]),
            "inc": int(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]),
            "uinteger": int(st["uinteger"])}


def _from_tensor_rng(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]),
            "inc": int(d["inc"])}, "has_uint32": int(d["has_uint32"]),
            "uinteger": int(d["uinteger"])}
