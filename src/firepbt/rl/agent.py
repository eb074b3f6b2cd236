"""A compact V-MPO agent (Song et al. 2020) on Gymnasium continuous-control tasks.

A :class:`~firepbt.trainable.Trainable`: ``train(hparams, steps)`` runs ``steps`` learner
updates; each collects a fresh on-policy batch of ``n_envs x unroll`` transitions and takes
``epochs`` Adam steps on it, the KL trust region measured against the policy that collected
the batch (V-MPO's target network, refreshed every batch). Hyperparameters: ``lr`` (Adam, the
policy and value networks) and ``epsilon_eta`` (the temperature constraint). ``evaluate`` is
the average return of the last ``episodes_to_average`` finished episodes (higher is better).

Gaussian policy (state-dependent mean and standard deviation), separate value network,
n-step returns bootstrapped from the value (also where an episode is truncated by its time
limit, since that is not a real end), the losses of :mod:`firepbt.rl.vmpo`. The temperature
and the two Lagrange multipliers are softplus-parameterised and learned by their own Adam with
the fixed rate ``dual_lr``: with the tuned network rate (1e-5 to 1e-3) they would barely move
in a CPU-sized run, and ``epsilon_eta`` would then have no effect.

Optional running observation normalisation (``normalize_obs``, on for the MuJoCo presets).
The environments' states (classic-control ``state`` or the full MuJoCo integration state, the
time-limit counters and the reset generators) are part of ``state_dict``, so a copy or a
resume continues exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..errors import check, require_extra
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
    """V-MPO on ``env_id`` with ``n_envs`` environments stepped in lockstep.

    The defaults were chosen by measuring learning on Pendulum-v1 (docs/site/results.md, V-MPO):
    about 13-15 ms per update (400 transitions, 4 Adam steps) on one core.
    """

    mode = "max"

    def __init__(self, seed: int, *, env_id: str = "Pendulum-v1", n_envs: int = 16,
                 unroll: int = 25, epochs: int = 4, gamma: float = 0.95, hidden: int = 64,
                 reward_scale: float = 0.1, episodes_to_average: int = 32,
                 dual_lr: float = 1e-2, normalize_obs: bool = False) -> None:
        require_extra("gymnasium", "the V-MPO tasks", "the 'gymnasium' package", "rl")
        import gymnasium as gym

        for name, v in (("n_envs", n_envs), ("unroll", unroll), ("epochs", epochs),
                        ("hidden", hidden), ("episodes_to_average", episodes_to_average)):
            check(isinstance(v, int) and v >= 1, name, "an int >= 1", v)
        check(0.0 < gamma < 1.0, "gamma", "in (0, 1)", gamma)
        check(dual_lr > 0, "dual_lr", "a float > 0", dual_lr)
        self.envs = [gym.make(env_id) for _ in range(n_envs)]
        check(isinstance(self.envs[0].action_space, gym.spaces.Box), "env_id",
              "an environment with a continuous (Box) action space", env_id)
        self.obs = np.stack([e.reset(seed=seed * 1000 + i)[0] for i, e in enumerate(self.envs)])
        self.unroll, self.epochs, self.gamma = unroll, epochs, gamma
        self.reward_scale = reward_scale
        self.episodes_to_average = episodes_to_average
        obs_space = cast(gym.spaces.Box, self.envs[0].observation_space)
        act_space = cast(gym.spaces.Box, self.envs[0].action_space)  # (checked above)
        n_obs = obs_space.shape[0]
        self.n_act = act_space.shape[0]
        self.low = act_space.low
        self.high = act_space.high
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = _mlp(n_obs, 2 * self.n_act, hidden)
            self.value = _mlp(n_obs, 1, hidden)
        # softplus-parameterised temperature eta and Lagrange multipliers alpha_mu, alpha_sigma
        self.duals = nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
        self.opt = torch.optim.Adam([*self.policy.parameters(), *self.value.parameters()],
                                    lr=1e-3)
        self.dual_opt = torch.optim.Adam([self.duals], lr=dual_lr)
        self.gen = torch.Generator().manual_seed(seed + 17)
        self.normalize_obs = normalize_obs
        self.obs_stats = torch.zeros(3, n_obs, dtype=torch.float64)  # count, mean, M2
        self.ep_return = np.zeros(n_envs)
        self.finished: list[float] = []
        self.last_stats: dict[str, float] = {}

    # -- acting -------------------------------------------------------------------------------

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.normalize_obs:
            return obs
        n, mean, m2 = self.obs_stats
        std = torch.sqrt(m2 / torch.clamp(n, min=1.0)) + 1e-6
        return torch.clamp((obs - mean.float()) / std.float(), -10.0, 10.0)

    def _observe(self, obs: np.ndarray) -> None:
        if not self.normalize_obs:
            return
        x = torch.as_tensor(obs, dtype=torch.float64)
        n, mean, m2 = self.obs_stats
        b = float(x.shape[0])
        delta = x.mean(0) - mean
        tot = n + b
        new_mean = mean + delta * b / tot
        new_m2 = m2 + ((x - x.mean(0)) ** 2).sum(0) + delta ** 2 * n * b / tot
        self.obs_stats = torch.stack([tot, new_mean, new_m2])

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(obs)
        mu, raw = out[..., :self.n_act], out[..., self.n_act:]
        return mu, nn.functional.softplus(raw) + 1e-3

    def _rollout(self) -> dict[str, torch.Tensor]:
        obs_l, act_l, rew_l, done_l, trunc_l, fin_l = [], [], [], [], [], []
        for _ in range(self.unroll):
            self._observe(self.obs)
            obs_t = self._norm(torch.as_tensor(self.obs, dtype=torch.float32))
            with torch.no_grad():
                mu, std = self._dist(obs_t)
                act = mu + std * torch.randn(mu.shape, generator=self.gen)
            a = np.clip(act.numpy(), self.low, self.high)
            rewards, dones, truncs, finals, nxt = [], [], [], [], []
            for i, env in enumerate(self.envs):
                o, r, term, trunc, _ = env.step(a[i])
                self.ep_return[i] += r
                rewards.append(float(r) * self.reward_scale)
                dones.append(float(term or trunc))
                truncs.append(float(trunc and not term))
                finals.append(o)
                if term or trunc:
                    self.finished.append(float(self.ep_return[i]))
                    self.ep_return[i] = 0.0
                    o, _ = env.reset()
                nxt.append(o)
            obs_l.append(obs_t)
            act_l.append(act)
            rew_l.append(torch.tensor(rewards, dtype=torch.float32))
            done_l.append(torch.tensor(dones))
            trunc_l.append(torch.tensor(truncs))
            fin_l.append(self._norm(torch.as_tensor(np.stack(finals), dtype=torch.float32)))
            self.obs = np.stack(nxt)
        self.finished = self.finished[-max(100, self.episodes_to_average):]
        return {"obs": torch.stack(obs_l), "act": torch.stack(act_l), "rew": torch.stack(rew_l),
                "done": torch.stack(done_l), "trunc": torch.stack(trunc_l),
                "final_obs": torch.stack(fin_l),
                "last_obs": self._norm(torch.as_tensor(self.obs, dtype=torch.float32))}

    # -- learning -----------------------------------------------------------------------------

    def _targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """n-step returns and the policy that collected the batch (fixed over the epochs)."""
        with torch.no_grad():
            boot = self.value(batch["last_obs"]).squeeze(-1)
            # a time-limit truncation is not an end: bootstrap from the final observation
            rew = batch["rew"] + (self.gamma * batch["trunc"]
                                  * self.value(batch["final_obs"]).squeeze(-1))
            returns = n_step_returns(rew, batch["done"], boot, self.gamma)
            mu_old, std_old = self._dist(batch["obs"])
        return {"returns": returns, "mu_old": mu_old, "std_old": std_old}

    def _update(self, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                epsilon_eta: float) -> None:
        obs, act, returns = batch["obs"], batch["act"], targets["returns"]
        values = self.value(obs).squeeze(-1)
        adv = (returns - values).detach().flatten()
        mask = top_half(adv)
        eta, alpha_mu, alpha_sigma = nn.functional.softplus(self.duals) + 1e-4
        mu, std = self._dist(obs)
        mu_f, std_f = mu.reshape(-1, self.n_act), std.reshape(-1, self.n_act)
        mu_old_f = targets["mu_old"].reshape(-1, self.n_act)
        std_old_f = targets["std_old"].reshape(-1, self.n_act)
        act_f = act.reshape(-1, self.n_act)
        # decoupled policy: fit the mean with the old std, the std with the old mean
        logp_mean = torch.distributions.Normal(mu_f, std_old_f).log_prob(act_f).sum(-1)
        logp_std = torch.distributions.Normal(mu_old_f, std_f).log_prob(act_f).sum(-1)
        w = sample_weights(adv[mask], eta)
        kl_mu = kl_mean(mu_old_f, mu_f, std_old_f)
        kl_sigma = kl_covariance(std_old_f, std_f)
        loss = (policy_loss(logp_mean[mask], w) + policy_loss(logp_std[mask], w)
                + temperature_loss(eta, adv[mask], epsilon_eta)
                + lagrange_loss(alpha_mu, kl_mu, EPSILON_ALPHA_MU)
                + lagrange_loss(alpha_sigma, kl_sigma, EPSILON_ALPHA_SIGMA)
                + 0.5 * ((returns.flatten() - values.flatten()) ** 2).mean())
        self.opt.zero_grad()
        self.dual_opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.dual_opt.step()
        self.last_stats = {k: float(v.detach()) for k, v in (
            ("eta", eta), ("alpha_mu", alpha_mu), ("alpha_sigma", alpha_sigma),
            ("kl_mu", kl_mu), ("kl_sigma", kl_sigma))}

    # -- the Trainable contract ------------------------------------------------------------------

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        for group in self.opt.param_groups:
            group["lr"] = float(hparams["lr"])
        epsilon_eta = float(hparams["epsilon_eta"])
        for _ in range(steps):
            batch = self._rollout()
            targets = self._targets(batch)
            for _ in range(self.epochs):
                self._update(batch, targets, epsilon_eta)

    def evaluate(self) -> float:
        if not self.finished:
            return float("nan")
        return float(np.mean(self.finished[-self.episodes_to_average:]))

    def state_dict(self) -> dict[str, Any]:
        return {"policy": copy.deepcopy(self.policy.state_dict()),
                "value": copy.deepcopy(self.value.state_dict()),
                "duals": self.duals.detach().clone(), "opt": copy.deepcopy(self.opt.state_dict()),
                "dual_opt": copy.deepcopy(self.dual_opt.state_dict()),
                "gen": self.gen.get_state(), "obs": torch.as_tensor(self.obs).clone(),
                "obs_stats": self.obs_stats.clone(),
                "ep_return": torch.as_tensor(self.ep_return).clone(),
                "finished": torch.tensor(self.finished, dtype=torch.float64),
                "envs": [_env_state(e) for e in self.envs]}

    def reseed(self, seed: int) -> None:
        """A new stream of experience after receiving another member's state: the action
        sampling generator and each environment's generator restart from ``seed``; the
        networks, optimizers and the environments' current states stay as copied."""
        self.gen.manual_seed(int(seed) + 17)
        for i, e in enumerate(self.envs):
            rng = e.unwrapped.np_random
            rng.bit_generator.state = type(rng.bit_generator)(
                np.random.SeedSequence([int(seed), i])).state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        with torch.no_grad():
            self.duals.copy_(state["duals"])
        self.opt.load_state_dict(copy.deepcopy(state["opt"]))
        self.dual_opt.load_state_dict(copy.deepcopy(state["dual_opt"]))
        self.gen.set_state(state["gen"])
        self.obs = np.asarray(state["obs"]).copy()
        self.obs_stats = state["obs_stats"].clone()
        self.ep_return = np.asarray(state["ep_return"]).copy()
        self.finished = [float(x) for x in state["finished"]]
        for e, s in zip(self.envs, state["envs"], strict=True):
            _load_env_state(e, s)


