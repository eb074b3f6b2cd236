"""Run an existing Ray Tune class trainable (a ``ray.tune.Trainable`` subclass with ``setup``,
``step``, ``save_checkpoint``, ``load_checkpoint`` and optionally ``reset_config``) under
firepbt's FIRE PBT, PBT or random search, unchanged::

    from firepbt import ExperimentConfig, LogUniform, Space, run
    from firepbt.integrations.tune import tune_factory

    factory = tune_factory(MyTrainable, config={"batch_size": 64}, metric="mean_accuracy",
                           mode="max", seed_key="seed")
    run(ExperimentConfig(task="my-tune-task", method="fire", workers=12, steps=600,
                         ready_interval=60, eval_interval=5),
        "runs/tune", factory=factory, space=Space({"lr": LogUniform(1e-3, 1e-1)}))

**The mapping.**

- *Steps.* One firepbt step is one Tune training iteration: ``trainable.train()``, which calls
  your ``step()`` once. ``steps``, ``ready_interval`` and ``eval_interval`` count iterations.
- *Config and space.* Your trainable's ``config`` is ``config`` (the fixed settings) updated
  with firepbt's hyperparameters, whose names are the config keys they set (the space's names).
  ``seed_key`` (optional) names the config key that seeds a worker: each worker's seed goes
  there when it is built. Each name of the space must be a key your trainable's code reads
  (``config["lr"]``, ``.get``, ``**config``; in ``setup``, ``step`` or ``reset_config``, from
  the config handed to it or ``self.config``): one it never reads would be "tuned" while every
  member trains the same, so the worker's first ``train`` call (after its steps, before the
  first round is committed) raises :class:`~firepbt.errors.ConfigError` naming it and the keys
  read (``check_hparams=False`` turns the check off, for a trainable that reads a name only
  later).
- *New hyperparameters* (an exploit, an evaluator's assignment) are applied as Tune's PBT
  applies them: ``reset_config(new_config)``; if it returns False (Tune's default), the
  trainable is rebuilt with the new config and restored from its checkpoint (``stop()``, then a
  new instance, then ``load_checkpoint``), exactly as Tune restarts a trial. Then, as under
  Tune's PBT, ``load_checkpoint`` must not bring the old hyperparameters back (an optimizer's
  state dict holds its learning rate: apply ``self.config``'s after loading it), or give
  ``reset_config``, which changes the live trainable and loads nothing.
- *The objective* is ``result[metric]`` of the last ``step()`` (``mode`` "max" or "min"). Before
  the first step there is no result: ``evaluate()`` is then NaN (firepbt's first evaluation at
  step 0 is left out of the curves' fits as a non-finite point), unless ``evaluate`` is given:
  a function ``trainable -> float`` that measures the live Tune trainable (also used after every
  step then, instead of the result).
- *Checkpoints.* ``state_dict()`` calls your ``save_checkpoint(dir)`` on a fresh folder and keeps
  every file written there (as bytes) with the dict it returned (a returned dict must hold data:
  tensors, arrays, numbers, strings and containers of them - firepbt's store never unpickles),
  the config, the iteration and the last result. ``load_state_dict`` writes the files back to a
  fresh folder and calls ``load_checkpoint`` with the returned dict, or with the folder's path
  when ``save_checkpoint`` returned None - as Tune does. A copied member continues from the
  copied checkpoint with its own (new) hyperparameters.

**Not supported, and why.** Tune's function trainables (``def train_fn(config): ...
tune.report(...)``) run their own loop and cannot be stopped after ``steps`` iterations and
resumed elsewhere from the driver: convert to a class (Tune's docs show how), or use
:class:`firepbt.FunctionTrainable`. Tune's schedulers, search algorithms, ``Tuner`` and
``tune.report`` callbacks are not involved (firepbt is the scheduler; its store replaces Tune's
experiment folder); a trainable's ``default_resource_request`` is ignored (the Ray executor
sizes actors itself). There is no data-order re-seeding after a copy unless ``reseed`` is given
(``(trainable, seed) -> None``): without it a copied member continues its source's data order.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, require_extra
from ._reads import ReadTracking, tracking


def _tune() -> Any:
    return require_extra("ray.tune", "the Ray Tune adapter", "'ray[tune]'", "tune")


class TuneTrainable:
    """One worker: a ``ray.tune.Trainable`` subclass instance, driven as firepbt's contract
    says (see the module docstring). Build it through :func:`tune_factory`."""

    def __init__(self, cls: type, seed: int, *, config: Mapping[str, Any] | None = None,
                 metric: str, mode: str = "max", seed_key: str | None = None,
                 evaluate: Callable[[Any], float] | None = None,
                 reseed: Callable[[Any, int], None] | None = None,
                 check_hparams: bool = True) -> None:
        tune = _tune()
        if not (isinstance(cls, type) and issubclass(cls, tune.Trainable)):
            raise ConfigError("cls", "a subclass of ray.tune.Trainable", cls)
        if mode not in ("max", "min"):
            raise ConfigError("mode", "'max' or 'min'", mode)
        self.cls = cls
        self.metric = metric
        self.mode = mode
        self._evaluate = evaluate
        self._reseed = reseed
        self.config: dict[str, Any] = dict(config or {})
        if seed_key is not None:
            self.config[seed_key] = seed
        # built at the first train() (or load_state_dict), when the config holds the
        # hyperparameters too: Tune's setup(config) expects every key it reads
        self.trainable: Any = None
        self.last: dict[str, float] = {}  # the last result's numbers
        self._reads: set[str] = set()  # the config keys the trainable's code read
        self._names_checked = not check_hparams

    def _config(self, config: Mapping[str, Any]) -> ReadTracking:
        """``config`` as handed to the trainable: a dict that records the keys it reads."""
        return tracking(ReadTracking, dict(config), self._reads)

    def _build(self, config: Mapping[str, Any]) -> Any:
        t = self.cls(config=self._config(config))
        logdir = getattr(t, "logdir", None)  # Tune makes one under ~/ray_results per instance
        if logdir and os.path.isdir(logdir) and not os.listdir(logdir):
            os.rmdir(logdir)
        return t

    # -- the contract ---------------------------------------------------------------------

    def train(self, hparams: Mapping[str, Any], steps: int) -> None:
        wanted = {**self.config, **dict(hparams)}
        if self.trainable is None:
            self.trainable = self._build(wanted)
            self.config = wanted
        elif wanted != self.config:
            self._apply(wanted)
        for _ in range(steps):
            result = self.trainable.train()
            if self.metric not in result:
                raise ConfigError("metric", f"a key of the trainable's step() result (it has "
                                  f"{sorted(k for k in result if not k.startswith('_'))[:12]})",
                                  self.metric)
            self.last = {k: float(v) for k, v in result.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not self._names_checked:
            self._names_checked = True
            self._check_names(hparams)

    def _check_names(self, hparams: Mapping[str, Any]) -> None:
        """Each hyperparameter is a config key the trainable's code read (in ``setup``, the
        first call's steps, or ``reset_config``); else it would be "tuned" while every member
        trains the same."""
        for name in hparams:
            if name not in self._reads:
                read = ", ".join(sorted(self._reads)) or "nothing"
                raise ConfigError("hyperparameter", "a config key the trainable reads (in "
                                  f"setup, step or reset_config; it read: {read}): tuning a "
                                  "name it never reads changes nothing (one read only later: "
                                  "check_hparams=False)", name)

    def _apply(self, new_config: dict[str, Any]) -> None:
        config = self._config(new_config)
        if self.trainable.reset_config(config):
            self.trainable.config = config
        else:  # as Tune restarts a trial whose trainable cannot reset: rebuild, restore
            state = self.state_dict()
            self.trainable.stop()
            self.trainable = self._build(new_config)
            self._restore(state)
        self.config = dict(new_config)

    def evaluate(self) -> float:
        if self._evaluate is not None and self.trainable is not None:
            return float(self._evaluate(self.trainable))
        return self.last.get(self.metric, math.nan)

    def reseed(self, seed: int) -> None:
        if self._reseed is not None and self.trainable is not None:
            self._reseed(self.trainable, seed)

    def state_dict(self) -> dict[str, Any]:
        if self.trainable is None:  # never trained (an idle evaluator): nothing to keep yet
            return {"files": {}, "returned": None, "config": dict(self.config), "iteration": 0,
                    "last": {}, "built": False}
        folder = Path(tempfile.mkdtemp(prefix="firepbt-tune-"))
        try:
            returned = self.trainable.save_checkpoint(str(folder))
            files = {str(p.relative_to(folder)): p.read_bytes()
                     for p in sorted(folder.rglob("*")) if p.is_file()}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if returned is not None and not isinstance(returned, Mapping):
            raise ConfigError("save_checkpoint", "returning None (files written into the "
                              "folder) or a dict", type(returned).__name__)
        return {"files": files, "returned": None if returned is None else dict(returned),
                "config": dict(self.config), "iteration": int(self.trainable.iteration),
                "last": dict(self.last), "built": True}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        config = dict(state["config"])
        if not state.get("built", True):  # a never-trained worker's state
            if self.trainable is not None:
                self.trainable.stop()
            self.trainable, self.config, self.last = None, config, {}
            return
        if self.trainable is None:
            self.trainable = self._build(config)
        elif config != self.trainable.config:  # the checkpoint's config, as the trainable's
            handed = self._config(config)
            if self.trainable.reset_config(handed):
                self.trainable.config = handed
            else:
                self.trainable.stop()
                self.trainable = self._build(config)
        self.config = config
        self._restore(state)

    def _restore(self, state: Mapping[str, Any]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="firepbt-tune-"))
        try:
            for name, data in state["files"].items():
                path = (folder / name).resolve()
                if folder.resolve() not in path.parents:
                    raise ConfigError("checkpoint file", "a path inside the checkpoint", name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bytes(data))
            returned = state.get("returned")
            self.trainable.load_checkpoint(dict(returned) if returned is not None
                                           else str(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.trainable._iteration = int(state["iteration"])  # Tune's own counter, as restore
        self.last = {k: float(v) for k, v in state["last"].items()}


def tune_factory(cls: type, *, config: Mapping[str, Any] | None = None, metric: str,
                 mode: str = "max", seed_key: str | None = None,
                 evaluate: Callable[[Any], float] | None = None,
                 reseed: Callable[[Any, int], None] | None = None,
                 check_hparams: bool = True) -> Callable[[int], TuneTrainable]:
    """The factory ``seed -> trainable`` for ``run(..., factory=...)`` (see the module
    docstring for each argument)."""
    _tune()
    if mode not in ("max", "min"):
        raise ConfigError("mode", "'max' or 'min'", mode)

    def make(seed: int) -> TuneTrainable:
        return TuneTrainable(cls, seed, config=config, metric=metric, mode=mode,
                             seed_key=seed_key, evaluate=evaluate, reseed=reseed,
                             check_hparams=check_hparams)

    return make
