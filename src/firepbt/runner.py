"""The synchronous runner (paper 4.1.1): train a round, record, decide, apply, checkpoint.

Data flow, one way: executor trains the active workers for ``ready_interval`` steps ->
the runner records their evaluations -> the controller decides from them -> the runner applies
the decisions in order through the executor (copy weights, set hyperparameters) -> the round
(evaluations, decisions, the controller's state, every worker's state, checkpoint) is committed
to the store. A killed run loses at most the round in flight; :func:`resume_store` continues
from the last committed round and, the local executor being deterministic, ends exactly where
an uninterrupted run would.

The runner holds each worker's :class:`~firepbt.records.WorkerState` and replaces it as the
decisions apply. It writes the store and never reads it the way reports do: the public entry
points that return a run's :class:`~firepbt.results.Summary` are :func:`firepbt.run` and
:func:`firepbt.resume` (:mod:`firepbt.api`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import deadlines
from .build import (
    ResolvedTask,
    build_controller,
    is_builtin,
    main_param,
    make_executor,
    resolve_task,
    run_space,
    subpopulations,
    worker_seeds,
)
from .config import ExperimentConfig
from .errors import ConfigError, StoreError, check
from .executors import Executor, TrainJob, TrainResult
from .executors.base import tested_value
from .records import (
    MEMBER,
    AssignEvaluator,
    Decision,
    EvaluatorSuccess,
    Exploit,
    FinalMember,
    RunFacts,
    StopEvaluator,
    WorkerState,
)
from .selection import best_member, observed_score, running_top, score_of
from .space import Space
from .store import (
    DEVICE,
    DEVICE_LAST,
    ELAPSED,
    ENDED,
    FINAL,
    KEEP_CHECKPOINTS,
    LAST_ERROR,
    LAUNCH,
    THREADS_USED,
    RoundRow,
    Store,
)
from .threads import training_threads
from .tracking import TrackerSet, callbacks_of
from .trainable import TrainableFactory, load_experiment

ProgressFn = Callable[[int, int, dict[str, Any]], None]


def copy_seed(seed: int, round_: int, index: int) -> int:
    """The data-stream seed a worker receives with a copy: decision ``index`` of round
    ``round_`` (deterministic, so a resumed run re-seeds exactly as the uninterrupted one;
    independent of the worker seeds, which come from another branch of the seed sequence)."""
    return int(np.random.SeedSequence([seed, 2, round_, index]).generate_state(1)[0])


def _same_device(name: str) -> str:
    return "cuda:0" if name == "cuda" else name  # "cuda" is the first GPU


class Runner:
    """Runs one experiment against a store. Use :func:`run` / :func:`resume` in user code."""

    def __init__(self, config: ExperimentConfig, task: ResolvedTask, store: Store, *,
                 executor: Executor | None = None,
                 progress: ProgressFn | None = None, ray_address: str | None = None,
                 tracking: TrackerSet | None = None) -> None:
        self.config = config
        self.store = store
        self.task = task
        self.controller = build_controller(config, task.space, task.schedule_param)
        self.executor: Executor = (executor if executor is not None
                                   else make_executor(config, task.factory, ray_address))
        self.device_used = task.device  # where a built-in task trains, in words
        self.progress = progress
        # callbacks after each committed round (firepbt.tracking)
        self.tracking = tracking if tracking is not None else TrackerSet(())
        self.workers: dict[int, WorkerState] = {}
        self.best_score = -math.inf
        self.round = 0
        self._checkpoint_verified = False
        self.elapsed = 0.0  # seconds the experiment's rounds took, over its runs (meta elapsed)
        # a checkpoint being written while the next round trains: (round, wait -> its name)
        self._pending: tuple[int, Callable[[], str]] | None = None

    # -- set-up --------------------------------------------------------------------------

    def _setup_executor(self, n_workers: int) -> None:
        self.executor.setup(worker_seeds(self.config.seed, n_workers))

    def start_new(self) -> None:
        specs = self.controller.start()
        self.workers = {s.worker: s for s in specs}
        self._setup_executor(len(specs))
        task, cfg = self.task, self.config
        facts = RunFacts(
            mode=self.executor.mode, executor=self.executor.name,  # (what "auto" chose)
            best_candidates=tuple(self.controller.best_candidates()),
            subpopulations=subpopulations(specs), main_param=main_param(task.schedule_param,
                                                                        specs),
            schedule_param=task.schedule_param if cfg.method == "random" else None,
            space=tuple(run_space(cfg, task.space).describe()),
            reinforcement=task.reinforcement)
        self.store.start_run(facts, self.workers)
        self.store.set_meta(DEVICE, self.device_used)
        self.store.set_meta(DEVICE_LAST, self.device_used)
        self.round = 0

    def restore(self) -> None:
        """Continue from the last committed round whose checkpoint is readable and matches its
        digest; a damaged last checkpoint falls back on the one before (said in a warning on
        the ``firepbt`` logger), and the rounds after it are discarded and trained again."""
        self.store.check_integrity()
        rows = [r for r in self.store.rounds() if r.checkpoint is not None]
        if self.store.last_round() is None or not rows:
            # nothing committed yet, or killed before the first checkpoint was bound: start again
            self.store.discard_after(0)
            self.start_new()
            return
        states = chosen = None
        problems = []
        wanted = set(rows[-1].workers)
        for row in reversed(rows[-KEEP_CHECKPOINTS:]):
            assert row.checkpoint is not None  # (rows with a checkpoint only)
            try:
                states = self.store.read_checkpoint(row.checkpoint)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if set(states) != wanted:  # every worker's state, no other (an edited file)
                problems.append(f"checkpoint {row.checkpoint} holds the states of workers "
                                f"{sorted(states)[:8]}..., not of the run's {len(wanted)}")
                states = None
                continue
            chosen = row
            break
        if chosen is None or states is None:
            why = "; ".join(problems) or "no round has a checkpoint"
            raise StoreError(f"store {str(self.store.path)!r} has no usable checkpoint to resume "
                             f"from ({why})")
        if problems:
            logging.getLogger("firepbt").warning(
                "%s; resuming from round %d, the rounds after it are trained again",
                problems[0], chosen.round)
        self.store.discard_after(chosen.round)
        self.elapsed = float(self.store.meta_json(ELAPSED) or 0.0)
        self.controller.start()  # layout; state is replaced below
        try:
            self.controller.load_state_dict(chosen.controller_state, self._history())
        except ValueError as exc:  # the state and the recorded evaluations disagree
            raise StoreError(f"store {str(self.store.path)!r}: the controller's state of round "
                             f"{chosen.round} does not match its evaluations ({exc})") from None
        self.workers = dict(chosen.workers)
        self.best_score = chosen.best_score
        self._setup_executor(len(self.workers))
        self.executor.load_states(states)
        self.round = chosen.round
        # resumed on another device (resume --device): the store says both
        said, last = self.store.meta(DEVICE), self.store.meta(DEVICE_LAST)
        more = self.round < self.config.steps // self.config.ready_interval  # rounds to train
        if more and _same_device(last or "") != _same_device(self.device_used):
            self.store.set_meta(DEVICE, f"{said}, then {self.device_used} from round "
                                f"{self.round + 1}")
            self.store.set_meta(DEVICE_LAST, self.device_used)

    # -- the loop ------------------------------------------------------------------------

    def run(self, max_rounds: int | None = None) -> None:
        """Train rounds until the run's end, ``max_rounds`` of them, or its time budget."""
        cfg = self.config
        done_here = 0
        if self.store.meta_json(LAST_ERROR) is not None:
            self.store.set_meta(LAST_ERROR, "null")  # tried again
        if self.store.meta_json(ENDED) is not None:
            self.store.set_meta(ENDED, "null")  # continued (e.g. with a larger budget)
        with training_threads(self._threads(), cfg.executor != "ray"):
            try:
                self.tracking.start(self.store, cfg, self.executor.mode,
                                    self.controller.best_candidates(), self.round)
                while self.round < cfg.rounds:
                    if max_rounds is not None and done_here >= max_rounds:
                        break
                    if cfg.time_budget is not None and self.elapsed >= cfg.time_budget:
                        self._end_on_budget()
                        break
                    self._round(self.round + 1)
                    done_here += 1
            except BaseException:
                self._bind_after_failure()
                raise
            finally:
                self.tracking.close()
            self._bind_checkpoint()
        if self.round >= cfg.rounds and not math.isfinite(self.best_score):
            logging.getLogger("firepbt").warning(
                "no evaluation of a best-effort member was finite (NaN or inf throughout): the "
                "networks diverged, or evaluate() returns NaN; there is no best member")

    def _threads(self) -> int | None:
        """PyTorch's threads for this process's training: the configuration's, or when it
        leaves them to firepbt (None) the count the experiment's first run chose, kept in the
        store (meta ``threads_used``) - floating-point sums depend on it, so a resume on a
        machine with other free cores still ends exactly where an uninterrupted run would."""
        cfg = self.config
        if cfg.threads is not None or cfg.executor == "ray":
            return cfg.threads
        stored = self.store.meta(THREADS_USED)
        if stored is not None:
            return int(stored)
        from .threads import auto_threads

        n = auto_threads()
        if not n:  # OMP_NUM_THREADS decides: the count it gives
            import torch

            n = torch.get_num_threads()
        self.store.set_meta(THREADS_USED, str(n))
        return n

    def _end_on_budget(self) -> None:
        """The time budget is spent: the run ends before its next round, and says so (the
        store's meta ``ended``; ``status`` and the summary read it)."""
        cfg = self.config
        self._bind_checkpoint()
        self.store.set_meta(ENDED, json.dumps({
            "reason": "time_budget", "budget": cfg.time_budget, "elapsed": self.elapsed,
            "round": self.round}))
        logging.getLogger("firepbt").warning(
            "the time budget of %g s is spent (the rounds took %.1f s): the run ends after "
            "round %d of %d; resume with a larger budget continues it", cfg.time_budget,
            self.elapsed, self.round, cfg.rounds)

    def _bind_checkpoint(self) -> None:
        """Bind the checkpoint that was being written (executors with ``begin_checkpoint``) to
        its round, committed by now; the first one this run writes is read back."""
        if self._pending is None:
            return
        r, wait = self._pending
        try:
            name = wait()
        except Exception:
            self._pending = None
            raise
        self._pending = None  # (an interrupt while waiting leaves it for _bind_after_failure)
        self.store.attach_checkpoint(r, name)
        self._verify(name)

    def _bind_after_failure(self) -> None:
        """The same while the run fails: a checkpoint whose round was committed is bound if it
        can be; nothing raised here hides the failure (a checkpoint that cannot be bound stays
        unbound, said in a warning: resume continues from the one before)."""
        if self._pending is None:
            return
        r = self._pending[0]
        last = self.store.last_round()
        if last is None or last.round < r:  # its round was never committed
            self._pending = None
            return
        try:
            self._bind_checkpoint()
        except Exception as exc:  # noqa: BLE001 - the run's own failure is what is raised
            self._pending = None
            logging.getLogger("firepbt").warning(
                "the checkpoint of round %d could not be bound (%s); resume continues from the "
                "one before", r, exc)

    def _history(self) -> dict[int, list[tuple[int, float]]]:
        """Every observation the controller was given, from the store's evaluations."""
        mode = self.store.run_facts.mode
        out: dict[int, list[tuple[int, float]]] = {}
        for _r, w, s, v in self.store.evaluations():  # in worker, step order
            out.setdefault(w, []).append((s, observed_score(v, mode)))
        return out

    def _verify(self, checkpoint: str) -> None:
        if not self._checkpoint_verified:  # what this run writes, it must read back
            self.store.read_checkpoint(checkpoint)
            self._checkpoint_verified = True

    def _jobs(self, r: int) -> list[TrainJob]:
        cfg = self.config
        start, stop = (r - 1) * cfg.ready_interval, r * cfg.ready_interval
        candidates = set(self.controller.best_candidates())
        jobs = []
        for w in sorted(self.workers):
            st = self.workers[w]
            if not st.active:
                continue
            jobs.append(TrainJob(w, start, tuple(st.pieces(start, stop)), cfg.eval_interval,
                                 evaluate_start=(r == 1 and st.role == MEMBER),
                                 wants_test=w in candidates))
        return jobs

    def _round(self, r: int) -> None:
        cfg = self.config
        step = r * cfg.ready_interval
        began = deadlines.clock()
        jobs = self._jobs(r)

        def tick(n: int) -> None:
            if self.progress is not None:
                self.progress((r - 1) * cfg.ready_interval, cfg.steps,
                              {"advance": n / max(1, len(jobs)), "round": r})

        if self.executor.handles_round_timeout:  # Ray: it retires members past the deadline
            results = self.executor.train_round(jobs, self.best_score, tick)
        else:
            with deadlines.round_deadline(cfg.round_timeout, r, self._training_now):
                results = self.executor.train_round(jobs, self.best_score, tick)
        self._bind_checkpoint()  # the last round's, written before this round trained
        for w, st in self.workers.items():  # a member on a schedule: what it trains with now
            if st.schedule is not None and st.active:
                self.workers[w] = dataclasses.replace(st, hparams=st.hparams_at(step - 1))
        mode = self.executor.mode
        observations = {res.worker: [(s, observed_score(v, mode)) for s, v in res.evaluations]
                        for res in results}
        # the running best over best-effort members, in (step, worker) order; a test is kept
        # only where it was a new running best: executors with test_best test the round's
        # last one (its best point; the run's top point is always one of those), the others
        # test a superset of those points
        candidates = set(self.controller.best_candidates())
        self.best_score, tops = running_top(
            ((s, res.worker, score_of(v, mode)) for res in results if res.worker in candidates
             for s, v in res.evaluations), self.best_score)
        new_best = {(w, s): None for s, w, _sc in tops}
        best_test = None
        if new_best:  # the round's best point, tested while the round is decided (Ray)
            w_best, s_best = list(new_best)[-1]
            if any(res.held for res in results if res.worker == w_best):  # (if testable)
                wait = self.executor.test_best(w_best, s_best)
                if wait is not None:
                    best_test = (w_best, s_best, wait)
        t0 = time.process_time()
        decisions = self.controller.decide(step, observations)
        decide_seconds = time.process_time() - t0
        # the final best-effort member is tested on the network that was evaluated at the last
        # step, i.e. before the last round's copies are applied
        final = self._final(results) if r == cfg.rounds else None
        self._apply(decisions, r)
        checkpoint = None
        if r % cfg.checkpoint_interval == 0 or r == cfg.rounds:
            wait_name = self.executor.begin_checkpoint(self.store, r)
            if wait_name is not None:  # written while the next round trains, bound then
                self._pending = (r, wait_name)
            else:
                checkpoint = self.store.write_checkpoint(r, self.executor.states())
                self._verify(checkpoint)
        else:
            self.executor.mark_round()  # (executors that keep the round's start states)
        tests = [(res.worker, s, v) for res in results for s, v in res.tests
                 if (res.worker, s) in new_best]
        test_seconds = 0.0
        if best_test is not None:
            w_best, s_best, wait = best_test
            value, test_seconds = wait()
            if value is not None:
                tests.append((w_best, s_best, value))
        row = RoundRow(r, step, time.time(), sum(x.train_seconds for x in results),
                       sum(x.eval_seconds for x in results) + test_seconds, decide_seconds,
                       self.controller.state_dict(), dict(self.workers), self.best_score,
                       checkpoint)
        decisions = [*self.executor.take_failures(), *decisions]
        evals = [(res.worker, s, v) for res in results for s, v in res.evaluations]
        elapsed = self.elapsed + (deadlines.clock() - began)
        meta = {ELAPSED: repr(elapsed)}
        if final is not None:
            meta[FINAL] = json.dumps(final.to_dict())
        self.store.commit_round(row, evals, tests, decisions, meta=meta)
        self.elapsed = elapsed
        self.round = r
        self.tracking.round_committed(row, evals, tests, decisions)
        if r == cfg.rounds:
            self._bind_checkpoint()
        if self.progress is not None:
            self.progress(step, cfg.steps, {"round": r, "best": self.best_score,
                                            "done": True})

    def _training_now(self) -> str | None:
        """Who is training, as the round deadline names it."""
        current = self.executor.current
        if current is None:
            return None
        if isinstance(current, int):
            return f"worker {current}"
        return str(current)

    def _apply(self, decisions: list[Decision], r: int) -> None:
        """Apply the decisions in order; every weight copy gives the receiving worker an
        independent copy of the state and a data stream of its own (:func:`copy_seed`)."""
        seed = self.config.seed
        copies: list[tuple[int, int, int]] = []
        ws = self.workers
        for i, d in enumerate(decisions):
            if isinstance(d, Exploit):
                copies.append((d.source, d.worker, copy_seed(seed, r, i)))
                ws[d.worker] = dataclasses.replace(ws[d.worker], hparams=dict(d.new_hparams))
            elif isinstance(d, AssignEvaluator):
                copies.append((d.parent, d.evaluator, copy_seed(seed, r, i)))
                ws[d.evaluator] = dataclasses.replace(ws[d.evaluator], hparams=dict(d.hparams),
                                                      active=True)
            elif isinstance(d, EvaluatorSuccess):
                copies.append((d.evaluator, d.target, copy_seed(seed, r, i)))
                ws[d.evaluator] = dataclasses.replace(ws[d.evaluator], active=False)
            elif isinstance(d, StopEvaluator):
                ws[d.evaluator] = dataclasses.replace(ws[d.evaluator], active=False)
        self.executor.copy_many(copies)  # (in order; some executors send them together)

    def _final(self, results: list[TrainResult]) -> FinalMember | None:
        """The final best-effort member: the best candidate by its evaluation at the last step,
        tested as it is now (before the last round's decisions move any weights)."""
        latest: dict[int, tuple[int, float]] = {}
        candidates = set(self.controller.best_candidates())
        for res in results:
            if res.worker in candidates and res.evaluations:
                latest[res.worker] = res.evaluations[-1]
        if not latest:
            return None
        mode = self.executor.mode
        w = best_member({k: score_of(v, mode) for k, (_s, v) in latest.items()})
        assert w is not None
        step, value = latest[w]
        return FinalMember(w, step, value, self._test_now(w, step), self.workers[w].hparams)

    def _test_now(self, w: int, step: int) -> float | None:
        """Worker ``w`` tested as it is now, as a round's test is taken (:func:`tested_value`)."""
        return tested_value(lambda: self.executor.test(w), w, step)


