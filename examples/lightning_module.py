"""A LightningModule and DataModule under FIRE PBT, trained by Lightning's own Trainer.

    pip install 'firepbt[lightning]'
    python examples/lightning_module.py          # 12 workers x 600 steps, a minute or two
    firepbt run mnist1d-lightning --factory lightning_module:factory    # (from examples/)

The module is ordinary Lightning (training_step, validation_step logging "val_acc", test_step
logging "test_acc", configure_optimizers reading self.hparams.lr); firepbt.integrations.lightning
runs each stretch of training as Trainer.fit for exactly the steps asked, applies the learning
rate after Lightning restores the worker's checkpoint (a scheduler returned here would multiply
it), evaluates with Trainer.validate and tests the best points with Trainer.test (test_metric).
docs/site/own-trainable.md has the contract and a shorter example that runs in seconds.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from firepbt import ExperimentConfig, LogUniform, Space, run
from firepbt.integrations.lightning import lightning_factory
from firepbt.tasks.mnist1d import load_data


class MLP(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class MNIST1D(L.LightningDataModule):
    def setup(self, stage=None):
        d = load_data()
        self.train, self.val = TensorDataset(d.x_train, d.y_train), TensorDataset(d.x_val, d.y_val)
        self.test = TensorDataset(d.x_test, d.y_test)

    def train_dataloader(self):  # its batch size (and collate_fn) are what firepbt uses
        return DataLoader(self.train, batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=1000)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=1000)


factory = lightning_factory(MLP, MNIST1D, metric="val_acc", mode="max", test_metric="test_acc")
SPACE = Space({"lr": LogUniform(1e-3, 3e-1)})


def main(store: str = "runs/lightning-example") -> None:
    torch.set_num_threads(1)
    summary = run(ExperimentConfig(task="mnist1d-lightning", method="fire", workers=12,
                                   steps=600, ready_interval=60, eval_interval=5,
                                   executor="local"),
                  store, factory=factory, space=SPACE)
    print(f"top validation accuracy {summary.top_value:.4f} (worker {summary.top_worker} at "
          f"step {summary.top_step}, test {summary.top_test}); 'firepbt report {store}' draws "
          "it")


if __name__ == "__main__":
    main(*sys.argv[1:])
