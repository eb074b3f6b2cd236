"""A LightningModule and DataModule under FIRE PBT (firepbt.integrations.lightning), trained by
Lightning's real Trainer (no mocks)."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning")

import integration_checks as checks  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from firepbt import LogUniform, Space  # noqa: E402
from firepbt.integrations.lightning import LightningTrainable, lightning_factory  # noqa: E402
from firepbt.trainable import clone_state  # noqa: E402

DIM = 20


class Quadratic(L.LightningModule):
    """A noisy quadratic as a LightningModule: the batch is gradient noise, the validation
    metric the noiseless loss. SGD with momentum and a step-interval scheduler; the learning
    rate is read from ``self.hparams`` by ``configure_optimizers`` (as Lightning's docs do)."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.w = nn.Parameter(torch.full((DIM,), 3.0))
        self.register_buffer("h", 1.0 / torch.arange(1, DIM + 1, dtype=torch.float32))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.h * self.w ** 2).sum()

    def training_step(self, batch, batch_idx):
        (noise,) = batch
        loss = self.loss() + (noise.mean(0) * self.h.sqrt() * 2.0 * self.w).sum()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss())

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss())

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Noise(L.LightningDataModule):
    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        self.train = TensorDataset(torch.randn(2048, DIM, generator=g))
        self.val = TensorDataset(torch.zeros(1, DIM))

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=4, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=1)

    def test_dataloader(self):
        return DataLoader(self.val, batch_size=1)


SPACE = Space({"lr": LogUniform(0.05, 1.5)})
CFG = dict(task="lightning-quadratic", method="fire", workers=12, steps=600, ready_interval=60,
           eval_interval=5, seed=2, executor="local")


def factory():
    return lightning_factory(Quadratic, Noise, metric="val_loss", mode="min",
                             test_metric="test_loss")




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("lit") / "s"
    return checks.uninterrupted(path, CFG, factory(), SPACE)


@pytest.mark.slow
def test_fire_on_a_lightning_module_evolves_and_hands_weights_down(uninterrupted):
    evals, decisions = uninterrupted
    checks.assert_fire_evolves(decisions)
    finals = [v for _r, w, s, v in evals if s == CFG["steps"]]
    assert finals and min(finals) < 0.5 < 0.5 * 9 * float((1.0 / torch.arange(1, DIM + 1)).sum())


@pytest.mark.slow
def test_stop_and_resume_gives_the_uninterrupted_decisions(uninterrupted, tmp_path):
    checks.assert_resume_is_exact(tmp_path / "s", CFG, factory(), SPACE, uninterrupted, 3)


def test_exact_steps_and_new_hyperparameters_after_a_copy():
    make = factory()
    a, b = make(1), make(2)
    assert isinstance(a, LightningTrainable)
    a.train({"lr": 0.5}, 7)
    a.train({"lr": 0.5}, 5)  # (a second fit on the checkpoint trains again: Lightning#11425)
    assert a.global_step == 12 and a.position == 12 * 4
    b.train({"lr": 0.1}, 3)
    b.load_state_dict(clone_state(a.state_dict()))
    b.reseed(99)
    assert torch.equal(a.module.w, b.module.w)  # the copy's weights, at once
    assert b.evaluate() == a.evaluate()
    b.train({"lr": 0.02}, 1)
    # the checkpoint's optimizer (momentum, lr 0.5) was restored, then the new rate applied
    ckpt = b.checkpoint
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 0.02
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [0.02]
    assert b.module.hparams.lr == 0.02
    assert b.global_step == 13 and b.position == 4  # its own stream from the copy
    momentum = ckpt["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert torch.count_nonzero(momentum) > 0
    assert b.test() == pytest.approx(float(b.module.loss()))


def test_the_data_position_makes_batches_repeat_exactly():
    make = factory()
    a, b = make(3), make(3)
    a.train({"lr": 0.3}, 10)
    b.train({"lr": 0.3}, 4)
    b.train({"lr": 0.3}, 6)  # the same ten batches, in two calls
    assert torch.equal(a.module.w, b.module.w)


def test_refusals():
    from firepbt.errors import ConfigError

    with pytest.raises(ConfigError, match="mode must be"):
        lightning_factory(Quadratic, Noise, metric="val_loss", mode="lowest")
    t = lightning_factory(Quadratic, Noise, metric="val_acc", mode="max")(0)
    with pytest.raises(ConfigError, match=r"metric must be a metric the module logs in its "
                                          r"validate step \(it logged \['val_loss'\]\)"):
        t.evaluate()
    with pytest.raises(ConfigError, match="LightningModule"):
        LightningTrainable(nn.Linear(2, 2), Noise(), 0, metric="val_loss")
