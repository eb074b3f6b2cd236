"""V-MPO on Gymnasium control tasks: the paper's section 4.2 experiment, scaled to the budget.

The agent is :class:`firepbt.rl.agent.VMPOTrainable`; the objective is the average episode
return (higher is better). Two hyperparameters are tuned at once:

- ``lr``: initial log-uniform in [1e-5, 1e-3], explore multiplies it by one of
  (0.5, 0.8, 1.25, 2.0), kept within [1e-6, 1e-2];
- ``epsilon_eta``: initial log-uniform in [5e-3, 2e-2], explore multiplies it by one of
  (0.8, 0.95, 1.05, 1.2), kept within [1e-4, 1].

Environments (CLI task names): ``vmpo`` on Pendulum-v1 (the CPU-cheap default; about 15 ms per
update of 400 transitions on one core), ``vmpo-ant`` on Ant-v5 and ``vmpo-humanoid`` on
Humanoid-v5 (MuJoCo, from the ``mujoco`` package: no download; for bigger machines).

The paper's FIRE settings scale with the training length (:func:`fire_settings`): 2
sub-populations, evaluators from the rest of the workers (50 workers: 18 + 18 + 14, as in the
paper), ``min_steps_before_eval`` at 1/6 of training, ``max_eval_steps`` at 1/10, a ready
interval of 1/100 and an evaluation every quarter of it. Presets: ``small`` (12 workers,
the default) and ``paper`` (50 workers).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import check
from ..space import LogUniform, Space

LR_FACTORS = (0.5, 0.8, 1.25, 2.0)
EPSILON_ETA_FACTORS = (0.8, 0.95, 1.05, 1.2)

SPACE = Space({
    "lr": LogUniform(1e-5, 1e-3, bounds=(1e-6, 1e-2), factors=LR_FACTORS),
    "epsilon_eta": LogUniform(5e-3, 2e-2, bounds=(1e-4, 1.0), factors=EPSILON_ETA_FACTORS),
})

ENVIRONMENTS = {"vmpo": "Pendulum-v1", "vmpo-ant": "Ant-v5", "vmpo-humanoid": "Humanoid-v5"}

# training steps (learner updates) per worker of each environment's presets
STEPS = {"vmpo": 2000, "vmpo-ant": 20000, "vmpo-humanoid": 40000}
PRESET_WORKERS = {"small": 12, "paper": 50}


def fire_settings(steps: int) -> dict[str, Any]:
    """The paper's section 4.2 FIRE settings for ``steps`` per worker (a multiple of 100):
    ready every 1/100, evaluations every 1/400, ``min_steps_before_eval`` 1/6 (rounded up to a
    ready interval), ``max_eval_steps`` 1/10, 2 sub-populations."""
    check(isinstance(steps, int) and steps >= 400 and steps % 400 == 0, "steps",
          "a multiple of 400 for the V-MPO presets (ready every 1/100, evaluations every 1/400)",
          steps)
    ready = steps // 100
    min_eval = math.ceil(steps / 6 / ready) * ready
    return {"ready_interval": ready, "eval_interval": ready // 4,
            "min_steps_before_eval": min_eval, "max_eval_steps": steps // 10,
            "n_subpopulations": 2}


def preset(task: str, name: str, steps: int | None = None) -> dict[str, Any]:
    """Run settings of a preset (``small`` or ``paper``) for one of :data:`ENVIRONMENTS`."""
    check(task in ENVIRONMENTS, "task", f"one of {sorted(ENVIRONMENTS)}", task)
    check(name in PRESET_WORKERS, "preset", f"one of {sorted(PRESET_WORKERS)}", name)
    steps = STEPS[task] if steps is None else steps
    return {"workers": PRESET_WORKERS[name], "steps": steps, **fire_settings(steps)}


def make(task: str, seed: int, **options: Any) -> Any:
    from ..rl.agent import VMPOTrainable

    if task != "vmpo":
        options.setdefault("normalize_obs", True)
    return VMPOTrainable(seed, env_id=ENVIRONMENTS[task], **options)
