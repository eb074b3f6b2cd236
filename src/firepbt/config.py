"""The experiment configuration: every field validated when it is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .controllers.fire_layout import fire_split
from .deadlines import MAX_SECONDS
from .devices import DEVICE_TEXT, valid_device
from .errors import ConfigError, check
from .selection import members_needed

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
    declare; ``firepbt compare`` runs one single-threaded run per core. ``device``: where the
    built-in tasks train (:mod:`firepbt.devices`: auto, cpu, cuda, cuda:N);
    ``gpus_per_worker`` the GPUs each Ray actor declares (e.g. 0.25: four actors per GPU; Ray
    gives a GPU only to an actor that declares one, so on Ray ``auto`` is the CPU without it and
    ``cuda`` needs it: a run or resume is refused otherwise).
    ``time_budget``: seconds the experiment's rounds may take, over all its runs and resumes
    (None: no limit); once spent, the run ends before its next round, everything committed
    kept (:mod:`firepbt.deadlines`). ``round_timeout``: seconds one round's training may take
    (None, the default: no deadline); on Ray a member past it is retired for the round, in
    this process the run stops with its last round intact (:mod:`firepbt.deadlines`).
    ``checkpoint_interval``: the members' states are checkpointed every that many rounds (and
    after the last); a crash loses at most that many rounds, which ``resume`` trains again
    (exactly, for deterministic trainables); on Ray, where a checkpoint is bound to its round
    once the next round trained, at most that many + 1.
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
    hand_tuned: Mapping[str, Any] | None = None
    executor: str = "auto"
    threads: int | None = None
    device: str = "auto"
    gpus_per_worker: float = 0.0
    checkpoint_interval: int = 1
    time_budget: float | None = None
    round_timeout: float | None = None

    def __post_init__(self) -> None:
        for rule in FIELD_RULES:  # each field on its own (declared below the class)
            rule.check(getattr(self, rule.field))
        # what relates fields to each other
        check(self.ready_interval % self.eval_interval == 0, "ready_interval",
              f"a multiple of eval_interval ({self.eval_interval})", self.ready_interval)
        check(self.steps % self.ready_interval == 0, "steps",
              f"a multiple of ready_interval ({self.ready_interval})", self.steps)
        check(self.gpus_per_worker == 0 or self.executor == "ray", "gpus_per_worker",
              f"0 unless executor is 'ray' (executor is {self.executor!r}; --device picks the "
              "GPU of the other executors)", self.gpus_per_worker)
        if self.method == "pbt":
            need = members_needed(self.quantile)
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
        object.__setattr__(self, "task_options", dict(self.task_options))
        check(self.schedule is None or self.method == "random", "schedule",
              "given only with method 'random' (PBT and FIRE PBT find their own schedules)",
              None if self.schedule is None else "a schedule")
        if self.hand_tuned is not None:
            from .schedule import hand_tuned_settings

            check(self.method == "random" and self.schedule is None, "hand_tuned",
                  "given only with method 'random' and no fixed schedule (the shape of random "
                  "search's hand-tuned schedule)", dict(self.hand_tuned))
            given = dict(self.hand_tuned)
            hand_tuned_settings(given)  # each key checked, named
            if "decay_fractions" in given:
                given["decay_fractions"] = [float(x) for x in given["decay_fractions"]]
            object.__setattr__(self, "hand_tuned", given)

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


@dataclass(frozen=True)
class FieldRule:
    """One field's own constraint, declared once: the check and the error text come from it,
    and so do the bad values the tests try (:meth:`bad_values`).

    ``kind``: ``"int"`` (an int, not a bool, in ``[low, high)``), ``"number"`` (an int or
    float in ``(low, high]`` or ``(low, high)`` when ``high_open``), ``"choice"`` (one of
    ``choices``), ``"device"`` (:mod:`firepbt.devices`) or ``"name"`` (a non-empty string);
    ``optional``: None is allowed too."""

    field: str
    kind: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    low_closed: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    note: str = ""

    @property
    def allowed(self) -> str:
        if self.kind == "int":
            assert self.low is not None
            text = ("an int > 0" if self.low == 1 and self.high is None else
                    f"an int >= {self.low:g}" if self.high is None
                    else f"an int in [{self.low:g}, {_num(self.high)})")
        elif self.kind == "number":
            assert self.low is not None and self.high is not None
            text = (f"a number >= {self.low:g}" if self.low_closed and math.isinf(self.high)
                    else f"in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        elif self.kind == "choice":
            text = f"one of {list(self.choices)}"
        elif self.kind == "device":
            text = DEVICE_TEXT
        else:
            text = "a non-empty name"
        if self.optional:
            text += " or None"
        return text + (f" ({self.note})" if self.note else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "int":
            return (isinstance(value, int) and not isinstance(value, bool)
                    and (self.low is None or value >= self.low)
                    and (self.high is None or value < self.high))
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            assert self.low is not None and self.high is not None
            return ((self.low <= value if self.low_closed else self.low < value)
                    and (value < self.high if self.high_open else value <= self.high))
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "device":
            return valid_device(value)
        return isinstance(value, str) and bool(value)

    def check(self, value: Any) -> None:
        check(self.ok(value), self.field, self.allowed, value)

    def bad_values(self) -> list[Any]:
        """Values this rule refuses: the wrong type, and just outside each bound or choice."""
        bad: list[Any] = ["x" if self.kind != "name" else 3]
        if not self.optional:
            bad.append(None)
        if self.kind == "int":
            bad += [1.5, True, int(self.low or 0) - 1]
            if self.high is not None:
                bad.append(int(self.high))
        elif self.kind == "number":
            assert self.low is not None and self.high is not None
            bad += [self.low - 0.1 if self.low_closed else self.low, math.nan]
            bad += [] if math.isinf(self.high) else [self.high + 0.1]
            bad += [self.high] if self.high_open and not math.isinf(self.high) else []
        elif self.kind == "choice":
            bad.append(self.choices[0].upper() + "?")
        elif self.kind == "device":
            bad += ["gpu", "cuda:", "cuda:x"]
        else:
            bad.append("")
        return bad


def _num(x: float) -> str:
    return "2**32" if x == 2**32 else f"{x:g}"


FIELD_RULES: tuple[FieldRule, ...] = (
    FieldRule("task", "name"),
    FieldRule("method", "choice", choices=METHODS),
    FieldRule("workers", "int", 1, 100_001,
              note="a population beyond 100,000 is refused before anything is sampled"),
    FieldRule("steps", "int", 1),
    FieldRule("ready_interval", "int", 1),
    FieldRule("eval_interval", "int", 1),
    FieldRule("seed", "int", 0, 2**32),
    FieldRule("quantile", "number", 0, 0.5),
    FieldRule("p_stat", "number", 0, 1, high_open=True),
    FieldRule("max_eval_steps", "int", 1, optional=True, note="default: 3 ready intervals"),
    FieldRule("n_subpopulations", "int", 2, optional=True, note="default: from workers"),
    FieldRule("executor", "choice", choices=EXECUTORS),
    FieldRule("threads", "int", 0, 1025, optional=True,
              note="0: PyTorch's own setting; None, the default: the free cores"),
    FieldRule("device", "device"),
    FieldRule("gpus_per_worker", "number", 0, math.inf, high_open=True, low_closed=True,
              note="Ray: GPUs each actor declares, fractions allowed"),
    FieldRule("checkpoint_interval", "int", 1,
              note="rounds between checkpoints; a crash loses at most that many (Ray: + 1)"),
    FieldRule("time_budget", "number", 0, MAX_SECONDS, optional=True,
              note="seconds of rounds over the experiment's runs; None: no limit"),
    FieldRule("round_timeout", "number", 0, MAX_SECONDS, optional=True,
              note="seconds a round's training may take; None: no deadline"),
)
"""Each field's own constraint. What relates fields (multiples of intervals, workers that
truncation can select in, a FIRE layout in which every sub-population evolves -
:func:`firepbt.controllers.fire_layout.fire_split` -, ``min_steps_before_eval`` per sub-population
and below ``steps``) is checked after them in ``ExperimentConfig.__post_init__``."""


def _factors(name: str, value: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(f) for f in value)
    except (TypeError, ValueError):
        raise ConfigError(name, "a non-empty list of floats > 0", value) from None
    check(len(out) > 0 and all(math.isfinite(f) and f > 0 for f in out), name,
          "a non-empty list of floats > 0", value)
    return out