def _env_state(env: Any) -> dict[str, Any]:
    """An environment's full state as tensors and ints (``torch.load(weights_only=True)``)."""
    u = env.unwrapped
    out: dict[str, Any] = {"elapsed": int(env._elapsed_steps),  # the TimeLimit wrapper
                           "rng": _rng_state(u.np_random)}
    if hasattr(u, "data") and hasattr(u, "model"):  # MuJoCo
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(u.model, spec))
        mujoco.mj_getState(u.model, u.data, buf, spec)
        out["mujoco"] = torch.as_tensor(buf)
        # positions derived by the last step, read by the next reward (one step stale by design)
        out["xpos"] = torch.as_tensor(u.data.xpos.copy())
        out["xipos"] = torch.as_tensor(u.data.xipos.copy())
    elif hasattr(u, "state"):  # classic control
        out["state"] = torch.as_tensor(np.asarray(u.state, dtype=np.float64))
    else:
        raise TypeError(f"cannot save the state of {type(u).__name__}: only classic-control and "
                        "MuJoCo environments are supported")
    return out


def _load_env_state(env: Any, s: Mapping[str, Any]) -> None:
    u = env.unwrapped
    if "mujoco" in s:
        import mujoco

        mujoco.mj_setState(u.model, u.data, np.asarray(s["mujoco"]).copy(),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        u.data.xpos[:] = np.asarray(s["xpos"])
        u.data.xipos[:] = np.asarray(s["xipos"])
    else:
        u.state = np.asarray(s["state"]).copy()
    env._elapsed_steps = int(s["elapsed"])
    u.np_random.bit_generator.state = _from_tensor_rng(s["rng"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": int(st["state"]["state"]),
            "inc": int(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]),
            "uinteger": int(st["uinteger"])}


def _from_tensor_rng(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]),
            "inc": int(d["inc"])}, "has_uint32": int(d["has_uint32"]),
            "uinteger": int(d["uinteger"])}
