"""Executors train the workers (the contract: :mod:`firepbt.executors.base`).

:class:`LocalExecutor` (this process, one worker after another),
:class:`~firepbt.executors.vectorized.VectorizedExecutor` (the population as one batched model of a family that declares one,
:mod:`firepbt.executors.batched`) and :class:`~firepbt.executors.ray.RayExecutor` (Ray actors;
imported from :mod:`firepbt.executors.ray`, it needs the ``ray`` extra).
"""

from __future__ import annotations

from .base import BestPoint, Executor, TrainJob, TrainResult
from .batched import BatchedPopulation, NotVectorizable, register_batched
from .local import LocalExecutor

__all__ = ["BatchedPopulation", "BestPoint", "Executor", "LocalExecutor", "NotVectorizable",
           "TrainJob", "TrainResult", "register_batched"]
