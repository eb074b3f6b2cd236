"""The store contract (firepbt.store.ExperimentStore), checked the way optuna checks its
storages: every backend in BACKENDS must pass every test here. Records are fabricated; no
training."""

from __future__ import annotations

import math

import pytest
import torch

from firepbt.curves import Comparison
from firepbt.errors import StoreError
from firepbt.records import (
    AssignEvaluator,
    EvaluatorSuccess,
    Exploit,
    FitnessRecord,
    RunFacts,
    StopEvaluator,
    WorkerState,
)
from firepbt.schedule import Schedule, Segment
from firepbt.store import RoundRow, Store

BACKENDS = {"sqlite": Store}
CONFIG = {"task": "toy", "method": "fire", "workers": 12, "steps": 300, "ready_interval": 100,
          "eval_interval": 50}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    return BACKENDS[request.param]


def _round(store, r, *, meta=None, decisions=None, evals=None):
    name = store.write_checkpoint(r, {0: {"w": torch.full((2,), float(r))}, 1: {"w": torch.ones(1)}})
    row = RoundRow(r, 100 * r, 1000.0 + r, 0.5, 0.25, 0.01, {"c": r}, _workers(r),
                   0.1 * r if r > 1 else -math.inf, name)
    store.commit_round(row, evals if evals is not None else [(0, 100 * r, 0.1 * r),
                                                             (1, 100 * r, math.nan)],
                       [(0, 100 * r, 0.2 * r)],
                       decisions if decisions is not None else _decisions(r), meta)
    return row


def _workers(r):
    sched = Schedule((Segment({"lr": 0.1}, 50), Segment({"lr": 0.01}, 250)))
    return {0: WorkerState(0, "member", 0, {"lr": 0.1 * r}),
            1: WorkerState(1, "member", 0, {"lr": 0.1}, sched),
            2: WorkerState(2, "evaluator", None, None, active=False)}


def _decisions(r):
    c = Comparison(True, 7, 9, 0.0195, 0.031)
    return [FitnessRecord(0, {0: 0.1 * r, 1: 0.2}),
            Exploit(1, 0, 0, {"lr": 0.1}, {"lr": 0.2}, {"lr": 0.25}, 0.1, 0.2),
            AssignEvaluator(8, 4, 0, 1, {"lr": 0.2}),
            StopEvaluator(9, 5, 1, "not_significant", 0.6, -0.01, 200, c),
            EvaluatorSuccess(10, 6, 2, 0.031, 0.0195, 300, c)]


