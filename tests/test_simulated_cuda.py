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


def test_the_simulated_device_refuses_what_cuda_refuses(tmp_path):
    with simulated():
        assert torch.cuda.is_available()
        net = torch.nn.Linear(4, 3).to("cuda")
        x = torch.randn(8, 4, device="cuda")
        assert isinstance(net.weight, SimCudaTensor) and net.weight.device == torch.device("cuda:0")
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(x).pow(2).mean().backward()
        opt.step()
        assert net.weight.grad.device.type == "cuda"
        assert x[torch.tensor([0, 2])].device.type == "cuda"  # CPU indices: allowed on CUDA
        assert (x.sum() * torch.tensor(2.0)).device.type == "cuda"  # CPU scalars too
        back = net.weight.detach().cpu()
        assert type(back) is torch.Tensor and back.numpy().shape == (3, 4)
        with pytest.raises(RuntimeError, match="same device"):
            net(torch.randn(8, 4))
        with pytest.raises(RuntimeError, match="same device"):
            torch.gather(x, 1, torch.zeros(8, 1, dtype=torch.long))
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        with pytest.raises(RuntimeError, match="generator"):
            torch.randperm(5, generator=torch.Generator().manual_seed(0), device="cuda")
        with pytest.raises(RuntimeError, match="torch.save of a cuda tensor"):
            torch.save({"w": net.weight}, tmp_path / "w.pt")
        torch.save({"w": back}, tmp_path / "w.pt")
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
