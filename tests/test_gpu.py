"""The GPU path, run where CUDA is available (the device machine); skipped with a
reason elsewhere. Same decisions on the GPU as on the CPU (float64), stores portable between
them, the vectorized executor keeping the population on the device."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from torch import nn

from firepbt.api import resume, run
from firepbt.config import ExperimentConfig
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


class _GpuUsed:
    """Counts the allocations on the GPU inside ``with``: a test whose GPU side trained on the
    CPU by mistake (a device option lost on the way) fails on ``used``."""

    def __enter__(self):
        torch.cuda.reset_accumulated_memory_stats()
        return self

    def __exit__(self, *exc):
        self.allocations = torch.cuda.memory_stats().get("allocation.all.allocated", 0)

    @property
    def used(self):
        return self.allocations > 0


def _same(a, b, tol=1e-9):
    (ea, da), (eb, db) = a, b
    assert [e[:3] for e in ea] == [e[:3] for e in eb]
    for x, y in zip(ea, eb, strict=True):
        assert x[3] == pytest.approx(y[3], abs=tol) or (math.isnan(x[3]) and math.isnan(y[3]))
    assert da == db


@pytest.mark.parametrize("executor", ["local", "vectorized"])
def test_float64_run_on_the_gpu_makes_the_cpu_runs_decisions(tmp_path, executor):
    cfg = ExperimentConfig(task="mlp64", method="fire", workers=12, steps=150, ready_interval=25,
                           eval_interval=25, seed=3, executor=executor)
    run(cfg, tmp_path / "cpu", factory=functools.partial(_mlp64, device="cpu"), space=SPACE,
        progress=False)
    with _GpuUsed() as gpu:
        run(cfg, tmp_path / "cuda", factory=functools.partial(_mlp64, device="cuda"),
            space=SPACE, progress=False)
    assert gpu.used
    _same(_records(tmp_path / "cpu"), _records(tmp_path / "cuda"))


def test_a_gpu_store_resumes_on_the_cpu(tmp_path):
    cfg = ExperimentConfig(task="nqm", method="fire", workers=12, steps=300, ready_interval=50,
                           eval_interval=10, seed=1, device="cuda", task_options={"dims": 500})
    with _GpuUsed() as gpu:
        run(cfg, tmp_path / "gpu", progress=False, max_rounds=3)
    assert gpu.used
    resume(tmp_path / "gpu", progress=False, device="cpu")
    resume(tmp_path / "gpu", progress=False, device="cuda")  # finished: nothing trains
    st = Store.open(tmp_path / "gpu", readonly=True)
    assert st.meta("device") == "cuda, then cpu from round 4"  # what the report says
    st.close()
    run(ExperimentConfig(**{**cfg.to_dict(), "device": "cpu"}), tmp_path / "cpu",
        progress=False)
    _same(_records(tmp_path / "gpu"), _records(tmp_path / "cpu"))
    # and back: a CPU store resumed on the GPU, by the local and the vectorized executor
    for executor in ("local", "vectorized"):
        back = tmp_path / f"back-{executor}"
        run(ExperimentConfig(**{**cfg.to_dict(), "device": "cpu", "executor": executor}), back,
            progress=False, max_rounds=2)
        with _GpuUsed() as gpu:
            resume(back, progress=False, device="cuda")
        assert gpu.used
        _same(_records(back), _records(tmp_path / "cpu"))


def test_a_gpu_run_stopped_and_resumed_on_the_gpu_equals_one_run(tmp_path):
    cfg = ExperimentConfig(task="mlp64", method="fire", workers=12, steps=150,
                           ready_interval=25, eval_interval=25, seed=4, executor="vectorized")
    make = functools.partial(_mlp64, device="cuda")
    with _GpuUsed() as gpu:
        run(cfg, tmp_path / "one", factory=make, space=SPACE, progress=False)
    assert gpu.used
    run(cfg, tmp_path / "two", factory=make, space=SPACE, progress=False, max_rounds=3)
    resume(tmp_path / "two", factory=make, space=SPACE, progress=False)
    _same(_records(tmp_path / "one"), _records(tmp_path / "two"))


def test_the_vectorized_population_stays_on_the_gpu(tmp_path):
    from firepbt.executors.vectorized import VectorizedExecutor

    ex = VectorizedExecutor(functools.partial(MNIST1DTrainable, hidden=32, device="cuda"))
    ex.setup({w: w for w in range(4)})
    from firepbt.executors import TrainJob

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
    run(cfg, tmp_path / "cpu", factory=functools.partial(make, device="cpu"), space=space,
        progress=False)
    with _GpuUsed() as gpu:
        run(cfg, tmp_path / "cuda", factory=functools.partial(make, device="cuda"), space=space,
            progress=False)
    assert gpu.used
    _same(_records(tmp_path / "cpu"), _records(tmp_path / "cuda"))


@pytest.mark.parametrize("task", ["mnist1d", "mnist", "nqm"])
def test_every_built_in_task_trains_on_the_gpu_from_the_command_line(tmp_path, task, capsys):
    """``firepbt run TASK --device cuda --executor vectorized``, then its replay and report:
    each built-in task that trains on a device (the V-MPO tasks are CPU only)."""
    from test_mnist_idx import fake_mnist

    from firepbt.cli import main

    store = tmp_path / "store"
    extra = []
    if task == "mnist":
        fake_mnist(tmp_path / "idx", n_train=600, n_test=100)
        extra = ["--data-dir", str(tmp_path / "idx")]
    argv = ["run", task, "--method", "pbt", "--device", "cuda", "--executor", "vectorized",
            "--workers", "4", "--steps", "100", "--ready-interval", "50", "--eval-interval",
            "25", "--store", str(store)] + extra
    with _GpuUsed() as gpu:
        assert main(argv) == 0
    assert gpu.used
    st = Store.open(store, readonly=True)
    try:
        assert json.loads(st.meta("config"))["device"] == "cuda"
        last = [e for e in st.evaluations() if e[2] == 100]
        assert sorted(e[1] for e in last) == list(range(4))
        assert all(math.isfinite(e[3]) for e in last)
    finally:
        st.close()
    capsys.readouterr()
    with _GpuUsed() as gpu:
        assert main(["replay", str(store), "--device", "cuda"]) == 0
    assert gpu.used and "replay" in capsys.readouterr().out.lower()
    assert main(["report", str(store)]) == 0
    assert (store / "report" / "report.html").exists()


def _mlp64_checked(seed, device):
    """``_mlp64`` that fails unless its network is on ``device`` (checked in Ray's actors)."""
    t = _mlp64(seed, device)
    where = {p.device.type for p in t.model.parameters()}
    if where != {torch.device(device).type}:
        raise RuntimeError(f"the network is on {where}, not {device}")
    return t


def test_ray_actors_train_on_the_gpu_one_member_at_a_time_and_batched(tmp_path, monkeypatch):
    """``gpus_per_worker`` 0.5 (two actors share the GPU) and 1 (the whole population as one
    batched model on one GPU actor): the CPU's decisions, float64."""
    ray = pytest.importorskip("ray")
    import os
    import sys

    sim = sys.modules.get("simulated_cuda")
    simulated = sim is not None and sim.active()
    env = None
    if simulated:  # Ray's workers simulate the device too
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        env = {"worker_process_setup_hook": "simulated_cuda.enable",
               "env_vars": {"PYTHONPATH": path}}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env=env)
    try:
        base = dict(task="mlp64", method="fire", workers=12, steps=150, ready_interval=25,
                    eval_interval=25, seed=3)
        run(ExperimentConfig(**base, executor="vectorized"), tmp_path / "cpu",
            factory=functools.partial(_mlp64, device="cpu"), space=SPACE, progress=False)
        for gpus in (0.5, 1.0):
            cfg = ExperimentConfig(**base, executor="ray", device="cuda", gpus_per_worker=gpus)
            run(cfg, tmp_path / f"ray-{gpus}",
                factory=functools.partial(_mlp64_checked, device="cuda"), space=SPACE,
                progress=False)
            _same(_records(tmp_path / "cpu"), _records(tmp_path / f"ray-{gpus}"))
    finally:
        ray.shutdown()


