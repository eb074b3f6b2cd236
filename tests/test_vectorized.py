"""The vectorized executor against the per-member (local) executor."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from firepbt.api import run
from firepbt.config import ExperimentConfig
from firepbt.errors import ConfigError
from firepbt.store import Store
from firepbt.supervised import SupervisedData, SupervisedTrainable
from firepbt.tasks.mnist1d import SPACE, MNIST1DTrainable, load_data


def records(path):
    st = Store.open(path)
    try:
        return st.evaluations(), st.tests(), [d for _r, _s, d in st.decisions()]
    finally:
        st.close()


def assert_same(a, b, tol):
    ea, ta, da = a
    eb, tb, db = b
    assert len(ea) == len(eb)
    for x, y in zip(ea, eb, strict=True):
        assert x[:3] == y[:3]
        assert x[3] == pytest.approx(y[3], abs=tol) or (math.isnan(x[3]) and math.isnan(y[3]))
    assert [t[:3] for t in ta] == [t[:3] for t in tb]
    assert da == db


def mlp64(seed):
    return MNIST1DTrainable(seed, hidden=32, dtype=torch.float64)


@pytest.mark.parametrize("method, workers", [("pbt", 8), ("fire", 12), ("random", 4)])
def test_vectorized_equals_local_in_float64(tmp_path, method, workers):
    # In float64 a batched and a single matrix multiply differ by rounding (~1e-16 relative);
    # 200 SGD steps amplify that to well under 1e-9, while validation accuracy moves in steps of
    # 1/5000 = 2e-4: curves agree to 1e-9 and every ranking - hence every decision - is equal.
    cfg = dict(task="mnist1d", method=method, workers=workers, steps=200, ready_interval=50,
               eval_interval=10, seed=4)
    out = {}
    for ex in ("local", "vectorized"):
        run(ExperimentConfig(**cfg, executor=ex), tmp_path / ex, factory=mlp64, space=SPACE,
            schedule_param="lambda" if method == "random" else None)
        out[ex] = records(tmp_path / ex)
    assert_same(out["local"], out["vectorized"], tol=1e-9)
    if method != "random":
        assert any(d.kind == "exploit" for d in out["local"][2])


class TwoLayer(nn.Module):
    """Not an nn.Sequential: goes through torch.func (functional_call + vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(40, 24)
        self.b = nn.Linear(24, 10)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + 0.1 * torch.relu(self.a(x)))


def custom64(seed):
    d = load_data()
    data = SupervisedData(d.x_train.double(), d.y_train, d.x_val.double(), d.y_val)
    with torch.random.fork_rng(devices=[]):
        model = TwoLayer().double()
    return SupervisedTrainable(seed, model=model, data=data, lr_param="lambda", lr_scale=0.5,
                               weight_decay=1e-4)


def test_torch_func_path_equals_local(tmp_path):
    cfg = dict(task="custom", method="pbt", workers=4, steps=60, ready_interval=20,
               eval_interval=10, seed=1)
    out = {}
    for ex in ("local", "vectorized"):
        run(ExperimentConfig(**cfg, executor=ex), tmp_path / ex, factory=custom64, space=SPACE)
        out[ex] = records(tmp_path / ex)
    assert_same(out["local"], out["vectorized"], tol=1e-9)


def test_nqm_vectorized_is_bitwise_equal(tmp_path):
    cfg = dict(task="nqm", method="fire", workers=12, steps=300, ready_interval=50,
               eval_interval=10, seed=2, task_options={"dims": 500})
    for ex in ("local", "vectorized"):
        run(ExperimentConfig(**cfg, executor=ex), tmp_path / ex)
    assert_same(records(tmp_path / "local"), records(tmp_path / "vectorized"), tol=0.0)


def test_batch_norm_network_is_refused_with_a_reason(tmp_path):
    def bn(seed):
        d = load_data()
        with torch.random.fork_rng(devices=[]):
            model = nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Linear(16, 10))
        return SupervisedTrainable(seed, model=model, data=SupervisedData(
            d.x_train, d.y_train, d.x_val, d.y_val), lr_param="lambda")

    cfg = ExperimentConfig(task="bn", method="pbt", workers=4, steps=20, ready_interval=10,
                           eval_interval=10, executor="vectorized")
    with pytest.raises(ConfigError, match="executor must be 'local'.*running_mean.*local executor"):
        run(cfg, tmp_path / "v", factory=bn, space=SPACE)
    # auto falls back to the local executor
    s = run(ExperimentConfig(**{**cfg.to_dict(), "executor": "auto"}), tmp_path / "a",
            factory=bn, space=SPACE)
    assert s.finished


