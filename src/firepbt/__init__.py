"""firepbt: FIRE PBT, PBT and random search for hyperparameter schedules.

The decision core (``curves``, ``selection``, ``controllers``) is pure numpy/scipy; execution
(``executor``, ``runner``), storage (``store``) and the built-in tasks (``tasks``) import torch.
"""

from __future__ import annotations

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
    StopEvaluator,
    WorkerSpec,
)
from .results import Experiment, Summary, TopPoint, open_experiment, summarize
from .runner import copy_seed, resume, run
from .schedule import Schedule, Segment, hand_tuned
from .space import Categorical, IntRange, LogUniform, Space, Uniform
from .trainable import FunctionTrainable, Trainable, function_trainable

__all__ = [
    "AssignEvaluator", "Categorical", "ConfigError", "Controller", "Curve", "Decision",
    "EvaluatorSuccess", "Experiment", "ExperimentConfig", "Exploit", "FirePBT", "FirePBTError",
    "FireRules", "FitnessRecord", "FunctionTrainable", "IntRange", "LogUniform", "PBT",
    "RandomSearch", "Schedule", "Segment", "Space", "StopEvaluator", "StoreError", "Summary",
    "TopPoint", "Trainable", "TrainableError", "Uniform", "WorkerSpec", "best_score_diff",
    "binom_test", "build_controller", "copy_seed", "fire_split", "function_trainable",
    "hand_tuned", "open_experiment", "resume", "run", "smooth", "summarize", "worker_seeds",
]
__version__ = "0.1.0"
