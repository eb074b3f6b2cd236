"""A simulated CUDA device for a CPU-only PyTorch: the GPU code paths' placement, checked here.

With it enabled, ``torch.cuda.is_available()`` is True and a tensor put "on cuda" (a factory
with ``device="cuda"``, ``.to("cuda")``, ``.cuda()``, ``Module.to("cuda")``, and whatever is
computed from such tensors) is a CPU tensor wrapped in :class:`SimCudaTensor`, whose
``device`` reads ``cuda:0``. Everything CUDA refuses is refused the same way:

- an operation mixing a cuda tensor with a CPU tensor of one or more dimensions (CPU scalars
  and CPU index tensors for a cuda tensor are allowed, as on CUDA);
- ``numpy()`` of a cuda tensor;
- a CPU ``torch.Generator`` for a random op that makes cuda tensors;
- ``torch.save`` of a cuda tensor (a checkpoint a CPU-only machine could not load).

The arithmetic is the CPU's, so this checks where tensors live and move, not a GPU's numbers
or speed (those need a GPU: ``benchmarks/gpu_check.sh``). It relies on PyTorch's Python
dispatch (``TorchFunctionMode``, ``TorchDispatchMode``, wrapper subclasses): a PyTorch where it
does not start makes :func:`available` False and the tests that use it skip.

Use: ``python -m pytest -p simulated_cuda tests/test_gpu.py`` (with ``tests`` on
``PYTHONPATH``), ``with simulated_cuda(): ...``, or ``enable()`` in a Ray worker
(``runtime_env={"worker_process_setup_hook": "simulated_cuda.enable"}``).
"""

from __future__ import annotations

import contextlib
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
_DEVICE = torch._C.TensorBase.__dict__["device"]
_IS_CUDA = torch._C.TensorBase.__dict__["is_cuda"]
STATS = {"tensors": 0}  # cuda tensors made since the process started


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

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        return _dispatch(func, args, kwargs or {})


def _refuse(what: str) -> None:
    raise RuntimeError(f"[simulated cuda] {what}")


