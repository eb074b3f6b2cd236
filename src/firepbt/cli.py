"""The ``firepbt`` command line.

``firepbt run TASK``, ``resume STORE``, ``status STORE``, ``lineage STORE``, ``replay STORE``,
``report PATH``, ``compare TASK``, ``tasks``. Each command is one pair below: a function that
declares its arguments and one that carries it out, which reads experiments only through
:func:`firepbt.results.open_experiment` and runs them through :mod:`firepbt.runner`; the CLI
formats what those return (one formatter for ``status`` and the summary after a run) and never
opens a store itself. Bad input is one line on stderr naming the field, the allowed values and
the value received, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from .config import METHODS, ExperimentConfig
from .errors import ConfigError, FirePBTError, MissingExtra, StoreError, check
from .progress import ProgressBar


class _Parser(argparse.ArgumentParser):
    """One-line errors; no abbreviated options (``--step`` for ``--steps``: an option added
    later could silently change what an old abbreviation means)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"firepbt: error: {message}\n")


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that a run stops as after Ctrl-C (the round in
    flight is lost, the committed ones are kept) and says so."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


# -- argument types ----------------------------------------------------------------------------

def _int(name: str, what: str = "an int") -> Callable[[str], int]:
    """An int written in ASCII digits (Python's ``int`` also takes other scripts' digits and
    underscores: ``٣`` or ``1_000`` is more likely a slip than a number)."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}")
        return int(text)
    return parse


def _positive_int(name: str) -> Callable[[str], int]:
    read = _int(name, "an int > 0")

    def parse(text: str) -> int:
        value = read(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be an int > 0, got {value}")
        return value
    return parse


def _seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        from .deadlines import MAX_SECONDS, parse_seconds

        what = (f"{name} must be seconds in (0, {MAX_SECONDS:g}] (e.g. 90, 15m, 1.5h), "
                f"got {text!r}")
        try:
            value = parse_seconds(text)
        except ValueError:
            raise argparse.ArgumentTypeError(what) from None
        if not 0 < value <= MAX_SECONDS:
            raise argparse.ArgumentTypeError(what)
        return value
    return parse


LOG_HELP = ("watch the run in a tracker (repeatable): tensorboard:DIR, wandb:PROJECT (W&B's "
            "settings apply, e.g. WANDB_MODE=offline) or mlflow:URI (a tracking URI, or a folder "
            "that gets an SQLite store); each needs its extra, e.g. pip install "
            "'firepbt[tensorboard]'")

FACTORY_HELP = ("your own trainable: module:callable, the factory seed -> Trainable (imported "
                "from the current folder), with its Space as the factory's 'space' attribute "
                "or the module's SPACE; TASK then names the experiment")


def _protocol_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """The settings ``run`` and ``compare`` share (``default``: where their defaults come
    from, in words)."""
    p.add_argument("--factory", default=None, help=FACTORY_HELP)
    p.add_argument("--steps", type=_positive_int("steps"), default=None,
                   help=f"training steps per worker (default: {default})")
    p.add_argument("--ready-interval", type=_positive_int("ready_interval"), default=None,
                   help="steps per synchronous round: decisions are taken every ready "
                   f"interval (default: {default})")
    p.add_argument("--eval-interval", type=_positive_int("eval_interval"), default=None,
                   help="steps between two evaluations of the objective; divides the ready "
                   f"interval (default: {default})")
    p.add_argument("--max-eval-steps", type=_positive_int("max_eval_steps"), default=None,
                   help="FIRE PBT: an evaluator's training budget: without an overlap with "
                   "its target (or when significant but not better) it stops once it has "
                   "trained more than this, checked each round, so up to one ready interval "
                   "more (default 3 ready intervals)")
    p.add_argument("--min-steps-before-eval", type=_int("min_steps_before_eval"), nargs="+",
                   default=None,
                   help="FIRE PBT: steps before a parent sub-population's members can be "
                   "evaluated: one int for every parent sub-population, or one per "
                   "sub-population (P1's ignored), e.g. 0 600 1200 (default 0)")
    p.add_argument("--preset", default=None,
                   help="tasks with presets (vmpo*): small (default, 12 workers) or paper (50)")
    p.add_argument("--device", default="auto",
                   help="where built-in tasks train: auto (default: CUDA when available), cpu, "
                   "cuda or cuda:N")


# -- run -------------------------------------------------------------------------------------

def _run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("task", help="a built-in task (see 'firepbt tasks'), or with --factory the "
                   "experiment's name")
    _protocol_arguments(r, "the task's, see 'firepbt tasks'")
    r.add_argument("--method", default="fire", help=f"one of {list(METHODS)} (default fire)")
    r.add_argument("--workers", type=_positive_int("workers"), default=None,
                   help="population size, evaluators included (default: the task's, see "
                   "'firepbt tasks'; FIRE PBT needs at least 6)")
    r.add_argument("--seed", type=_int("seed"), default=0,
                   help="experiment seed: sampling, decisions, every worker's data (default 0)")
    r.add_argument("--store", default=None, help="a new folder (default runs/TASK-METHOD-TIME)")
    r.add_argument("--p-stat", type=float, default=0.01,
                   help="FIRE PBT: significance level of the evaluators' binomial test "
                   "(default 0.01)")
    r.add_argument("--quantile", type=float, default=0.25,
                   help="truncation selection: the bottom fraction copies the top fraction "
                   "(default 0.25)")
    r.add_argument("--factors", nargs="+", default=None,
                   help="explore factors: floats for every hyperparameter (0.8 1.25), or per "
                   "name (lr=0.5,0.8,1.25,2 epsilon_eta=0.8,1.2)")
    r.add_argument("--subpopulations", type=_int("n_subpopulations"), default=None,
                   help="FIRE PBT: number of sub-populations (default: from --workers)")
    r.add_argument("--objective", default=None, help="mnist1d, mnist: accuracy (default) or f1")
    r.add_argument("--data-dir", default=None, help="mnist: folder with the four IDX files")
    r.add_argument("--schedule", default=None,
                   help="random search: follow this JSON schedule (from 'firepbt lineage --json')")
    r.add_argument("--warmup-fraction", type=float, default=None,
                   help="random search: the hand-tuned schedule's linear warm-up, as a fraction "
                   "of training (default 5/90, the paper's)")
    r.add_argument("--decay-at", type=float, nargs="*", default=None,
                   help="random search: fractions of training where the hand-tuned schedule "
                   "decays (default 30/90 60/90 80/90, the paper's)")
    r.add_argument("--decay-factor", type=float, default=None,
                   help="random search: what each decay multiplies by (default 0.1)")
    r.add_argument("--executor", default="auto",
                   help="auto (default: vectorized when possible), local, vectorized or ray")
    r.add_argument("--ray-address", default=None,
                   help="with --executor ray: a running cluster's head, host:port (default "
                   "RAY_ADDRESS, else a Ray cluster already running on this machine, else a "
                   "local Ray instance started for the run)")
    r.add_argument("--threads", type=_int("threads"), default=None,
                   help="PyTorch threads while training in this process (default: the cores "
                   "not busy when the run starts, unless OMP_NUM_THREADS is set; 0: PyTorch's "
                   "own setting); with --executor ray: the CPUs (and threads) of each actor "
                   "(default 1)")
    r.add_argument("--checkpoint-interval", type=_positive_int("checkpoint_interval"),
                   default=1, help="rounds between checkpoints of the members' states "
                   "(default 1); a crash loses at most that many rounds (on Ray, where the "
                   "actors write a checkpoint while the next round trains, that many + 1), "
                   "which resume trains again")
    r.add_argument("--time-budget", type=_seconds("time_budget"), default=None,
                   help="wall-clock budget of the experiment's rounds, over its runs and "
                   "resumes: seconds, or with s/m/h (90m, 1.5h); once spent the run ends "
                   "before its next round, everything committed kept (default: none)")
    r.add_argument("--round-timeout", type=_seconds("round_timeout"), default=None,
                   help="a round's training deadline (seconds, or with s/m/h; default off): "
                   "on Ray a member past it is retired for the round and its actor replaced; "
                   "in this process the run stops with its last round intact, naming the "
                   "worker")
    r.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="with --executor ray: GPUs each actor declares (fractions allowed, e.g. "
                   "0.25 puts four actors, each holding several members, on a GPU; default 0: "
                   "the actors hold no GPU and --device auto trains on their CPUs)")
    r.add_argument("--log", action="append", default=None, metavar="SPEC", help=LOG_HELP)
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_run(args: argparse.Namespace) -> int:
    from .build import check_device, fire_sizing_note
    from .runner import new_store_path, run_store
    from .tracking import callbacks_of

    config = _config_from_args(args)
    if config.method != "fire":  # FIRE PBT's own settings would be ignored without a word
        given = [flag for flag, value in (("--subpopulations", args.subpopulations),
                                          ("--max-eval-steps", args.max_eval_steps),
                                          ("--min-steps-before-eval",
                                           args.min_steps_before_eval)) if value is not None]
        check(not given, given[0] if given else "", "given only with --method fire (FIRE "
              "PBT's own settings)", f"--method {config.method}")
    callbacks_of(args.log)  # a missing extra: one line, before anything is written
    check_device(config)  # an absent device: one line, before anything is printed
    code = _code(args, config.method)
    if config.factors is not None:  # names of the task's hyperparameters, checked now too
        from .tasks import get_task

        (code[1] if code else get_task(config.task).space).with_factors(config.factors)
    if args.ray_address is not None and config.executor == "ray":  # answers, or one line now
        from .executors.ray import check_address

        check_address(args.ray_address)
    store = new_store_path(args.store if args.store is not None else _default_store(config))
    args.store = str(store)  # (what a stop message names)
    print(f"firepbt: {config.method} on {config.task}, {config.workers} workers x "
          f"{config.steps} steps (ready every {config.ready_interval}, eval every "
          f"{config.eval_interval}), seed {config.seed}, store {args.store}")
    note = fire_sizing_note(config)
    if note is not None:
        print(f"firepbt: note: {note}")
    progress = ProgressBar(not args.no_progress, config.steps)
    try:
        path = run_store(config, store, progress=progress, ray_address=args.ray_address,
                         callbacks=args.log, factory_spec=args.factory, **_custom_kwargs(code))
    finally:
        progress.stop()
    _print_summary(path)
    return 0


# -- resume ----------------------------------------------------------------------------------

def _resume_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("store", help="the store folder of the experiment")
    s.add_argument("--ray-address", default=None,
                   help="a running Ray cluster for a Ray experiment (default RAY_ADDRESS, else "
                   "a local Ray instance)")
    s.add_argument("--device", default=None,
                   help="train the rest on this device instead of the stored one (auto, cpu, "
                   "cuda, cuda:N; e.g. cpu for a store begun on a GPU machine)")
    s.add_argument("--factory", default=None,
                   help="an experiment on your own trainable: the module:callable it ran with "
                   "(see 'run --factory')")
    s.add_argument("--time-budget", type=_seconds("time_budget"), default=None,
                   help="a new budget for the experiment's rounds, all of them counted "
                   "(e.g. larger than the one that ended it)")
    s.add_argument("--steps", type=_positive_int("steps"), default=None,
                   help="extend the run to this many steps per worker (PBT and FIRE PBT; a "
                   "finished run continues)")
    s.add_argument("--log", action="append", default=None, metavar="SPEC",
                   help=LOG_HELP + "; first given the rounds it has not seen (on a finished run: "
                   "all of them)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_resume(args: argparse.Namespace) -> int:
    from .build import check_device, is_builtin
    from .results import open_experiment
    from .runner import extended, resume_store
    from .tracking import callbacks_of

    with open_experiment(args.store) as exp:
        config = exp.config
        launch = exp.launch()
        point = exp.resume_point()  # (a second writer is refused now, in one line)
    # how the run was started fills in what is not given: --factory, and --log
    args.factory = args.factory or launch["factory"]
    logs = args.log if args.log is not None else list(launch["log"])
    trackers = callbacks_of(logs)  # a missing extra: one line, before anything is printed
    # everything checked before anything is printed: the trainable, the length, the device
    if not is_builtin(config.task) and args.factory is None:
        raise ConfigError("factory", f"the module:callable the experiment ran with (task "
                          f"{config.task!r} is not built in): 'firepbt resume "
                          f"{shlex.quote(args.store)} --factory module:callable'", None)
    custom = _custom_kwargs(_code(args, config.method))
    if args.log is None and logs:
        print(f"firepbt: logging to {', '.join(logs)}, as the run was started (--log gives "
              "others)")
    if args.steps is not None and args.steps != config.steps:
        config = extended(config, args.steps)
    elif point.ended and args.time_budget is None and not point.finished:
        print(f"firepbt: {args.store} ended by itself ({_ended_words(point.ended)})")
        return 0
    elif point.finished and trackers:
        print(f"firepbt: {args.store} is finished; giving the trackers ({', '.join(logs)}) the "
              "rounds they have not seen")
        resume_store(args.store, progress=False, device=args.device, callbacks=logs, **custom)
        return 0
    elif point.finished:
        print(f"firepbt: {args.store} is finished ({point.steps_done}/{config.steps} steps per "
              f"worker); nothing to resume ('firepbt resume {shlex.quote(args.store)} --steps N' "
              "extends a PBT or FIRE PBT run; --log SPEC gives a tracker the rounds it missed)")
        return 0
    check_device(dataclasses.replace(config, device=args.device) if args.device else config)
    again = "" if point.step == point.steps_done else (
        f" (from the checkpoint at step {point.step}; steps {point.step}-{point.steps_done} are "
        "trained again)")
    print(f"firepbt: resuming {args.store} at step {point.step}/{config.steps}{again}")
    progress = ProgressBar(not args.no_progress, config.steps, point.step)
    try:
        path = resume_store(args.store, progress=progress, ray_address=args.ray_address,
                            device=args.device, steps=args.steps,
                            time_budget=args.time_budget, callbacks=logs, **custom)
    finally:
        progress.stop()
    _print_summary(path)
    return 0


# -- status ----------------------------------------------------------------------------------

def _status_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("store", help="the store folder (readable while the experiment runs)")
    t.add_argument("--json", action="store_true",
                   help="print one JSON object (values as evaluate() returned them, under "
                   "'value' and 'test'; worker ids under 'worker')")


def cmd_status(args: argparse.Namespace) -> int:
    from .results import open_experiment

    with open_experiment(args.store) as exp:
        st = exp.status()
    if args.json:
        print(_json(st.to_dict()))
        return 0
    print(f"{st.store}: {st.method} on {st.task}, {st.workers} workers, seed {st.seed}")
    print(f"progress: {st.steps_done}/{st.steps_total} steps per worker ({_state_words(st)})")
    for line in _status_lines(st):
        print(line)
    print(f"compute: train {st.train_seconds:.1f} s, eval {st.eval_seconds:.1f} s, "
          f"controller {st.decide_seconds:.2f} s")
    return 0


def _state_words(st: Any) -> str:
    """What a store is doing, in words (``status``)."""
    state = st.state
    if state == "running":
        state = f"running, pid {st.writer_pid}"
    elif state == "stopped" and st.last_error:
        e = st.last_error
        state = (f"stopped by an error in round {e['round']}: {e['error']}; fix it, then "
                 "'firepbt resume' continues")
    elif state == "stopped" and st.ended:
        state = f"stopped: {_ended_words(st.ended)}"
    elif state == "stopped":
        state = "stopped: 'firepbt resume' continues it"
    if st.state == "stopped" and (st.checkpoint_round or 0) < st.rounds_done:
        first, last = (st.checkpoint_round or 0) + 1, st.rounds_done
        again = f"round {last}" if first == last else f"rounds {first}-{last}"
        state += (f" from the checkpoint of round {st.checkpoint_round}, training {again} "
                  "again" if st.checkpoint_round else f" from the start ({again} again)")
    return str(state)


def _status_lines(st: Any) -> list[str]:
    """The best member now (with its schedule), the top point over the run and what the
    controller did: the lines ``status`` and the summary after a run share."""
    out = []
    if st.best_worker is not None:
        what = (f"validation {st.best_value:.4f}, test {st.best_test:.4f}"
                if st.has_test and st.best_test is not None
                else f"objective {st.best_value:.4f}")
        out.append(f"Best member: worker {st.best_worker}, {what}, "
                   f"hyperparameters {_fmt(st.best_hparams)}")
        if st.best_schedule is not None:
            out.append("Its schedule (hyperparameters x steps):")
            out += _schedule_lines(st.best_schedule)
    top = st.top
    if top is not None:
        where = f"(worker {top.worker} at step {top.step})"
        if st.has_test:
            test = "n/a" if top.test is None else f"{top.test:.4f}"
            out.append(f"Top validation over the run: {top.value:.4f} {where}, "
                       f"test at that point {test}")
        else:
            out.append(f"Top objective over the run: {top.value:.4f} {where}")
    act = st.activity
    if act is not None and act.exploits:
        total = sum(act.exploits.values())
        if act.assignments or len(act.exploits) > 1:  # FIRE PBT: per sub-population
            names = ", ".join(f"P{i + 1} {n}" for i, n in act.exploits.items())
            out.append(f"Exploits: {total} ({names})")
        else:
            out.append(f"Exploits: {total}")
    if act is not None and (act.assignments or len(act.exploits) > 1):
        stops = ", ".join(f"{k} {v}" for k, v in act.stops.items()) or "none"
        out.append(f"Evaluators: {act.assignments} assigned, {act.successes} successes "
                   f"(weights handed down to the child sub-population); stopped: {stops}")
    out += [f"Note: {line}" for line in st.notes]
    if st.random_schedule:
        out.append(f"Random search: {st.random_schedule}.")
    return out


def _print_summary(path: Path) -> None:
    """The summary after ``run`` and ``resume``."""
    from .results import open_experiment

    with open_experiment(path) as exp:
        st = exp.status()
    print()
    print(f"Experiment {'finished' if st.finished else 'stopped'}: {st.steps_done}/"
          f"{st.steps_total} steps per worker"
          + (f" ({_ended_words(st.ended)})." if st.ended else "."))
    for line in _status_lines(st):
        print(line)
    print(f"Store: {st.store}  (firepbt status {st.store})")


def _ended_words(ended: dict[str, Any]) -> str:
    if ended.get("reason") == "time_budget":
        return (f"its time budget of {ended['budget']:g} s was spent: the rounds took "
                f"{ended['elapsed']:.0f} s; 'firepbt resume STORE --time-budget SECONDS' with "
                "a larger budget continues it")
    return str(ended.get("reason"))


# -- tasks -----------------------------------------------------------------------------------

def _tasks_arguments(p: argparse.ArgumentParser) -> None:
    """(no arguments)"""


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import TASKS

    for name, task in TASKS.items():
        d = task.settings()
        print(f"{name:13s} {task.description}")
        fire = ""
        if "n_subpopulations" in d:
            fire = (f", FIRE: {d['n_subpopulations']} sub-populations, min steps before eval "
                    f"{d['min_steps_before_eval']}, max eval steps {d['max_eval_steps']}")
        presets = f"; presets {', '.join(task.presets)}" if task.presets else ""
        presets += "; devices: cpu, cuda (--device)" if task.on_device else "; CPU only"
        print(f"{'':13s} defaults: {_settings(d)}{fire}; tuned: "
              f"{', '.join(task.space.params)}{presets}")
        c = task.settings(comparison=True)
        if c != d:
            print(f"{'':13s} compare: {_settings(c)}")
    return 0


def _settings(d: dict[str, Any]) -> str:
    return (f"{d['workers']} workers, {d['steps']} steps, ready every {d['ready_interval']}, "
            f"eval every {d['eval_interval']}")


# -- lineage ---------------------------------------------------------------------------------

def _lineage_arguments(lin: argparse.ArgumentParser) -> None:
    lin.add_argument("store", help="the store folder")
    lin.add_argument("--worker", type=_int("worker"), default=None,
                     help="that worker's network at the last step instead of the top point")
    lin.add_argument("--best-member", action="store_true",
                     help="the best member at the end (the best-effort model) instead of the "
                     "top point")
    lin.add_argument("--json", action="store_true", help="print the schedule as JSON")


def cmd_lineage(args: argparse.Namespace) -> int:
    from .results import open_experiment

    with open_experiment(args.store) as exp:
        worker, step = args.worker, None
        n_workers = exp.config.workers
        check(worker is None or not args.best_member, "worker", "given without --best-member",
              worker)
        if worker is not None:
            check(0 <= worker < n_workers, "worker", f"an int in [0, {n_workers}) (the store's "
                  "workers)", worker)
            what = f"worker {worker}'s network at the last step"
        elif args.best_member:
            worker = exp.summary().best_worker
            what = f"the best member at the end, worker {worker}"
        else:
            top = exp.top()
            if top is not None:
                worker, step = top.worker, top.step
                what = (f"the top point, worker {worker} at step {step} (the run's best "
                        "validation value; what 'firepbt replay' retrains)")
        if worker is None:
            raise StoreError(f"store {args.store!r} has no completed round yet")
        sched = exp.schedule(worker, step)
        links = exp.lineage(worker, step)
    if args.json:
        print(_json(json.loads(sched.to_json())))
        return 0
    print(f"{what}: weights descend through")
    for link in links:
        via = "initial network" if link.via is None else f"{link.via} from worker {link.received_from}"
        held = (f"steps {link.start}-{link.stop}" if link.stop > link.start else
                f"at step {link.start} only, passed on by a later copy of that round")
        print(f"  worker {link.worker}, {held} ({via})")
    print("schedule (hyperparameters x steps):")
    for line in _schedule_lines(sched):
        print(line)
    return 0


# -- replay ----------------------------------------------------------------------------------

def _replay_arguments(rp: argparse.ArgumentParser) -> None:
    rp.add_argument("store", help="the store folder")
    rp.add_argument("--factory", default=None,
                    help="an experiment on your own trainable: module:callable, the factory "
                    "(seed -> Trainable) it ran with, e.g. my_training:make (imported from the "
                    "current folder); built-in tasks need none")
    rp.add_argument("--device", default=None,
                    help="built-in tasks: retrain on this device (default: the stored one)")
    rp.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay_store
    from .trainable import load_factory

    factory = None if args.factory is None else load_factory(args.factory)
    res = replay_store(args.store, factory=factory, device=args.device)
    if args.json:
        print(_json({"worker": res.worker, "step": res.step, "seed": res.seed,
                     "value": res.value, "test": res.test,
                     "schedule": json.loads(res.schedule.to_json())}))
        return 0
    test = "n/a" if res.test is None else f"{res.test:.4f}"
    data = "on the full training set" if factory is None else f"with {args.factory}"
    print(f"replayed the schedule of worker {res.worker} at step {res.step} (its top validation)"
          f" from scratch {data}, seed {res.seed}:")
    for line in _schedule_lines(res.schedule):
        print(line)
    if res.test is None:  # no test set: the objective, measured on the data it can see
        print(f"final objective {res.value:.4f} (evaluate() after the last step)")
    elif factory is not None:
        print(f"final evaluate() {res.value:.4f}, test {test}")
    else:  # trained on training + validation data: only the test score is a held-out measure
        print(f"final test {test} (the validation split was part of its training data)")
    return 0


# -- report ----------------------------------------------------------------------------------

def _report_arguments(rep: argparse.ArgumentParser) -> None:
    rep.add_argument("path", help="a store folder, or a folder written by 'firepbt compare'")
    rep.add_argument("--out", default=None, help="folder for report.html and the PNGs "
                     "(default PATH/report)")
    rep.add_argument("--watch", action="store_true",
                     help="serve the report of a store while its run goes on, rendered again "
                     "after each committed round (the page reloads itself); Ctrl-C stops")
    rep.add_argument("--port", type=_int("port"), default=8000,
                     help="with --watch: the port (default 8000; 0 takes a free one)")
    rep.add_argument("--host", default="127.0.0.1",
                     help="with --watch: the address to serve on (default 127.0.0.1, this "
                     "machine only)")
    rep.add_argument("--every", type=_seconds("every"), default=2.0,
                     help="with --watch: seconds between looks at the store (default 2)")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report

    if args.watch:
        from .report.live import serve

        check(0 <= args.port <= 65535, "--port", "a port in [0, 65535] (0: a free one)",
              args.port)
        if (Path(args.path) / "comparison.json").exists():
            raise ConfigError("--watch", "given with a store (a comparison's report is written "
                              "once its runs are done)", args.path)
        check(args.out is None, "--out", "given without --watch (the live report is served, "
              "not written)", args.out)
        serve(args.path, host=args.host, port=args.port, every=args.every,
              on_ready=lambda url: print(f"firepbt: live report of {args.path} at {url} "
                                         "(Ctrl-C stops it)", flush=True))
        return 0
    page = report(args.path, args.out)
    print(f"report: {page}")
    return 0


# -- compare ---------------------------------------------------------------------------------

def _compare_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("task", help="a built-in task (see 'firepbt tasks'), or with --factory the "
                   "comparison's name")
    _protocol_arguments(c, "the task's compare settings, see 'firepbt tasks', or the preset's")
    c.add_argument("--out", required=True, help="folder for the runs and the table")
    c.add_argument("--methods", nargs="+", default=["random", "pbt", "fire"],
                   help="methods to compare (default random pbt fire)")
    c.add_argument("--seeds", type=_int("seeds"), nargs="+", default=[0, 1, 2],
                   help="one run per method, worker count and seed (default 0 1 2)")
    c.add_argument("--workers", type=_positive_int("workers"), default=None,
                   help="workers of random search and PBT (default: the task's compare "
                   "settings, see 'firepbt tasks', or the preset's)")
    c.add_argument("--fire-workers", type=_int("fire_workers"), nargs="+", default=None,
                   help="FIRE PBT worker counts (e.g. 22 36 50; default: --workers)")
    c.add_argument("--jobs", type=_positive_int("jobs"), default=2,
                   help="runs at a time (default 2; on the CPU, one core each)")


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import plan, run_comparison
    from .devices import resolve_device
    from .tasks import get_task

    if args.factory is not None:  # your own trainable: the configuration's defaults
        _code(args, "fire")  # importable, with a space: checked now, not in every child
        args.objective = args.data_dir = None
        d = _custom_settings(args)
        on_device = False
    else:
        task = get_task(args.task)
        # the task's comparison settings ('firepbt tasks'), or its preset's, unless given
        d = task.settings(args.preset, args.steps, comparison=True)
        if not task.on_device and args.device not in ("auto", "cpu"):
            raise ConfigError("device", f"cpu or auto for task {task.name!r} (it trains on the "
                              "CPU)", args.device)
        on_device = task.on_device
    workers = _first(args.workers, d["workers"])
    specs = plan(args.task, args.methods, args.seeds, workers, args.fire_workers or [workers],
                 d["steps"], _first(args.ready_interval, d["ready_interval"]),
                 _first(args.eval_interval, d["eval_interval"]),
                 _first(args.max_eval_steps, d.get("max_eval_steps")),
                 _min_steps(_first(args.min_steps_before_eval, d.get("min_steps_before_eval"),
                                   0)), d.get("n_subpopulations"),
                 resolve_device(args.device) if on_device or args.device != "auto"
                 else "cpu", args.factory)
    for s in specs:  # validate every run before starting any
        s.config()
    t0 = time.time()

    def update(done: int, total: int, last: str) -> None:
        note = f" (last: {last})" if last else ""
        print(f"[{time.time() - t0:7.0f} s] {done}/{total} runs done{note}", flush=True)

    out = Path(args.out)
    print(f"firepbt compare: {len(specs)} runs into {out}, {args.jobs} at a time; "
          "rerun the same command to resume")
    run_comparison(out, specs, args.jobs, update)
    print((out / "table1.md").read_text())
    print(f"wall time {time.time() - t0:.0f} s; table in {out / 'table1.md'} and "
          f"{out / 'table1.csv'}")
    return 0


# -- the commands, and main ------------------------------------------------------------------

class Command(NamedTuple):
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    action: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "run": Command("run a new experiment on a built-in task or your own trainable (--factory)",
                   _run_arguments, cmd_run),
    "resume": Command("continue a stopped or killed experiment (or extend a finished one: "
                      "--steps)", _resume_arguments, cmd_resume),
    "status": Command("progress and best member of a store", _status_arguments, cmd_status),
    "tasks": Command("list the built-in tasks", _tasks_arguments, cmd_tasks),
    "lineage": Command("the schedule and copy chain behind the top point (what replay "
                       "retrains and the report shows)", _lineage_arguments, cmd_lineage),
    "report": Command("write an HTML report (figures embedded) for a store or a comparison "
                      "folder", _report_arguments, cmd_report),
    "replay": Command("retrain the top schedule from scratch on the full training set and "
                      "report its test score (paper 4.1)", _replay_arguments, cmd_replay),
    "compare": Command("methods x worker counts x seeds, resumable; writes the paper's Table 1 "
                       "(Markdown and CSV)", _compare_arguments, cmd_compare),
}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="firepbt", description="FIRE PBT, PBT and random search for "
                "hyperparameter schedules.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help))
    return p


def reference_markdown() -> str:
    """The command-line reference page (``docs/site/cli.md``): every command's ``--help``, from
    the parser itself (the documentation's build writes it; a test checks the committed page
    is what the parser says)."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # (argparse wraps help to the terminal's width)
    try:
        return _reference()
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


