"""Devices, the parts a CPU-only machine can check: the device option, refusing an
absent one before anything is written, CPU checkpoints, resuming on another device, and the
same network and batches from a seed whatever the device (here: a model given on the CPU vs
the device option). The GPU side is tests/test_gpu.py (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from firepbt.api import resume, run
from firepbt.cli import main
from firepbt.config import ExperimentConfig
from firepbt.devices import resolve_device
from firepbt.errors import ConfigError
from firepbt.store import Store

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_auto_and_cpu_resolve_anywhere():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")


@no_cuda
@pytest.mark.parametrize("argv", [
    ["run", "nqm", "--device", "cuda"],
    ["run", "mnist1d", "--device", "cuda:0", "--executor", "vectorized"],
    ["compare", "nqm", "--device", "cuda"],
])
def test_an_absent_device_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv):
    out = tmp_path / "x"
    argv = argv + (["--out", str(out)] if argv[0] == "compare" else ["--store", str(out)])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "device must be a device this machine has" in \
        captured.err and "no CUDA device is available" in captured.err
    assert captured.out == "" and not out.exists()


def test_a_cpu_task_refuses_a_gpu_device_and_the_python_api_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="device must be"):
        run(ExperimentConfig(task="vmpo", method="pbt", workers=4, steps=20, ready_interval=10,
                             eval_interval=5, device="cuda"), tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_the_device_reaches_the_tasks_trainables_and_the_store(tmp_path, monkeypatch):
    from firepbt.tasks import nqm

    seen = []
    original = nqm.NQMTrainable.__init__

    def spy(self, seed, **kw):
        seen.append(kw.get("device"))
        original(self, seed, **kw)

    monkeypatch.setattr(nqm.NQMTrainable, "__init__", spy)
    run(ExperimentConfig(task="nqm", method="pbt", workers=4, steps=20, ready_interval=10,
                         eval_interval=10, device="cpu", task_options={"dims": 50}),
        tmp_path / "s", progress=False)
    assert seen and set(seen) == {"cpu"}
    st = Store.open(tmp_path / "s", readonly=True)
    assert st.meta("device") == "cpu" and st.config["device"] == "cpu"
    st.close()


def test_the_store_says_where_a_task_trained_not_what_the_machine_has(tmp_path):
    """A CPU-only task (V-MPO) and your own trainable do not take --device: the store and the
    report say so, whatever ``auto`` would pick on this machine."""
    from firepbt.build import resolve_task
    from firepbt.space import LogUniform, Space
    from firepbt.trainable import function_trainable

    task = resolve_task(ExperimentConfig(task="vmpo", device="auto"), None, None, None)
    assert task.device == "cpu"
    factory = function_trainable(lambda seed: {"w": torch.zeros(1)},
                                 lambda st, hp, n: st["w"].add_(hp["lr"] * n),
                                 lambda st: float(st["w"][0]))
    run(ExperimentConfig(task="custom", method="pbt", workers=4, steps=20, ready_interval=10,
                         eval_interval=10), tmp_path / "c", factory=factory,
        space=Space({"lr": LogUniform(1e-3, 1e-1)}), progress=False)
    st = Store.open(tmp_path / "c", readonly=True)
    assert st.meta("device") == "chosen by the trainable"
    st.close()


def test_checkpoints_hold_cpu_tensors_and_resume_takes_another_device(tmp_path):
    cfg = ExperimentConfig(task="mnist1d", method="pbt", workers=4, steps=100, ready_interval=25,
                           eval_interval=25, seed=2, device="auto", executor="local")
    run(cfg, tmp_path / "a", progress=False, max_rounds=2)
    st = Store.open(tmp_path / "a", readonly=True)
    states = st.read_checkpoint(st.last_round().checkpoint)
    st.close()
    tensors = [t for s in states.values() for t in s["model"].values()]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    # resumed on an explicit device (the CPU here; a GPU store resumes the same way)
    done = resume(tmp_path / "a", progress=False, device="cpu")
    run(cfg, tmp_path / "b", progress=False)
    ea, eb = (Store.open(tmp_path / p, readonly=True) for p in "ab")
    assert ea.evaluations() == eb.evaluations() and done.finished
    assert ea.config["device"] == "auto"  # the stored configuration is unchanged
    ea.close()
    eb.close()


def test_a_seed_gives_the_same_network_and_batches_with_or_without_a_device_option():
    from firepbt.tasks.mnist1d import MNIST1DTrainable, mlp

    a = MNIST1DTrainable(5, hidden=16, device="cpu")
    b = MNIST1DTrainable(5, hidden=16, model=mlp(16))  # the model's own device
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.equal(a.next_batch(), b.next_batch())