class Decay:
    """A user's own trainable family: w moves towards 1 at rate lr (exactly, per step)."""

    def __init__(self, seed):
        self.w = torch.tensor([seed % 5 / 10], dtype=torch.float64)

    def train(self, hparams, steps):
        for _ in range(steps):
            self.w = self.w + hparams["lr"] * (1.0 - self.w)

    def evaluate(self):
        return float(self.w[0])

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


class DecayPopulation:
    """Its batched population: all members' w as one (N,) tensor."""

    trained_steps = 0

    @classmethod
    def check(cls, members):
        pass

    @staticmethod
    def settings(member, hparams):
        return (float(hparams["lr"]),)

    def __init__(self, members):
        self.members = list(members)
        self.w = torch.cat([m.w for m in members])

    def train(self, settings):
        for lr in settings[..., 0]:
            self.w = self.w + lr * (1.0 - self.w)
            DecayPopulation.trained_steps += 1

    def evaluate(self):
        return [float(x) for x in self.w]

    def snapshot(self, i):
        return None

    def test_at(self, i, snapshot):
        return None

    def write_back(self):
        for i, m in enumerate(self.members):
            m.w = self.w[i:i + 1].clone()


def test_a_users_batched_family_goes_through_the_same_door(tmp_path):
    from firepbt.executors.batched import register_batched
    from firepbt.space import LogUniform, Space

    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    cfg = dict(task="decay", method="fire", workers=12, steps=200, ready_interval=20,
               eval_interval=10, seed=4)
    # not declared: refused for the vectorized executor, naming the door
    with pytest.raises(ConfigError, match="register_batched"):
        run(ExperimentConfig(**cfg, executor="vectorized"), tmp_path / "refused",
            factory=Decay, space=space)
    register_batched(Decay, DecayPopulation)
    run(ExperimentConfig(**cfg, executor="local"), tmp_path / "local", factory=Decay,
        space=space)
    run(ExperimentConfig(**cfg, executor="vectorized"), tmp_path / "vec", factory=Decay,
        space=space)
    assert DecayPopulation.trained_steps > 0  # the batched population trained it
    assert_same(records(tmp_path / "local"), records(tmp_path / "vec"), 1e-12)


def test_a_round_across_epochs_equals_each_member_training_alone():
    """Members at different places in their epochs (one just copied and reseeded), crossing
    three epochs each within one round, with settings changing mid-round and a member without
    momentum that keeps the buffer it had (as torch.optim.SGD does): the batched round leaves
    every member as training it alone does (positions, permutations, epoch states, weights,
    momentum buffers, optimizer settings)."""
    from firepbt.executors import LocalExecutor, TrainJob
    from firepbt.executors.vectorized import VectorizedExecutor
    from firepbt.trainable import copy_into

    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (700,), generator=g)
    data = SupervisedData(x[:500], y[:500], x[500:], y[500:])  # 15 steps per epoch

    def make(seed):
        with torch.random.fork_rng(devices=[]):
            net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
        return SupervisedTrainable(seed, model=net, data=data, batch_size=32)

    def members():
        ex = LocalExecutor(make)
        ex.setup({w: 10 + w for w in range(5)})
        for w, t in ex.trainables.items():
            if w % 2:
                t.train({"lr": 0.05, "momentum": 0.9}, 3 * w + 1)
        copy_into(ex.trainables[3], ex.trainables[4], 999)
        return ex.trainables

    def hp(w, lr=None):
        return {"lr": lr or 0.01 * (w + 1), "momentum": [0.9, 0.0, 0.5, 0.9, 0.8][w],
                "weight_decay": 1e-3 * w}

    alone, batched = members(), members()
    for w, t in alone.items():
        t.train(hp(w), 20)
        t.train(hp(w, 0.02), 27)
    vec = VectorizedExecutor(make)
    vec.setup({w: 10 + w for w in range(5)})
    vec.trainables = batched  # the members as prepared above
    vec.train_round([TrainJob(w, 0, ((hp(w), 20), (hp(w, 0.02), 27)), 47) for w in batched],
                    -1e9)
    for w in alone:
        a, b = alone[w], batched[w]
        assert a.pos == b.pos and torch.equal(a.perm, b.perm)
        assert torch.equal(a.epoch_state, b.epoch_state)
        for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.allclose(pa, pb, rtol=0, atol=1e-12)
        sa, sb = a.opt.state_dict(), b.opt.state_dict()
        assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
        assert sa["state"].keys() == sb["state"].keys()
        for k, st in sa["state"].items():
            assert torch.allclose(st["momentum_buffer"], sb["state"][k]["momentum_buffer"],
                                  rtol=0, atol=1e-12)
