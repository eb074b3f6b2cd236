"""Your own PyTorch model as a firepbt Trainable, tuned with PBT through the Python API.

Run:  .venv/bin/python examples/custom_trainable.py
A small regression MLP on synthetic data; PBT tunes its learning rate and weight decay.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from firepbt import ExperimentConfig, LogUniform, Space, open_experiment, run

# Data: y = sin(3x) + noise, a training and a validation split.
g = torch.Generator().manual_seed(0)
X = torch.rand(2048, 1, generator=g) * 4 - 2
Y = torch.sin(3 * X) + 0.1 * torch.randn(X.shape, generator=g)
X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = X[:1536], Y[:1536], X[1536:], Y[1536:]


class SineRegression:
    """The whole contract: train, evaluate, state_dict, load_state_dict (+ optional mode,
    test and reseed)."""

    mode = "min"  # validation MSE: lower is better

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 1))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.gen = torch.Generator().manual_seed(seed)

    def train(self, hparams, steps):
        for group in self.opt.param_groups:  # apply the hyperparameters at every call
            group["lr"], group["weight_decay"] = hparams["lr"], hparams["weight_decay"]
        for _ in range(steps):
            idx = torch.randint(0, len(X_TRAIN), (64,), generator=self.gen)
            loss = nn.functional.mse_loss(self.model(X_TRAIN[idx]), Y_TRAIN[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def evaluate(self):
        with torch.no_grad():
            return float(nn.functional.mse_loss(self.model(X_VAL), Y_VAL))

    def state_dict(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])

    def reseed(self, seed):
        # called after this member received another's weights (exploit, evaluator): draw
        # batches of its own from now on instead of repeating the source's
        self.gen.manual_seed(seed)


def main() -> None:
    space = Space({"lr": LogUniform(1e-3, 3e-1, bounds=(1e-5, 1.0)),
                   "weight_decay": LogUniform(1e-6, 1e-3)})
    config = ExperimentConfig(task="sine-regression", method="pbt", workers=8, steps=1000,
                              ready_interval=100, eval_interval=20, seed=0)
    store = Path(tempfile.mkdtemp(prefix="firepbt-example-")) / "store"
    summary = run(config, store, factory=SineRegression, space=space)
    print(f"best member {summary.best_worker}: validation MSE {summary.best_value:.4f}")
    with open_experiment(store) as exp:  # the public read side
        for seg in exp.schedule(summary.best_worker).segments:
            print(f"  lr={seg.hparams['lr']:.4g} weight_decay={seg.hparams['weight_decay']:.2g}"
                  f" x {seg.steps} steps")
    print(f"store: {store}")


if __name__ == "__main__":
    main()