# -- the public entry points ----------------------------------------------------------------

def new_store_path(path: str | Path) -> Path:
    """The folder a new store would be created in; refused in one line when a store (or
    anything else) is there already."""
    return Store.check_new(path)


def run_store(config: ExperimentConfig, store: str | Path, *,
              factory: TrainableFactory | None = None, space: Space | None = None,
              schedule_param: str | None = None, progress: ProgressFn | bool | None = None,
              max_rounds: int | None = None, ray_address: str | None = None,
              callbacks: Sequence[Any] | None = None, factory_spec: str | None = None) -> Path:
    """A new experiment into a new store (:func:`firepbt.run` says what each argument does);
    returns the store's folder. A run that fails before its first round is committed leaves
    no store behind; after that the store keeps its rounds and says what stopped it. The store
    remembers how the run was started (meta ``launch``): ``factory_spec``, the
    ``module:callable`` the factory was loaded from (``--factory``), and the ``--log`` specs
    among ``callbacks``; :func:`resume_store` takes them again when not given."""
    _check_ray_address(config, ray_address)
    tracking = TrackerSet(callbacks_of(callbacks))
    task = resolve_task(config, factory, space, schedule_param)
    build_controller(config, task.space, task.schedule_param)  # checked before a store exists
    existed = Store.check_new(store).exists()
    st = Store.create(store, config.to_dict())
    st.set_meta(LAUNCH, json.dumps({"factory": factory_spec,
                                    "log": [c for c in callbacks or () if isinstance(c, str)]}))
    runner = None
    bar = _bar(progress, config.steps, 0)
    try:
        runner = Runner(config, task, st, progress=_progress_fn(progress, bar),
                        ray_address=ray_address, tracking=tracking)
        runner.start_new()
        runner.run(max_rounds)
        return st.path
    except Exception as exc:
        # failed before its first round was committed (a refused setting or state, a trainable
        # that raises at once): the store this call created holds nothing worth keeping;
        # after that, the store keeps its rounds and says what stopped it
        committed = st.last_round() is not None
        if committed and not isinstance(exc, (ConfigError, StoreError)):
            _record_error(st, exc)
        if runner is not None:
            runner.executor.close()
            runner = None
        st.close()
        if not committed:
            if existed:  # an empty folder the user made: empty it again
                for child in st.path.iterdir():
                    (shutil.rmtree if child.is_dir() else Path.unlink)(child)
            else:
                shutil.rmtree(st.path, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.stop()
        if runner is not None:
            runner.executor.close()
        st.close()


def resume_store(store: str | Path, *, factory: TrainableFactory | None = None,
                 space: Space | None = None, schedule_param: str | None = None,
                 progress: ProgressFn | bool | None = None, max_rounds: int | None = None,
                 ray_address: str | None = None, device: str | None = None,
                 steps: int | None = None, time_budget: float | None = None,
                 callbacks: Sequence[Any] | None = None) -> Path:
    """Continue a stopped or killed experiment from its last completed round
    (:func:`firepbt.resume` says what each argument does); returns the store's folder. How
    the run was started (:func:`run_store`) fills in what is not given: the factory's
    ``module:callable`` for your own trainable and, when ``callbacks`` is None, its ``--log``
    specs; a tracker the run was started with and that this resume does not give is said in a
    warning."""
    st = Store.open(store)
    launch = st.meta_json(LAUNCH) or {}
    remembered = [str(x) for x in launch.get("log") or ()]
    if callbacks is None:
        callbacks = remembered
    missing = [x for x in remembered if x not in callbacks]
    if missing:
        logging.getLogger("firepbt").warning(
            "this run was started with --log %s, which this resume does not log to: give "
            "it again (--log) to catch it up", " --log ".join(missing))
    try:
        tracking = TrackerSet(callbacks_of(callbacks))
    except BaseException:
        st.close()
        raise
    runner = None
    bar = None
    try:
        config = ExperimentConfig.from_dict(st.config)
        if steps is not None and steps != config.steps:
            config = extended(config, steps)
            st.set_config(config.to_dict(), new_end=True)
        if time_budget is not None and time_budget != config.time_budget:
            config = dataclasses.replace(config, time_budget=time_budget)  # (validated)
            st.set_config(config.to_dict())
        if device is not None:
            config = dataclasses.replace(config, device=device)
        _check_ray_address(config, ray_address)
        if factory is None and launch.get("factory") and not is_builtin(config.task):
            factory, space, code_param = load_experiment(str(launch["factory"]))
            schedule_param = schedule_param or (code_param if config.method == "random" else None)
        task = resolve_task(config, factory, space, schedule_param)
        runner = Runner(config, task, st, progress=_progress_fn(progress, None),
                        ray_address=ray_address, tracking=tracking)
        runner.restore()
        bar = _bar(progress, config.steps, runner.round * config.ready_interval)
        if bar is not None:
            runner.progress = bar
        runner.run(max_rounds)
        return st.path
    except Exception as exc:
        if not isinstance(exc, (ConfigError, StoreError)):  # refusals write nothing
            _record_error(st, exc)
        raise
    finally:
        if bar is not None:
            bar.stop()
        if runner is not None:
            runner.executor.close()
        st.close()


def extended(config: ExperimentConfig, steps: int) -> ExperimentConfig:
    """``config`` run to ``steps`` steps per worker (``resume(..., steps=)``), refused in one
    line where it cannot be: random search (schedules fixed to the run's length), fewer
    steps, steps that are no multiple of the ready interval."""
    check(config.method != "random", "steps", "the run's own for random search (its members "
          f"follow schedules fixed to {config.steps} steps)", steps)
    check(isinstance(steps, int) and steps > config.steps, "steps",
          f"more than the run's {config.steps} to extend it", steps)
    return dataclasses.replace(config, steps=steps)  # (validated: ready_interval)


def _check_ray_address(config: ExperimentConfig, ray_address: str | None) -> None:
    check(ray_address is None or config.executor == "ray", "ray_address",
          f"given only with executor 'ray' (executor is {config.executor!r})", ray_address)


def _record_error(st: Store, exc: BaseException) -> None:
    """Say in the store what stopped a run (``status`` shows it; a successful resume clears
    it)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    cause = [ln for ln in (getattr(exc, "traceback_text", "") or "").splitlines() if ln.strip()]
    if cause:  # a trainable's error: its own exception line
        first = f"{first.rstrip(':')}: {cause[-1].strip()[:300]}"
    last = st.last_round()
    with contextlib.suppress(Exception):  # a damaged store cannot take it: the error stands
        st.set_meta(LAST_ERROR, json.dumps({
            "round": None if last is None else last.round + 1,
            "error": f"{type(exc).__name__}: {first}"}))


def _bar(progress: ProgressFn | bool | None, total: int, start: int) -> Any:
    """The progress bar the Python API shows itself (None when given a function, or off)."""
    from .progress import ProgressBar, default_enabled

    if progress is None:
        progress = default_enabled()
    if progress is True:
        return ProgressBar(True, total, start)
    return None


def _progress_fn(progress: ProgressFn | bool | None, bar: Any) -> ProgressFn | None:
    """What the runner calls: the API's own bar, else the user's function (a bool is no
    function)."""
    if bar is not None:
        return cast(ProgressFn, bar)
    return None if progress is None or isinstance(progress, bool) else progress


