"""An unchanged Ray Tune class trainable under FIRE PBT (firepbt.integrations.tune), with the
real ray.tune.Trainable (no mocks)."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

tune = pytest.importorskip("ray.tune")

import integration_checks as checks  # noqa: E402

from firepbt import LogUniform, Space  # noqa: E402
from firepbt.errors import ConfigError  # noqa: E402
from firepbt.integrations.tune import TuneTrainable, tune_factory  # noqa: E402
from firepbt.records import AssignEvaluator  # noqa: E402
from firepbt.trainable import clone_state  # noqa: E402

DIM = 20


class NoisyQuadratic(tune.Trainable):
    """Written as Tune's docs show a class trainable: ``setup`` reads the config, ``step``
    trains one iteration and returns a result dict, checkpoints are files in the folder Tune
    gives, ``reset_config`` applies new hyperparameters (for PBT). One SGD step with momentum
    on a noisy quadratic per iteration: a higher learning rate falls faster early and settles
    higher (the noise), so the schedule matters."""

    def setup(self, config):
        self.gen = torch.Generator().manual_seed(int(config["seed"]))
        self.h = 1.0 / torch.arange(1, DIM + 1, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.full((DIM,), 3.0, dtype=torch.float64))
        self.opt = torch.optim.SGD([self.w], lr=config["lr"], momentum=0.5)

    def step(self):
        noise = torch.randn(DIM, generator=self.gen, dtype=torch.float64) * self.h.sqrt()
        self.opt.zero_grad()
        self.w.grad = (self.h * self.w + noise).detach()
        self.opt.step()
        return {"loss": float(0.5 * (self.h * self.w.detach() ** 2).sum())}

    def save_checkpoint(self, checkpoint_dir):
        torch.save({"w": self.w.detach(), "opt": self.opt.state_dict(),
                    "gen": self.gen.get_state()}, os.path.join(checkpoint_dir, "model.pt"))

    def load_checkpoint(self, checkpoint_dir):
        state = torch.load(os.path.join(checkpoint_dir, "model.pt"), weights_only=True)
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])

    def reset_config(self, new_config):
        for group in self.opt.param_groups:
            group["lr"] = new_config["lr"]
        self.config = new_config
        return True


class NoReset(NoisyQuadratic):
    """Tune's default: reset_config returns False, so a new config rebuilds the trainable and
    restores it from its checkpoint. As for Tune's PBT, the checkpoint must not bring back the
    old hyperparameters: load_checkpoint applies the config's learning rate after loading the
    optimizer (whose state dict holds the old one)."""

    def reset_config(self, new_config):
        return False

    def load_checkpoint(self, checkpoint_dir):
        super().load_checkpoint(checkpoint_dir)
        for group in self.opt.param_groups:
            group["lr"] = self.config["lr"]


SPACE = Space({"lr": LogUniform(0.05, 1.5)})
CFG = dict(task="tune-noisy-quadratic", method="fire", workers=12, steps=600, ready_interval=60,
           eval_interval=5, seed=3, executor="local")


def factory(cls=NoisyQuadratic):
    return tune_factory(cls, config={}, metric="loss", mode="min", seed_key="seed")




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "s"
    return checks.uninterrupted(path, CFG, factory(), SPACE)


def test_fire_on_a_tune_trainable_evolves_and_hands_weights_down(uninterrupted):
    evals, decisions = uninterrupted
    checks.assert_fire_evolves(decisions)
    assert any(isinstance(d, AssignEvaluator) for _r, _s, d in decisions)
    # the objective is the step() results' "loss", falling from 0.5 * 9 * sum(h)
    finals = [v for _r, w, s, v in evals if s == 600]
    assert finals and max(finals) < 1.0


def test_stop_and_resume_gives_the_uninterrupted_decisions(uninterrupted, tmp_path):
    checks.assert_resume_is_exact(tmp_path / "s", CFG, factory(), SPACE, uninterrupted, 4)


def copy_into(dst, src, seed=7):
    dst.load_state_dict(clone_state(src.state_dict()))
    dst.reseed(seed)


@pytest.mark.parametrize("cls", [NoisyQuadratic, NoReset])
def test_a_copy_continues_from_the_copied_optimizer_with_its_own_hyperparameters(cls):
    a = TuneTrainable(cls, 1, metric="loss", mode="min", seed_key="seed")
    b = TuneTrainable(cls, 2, metric="loss", mode="min", seed_key="seed")
    assert b.evaluate() != b.evaluate()  # NaN before the first step
    a.train({"lr": 0.5}, 5)
    b.train({"lr": 0.1}, 2)
    copy_into(b, a)
    ta, tb = a.trainable, b.trainable
    assert torch.equal(ta.w, tb.w)
    assert torch.equal(ta.opt.state[ta.w]["momentum_buffer"],
                       tb.opt.state[tb.w]["momentum_buffer"])
    assert b.evaluate() == a.evaluate() and tb.iteration == 5
    before = tb
    b.train({"lr": 0.02}, 1)  # new hyperparameters: reset_config, or (NoReset) a rebuild
    tb = b.trainable
    assert tb.opt.param_groups[0]["lr"] == 0.02 and tb.config["lr"] == 0.02
    assert (tb is before) == (cls is NoisyQuadratic)
    assert tb.iteration == 6
    # the step it took started from a's momentum: the same as a taking that step at lr 0.02
    a.train({"lr": 0.02}, 1)
    assert torch.equal(a.trainable.w, tb.w)  # same data order too (no reseed given)


def test_bad_use_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="subclass of ray.tune.Trainable"):
        TuneTrainable(dict, 0, metric="loss")
    with pytest.raises(ConfigError, match="mode must be"):
        tune_factory(NoisyQuadratic, metric="loss", mode="lower")
    t = TuneTrainable(NoisyQuadratic, 0, config={"seed": 0}, metric="acc", mode="min")
    with pytest.raises(ConfigError, match="metric must be a key of the trainable's step"):
        t.train({"lr": 0.1}, 1)


class ReadsInStep(NoisyQuadratic):
    """Reads a hyperparameter of its own from ``self.config`` in ``step()``: a noise scale."""

    def step(self):
        result = super().step()
        result["loss"] *= float(self.config.get("scale", 1.0))
        return result


class ReadsInStepNoReset(NoReset, ReadsInStep):
    """The same, rebuilt from its checkpoint for new hyperparameters."""


def test_a_hyperparameter_the_trainable_never_reads_is_refused():
    # setup() reads "lr" and "seed", nothing reads
    # "learning_rate": it would be "tuned" while every member trains the same
    t = TuneTrainable(NoisyQuadratic, 0, metric="loss", mode="min", seed_key="seed")
    with pytest.raises(ConfigError, match=r"hyperparameter must be a config key the trainable "
                       r"reads \(in setup, step or reset_config; it read: lr, seed\).* got "
                       r"'learning_rate'"):
        t.train({"lr": 0.1, "learning_rate": 0.1}, 1)
    TuneTrainable(NoisyQuadratic, 0, metric="loss", mode="min", seed_key="seed",
                  check_hparams=False).train({"lr": 0.1, "learning_rate": 0.1}, 1)
    for cls in (ReadsInStep, ReadsInStepNoReset):  # read in step(), after a reset or rebuild
        ok = TuneTrainable(cls, 0, metric="loss", mode="min", seed_key="seed")
        ok.train({"lr": 0.1, "scale": 2.0}, 2)
        ok.train({"lr": 0.2, "scale": 3.0}, 1)
        assert ok.trainable.config["scale"] == 3.0 and ok.trainable.iteration == 3


def test_the_shipped_example_trains():
    ex = checks.load_example("tune_trainable.py")
    t = ex.factory(0)
    t.train({"lr": 0.05}, 2)
    assert 0.0 <= t.evaluate() <= 1.0 and t.trainable.iteration == 2


TUNE_MODULE = textwrap.dedent("""
    import torch
    from ray import tune
    from firepbt import LogUniform, Space
    from firepbt.integrations.tune import tune_factory

    class Mine(tune.Trainable):
        def setup(self, config):
            self.w = torch.ones(3)
            self.lr = config["lr"]

        def step(self):
            self.w -= self.lr * self.w
            return {"loss": float(self.w.sum())}

        def save_checkpoint(self, checkpoint_dir):
            return {"w": self.w.clone()}

        def load_checkpoint(self, checkpoint):
            self.w = checkpoint["w"].clone()

    make = tune_factory(Mine, config={"lr": 0.1}, metric="loss", mode="min")
    SPACE = Space({"learning_rate": LogUniform(1e-3, 1e-1)})
""")


def test_a_misnamed_hyperparameter_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    result = checks.cli_run(tmp_path, monkeypatch, capsys, TUNE_MODULE, "make")
    checks.assert_refused_in_one_line(tmp_path, result, "hyperparameter must be a config key",
                                      "it read: lr", "got 'learning_rate'")
