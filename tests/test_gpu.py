"""The GPU path (issue 12), run where CUDA is available (the device machine); skipped with a
reason elsewhere. Same decisions on the GPU as on the CPU (float64), stores portable between
them, the vectorized executor keeping the population on the device."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from firepbt.config import ExperimentConfig
from firepbt.runner import resume, run
from firepbt.store import Store
from firepbt.supervised import SupervisedData, SupervisedTrainable
from firepbt.tasks.mnist1d import SPACE, MNIST1DTrainable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: the GPU path is checked on a GPU machine")


def _mlp64(seed, device):
    return MNIST1DTrainable(seed, hidden=32, dtype=torch.float64, device=device)


def _records(path):
    st = Store.open(path, readonly=True)
    try:
        return st.evaluations(), [d for _r, _s, d in st.decisions()]
    finally:
        st.close()


def _same(a, b, tol=1e-9):
    (ea, da), (eb, db) = a, b
    assert [e[:3] for e in ea] == [e[:3] for e in eb]
    for x, y in zip(ea, eb, strict=True):
        assert x[3] == pytest.approx(y[3], abs=tol) or (math.isnan(x[3]) and math.isnan(y[3]))
    assert da == db


@pytest.mark.parametrize("executor", ["local", "vectorized"])
def test_float64_run_on_the_gpu_makes_the_cpu_runs_decisions(tmp_path, executor):
    cfg = ExperimentConfig(task="mlp64", method="fire", workers=12, steps=250, ready_interval=25,
                           eval_interval=25, seed=3, executor=executor)
    for dev in ("cpu", "cuda"):
        run(cfg, tmp_path / dev, factory=functools.partial(_mlp64, device=dev), space=SPACE,
            progress=False)
    _same(_records(tmp_path / "cpu"), _records(tmp_path / "cuda"))


def test_a_gpu_store_resumes_on_the_cpu(tmp_path):
    cfg = ExperimentConfig(task="nqm", method="fire", workers=12, steps=300, ready_interval=50,
                           eval_interval=10, seed=1, device="cuda", task_options={"dims": 500})
    run(cfg, tmp_path / "gpu", progress=False, max_rounds=3)
    resume(tmp_path / "gpu", progress=False, device="cpu")
    run(ExperimentConfig(**{**cfg.to_dict(), "device": "cpu"}), tmp_path / "cpu",
        progress=False)
    _same(_records(tmp_path / "gpu"), _records(tmp_path / "cpu"))


def test_the_vectorized_population_stays_on_the_gpu(tmp_path):
    from firepbt.vectorized import VectorizedExecutor

    ex = VectorizedExecutor(functools.partial(MNIST1DTrainable, hidden=32, device="cuda"))
    ex.setup({w: w for w in range(4)})
    from firepbt.executor import TrainJob

    ex.train_round([TrainJob(w, 0, (({"lambda": 0.1}, 50),), 25) for w in range(4)], -1e9)
    assert all(p.device.type == "cuda" for t in ex.trainables.values()
               for p in t.model.parameters())
    ex.copy(0, 1, 7)  # an on-device copy
    assert all(p.device.type == "cuda" for p in ex.trainables[1].model.parameters())
    assert torch.equal(next(ex.trainables[0].model.parameters()),
                       next(ex.trainables[1].model.parameters()))


def test_the_torch_func_path_on_the_gpu_equals_the_cpu(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1, 12, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (512,), generator=g)
    data = SupervisedData(x[:384], y[:384], x[384:], y[384:])

    def make(seed, device):
        with torch.random.fork_rng(devices=[]):
            net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                                nn.Linear(400, 10)).double()
        return SupervisedTrainable(seed, model=net, data=data, batch_size=32, device=device)

    from firepbt.space import LogUniform, Space

    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    cfg = ExperimentConfig(task="cnn", method="pbt", workers=4, steps=60, ready_interval=20,
                           eval_interval=20, executor="vectorized")
    for dev in ("cpu", "cuda"):
        run(cfg, tmp_path / dev, factory=functools.partial(make, device=dev), space=space,
            progress=False)
    _same(_records(tmp_path / "cpu"), _records(tmp_path / "cuda"))
