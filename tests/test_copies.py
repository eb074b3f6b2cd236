"""Copies between workers (exploit, evaluator assignment, evaluator success): the destination
gets an independent copy of the source's state and a data stream of its own."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from firepbt import open_experiment
from firepbt.executors import BestPoint, LocalExecutor, TrainJob
from firepbt.executors.local import run_job
from firepbt.supervised import SupervisedData, SupervisedTrainable
from firepbt.trainable import function_trainable


def _readme_idiom():
    """The trainable of examples/custom_trainable.py (the README's idiom): ``state_dict``
    returns the module's and optimizer's own state dicts, i.e. live tensors."""
    path = Path(__file__).resolve().parents[1] / "examples" / "custom_trainable.py"
    spec = importlib.util.spec_from_file_location("custom_trainable_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SineRegression


ReadmeIdiom = _readme_idiom()


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def _storages(t):
    tensors = [*t.model.parameters(), *_tensors(t.opt.state)]
    return {x.untyped_storage().data_ptr() for x in tensors}


def test_a_copy_shares_no_tensor_with_its_source():
    ex = LocalExecutor(ReadmeIdiom)
    ex.setup({0: 0, 1: 1})
    for w in (0, 1):  # momentum buffers exist once the optimizer has stepped
        ex.trainables[w].train({"lr": 0.05, "weight_decay": 1e-4}, 3)
    ex.copy(0, 1, seed=123)
    src, dst = ex.trainables[0], ex.trainables[1]
    assert not _storages(src) & _storages(dst)
    # and the copy is exact: same weights and momentum
    for a, b in zip(src.model.parameters(), dst.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # training the destination leaves the source untouched
    before = [p.detach().clone() for p in src.model.parameters()]
    bufs = [b.clone() for b in _tensors(src.opt.state)]
    dst.train({"lr": 0.05, "weight_decay": 1e-4}, 5)
    assert all(torch.equal(a, b) for a, b in zip(before, src.model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(bufs, _tensors(src.opt.state), strict=True))


def test_the_best_point_of_a_round_is_tested_on_its_own_weights():
    """run_job keeps the state at the round's best point while training goes on: with a
    trainable whose state_dict holds live tensors, the kept state must not follow training."""

    class Climber:  # w rises by lr per step; the objective peaks at w = 5; test() returns w
        def __init__(self, seed):
            self.w = torch.zeros(1)

        def train(self, hparams, steps):
            self.w += hparams["lr"] * steps  # in place: a live state_dict follows it

        def evaluate(self):
            return float(-(self.w - 5.0) ** 2)

        def test(self):
            return float(self.w)

        def state_dict(self):
            return {"w": self.w}

        def load_state_dict(self, state):
            self.w.copy_(state["w"])

    job = TrainJob(0, 0, (({"lr": 1.0}, 10),), eval_interval=1, wants_test=True)
    best = BestPoint(float("-inf"))
    climber = Climber(0)
    res = run_job(climber, job, best, "max")
    assert dict(res.evaluations)[5] == 0.0
    assert best.test(0, 5)[0] == 5.0  # tested at w = 5, not at the end of the round (w = 10)
    assert float(climber.w) == 10.0  # and left where training left it


def test_a_round_takes_one_test_at_its_best_point(tmp_path):
    """Only the round's best point is tested (was: every best-effort member whose best point
    beat the running best, i.e. nearly every member early in a run), and the stored test is
    the one of the run's top validation point, with every executor."""
    from firepbt import ExperimentConfig, run
    from firepbt.store import Store

    calls = []

    class Counted(SupervisedTrainable):
        def test(self):
            calls.append(1)
            return super().test()

    def make(seed):
        g = torch.Generator().manual_seed(1)
        x, xt = torch.randn(400, 4, generator=g), torch.randn(200, 4, generator=g)
        data = SupervisedData(x[:300], (x[:300, 0] > 0).long(), x[300:], (x[300:, 0] > 0).long(),
                              xt, (xt[:, 0] > 0).long())
        return Counted(seed, model=nn.Linear(4, 2), data=data, batch_size=20)

    from firepbt import LogUniform, Space

    tests = {}
    for executor in ("local", "vectorized"):
        calls.clear()
        cfg = ExperimentConfig(task="custom", method="pbt", workers=6, steps=60,
                               ready_interval=20, eval_interval=5, seed=1, executor=executor)
        run(cfg, tmp_path / executor, factory=make,
            space=Space({"lr": LogUniform(1e-2, 1.0)}), progress=False)
        st = Store.open(tmp_path / executor, readonly=True)
        stored = st.tests()
        rounds = len({r for r, *_ in stored})
        st.close()
        assert len(stored) == rounds <= 3 and len(calls) == rounds + 1  # + the final member's
        tests[executor] = stored
        with open_experiment(tmp_path / executor) as exp:
            top = exp.top()
            assert top is not None and top.test is not None
    assert tests["local"] == tests["vectorized"]


