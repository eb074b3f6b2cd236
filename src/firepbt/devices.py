"""Where tensors live: ``ExperimentConfig.device`` / ``--device {auto,cpu,cuda,cuda:N}``.

``auto`` (the default) is CUDA when PyTorch sees a GPU, else the CPU. The device is resolved
when a run starts (a requested device that is absent is refused in one line before anything
is written) and handed to the built-in tasks' trainables, which keep their network, optimizer
state and data there; stores always hold CPU tensors (:mod:`firepbt.store`), so a store written
on a GPU machine resumes, reports and replays on a CPU-only one (``--device cpu``) and back.
Your own trainables choose their device themselves (the factory may read
``firepbt.devices.resolve_device(config.device)``).
"""

from __future__ import annotations

import re

from .errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DEVICE_TEXT = "auto, cpu, cuda or cuda:N"


def valid_device(spec: object) -> bool:
    """Whether ``spec`` names a device in the accepted form (not whether it is present)."""
    return isinstance(spec, str) and bool(DEVICE_PATTERN.match(spec))


def resolve_device(spec: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda``/``cuda:N`` only when that GPU
    is present (else :class:`ConfigError` naming ``device``)."""
    if not valid_device(spec):
        raise ConfigError("device", DEVICE_TEXT, spec)
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda" if available else "cpu"
    count = torch.cuda.device_count() if available else 0
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= count:
        what = "no CUDA device is available" if count == 0 else f"{count} CUDA device(s)"
        raise ConfigError("device", f"a device this machine has ({what}; cpu or auto run "
                          "anywhere)", spec)
    return spec
