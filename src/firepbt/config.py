"""The experiment configuration: every field validated when it is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .controllers.fire import fire_split
from .errors import ConfigError, check

METHODS = ("pbt", "random", "fire")
EXECUTORS = ("auto", "local", "vectorized", "ray")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: which task, which method, how many workers, how long.

    ``steps`` per worker must be a multiple of ``ready_interval`` (one synchronous round,
    paper 4.1.1), which must be a multiple of ``eval_interval`` so every round ends with an
    evaluation. FIRE-only fields are ignored by the other methods. ``min_steps_before_eval``
    is per sub-population (paper 3.2): one int for every parent sub-population, or one int per
    sub-population (P1's is ignored: P1 members are never evaluated). ``threads`` is PyTorch's
    intra-op thread count while this process trains (local and vectorized executors): None
    means the cores that are free when the run starts (:func:`firepbt.threads.auto_threads`;
    threads beyond the free cores oversubscribe them and slow small models down several
    times), N exactly N, 0 PyTorch's own setting. Ray actors use one thread per CPU they
    declare; ``firepbt compare`` runs one single-threaded run per core.
    """

    task: str
    method: str = "pbt"
    workers: int = 16
    steps: int = 1500
    ready_interval: int = 125
    eval_interval: int = 25
    seed: int = 0
    quantile: float = 0.25
    factors: tuple[float, ...] | Mapping[str, tuple[float, ...]] | None = None
    p_stat: float = 0.01
    max_eval_steps: int | None = None
    min_steps_before_eval: int | tuple[int, ...] = 0
    n_subpopulations: int | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)
    schedule: Mapping[str, Any] | None = None
    executor: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.task, str) and bool(self.task), "task", "a task name", self.task)
        check(self.method in METHODS, "method", f"one of {list(METHODS)}", self.method)
        for name in ("workers", "steps", "ready_interval", "eval_interval"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "an int > 0", v)
        check(isinstance(self.seed, int) and 0 <= self.seed < 2**32, "seed",
              "an int in [0, 2**32)", self.seed)
        check(self.ready_interval % self.eval_interval == 0, "ready_interval",
              f"a multiple of eval_interval ({self.eval_interval})", self.ready_interval)
        check(self.steps % self.ready_interval == 0, "steps",
              f"a multiple of ready_interval ({self.ready_interval})", self.steps)
        check(isinstance(self.quantile, (int, float)) and 0 < self.quantile <= 0.5, "quantile",
              "in (0, 0.5]", self.quantile)
        if self.method == "pbt":
            need = math.ceil(1 / self.quantile - 1e-9)
            check(self.workers >= need, "workers",
                  f"an int >= {need} for PBT ({self.quantile:.0%} truncation needs one member "
                  "in each of the bottom and top sets)", self.workers)
        if isinstance(self.factors, Mapping):
            check(len(self.factors) > 0, "factors", "a non-empty mapping name -> factors",
                  dict(self.factors))
            object.__setattr__(self, "factors", {str(k): _factors(f"factors[{k!r}]", v)
                                                 for k, v in sorted(self.factors.items())})
        elif self.factors is not None:
            object.__setattr__(self, "factors", _factors("factors", self.factors))
        check(isinstance(self.p_stat, (int, float)) and 0 < self.p_stat < 1, "p_stat",
              "in (0, 1)", self.p_stat)
        check(self.max_eval_steps is None or (isinstance(self.max_eval_steps, int)
                                              and self.max_eval_steps > 0),
              "max_eval_steps", "an int > 0 (default: 3 ready intervals)", self.max_eval_steps)
        check(self.n_subpopulations is None or (isinstance(self.n_subpopulations, int)
                                                and self.n_subpopulations >= 2),
              "n_subpopulations", "an int >= 2 (default: from workers)", self.n_subpopulations)
        n_sub = self.n_subpopulations or 2
        if self.method == "fire":  # a layout in which every sub-population can evolve
            n_sub = fire_split(self.workers, self.n_subpopulations, self.quantile)[0]
        ms = self.min_steps_before_eval
        if isinstance(ms, (list, tuple)):
            check(len(ms) == n_sub and all(isinstance(x, int) and not isinstance(x, bool)
                                           and x >= 0 for x in ms),
                  "min_steps_before_eval", f"an int >= 0, or one per sub-population ({n_sub} "
                  "ints >= 0; the value for P1 is ignored)", list(ms))
            object.__setattr__(self, "min_steps_before_eval", tuple(int(x) for x in ms))
        else:
            check(isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0,
                  "min_steps_before_eval", f"an int >= 0, or one per sub-population ({n_sub} "
                  "ints >= 0; the value for P1 is ignored)", ms)
        if self.method == "fire":  # a parent sub-population never evaluated never evolves
            parents = list(ms[1:]) if isinstance(ms, (list, tuple)) else [ms]
            check(all(x < self.steps for x in parents), "min_steps_before_eval",
                  f"below steps ({self.steps}) for every parent sub-population (its members "
                  "could never be evaluated, so it could never evolve)",
                  list(ms) if isinstance(ms, (list, tuple)) else ms)
        check(self.executor in EXECUTORS, "executor", f"one of {list(EXECUTORS)}", self.executor)
        check(self.threads is None or (isinstance(self.threads, int)
                                       and not isinstance(self.threads, bool) and self.threads >= 0),
              "threads", "an int >= 0 (0: PyTorch's own setting) or None (default: the free "
              "cores)",
              self.threads)
        object.__setattr__(self, "task_options", dict(self.task_options))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.min_steps_before_eval, tuple):
            d["min_steps_before_eval"] = list(self.min_steps_before_eval)
        if isinstance(self.factors, Mapping):
            d["factors"] = {k: list(v) for k, v in self.factors.items()}
        else:
            d["factors"] = None if self.factors is None else list(self.factors)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError("config", f"keys among {sorted(known)}", sorted(unknown))
        return cls(**dict(d))

    @property
    def rounds(self) -> int:
        return self.steps // self.ready_interval


def _factors(name: str, value: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(f) for f in value)
    except (TypeError, ValueError):
        raise ConfigError(name, "a non-empty list of floats > 0", value) from None
    check(len(out) > 0 and all(math.isfinite(f) and f > 0 for f in out), name,
          "a non-empty list of floats > 0", value)
    return out