def test_create_open_and_config(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    assert st.config == CONFIG and st.last_round() is None and st.rounds() == []
    st.close()
    with pytest.raises(StoreError):
        backend.create(tmp_path / "s", CONFIG)  # never overwritten
    st = backend.open(tmp_path / "s", readonly=True)
    assert st.config == CONFIG
    st.close()


def test_a_committed_round_reads_back_exactly(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    rows = [_round(st, r, meta={"final": "x"} if r == 2 else None) for r in (1, 2)]
    assert st.rounds() == rows and st.last_round() == rows[-1]
    evals = st.evaluations()
    assert [e[:3] for e in evals] == [(1, 0, 100), (2, 0, 200), (1, 1, 100), (2, 1, 200)]
    assert evals[0][3] == 0.1 and math.isnan(evals[2][3])  # NaN round-trips
    assert [e[1] for e in st.evaluations(1)] == [1, 1]
    assert st.tests() == [(1, 0, 100, 0.2), (2, 0, 200, 0.4)]
    assert [d for _r, _s, d in st.decisions()] == _decisions(1) + _decisions(2)
    assert [(r, s) for r, s, _d in st.decisions(["exploit"])] == [(1, 100), (2, 200)]
    assert st.meta("final") == "x"
    states = st.read_checkpoint(rows[-1].checkpoint)
    assert torch.equal(states[0]["w"], torch.full((2,), 2.0)) and set(states) == {0, 1}
    st.close()


def test_a_failed_commit_leaves_nothing_of_its_round(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    _round(st, 1)

    def broken():
        yield from _decisions(2)[:2]
        raise RuntimeError("the driver died mid-commit")

    with pytest.raises(RuntimeError):
        _round(st, 2, meta={"final": "x"}, decisions=broken())
    assert [r.round for r in st.rounds()] == [1]
    assert {e[0] for e in st.evaluations()} == {1} and {t[0] for t in st.tests()} == {1}
    assert {r for r, _s, _d in st.decisions()} == {1} and st.meta("final") is None
    _round(st, 2)  # the round can be committed again
    assert [r.round for r in st.rounds()] == [1, 2]
    st.close()


def test_discard_after_removes_later_rounds_and_end_of_run_meta(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    for r in (1, 2, 3):
        _round(st, r)
    st.set_meta("final", "f")
    st.set_meta("replay", "r")
    st.set_meta("threads_used", "1")
    st.discard_after(1)
    assert [r.round for r in st.rounds()] == [1]
    assert {e[0] for e in st.evaluations()} == {1} and {t[0] for t in st.tests()} == {1}
    assert {r for r, _s, _d in st.decisions()} == {1}
    assert (st.meta("final"), st.meta("replay"), st.meta("threads_used")) == (None, None, "1")
    st.close()


def test_a_damaged_checkpoint_is_refused(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    row = _round(st, 1)
    path = tmp_path / "s" / "checkpoints" / row.checkpoint
    path.write_bytes(path.read_bytes()[:-7] + b"garbage")
    with pytest.raises(StoreError, match="checkpoint"):
        st.read_checkpoint(row.checkpoint)
    with pytest.raises(StoreError, match="missing"):
        st.read_checkpoint("round-000099.pt")
    st.close()


def test_one_writer_and_readers_that_never_write(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    _round(st, 1)
    with pytest.raises(StoreError):
        backend.open(tmp_path / "s")  # a second writer
    reader = backend.open(tmp_path / "s", readonly=True)  # readers while it writes
    assert [r.round for r in reader.rounds()] == [1]
    _round(st, 2)
    assert [r.round for r in reader.rounds()] == [1, 2]  # and they see new rounds
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the backend's own error
        reader.set_meta("x", "y")
    reader.close()
    st.close()
    again = backend.open(tmp_path / "s")  # the writer closed: a new one may open it
    again.check_integrity()
    again.close()


def _parts_round(store, r, *, attach=True):
    """Round r committed without a checkpoint, then one written in two parts (as two Ray
    actors write theirs) sealed and bound to it."""
    from firepbt.store import write_states

    row = RoundRow(r, 100 * r, 1000.0 + r, 0.5, 0.25, 0.01, {"c": r}, {}, -math.inf, None)
    store.commit_round(row, [(0, 100 * r, 0.1 * r)], [], [], None)
    folder = store.parts_folder(r)
    digests = {"part-000.pt": write_states(folder / "part-000.pt",
                                           {0: {"w": torch.full((2,), float(r))}}),
               "part-001.pt": write_states(folder / "part-001.pt", {1: {"w": torch.ones(1)}})}
    name = store.seal_parts(r, digests)
    if attach:
        store.attach_checkpoint(r, name)
    return name


def test_a_checkpoint_written_in_parts_and_bound_later_reads_back(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    _round(st, 1)
    name = _parts_round(st, 2)
    assert st.last_round().checkpoint == name
    got = st.read_checkpoint(name)
    assert sorted(got) == [0, 1] and torch.equal(got[0]["w"], torch.full((2,), 2.0))
    with pytest.raises(StoreError, match="not committed"):
        st.attach_checkpoint(7, name)
    st.close()
    again = backend.open(tmp_path / "s", readonly=True)  # the binding is durable
    assert again.last_round().checkpoint == name and sorted(again.read_checkpoint(name)) == [0, 1]
    again.close()


def test_a_damaged_or_missing_part_is_refused_naming_it(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    name = _parts_round(st, 1)
    part = tmp_path / "s" / "checkpoints" / name / "part-001.pt"
    part.write_bytes(part.read_bytes()[:-7] + b"garbage")
    with pytest.raises(StoreError, match="part-001.pt"):
        st.read_checkpoint(name)
    part.unlink()
    with pytest.raises(StoreError, match="missing its part part-001.pt"):
        st.read_checkpoint(name)
    st.close()


def test_old_checkpoints_are_pruned_but_one_still_being_written_is_kept(backend, tmp_path):
    from firepbt.store import KEEP_CHECKPOINTS

    st = backend.create(tmp_path / "s", CONFIG)
    names = [_parts_round(st, r) for r in range(1, KEEP_CHECKPOINTS + 2)]
    later = _parts_round(st, KEEP_CHECKPOINTS + 2, attach=False)  # bound after a later commit
    _round(st, KEEP_CHECKPOINTS + 3)  # its commit prunes: the unbound, newer one stays
    folder = tmp_path / "s" / "checkpoints"
    assert not (folder / names[0]).exists() and (folder / later / "manifest.json").exists()
    st.discard_after(1)  # the discarded rounds' checkpoints go with them
    assert sorted(p.name for p in folder.iterdir()) == []
    st.close()


def test_the_run_facts_and_every_rounds_worker_states_read_back_as_written(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    facts = RunFacts("min", "vectorized", (0, 1), 2, "lr", None,
                     ({"name": "lr", "kind": "LogUniform"},), False)
    st.start_run(facts, _workers(0))
    rows = [_round(st, r) for r in (1, 2)]
    st.close()
    st = backend.open(tmp_path / "s", readonly=True)
    assert st.run_facts == facts
    assert st.worker_states(0) == _workers(0)
    assert [st.worker_states(r) for r in (1, 2)] == [_workers(1), _workers(2)]
    assert [r.workers for r in st.rounds()] == [r.workers for r in rows]
    assert [r.best_score for r in st.rounds()] == [-math.inf, 0.2]  # -inf round-trips
    with pytest.raises(StoreError, match="has no round 3"):
        st.worker_states(3)
    st.close()


def test_a_checkpoint_without_a_recorded_digest_is_never_read(backend, tmp_path):
    st = backend.create(tmp_path / "s", CONFIG)
    row = _round(st, 1)
    st.db.run("DELETE FROM checkpoint_digests")  # (as a store that lost its digest would be)
    with pytest.raises(StoreError, match="has no digest recorded with its round"):
        st.read_checkpoint(row.checkpoint)
    st.close()
