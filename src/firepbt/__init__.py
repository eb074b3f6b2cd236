"""firepbt: FIRE PBT, PBT and random search for hyperparameter schedules.

The decision core (``curves``, ``selection``, ``controllers``) is pure numpy/scipy; execution
(``executor``, ``runner``), storage (``store``) and the built-in tasks (``tasks``) import torch.
"""

from __future__ import annotations

from .config import ExperimentConfig
from .controllers import PBT, Controller, FirePBT, RandomSearch, fire_split
from .curves import Curve, best_score_diff, binom_test, smooth
from .errors import ConfigError, FirePBTError, StoreError, TrainableError
from .results import Experiment, Summary, TopPoint, open_experiment, summarize
from .runner import resume, run
from .schedule import Schedule, Segment, hand_tuned
from .space import Categorical, IntRange, LogUniform, Space, Uniform
from .trainable import FunctionTrainable, Trainable, function_trainable

__all__ = [
    "Categorical", "ConfigError", "Controller", "Curve", "Experiment", "ExperimentConfig", "FirePBT",
    "FirePBTError", "FunctionTrainable", "IntRange", "LogUniform", "PBT", "RandomSearch",
    "Schedule", "Segment", "Space", "StoreError", "Summary", "TopPoint", "Trainable",
    "TrainableError",
    "Uniform", "best_score_diff", "binom_test", "fire_split", "function_trainable",
    "hand_tuned", "open_experiment", "resume", "run", "smooth", "summarize",
]
__version__ = "0.1.0"