def _reference() -> str:
    parser = _parser()
    parts = ["# Command-line reference", "",
             "Generated from the parser (`firepbt COMMAND --help` prints the same).", "",
             "<!-- not run: help text, as the parser prints it -->", "```text",
             parser.format_help().rstrip(), "```", ""]
    for name, command in COMMANDS.items():
        sub = _Parser(prog=f"firepbt {name}", description=command.help)
        command.arguments(sub)
        parts += [f"## firepbt {name}", "", "<!-- not run: help text, as the parser prints it -->",
                  "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = _parser().parse_args(argv)
    _log_warnings()
    previous = None
    with contextlib.suppress(ValueError):  # (not the main thread: SIGTERM stays as it is)
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stopped(args: argparse.Namespace, what: str) -> str:
    """The line a run stopped by a signal prints: what continues it, with its real path."""
    if args.command == "compare":
        return f"firepbt: {what}; the same 'firepbt compare' command continues it"
    store = getattr(args, "store", None)
    if args.command in ("run", "resume") and store is not None:
        factory = getattr(args, "factory", None)
        more = f" --factory {shlex.quote(factory)}" if factory else ""
        return (f"firepbt: {what}; 'firepbt resume {shlex.quote(str(store))}{more}' continues "
                "from the last round")
    return f"firepbt: {what}"


def _main(args: argparse.Namespace) -> int:
    try:
        return int(COMMANDS[args.command].action(args) or 0)
    except (ConfigError, StoreError, MissingExtra) as exc:
        print(f"firepbt: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0
    except OSError as exc:  # a path the user gave cannot be read or written
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"firepbt: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except FirePBTError as exc:
        print(f"firepbt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(_stopped(args, "interrupted"), file=sys.stderr)
        return 130
    except Terminated:
        print(_stopped(args, "terminated (SIGTERM)"), file=sys.stderr)
        return 143


def _log_warnings() -> None:
    """The library's warnings (e.g. a checkpoint fallback on resume) as one stderr line each."""
    import logging

    log = logging.getLogger("firepbt")
    if not any(getattr(h, "_firepbt_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("firepbt: warning: %(message)s"))
        setattr(handler, "_firepbt_cli", True)  # noqa: B010 - marks the CLI's own handler
        log.addHandler(handler)
        log.propagate = False


# -- from arguments to a configuration --------------------------------------------------------

def _json(obj: Any) -> str:
    """JSON with non-finite numbers as null (bare NaN is not JSON)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(obj), allow_nan=False)


def _custom_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``run --factory``: the configuration's own defaults, and no built-in task's options."""
    for name, given in (("objective", args.objective), ("data_dir", args.data_dir),
                        ("preset", args.preset)):
        check(given is None, name, "given only for a built-in task (not with --factory)", given)
    fields = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    d = {k: fields[k] for k in ("workers", "steps", "ready_interval", "eval_interval")}
    return {**d, **({} if args.steps is None else {"steps": args.steps})}


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    from .tasks import get_task

    if getattr(args, "factory", None) is not None:
        return _custom_config(args)
    task = get_task(args.task)
    d = task.settings(args.preset, args.steps)
    given = {"objective": args.objective, "data_dir": args.data_dir}
    options = task.check_options({k: v for k, v in given.items() if v is not None})
    schedule = None
    if args.schedule is not None:
        schedule = _schedule_arg(args, task.space, args.steps or d["steps"])
    return _config(args, task.name, d, options, schedule)


def _custom_config(args: argparse.Namespace) -> ExperimentConfig:
    from .trainable import load_experiment

    _factory, space, _param = load_experiment(args.factory)
    d = _custom_settings(args)
    schedule = None
    if args.schedule is not None:
        schedule = _schedule_arg(args, space, d["steps"])
    return _config(args, args.task, d, {}, schedule)


def _config(args: argparse.Namespace, task: str, d: dict[str, Any], options: dict[str, Any],
            schedule: dict[str, Any] | None) -> ExperimentConfig:
    return ExperimentConfig(
        task=task, method=args.method, workers=args.workers or d["workers"],
        steps=args.steps or d["steps"], ready_interval=args.ready_interval or d["ready_interval"],
        eval_interval=args.eval_interval or d["eval_interval"], seed=args.seed,
        quantile=args.quantile, factors=_parse_factors(args.factors), p_stat=args.p_stat,
        max_eval_steps=_first(args.max_eval_steps, d.get("max_eval_steps")),
        min_steps_before_eval=_min_steps(_first(args.min_steps_before_eval,
                                                d.get("min_steps_before_eval"), 0)),
        n_subpopulations=_first(args.subpopulations, d.get("n_subpopulations")),
        task_options=options, schedule=schedule, hand_tuned=_hand_tuned_arg(args),
        executor=args.executor, threads=args.threads,
        device=args.device, gpus_per_worker=args.gpus_per_worker,
        checkpoint_interval=args.checkpoint_interval, time_budget=args.time_budget,
        round_timeout=args.round_timeout)


def _hand_tuned_arg(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--warmup-fraction``, ``--decay-at``, ``--decay-factor``: the hand-tuned schedule's
    shape (the configuration checks them, and that the method is random search)."""
    given = {"warmup_fraction": args.warmup_fraction, "decay_fractions": args.decay_at,
             "decay_factor": args.decay_factor}
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def _min_steps(value: Any) -> int | tuple[int, ...]:
    """One int (for every parent sub-population) or one per sub-population."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if len(value) == 1 else tuple(int(v) for v in value)
    return int(value)


def _schedule_arg(args: argparse.Namespace, space: Any, steps: int) -> dict[str, Any]:
    """``--schedule FILE``: a schedule for random search over the task's hyperparameters, with
    valid values, as long as the run."""
    from .schedule import Schedule

    what = "a JSON file written by 'firepbt lineage --json'"
    check(args.method == "random", "schedule", "given only with --method random (PBT and FIRE "
          "PBT find their own schedules)", args.schedule)
    path = Path(args.schedule)
    check(path.is_file(), "schedule", what, args.schedule)
    try:
        sched = Schedule.from_json(path.read_text())
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError,
            RecursionError) as exc:
        raise ConfigError("schedule", what, f"{args.schedule} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    from .controllers.random_search import check_schedule

    check_schedule(space, sched, steps)
    out: dict[str, Any] = json.loads(sched.to_json())
    return out


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _parse_factors(items: list[str] | None) -> Any:
    """``["0.8", "1.25"]`` -> (0.8, 1.25); ``["lr=0.5,2", "epsilon_eta=0.8,1.2"]`` -> a mapping."""
    if items is None:
        return None
    if all("=" in i for i in items):
        out = {}
        for item in items:
            name, _, values = item.partition("=")
            check(name not in out, "factors", "each hyperparameter named once", items)
            try:
                out[name] = tuple(float(v) for v in values.split(","))
            except ValueError:
                raise ConfigError(f"factors[{name!r}]", "comma-separated floats > 0",
                                  values) from None
        return out
    try:
        return tuple(float(i) for i in items)
    except ValueError:
        raise ConfigError("factors", "floats > 0, or NAME=F1,F2,... per hyperparameter",
                          items) from None


def _default_store(config: ExperimentConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.task}-{config.method}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _schedule_lines(sched: Any) -> list[str]:
    """A schedule as lines, ``  {hparams} x steps``; a linear warm-up as one line."""
    from .schedule import display_rows

    return [f"  {label or _fmt(hp)} x {steps}" for label, hp, steps in display_rows(sched)]


def _fmt(hparams: Any) -> str:
    if not hparams:
        return "{}"
    return "{" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in hparams.items()) + "}"


def _code(args: argparse.Namespace, method: str) -> tuple[Any, Any, str | None] | None:
    """``--factory``: (factory, space, schedule_param; the latter for random search only)."""
    if getattr(args, "factory", None) is None:
        return None
    from .trainable import load_experiment

    factory, space, param = load_experiment(args.factory)
    return factory, space, param if method == "random" else None


def _custom_kwargs(code: tuple[Any, Any, str | None] | None) -> dict[str, Any]:
    """The keyword arguments of :func:`~firepbt.runner.run_store` for ``--factory``."""
    if code is None:
        return {}
    factory, space, param = code
    return {"factory": factory, "space": space, "schedule_param": param}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