def _supervised(seed: int) -> SupervisedTrainable:
    data = SupervisedData(torch.randn(1000, 4, generator=torch.Generator().manual_seed(0)),
                          torch.zeros(1000, dtype=torch.long), torch.randn(10, 4),
                          torch.zeros(10, dtype=torch.long))
    return SupervisedTrainable(seed, model=nn.Linear(4, 2), data=data, batch_size=50)


def test_after_a_copy_the_receiver_draws_its_own_batches_deterministically():
    def copied(seed):
        ex = LocalExecutor(_supervised)
        ex.setup({0: 10, 1: 11})
        ex.trainables[0].train({"lr": 0.1}, 7)
        ex.copy(0, 1, seed=seed)
        return ex.trainables[0], ex.trainables[1]

    src, dst = copied(99)
    a = [src.next_batch() for _ in range(30)]  # across an epoch boundary (20 batches)
    b = [dst.next_batch() for _ in range(30)]
    assert not any(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # deterministic: the same copy with the same seed draws the same batches (exact resume)
    _, again = copied(99)
    assert all(torch.equal(x, again.next_batch()) for x in b)
    # the stream is part of the state: a checkpoint taken after the copy resumes it exactly
    _, d2 = copied(99)
    state = copy.deepcopy(d2.state_dict())
    fresh = _supervised(11)
    fresh.load_state_dict(state)
    assert all(torch.equal(d2.next_batch(), fresh.next_batch()) for _ in range(30))


def test_function_trainable_copies_get_their_own_generators():
    def init(seed):
        return {"w": torch.zeros(1), "gen": torch.Generator().manual_seed(seed),
                "aug": [torch.Generator().manual_seed(seed + 1)]}

    def train(state, hparams, steps):
        state["w"] += torch.rand(steps, generator=state["gen"]).sum()

    ex = LocalExecutor(function_trainable(init, train, lambda st: float(st["w"][0])))
    ex.setup({0: 1, 1: 2})
    ex.copy(0, 1, seed=5)
    src, dst = ex.trainables[0].state, ex.trainables[1].state
    assert torch.equal(src["w"], dst["w"])
    for a, b in ((src["gen"], dst["gen"]), (src["aug"][0], dst["aug"][0])):
        assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_function_trainable_loads_tensors_in_lists_and_tuples_in_place():
    """A state loaded from a store (CPU tensors) or another member goes into the trainable's
    own tensors, in lists and tuples too: on a GPU they stay there (tests/test_gpu.py)."""
    def init(seed):
        return {"w": torch.zeros(2), "ws": [torch.zeros(2), torch.ones(3)],
                "pair": (torch.zeros(1), 4), "gens": [torch.Generator().manual_seed(seed)]}

    def train(state, hparams, steps):
        for t in (state["w"], *state["ws"], state["pair"][0]):
            t += torch.rand(t.shape, generator=state["gens"][0])

    ex = LocalExecutor(function_trainable(init, train, lambda st: float(st["w"][0])))
    ex.setup({0: 1, 1: 2})
    ex.trainables[0].train({}, 3)
    before = ex.trainables[1].state
    mine = [before["w"], *before["ws"], before["pair"][0], before["gens"][0]]
    saved = copy.deepcopy(ex.trainables[0].state_dict())
    ex.trainables[1].load_state_dict(saved)
    after = ex.trainables[1].state
    now = [after["w"], *after["ws"], after["pair"][0], after["gens"][0]]
    assert all(a is b for a, b in zip(now, mine, strict=True))  # the same objects
    src = ex.trainables[0].state
    for a, b in ((src["w"], after["w"]), (src["ws"][1], after["ws"][1]),
                 (src["pair"][0], after["pair"][0])):
        assert torch.equal(a, b)
    assert after["pair"][1] == 4 and isinstance(after["pair"], tuple)
    # a tensor of another shape or dtype is the saved one (on the target's device), not the
    # target's broadcast or cast
    src["ws"][0] = torch.full((1,), 7.0)
    src["w"] = torch.arange(5)
    ex.trainables[1].load_state_dict(copy.deepcopy(ex.trainables[0].state_dict()))
    assert torch.equal(after["ws"][0], torch.full((1,), 7.0))
    assert torch.equal(ex.trainables[1].state["w"], torch.arange(5))
    assert torch.equal(torch.rand(3, generator=src["gens"][0]),
                       torch.rand(3, generator=after["gens"][0]))


def test_vmpo_copies_collect_their_own_experience_and_resume_exactly():
    pytest.importorskip("gymnasium")
    from firepbt.rl.agent import VMPOTrainable

    def make(seed):
        return VMPOTrainable(seed, n_envs=2, unroll=5, epochs=1, hidden=8)

    ex = LocalExecutor(make)
    ex.setup({0: 1, 1: 2})
    ex.trainables[0].train({"lr": 1e-3, "epsilon_eta": 0.01}, 2)
    ex.copy(0, 1, seed=7)
    saved = copy.deepcopy(ex.trainables[1].state_dict())
    src, dst = ex.trainables[0], ex.trainables[1]
    a = torch.rand(3, generator=copy.deepcopy(src.gen))
    b = torch.rand(3, generator=copy.deepcopy(dst.gen))
    assert not torch.equal(a, b)  # action noise of its own
    hp = {"lr": 1e-3, "epsilon_eta": 0.01}
    dst.train(hp, 2)
    again = make(3)
    again.load_state_dict(saved)  # a checkpoint taken after the copy
    again.train(hp, 2)
    for p, q in zip(dst.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_point_held_for_a_test_is_the_runners_round_best():
    """BestPoint (each executor's best point that beat the running best) and the runner's
    running best in (step, worker) order pick the same point, whatever the job order: ties,
    signed zeros, NaN and infinities, both modes, several floors."""
    import math
    import random

    from firepbt.selection import score_of

    rnd = random.Random(0)
    values = [0.0, -0.0, 0.5, 0.5, 1.0, math.nan, math.inf, -math.inf, 0.25]
    table: dict[tuple[int, int], float] = {}

    def init(seed):
        return {"w": torch.tensor([float(seed)]), "t": torch.tensor([0.0])}

    def train(st, hp, steps):
        st["t"] += steps

    def evaluate(st):
        return table[int(st["w"][0]), int(st["t"][0])]

    def test(st):  # names the point it was taken at
        return float(st["w"][0]) * 1000 + float(st["t"][0])

    for _ in range(300):
        mode = rnd.choice(["max", "min"])
        ex = LocalExecutor(function_trainable(init, train, evaluate, test=test, mode=mode))
        n = rnd.randint(1, 5)
        ex.setup({w: w for w in range(n)})
        table.clear()
        table.update({(w, s): rnd.choice(values) for w in range(n) for s in range(31)})
        cands = {w for w in range(n) if rnd.random() < 0.7}
        floor = rnd.choice([-math.inf, 0.0, 0.25, 0.5])
        jobs = [TrainJob(w, 0, (({}, 30),), 10, evaluate_start=rnd.random() < 0.5,
                         wants_test=w in cands) for w in range(n)]
        rnd.shuffle(jobs)
        res = ex.train_round(jobs, floor)
        best, new_best = floor, []
        for s, w, sc in sorted((s, r.worker, score_of(v, mode)) for r in res
                               if r.worker in cands for s, v in r.evaluations):
            if math.isfinite(sc) and sc > best:
                best = sc
                new_best.append((w, s))
        if new_best:
            w, s = new_best[-1]
            assert [r.held for r in res if r.worker == w] == [True]
            assert ex.test_best(w, s)()[0] == w * 1000 + s
            assert ex.best.at is None and ex.best._test is None  # what it kept is let go
        else:
            assert ex.best.at is None and not any(r.held for r in res)


def test_jobs_and_results_pickle_every_field():
    # they define __reduce__ (Ray sends 2 x N a round): a field left out would vanish silently
    import dataclasses
    import pickle

    from firepbt.executors import TrainResult

    job = TrainJob(3, 40, (({"lr": 0.1}, 20), ({"lr": 0.05}, 20)), 10, True, True)
    res = TrainResult(3, ((50, 0.5), (60, 0.6)), ((60, 0.7),), 1.5, 0.25, True)
    for x in (job, res):
        assert len(x.__reduce__()[1]) == len(dataclasses.fields(x))
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(x, protocol)) == x  # (no field at its default)
