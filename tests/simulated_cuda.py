"""A simulated CUDA device for a CPU-only PyTorch: the GPU code paths' placement, checked here.

With it enabled, ``torch.cuda.is_available()`` is True and a tensor put "on cuda" (a factory
with ``device="cuda"``, ``.to("cuda")``, ``.cuda()``, ``Module.to("cuda")``, and whatever is
computed from such tensors) is a CPU tensor wrapped in :class:`SimCudaTensor`, whose
``device`` reads ``cuda:0``. Everything CUDA refuses is refused the same way:

- an operation mixing a cuda tensor with a CPU tensor (a 0-dim CPU tensor only in
  element-wise operations, ``where``, fills and indexed assignment; CPU index tensors for a
  cuda tensor);
- ``numpy()`` of a cuda tensor;
- a CPU ``torch.Generator`` for a random op that makes cuda tensors (random ops without one draw
  from a CUDA generator of their own, seeded by ``torch.manual_seed``/``torch.cuda.manual_seed``,
  not from the CPU's);
- ``CUDA_VISIBLE_DEVICES=""`` (what Ray gives an actor that declares no GPU): no device.

Stricter than CUDA, as house rules: pickling a cuda tensor (``torch.save``, Ray) is refused,
since a checkpoint or state that leaves a process must hold CPU tensors (a CPU-only machine
could not load it); so is moving a tensor's ``.data`` between devices.
``torch.cuda.memory_stats()["allocation.all.allocated"]`` counts the cuda tensors made since
``torch.cuda.reset_accumulated_memory_stats()``, as CUDA's allocator counts allocations, so a
test can check that the device was used at all.

Not modelled: the GPU's arithmetic (the CPU's is used: no GPU rounding, TF32 or
nondeterminism), its speed and memory limit, device indices (one device), the optimizers'
multi-tensor kernels (``foreach``), asynchronous errors, and other threads (the simulation is
on in the thread that enabled it). So this checks where the GPU path keeps and moves its
tensors; a GPU's numbers and speed need a GPU (``benchmarks/gpu_check.sh``). It relies on
PyTorch's Python dispatch (``TorchFunctionMode``, ``TorchDispatchMode``, wrapper subclasses): a
PyTorch where it does not start makes :func:`available` False and the tests that use it skip.

Use: ``python -m pytest -p simulated_cuda tests/test_gpu.py`` (with ``tests`` on
``PYTHONPATH``), ``with simulated_cuda(): ...``, or ``enable()`` in a Ray worker
(``runtime_env={"worker_process_setup_hook": "simulated_cuda.enable"}``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

CUDA = torch.device("cuda", 0)
_HOLDER = torch.device("meta")  # the wrappers' device inside PyTorch: it has a device guard
_aten = torch.ops.aten
_CROSS_DEVICE = {_aten.copy_.default, _aten._to_copy.default}  # allowed between devices
_INDEX = {_aten.index.Tensor, _aten.index_put_.default, _aten._index_put_impl_.default,
          _aten.index_put.default}
_CPU_SCALAR_OK = {_aten.where.self, _aten.where.ScalarOther, _aten.where.ScalarSelf,
                  _aten.fill_.Tensor, _aten.fill.Tensor, _aten.masked_fill_.Tensor,
                  _aten.masked_fill.Tensor, _aten.lerp_.Tensor, _aten.lerp.Tensor}
_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}
_DEVICE = torch._C.TensorBase.__dict__["device"]
_IS_CUDA = torch._C.TensorBase.__dict__["is_cuda"]
_DATA = torch._C.TensorBase.__dict__["data"]
# cuda tensors made, and copies between host and device (each one a wait for the device's
# queue on CUDA, .item() included), since the process started
STATS = {"tensors": 0, "to_device": 0, "to_host": 0}
_GEN = torch.Generator()  # the simulated device's default generator
_SEED = [0]


def _seed(seed: int) -> None:
    """Seed the device's stream: the same seed gives other numbers than the CPU's, as CUDA's
    generator (Philox) does."""
    _SEED[0] = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
    _GEN.manual_seed((_SEED[0] * 6364136223846793005 + 1442695040888963407) % 2**64)


_seed(0)


class SimCudaTensor(torch.Tensor):
    """A CPU tensor (``inner``) that says it lives on ``cuda:0``."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> SimCudaTensor:
        r = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, device=_HOLDER, requires_grad=False, layout=inner.layout)
        r.inner = inner
        STATS["tensors"] += 1
        return r

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"SimCudaTensor({self.inner!r})"

    # a traceable wrapper: Module.to() swaps a parameter's contents, keeping the object
    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors: dict[str, torch.Tensor], meta: Any,
                             outer_size: Any, outer_stride: Any) -> SimCudaTensor:
        return SimCudaTensor(inner_tensors["inner"])

    def __reduce_ex__(self, protocol: Any) -> Any:
        _refuse("pickling a cuda tensor (torch.save, Ray): what leaves a process must hold "
                "CPU tensors, or a CPU-only machine cannot load it")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        return _dispatch(func, args, kwargs or {})