def _dispatch(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    on_cuda: list[SimCudaTensor] = []
    on_cpu: list[torch.Tensor] = []
    by_inner: dict[int, SimCudaTensor] = {}

    def unwrap(x: Any) -> Any:
        if isinstance(x, SimCudaTensor):
            on_cuda.append(x)
            by_inner[id(x.inner)] = x
            return x.inner
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            on_cpu.append(x)
        return x

    target = kwargs.get("device")
    made_on_cuda = target is not None and torch.device(target).type == _HOLDER.type
    if made_on_cuda:  # a factory PyTorch called with a wrapper's options
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
    elif on_cuda and on_cpu and func not in _CROSS_DEVICE:
        _refuse(f"{func}: Expected all tensors to be on the same device, but found at least "
                "two devices, cuda:0 and cpu!")
    gen = kwargs.get("generator")
    if to_cuda and isinstance(gen, torch.Generator) and gen.device.type == "cpu":
        _refuse(f"{func}: Expected a 'cuda' device type for generator but found 'cpu'")
    out = func(*uargs, **ukwargs)
    if func is _aten._local_scalar_dense.default:  # .item(): a Python number, as on CUDA
        return out

    def wrap(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if id(t) in by_inner:  # in place: the same cuda tensor
            return by_inner[id(t)]
        return SimCudaTensor(t) if to_cuda else t
    return tree_map(wrap, out)


def _names_cuda(d: Any) -> bool:
    if isinstance(d, (str, torch.device)):
        try:
            return torch.device(d).type == "cuda"
        except RuntimeError:
            return False
    return False


def _moved(x: Any, sources: set[int]) -> Any:
    if isinstance(x, torch.Tensor) and not isinstance(x, SimCudaTensor):
        if id(x) in sources:  # .to() gave back its input: a move to cuda copies
            x = x.clone()
        if x.requires_grad:
            return SimCudaTensor(x.detach()).requires_grad_(True)
        return SimCudaTensor(x)
    return x


class _FunctionMode(TorchFunctionMode):
    """Above PyTorch's C++ bindings: "cuda" in a call becomes the CPU plus a wrapper, before
    PyTorch would look for a CUDA runtime."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE:
            return CUDA if isinstance(args[0], SimCudaTensor) else func(*args)
        if owner is _IS_CUDA:
            return isinstance(args[0], SimCudaTensor)
        if func is torch.device or func is torch._C._nn._parse_to:
            return func(*args, **kwargs)
        if isinstance(args[0] if args else None, SimCudaTensor):
            if func in (torch.Tensor.numpy, torch.Tensor.__array__):
                raise TypeError("can't convert cuda:0 device type tensor to numpy. Use "
                                "Tensor.cpu() to copy the tensor to host memory first.")
            if func is torch.Tensor.tolist:
                return args[0].inner.tolist()
        if func is torch.Tensor.cuda:
            func, args, kwargs = torch.Tensor.to, (args[0], CUDA), {}
        to_cuda = _names_cuda(kwargs.get("device"))
        if to_cuda:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        if any(_names_cuda(a) for a in args):
            to_cuda = True
            args = tuple(torch.device("cpu") if _names_cuda(a) else a for a in args)
        if to_cuda and func is torch.Tensor.to and isinstance(args[0], SimCudaTensor):
            rest = tuple(a for a in args[1:] if not isinstance(a, torch.device))
            kw = {k: v for k, v in kwargs.items() if k != "device"}
            return func(args[0], *rest, **kw) if rest or kw else args[0]
        gen = kwargs.get("generator")
        if to_cuda and isinstance(gen, torch.Generator) and gen.device.type == "cpu":
            _refuse(f"{func}: Expected a 'cuda' device type for generator but found 'cpu'")
        out = func(*args, **kwargs)
        if to_cuda:
            sources = {id(a) for a in args if isinstance(a, torch.Tensor)}
            out = tree_map(lambda x: _moved(x, sources), out)
        return out


class _DispatchMode(TorchDispatchMode):
    """Below them: factories PyTorch's own C++ code calls with a wrapper's options."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        return _dispatch(func, args, kwargs or {})


def _holds_cuda(obj: Any, where: str) -> None:
    if isinstance(obj, SimCudaTensor):
        _refuse(f"torch.save of a cuda tensor at {where} (a CPU-only machine cannot load it)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _holds_cuda(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _holds_cuda(v, f"{where}[{i}]")


_active: list[Any] = []  # what enable() did, for disable()


def enable() -> None:
    """Turn the simulated device on in this process (and thread) until :func:`disable`."""
    if _active:
        return
    import torch.cuda as tc

    saved = {name: getattr(tc, name) for name in
             ("_lazy_init", "is_available", "device_count", "get_device_name", "synchronize")}
    tc._lazy_init = lambda: None
    tc.is_available = lambda: True
    tc.device_count = lambda: 1
    tc.get_device_name = lambda *a, **k: "simulated CUDA (CPU arithmetic)"
    tc.synchronize = lambda *a, **k: None
    save = torch.save

    def checked_save(obj: Any, *a: Any, **k: Any) -> Any:
        _holds_cuda(obj, "obj")
        return save(obj, *a, **k)

    torch.save = checked_save
    modes = [_FunctionMode(), _DispatchMode()]
    for m in modes:
        m.__enter__()
    _active.append((saved, save, modes))


def disable() -> None:
    if not _active:
        return
    import torch.cuda as tc

    saved, save, modes = _active.pop()
    for m in reversed(modes):
        m.__exit__(None, None, None)
    for name, fn in saved.items():
        setattr(tc, name, fn)
    torch.save = save


@contextlib.contextmanager
def simulated_cuda() -> Iterator[None]:
    enable()
    try:
        yield
    finally:
        disable()


def available() -> bool:
    """Whether the simulation works on this PyTorch (a tiny training step on "cuda")."""
    if torch.cuda.is_available():  # a real GPU: nothing to simulate
        return False
    try:
        with simulated_cuda():
            net = torch.nn.Linear(3, 2).to("cuda")
            x = torch.ones(4, 3, device="cuda")
            net(x).sum().backward()
            ok = net.weight.grad.device == CUDA and x.device == CUDA
        return ok and torch.ones(1).device.type == "cpu"
    except Exception:  # noqa: BLE001
        return False


def pytest_configure(config: Any) -> None:  # ``-p simulated_cuda``
    enable()