def test_a_function_trainable_on_the_gpu_resumes_and_copies_on_the_gpu(tmp_path):
    """A custom trainable's tensors, in dicts, lists and tuples, stay on the GPU when a state
    from the store (CPU tensors) or from another member is loaded into them."""
    from firepbt import function_trainable
    from firepbt.space import LogUniform, Space

    def init(seed):
        g = torch.Generator().manual_seed(seed)
        return {"w": torch.rand(3, generator=g).cuda(), "ws": [torch.zeros(3, device="cuda")],
                "pair": (torch.ones(1, device="cuda"), 2), "gen": g}

    def train(state, hparams, steps):
        for _ in range(steps):
            noise = torch.rand(3, generator=state["gen"]).to(state["w"].device)
            state["w"] -= hparams["lr"] * (state["w"] - noise)
            state["ws"][0] += state["w"]
            state["pair"][0].add_(1.0)

    def evaluate(state):
        tensors = (state["w"], state["ws"][0], state["pair"][0])
        if any(t.device.type != "cuda" for t in tensors):
            raise RuntimeError(f"left the GPU: {[t.device for t in tensors]}")
        return -float(state["w"].sum())

    cfg = ExperimentConfig(task="custom", method="pbt", workers=4, steps=60, ready_interval=10,
                           eval_interval=10, seed=0, executor="local")
    space = Space({"lr": LogUniform(1e-3, 1e-1)})
    factory = function_trainable(init, train, evaluate)
    run(cfg, tmp_path / "stopped", factory=factory, space=space, progress=False, max_rounds=3)
    resume(tmp_path / "stopped", factory=factory, space=space, progress=False)
    run(cfg, tmp_path / "straight", factory=factory, space=space, progress=False)
    _same(_records(tmp_path / "straight"), _records(tmp_path / "stopped"))


def test_on_ray_auto_is_the_cpu_unless_actors_declare_gpus():
    """Ray gives a GPU only to an actor that declares one (``gpus_per_worker``): ``auto``
    there is the CPU; an explicit ``cuda`` without GPUs declared is refused."""
    from firepbt.build import resolve_task
    from firepbt.errors import ConfigError

    make = resolve_task(
        ExperimentConfig(task="nqm", executor="ray", device="auto"), None, None, None).factory
    assert make(0).device.type == "cpu"
    make = resolve_task(ExperimentConfig(
        task="nqm", executor="ray", device="auto", gpus_per_worker=0.5), None, None, None).factory
    assert make(0).device.type == "cuda"
    with pytest.raises(ConfigError, match="device must be cpu or auto on Ray actors that "
                       "declare no GPU"):
        resolve_task(ExperimentConfig(task="nqm", executor="ray", device="cuda"), None, None,
                     None)


def test_a_cpu_only_task_on_a_gpu_machine_says_it_trained_on_the_cpu():
    from firepbt.build import resolve_task

    assert resolve_task(ExperimentConfig(task="vmpo", device="auto"), None, None,
                        None).device == "cpu"
    assert resolve_task(ExperimentConfig(task="nqm", device="auto"), None, None,
                        None).device == "cuda"
