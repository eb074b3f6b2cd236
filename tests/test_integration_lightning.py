"""A LightningModule and DataModule under FIRE PBT (firepbt.integrations.lightning), trained by
Lightning's real Trainer (no mocks)."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning")

import textwrap  # noqa: E402

import integration_checks as checks  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from firepbt import LogUniform, Space  # noqa: E402
from firepbt.errors import ConfigError  # noqa: E402
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
    with pytest.raises(ConfigError, match="mode must be"):
        lightning_factory(Quadratic, Noise, metric="val_loss", mode="lowest")
    t = lightning_factory(Quadratic, Noise, metric="val_acc", mode="max")(0)
    with pytest.raises(ConfigError, match=r"metric must be a metric the module logs in its "
                                          r"validate step \(it logged \['val_loss'\]\)"):
        t.evaluate()
    with pytest.raises(ConfigError, match="LightningModule"):
        LightningTrainable(nn.Linear(2, 2), Noise(), 0, metric="val_loss")
    with pytest.raises(ConfigError, match=r"module must be a zero-argument callable that "
                                          r"builds one worker's LightningModule .* got 'Quad"):
        lightning_factory(Quadratic(), Noise, metric="val_loss")
    with pytest.raises(ConfigError, match=r"datamodule must be a zero-argument callable .* "
                                          r"got 'Noise'"):
        lightning_factory(Quadratic, Noise(), metric="val_loss")
    class NoTest(Noise):
        test_dataloader = None

    with pytest.raises(ConfigError, match=r"test_dataloader must be a method of the DataModule "
                                          r"returning the test DataLoader .* got None"):
        lightning_factory(Quadratic, NoTest, metric="val_loss", test_metric="test_loss")(0)


class ReadsScale(Quadratic):
    """A hyperparameter no optimizer has, read from ``self.hparams`` in ``training_step``."""

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * self.hparams.get("scale", 1.0)


def test_a_hyperparameter_that_reaches_nothing_is_refused():
    # "learning_rate": no parameter group has it, the module never reads it
    t = factory()(0)
    with pytest.raises(ConfigError, match=r"hyperparameter must be a key of the optimizers' "
                       r"parameter groups \(dampening, .*lr, .*momentum.*\) or a name the "
                       r"module reads from self.hparams \(it read: lr\).*got 'learning_rate'"):
        t.train({"lr": 0.3, "learning_rate": 0.3}, 1)
    off = lightning_factory(Quadratic, Noise, metric="val_loss", mode="min",
                            check_hparams=False)(0)
    off.train({"lr": 0.3, "learning_rate": 0.3}, 1)  # (the user's word: it is read later)
    # a name read through self.hparams (here in training_step) reaches the training
    ok = lightning_factory(ReadsScale, Noise, metric="val_loss", mode="min")(0)
    ok.train({"lr": 0.3, "scale": 0.5}, 2)
    ok.train({"lr": 0.3, "scale": 0.25}, 1)
    assert ok.module.hparams["scale"] == 0.25 and ok.global_step == 3


class Stepped(Quadratic):
    """The user's own scheduler: StepLR halving the rate every 2 steps; each step's rate is
    recorded."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__(lr)
        self.seen: list[float] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(self.optimizers().param_groups[0]["lr"])
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_the_modules_own_scheduler_multiplies_the_tuned_rate_across_calls_and_resumes():
    # the tuned value is the base rate, the scheduler's factor stays on it
    make = lightning_factory(Stepped, Noise, metric="val_loss", mode="min")
    a = make(0)
    for _ in range(3):
        a.train({"lr": 0.2}, 3)
    assert a.module.seen == pytest.approx([0.2 * 0.5 ** (t // 2) for t in range(9)], rel=1e-12)
    b = make(1)  # a stop and resume: a fresh worker loading the state
    b.load_state_dict(clone_state(a.state_dict()))
    for t in (a, b):
        t.module.seen.clear()
        t.train({"lr": 0.1}, 2)  # a new rate: the factor (0.5 ** 4, then ** 5) applies to it
        assert t.module.seen == pytest.approx([0.1 * 0.5 ** 4, 0.1 * 0.5 ** 5], rel=1e-12)
    assert a.module.seen == b.module.seen and torch.equal(a.module.w, b.module.w)
    assert a.checkpoint["lr_schedulers"][0]["base_lrs"] == [0.1]


class Dropped(Quadratic):
    """Dropout on the gradient noise: draws from torch's global generator."""

    def training_step(self, batch, batch_idx):
        (noise,) = batch
        noise = nn.functional.dropout(noise, 0.5, training=True)
        return self.loss() + (noise.mean(0) * self.h.sqrt() * 2.0 * self.w).sum()


def test_dropout_is_part_of_the_resumable_state():
    make = lightning_factory(Dropped, Noise, metric="val_loss", mode="min")
    a, b = make(4), make(4)
    a.train({"lr": 0.3}, 3)
    torch.rand(5)  # anything else drawing from the global generator in between
    a.train({"lr": 0.3}, 3)
    b.train({"lr": 0.3}, 3)
    c = make(5)
    c.load_state_dict(clone_state(b.state_dict()))
    c.train({"lr": 0.3}, 3)
    assert torch.equal(a.module.w, c.module.w)


def test_the_shipped_example_trains_evaluates_and_tests():
    ex = checks.load_example("lightning_module.py")
    t = ex.factory(0)
    t.train({"lr": 0.05}, 2)
    assert 0.0 <= t.evaluate() <= 1.0 and 0.0 <= t.test() <= 1.0
    assert set(ex.SPACE.params) == {"lr"}


LIT_MODULE = textwrap.dedent("""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from firepbt import LogUniform, Space
    from firepbt.integrations.lightning import lightning_factory

    SPACE = Space({"lr": LogUniform(0.01, 0.1)})

    class Tiny(L.LightningModule):
        def __init__(self, lr=0.05):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.net(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class CudaOnly(Tiny):
        def __init__(self):
            super().__init__()
            self.to("cuda")

    class OnlyTrain(L.LightningDataModule):
        def setup(self, stage=None):
            self.data = TensorDataset(torch.randn(32, 4))

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=8)

    class Data(OnlyTrain):
        def val_dataloader(self):
            return DataLoader(self.data, batch_size=32)

    class NoVal(Data):
        val_dataloader = None

    def _make(module=Tiny, data=Data, **kwargs):
        return lightning_factory(module, data, metric="val_loss", mode="min", **kwargs)

    bad_name = _make()
    bad_name.space = Space({"learning_rate": LogUniform(0.01, 0.1)})
    only_train = _make(data=OnlyTrain)
    no_val = _make(data=NoVal)
    cuda_only = _make(module=CudaOnly)
    gpu_trainer = _make(trainer_kwargs={"accelerator": "gpu"})
""")

CUDA = torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.parametrize("name, words", [
    ("bad_name", ["hyperparameter must be a key of the optimizers' parameter groups (",
                  "lr", "it read: lr", "got 'learning_rate'"]),
    ("only_train", ["val_dataloader must be", "DataModule", "Lightning's default"]),
    ("no_val", ["val_dataloader must be", "DataModule", "got None"]),
    pytest.param("cuda_only", ["module must be", "CUDA"],
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    pytest.param("gpu_trainer", ["trainer_kwargs must be", "gpu", "'accelerator': 'gpu'"],
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
])
def test_misconfigurations_are_one_line_through_the_cli(name, words, tmp_path, monkeypatch,
                                                        capsys):
    # exit 2, one line, no store left
    result = checks.cli_run(tmp_path, monkeypatch, capsys, LIT_MODULE, name)
    checks.assert_refused_in_one_line(tmp_path, result, *words)
