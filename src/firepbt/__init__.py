"""firepbt: FIRE PBT, PBT and random search for hyperparameter schedules.

The decision core (``curves``, ``selection``, ``controllers``, ``records``) is pure
numpy/scipy; execution (``executors``, ``runner``), storage (``store``) and the built-in tasks
(``tasks``) import torch. :func:`run` and :func:`resume` are the entry points,
:func:`open_experiment` the door to what a store holds.
"""

from __future__ import annotations

from .api import resume, run
from .build import build_controller, worker_seeds
from .config import ExperimentConfig
from .controllers import PBT, Controller, FirePBT, RandomSearch, fire_split
from .controllers.fire import FireRules
from .curves import Curve, best_score_diff, binom_test, smooth
from .errors import ConfigError, FirePBTError, StoreError, TrainableError
from .records import (
    AssignEvaluator,
    Decision,
    EvaluatorSuccess,
    Exploit,
    FitnessRecord,
    RunFacts,
    StopEvaluator,
    WorkerState,
)
from .results import Experiment, Status, Summary, TopPoint, open_experiment, summarize
from .runner import copy_seed
from .schedule import Schedule, Segment, hand_tuned
from .space import Categorical, IntRange, LogUniform, Space, Uniform
from .trainable import FunctionTrainable, Trainable, function_trainable

__all__ = [
    "AssignEvaluator", "Categorical", "ConfigError", "Controller", "Curve", "Decision",
    "EvaluatorSuccess", "Experiment", "ExperimentConfig", "Exploit", "FirePBT", "FirePBTError",
    "FireRules", "FitnessRecord", "FunctionTrainable", "IntRange", "LogUniform", "PBT",
    "RandomSearch", "RunFacts", "Schedule", "Segment", "Space", "Status", "StopEvaluator",
    "StoreError", "Summary", "TopPoint", "Trainable", "TrainableError", "Uniform", "WorkerState",
    "best_score_diff",
    "binom_test", "build_controller", "copy_seed", "fire_split", "function_trainable",
    "hand_tuned", "open_experiment", "resume", "run", "smooth", "summarize", "worker_seeds",
]
__version__ = "0.1.0"