def _refuse(what: str) -> None:
    raise RuntimeError(f"[simulated cuda] {what}")


def _dispatch(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    on_cuda: list[SimCudaTensor] = []
    on_cpu: list[torch.Tensor] = []
    cpu_scalars: list[torch.Tensor] = []
    by_inner: dict[int, SimCudaTensor] = {}

    def unwrap(x: Any) -> Any:
        if isinstance(x, SimCudaTensor):
            on_cuda.append(x)
            by_inner[id(x.inner)] = x
            return x.inner
        if isinstance(x, torch.Tensor):
            if x.device.type == _HOLDER.type:
                _refuse(f"{func}: a tensor without data (a way onto the device this simulation "
                        "misses)")
            (on_cpu if x.dim() > 0 else cpu_scalars).append(x)
        return x

    target = kwargs.get("device")
    made_on_cuda = target is not None and torch.device(target).type == _HOLDER.type
    if made_on_cuda:  # "cuda" in a call: made on the CPU, then wrapped
        kwargs = {**kwargs, "device": torch.device("cpu")}
    uargs, ukwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
    to_cuda = made_on_cuda or (target is None and bool(on_cuda))
    if func in _INDEX:
        self_on_cuda = isinstance(args[0], SimCudaTensor)
        if on_cuda and not self_on_cuda:
            _refuse(f"{func}: indices on cuda for a tensor on the CPU")
        values = args[2] if len(args) > 2 else None
        if self_on_cuda and isinstance(values, torch.Tensor) and values.dim() > 0 \
                and not isinstance(values, SimCudaTensor):
            _refuse(f"{func}: values on the CPU for a tensor on cuda")
        if self_on_cuda and any(isinstance(i, torch.Tensor) and not isinstance(i, SimCudaTensor)
                                for i in (args[1] or ())):
            STATS["to_device"] += 1  # CPU indices are copied to the device
    elif on_cuda and func not in _CROSS_DEVICE and (on_cpu or (
            cpu_scalars and torch.Tag.pointwise not in func.tags
            and func not in _CPU_SCALAR_OK)):
        _refuse(f"{func}: Expected all tensors to be on the same device, but found at least "
                "two devices, cuda:0 and cpu!")
    gen = kwargs.get("generator")
    if to_cuda and isinstance(gen, torch.Generator) and gen.device.type == "cpu":
        _refuse(f"{func}: Expected a 'cuda' device type for generator but found 'cpu'")
    if to_cuda and gen is None and torch.Tag.nondeterministic_seeded in func.tags:
        # the device's own random stream, not the CPU's
        cpu_state = torch.default_generator.get_state()
        torch.default_generator.set_state(_GEN.get_state())
        try:
            out = func(*uargs, **ukwargs)
        finally:
            _GEN.set_state(torch.default_generator.get_state())
            torch.default_generator.set_state(cpu_state)
    else:
        out = func(*uargs, **ukwargs)
    _count_transfer(func, args, to_cuda)
    if func is _aten._local_scalar_dense.default:  # .item(): a Python number, as on CUDA
        return out

    def wrap(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if id(t) in by_inner:  # in place: the same cuda tensor
            return by_inner[id(t)]
        return SimCudaTensor(t) if to_cuda else t
    return tree_map(wrap, out)


def _count_transfer(func: Any, args: Any, to_cuda: bool) -> None:
    if func is _aten._local_scalar_dense.default:
        STATS["to_host"] += isinstance(args[0], SimCudaTensor)
    elif to_cuda and torch.Tag.dynamic_output_shape in func.tags and (
            func is not _aten.index.Tensor or any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                for i in args[1])):
        STATS["to_host"] += 1  # nonzero, masked_select, a mask index: the host waits for a size
    elif func is _aten._to_copy.default:
        src_cuda = isinstance(args[0], SimCudaTensor)
        STATS["to_device"] += to_cuda and not src_cuda
        STATS["to_host"] += src_cuda and not to_cuda
    elif func is _aten.copy_.default:
        dst_cuda, src_cuda = isinstance(args[0], SimCudaTensor), isinstance(args[1], SimCudaTensor)
        STATS["to_device"] += dst_cuda and not src_cuda
        STATS["to_host"] += src_cuda and not dst_cuda


def _names_cuda(d: Any) -> bool:
    if isinstance(d, (str, torch.device)):
        try:
            return torch.device(d).type == "cuda"
        except RuntimeError:
            return False
    return False


class _FunctionMode(TorchFunctionMode):
    """Above PyTorch's C++ bindings: "cuda" in a call becomes the wrappers' holder device
    before PyTorch would look for a CUDA runtime; the dispatch below makes the wrappers (so
    autograd records a move to the device as it does on CUDA)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE:
            return CUDA if isinstance(args[0], SimCudaTensor) else func(*args)
        if owner is _IS_CUDA:
            return isinstance(args[0], SimCudaTensor)
        if owner is _DATA and getattr(func, "__name__", "") == "__set__":
            target, value = args[0], args[1]
            if isinstance(target, SimCudaTensor) or isinstance(value, SimCudaTensor):
                _refuse("setting .data of a tensor on (or to) cuda: the simulation cannot "
                        "follow it; copy_ or a new tensor instead")
            return func(*args, **kwargs)
        if func is torch.device or func is torch._C._nn._parse_to:
            return func(*args, **kwargs)
        if isinstance(args[0] if args else None, SimCudaTensor):
            if func in (torch.Tensor.numpy, torch.Tensor.__array__):
                raise TypeError("can't convert cuda:0 device type tensor to numpy. Use "
                                "Tensor.cpu() to copy the tensor to host memory first.")
            if func is torch.Tensor.tolist:
                STATS["to_host"] += 1
                return args[0].inner.tolist()
            if func is torch.Tensor.new_tensor and "device" not in kwargs:
                kw = dict(kwargs)
                grad = bool(kw.pop("requires_grad", False))
                return args[0].inner.new_tensor(*args[1:], **kw).to(_HOLDER).requires_grad_(grad)
        if func is torch.Tensor.cuda:
            func, args, kwargs = torch.Tensor.to, (args[0], _HOLDER), {}
        if func in _FROM_DATA and _names_cuda(kwargs.get("device")):
            # made on the CPU by PyTorch's C++ without the dispatch above: moved after
            kw = {**kwargs, "device": torch.device("cpu")}
            grad = bool(kw.pop("requires_grad", False))
            return func(*args, **kw).to(_HOLDER).requires_grad_(grad)
        if _names_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": _HOLDER}
        if any(_names_cuda(a) for a in args):
            args = tuple(_HOLDER if _names_cuda(a) else a for a in args)
        return func(*args, **kwargs)


class _DispatchMode(TorchDispatchMode):
    """Below them: every operation, factories included (PyTorch's own C++ code makes tensors
    with a wrapper's options, i.e. on the holder device)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        return _dispatch(func, args, kwargs or {})


def _visible() -> bool:
    """CUDA_VISIBLE_DEVICES unset or naming a device (Ray sets it empty for an actor that
    declares no GPU)."""
    v = os.environ.get("CUDA_VISIBLE_DEVICES")
    return v is None or v.strip() not in ("", "-1")


_active: list[Any] = []  # what enable() did, for disable(); [state, depth]


def enable() -> None:
    """Turn the simulated device on in this process (and thread) until :func:`disable`
    (calls nest: the last disable turns it off)."""
    if _active:
        _active[1] += 1
        return
    import torch.cuda as tc

    names = ("_lazy_init", "is_available", "device_count", "get_device_name", "synchronize",
             "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed",
             "get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all",
             "memory_stats", "reset_accumulated_memory_stats")
    saved = {name: getattr(tc, name) for name in names}
    base = [STATS["tensors"]]

    def reset_counts(*a: Any, **k: Any) -> None:
        base[0] = STATS["tensors"]

    def memory_stats(*a: Any, **k: Any) -> dict[str, int]:
        return {"allocation.all.allocated": STATS["tensors"] - base[0]}

    def set_state(state: torch.Tensor, *a: Any, **k: Any) -> None:
        _GEN.set_state(state.cpu() if isinstance(state, SimCudaTensor) else state)

    fake = {"_lazy_init": lambda: None, "is_available": _visible,
            "device_count": lambda: int(_visible()),
            "get_device_name": lambda *a, **k: "simulated CUDA (CPU arithmetic)",
            "synchronize": lambda *a, **k: None,
            "manual_seed": _seed, "manual_seed_all": _seed,
            "seed": lambda: _seed(_GEN.seed()), "seed_all": lambda: _seed(_GEN.seed()),
            "initial_seed": lambda: _SEED[0],
            "get_rng_state": lambda *a, **k: _GEN.get_state(), "set_rng_state": set_state,
            "get_rng_state_all": lambda: [_GEN.get_state()],
            "set_rng_state_all": lambda states: set_state(states[0]),
            "memory_stats": memory_stats, "reset_accumulated_memory_stats": reset_counts}
    for name, fn in fake.items():
        setattr(tc, name, fn)
    modes = [_FunctionMode(), _DispatchMode()]
    for m in modes:
        m.__enter__()
    _active[:] = [(saved, modes), 1]


def disable() -> None:
    if not _active:
        return
    _active[1] -= 1
    if _active[1] > 0:
        return
    import torch.cuda as tc

    saved, modes = _active[0]
    _active.clear()
    for m in reversed(modes):
        m.__exit__(None, None, None)
    for name, fn in saved.items():
        setattr(tc, name, fn)


def active() -> bool:
    return bool(_active)


@contextlib.contextmanager
def simulated_cuda() -> Iterator[None]:
    enable()
    try:
        yield
    finally:
        disable()


def available() -> bool:
    """Whether the simulation works on this PyTorch (a tiny training step on "cuda"); the
    random state of the CPU and of the simulated device are left as they were."""
    if torch.cuda.is_available():  # a real GPU: nothing to simulate
        return False
    sim_state = _GEN.get_state()
    try:
        with torch.random.fork_rng(devices=[]), simulated_cuda():
            net = torch.nn.Linear(3, 2)
            weight = net.weight
            net.to("cuda")
            x = torch.ones(4, 3, device="cuda")
            net(x).sum().backward()
            ok = (net.weight is weight and net.weight.grad.device == CUDA
                  and x.device == CUDA)
        return ok and torch.ones(1).device.type == "cpu"
    except Exception:  # noqa: BLE001
        return False
    finally:
        _GEN.set_state(sim_state)


def pytest_configure(config: Any) -> None:  # ``-p simulated_cuda``
    enable()
