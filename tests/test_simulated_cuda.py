"""The GPU tests on a CPU-only machine, through a simulated CUDA device (tests/simulated_cuda.py).

The simulation refuses what CUDA refuses (a tensor on the CPU mixed with one on cuda, numpy()
of a cuda tensor, a CPU generator for cuda tensors, a checkpoint holding cuda tensors) with the
CPU's arithmetic, so it checks where the GPU path keeps and moves its tensors, not a GPU's
numbers or speed. First that it refuses those, then tests/test_gpu.py run under it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import simulated_cuda
import torch
from simulated_cuda import SimCudaTensor
from simulated_cuda import simulated_cuda as simulated

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not simulated_cuda.available(), reason=(
    "a real GPU is here (tests/test_gpu.py runs on it)" if torch.cuda.is_available() else
    "this PyTorch cannot run the simulated CUDA device"))


def test_the_simulated_device_refuses_what_cuda_refuses(tmp_path, monkeypatch):
    with simulated():
        assert torch.cuda.is_available()
        net = torch.nn.Linear(4, 3)
        weight = net.weight
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        torch.cuda.reset_accumulated_memory_stats()
        net.to("cuda")  # the same parameters, now on the device (an optimizer made before works)
        x = torch.randn(8, 4, device="cuda")
        assert torch.cuda.memory_stats()["allocation.all.allocated"] >= 3
        assert net.weight is weight and isinstance(weight, SimCudaTensor)
        assert weight.device == torch.device("cuda:0") and weight.is_cuda
        net(x).pow(2).mean().backward()
        before = weight.detach().clone()
        opt.step()
        assert weight.grad.device.type == "cuda" and not torch.equal(weight, before)
        assert x[torch.tensor([0, 2])].device.type == "cuda"  # CPU indices: allowed on CUDA
        assert (x.sum() * torch.tensor(2.0)).device.type == "cuda"  # CPU scalars, element-wise
        back = weight.detach().cpu()
        assert type(back) is torch.Tensor and back.numpy().shape == (3, 4)
        w_cpu = torch.ones(3, requires_grad=True)  # autograd follows a move to the device
        (w_cpu.to("cuda") * 2).sum().backward()
        assert torch.equal(w_cpu.grad, torch.full((3,), 2.0))
        with pytest.raises(RuntimeError, match="same device"):
            net(torch.randn(8, 4))
        with pytest.raises(RuntimeError, match="same device"):
            torch.gather(x, 1, torch.zeros(8, 1, dtype=torch.long))
        with pytest.raises(RuntimeError, match="same device"):  # a 0-dim CPU tensor, not
            torch.stack([x.sum(), torch.tensor(1.0)])           # element-wise: refused
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(RuntimeError, match="generator"):
            torch.randperm(5, generator=torch.Generator().manual_seed(0), device="cuda")
        torch.manual_seed(3)  # seeds the CPU and the device, each its own stream
        on_cuda, on_cpu = torch.rand(4, device="cuda").cpu(), torch.rand(4)
        torch.manual_seed(3)
        assert torch.equal(torch.rand(4, device="cuda").cpu(), on_cuda)
        assert torch.equal(torch.rand(4), on_cpu) and not torch.equal(on_cpu, on_cuda)
        with pytest.raises(RuntimeError, match="pickling a cuda tensor"):
            torch.save({"nested": [{"w": weight}]}, tmp_path / "w.pt")
        torch.save({"w": back}, tmp_path / "w.pt")
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a Ray actor that declares no GPU
        assert not torch.cuda.is_available() and torch.cuda.device_count() == 0
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert not torch.cuda.is_available() and torch.ones(1, device="cpu").device.type == "cpu"
    with pytest.raises((AssertionError, RuntimeError)):  # off again: no CUDA here
        torch.ones(1, device="cuda")


def test_the_gpu_tests_pass_on_the_simulated_device():
    """tests/test_gpu.py (float64 GPU vs CPU decisions, a GPU store resumed on the CPU, the
    batched population on the device, every built-in task from the command line, Ray actors
    with GPUs), every test run, none skipped."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "simulated_cuda", "-p", "no:cacheprovider",
         "-W", "ignore", str(HERE / "test_gpu.py")],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    skipped = 0 if importlib.util.find_spec("ray") else 1  # the Ray test needs Ray
    assert " passed" in summary and "failed" not in summary, tail
    assert (f"{skipped} skipped" in summary) if skipped else ("skipped" not in summary), tail


def test_the_vectorized_steps_wait_for_no_transfer_between_host_and_device():
    """A copy between host and device (``.item()`` included) makes the host wait for the
    device's queue: the batched population's training steps make none, so a round's
    transfers do not grow with its steps, nor with the members; only an epoch's start (one
    copy of the new permutations) and each evaluation (its settings there, the accuracies
    back) add one or two."""
    from firepbt.executors import TrainJob
    from firepbt.executors.vectorized import VectorizedExecutor
    from firepbt.supervised import SupervisedData, SupervisedTrainable

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6_400, 8, generator=g), torch.randint(0, 3, (6_400,), generator=g)
    data = SupervisedData(x[:6_000], y[:6_000], x[6_000:], y[6_000:])  # epochs of 93 steps

    def make(seed):
        with torch.random.fork_rng(devices=[]):
            net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                      torch.nn.Linear(16, 3))
        return SupervisedTrainable(seed, model=net, data=data, batch_size=64, device="cuda")

    def transfers(n_members, steps, eval_interval=None):
        with simulated():
            ex = VectorizedExecutor(make)
            ex.setup({w: w for w in range(n_members)})
            before = simulated_cuda.STATS["to_device"] + simulated_cuda.STATS["to_host"]
            ex.train_round([TrainJob(w, 0, (({"lr": 0.1}, steps),), eval_interval or steps)
                            for w in range(n_members)], -1e9)
            return simulated_cuda.STATS["to_device"] + simulated_cuda.STATS["to_host"] - before

    base = transfers(4, 10)
    assert 0 < base == transfers(4, 80) == transfers(12, 80)
    assert transfers(12, 200) == base + 2  # two new epochs (93 steps each), all members
    assert transfers(4, 80, eval_interval=10) == base + 7 * 2  # 7 more evaluations
