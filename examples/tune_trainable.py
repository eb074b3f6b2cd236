"""A Ray Tune class trainable, written for Tune's PBT, run unchanged under FIRE PBT.

    pip install 'firepbt[tune]'
    python examples/tune_trainable.py            # 12 workers x 600 iterations, a few minutes
    firepbt run mnist1d-tune --factory tune_trainable:factory    # (from examples/)

The trainable below is plain Tune (setup / step / save_checkpoint / load_checkpoint /
reset_config, as Tune's docs write one): an MLP on MNIST-1D, one minibatch per iteration.
firepbt runs it through ``firepbt.integrations.tune.tune_factory``: one firepbt step is one
Tune iteration, the objective is ``step()``'s ``mean_accuracy``, the space's names are config
keys (each one read by setup or reset_config: a name the trainable never reads is refused), and
checkpoints are the files ``save_checkpoint`` writes (kept in firepbt's store).
"""

from __future__ import annotations

import os
import sys

import torch
from ray import tune
from torch import nn

from firepbt import ExperimentConfig, LogUniform, Space, run
from firepbt.integrations.tune import tune_factory
from firepbt.tasks.mnist1d import load_data


class MNIST1DTune(tune.Trainable):
    def setup(self, config):
        d = load_data()
        self.x, self.y, self.xv, self.yv = d.x_train, d.y_train, d.x_val, d.y_val
        self.gen = torch.Generator().manual_seed(config["seed"])
        torch.manual_seed(config["seed"])
        self.model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=config["lr"], momentum=0.9)

    def step(self):
        idx = torch.randint(len(self.x), (64,), generator=self.gen)
        loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            acc = (self.model(self.xv).argmax(1) == self.yv).float().mean().item()
        return {"mean_accuracy": acc, "loss": loss.item()}

    def save_checkpoint(self, checkpoint_dir):
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                    "gen": self.gen.get_state()}, os.path.join(checkpoint_dir, "model.pt"))

    def load_checkpoint(self, checkpoint_dir):
        state = torch.load(os.path.join(checkpoint_dir, "model.pt"), weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])

    def reset_config(self, new_config):
        for group in self.opt.param_groups:
            group["lr"] = new_config["lr"]
        self.config = new_config
        return True


factory = tune_factory(MNIST1DTune, metric="mean_accuracy", mode="max", seed_key="seed")
SPACE = Space({"lr": LogUniform(1e-3, 3e-1)})


def main(store: str = "runs/tune-example") -> None:
    torch.set_num_threads(1)
    summary = run(ExperimentConfig(task="mnist1d-tune", method="fire", workers=12, steps=600,
                                   ready_interval=60, eval_interval=5, executor="local"),
                  store, factory=factory, space=SPACE)
    print(f"top validation accuracy {summary.top_value:.4f} (worker {summary.top_worker} at "
          f"step {summary.top_step}); 'firepbt report {store}' draws it")


if __name__ == "__main__":
    main(*sys.argv[1:])
