"""Truncation selection and the PBT controller, on fabricated evaluations (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firepbt.controllers import PBT, RandomSearch
from firepbt.errors import ConfigError
from firepbt.records import Exploit, FitnessRecord
from firepbt.selection import truncation
from firepbt.space import LogUniform, Space

SPACE = Space({"lr": LogUniform(1e-2, 1.0, bounds=(1e-3, 2.0))})


def test_truncation_picks_exactly_bottom_and_top_quartiles():
    fitness = {w: float(w) for w in range(16)}  # worker w has fitness w
    rng = np.random.default_rng(0)
    for _ in range(50):
        pairs = truncation(fitness, rng, 0.25)
        assert sorted(loser for loser, _ in pairs) == [0, 1, 2, 3]
        assert all(src in {12, 13, 14, 15} for _, src in pairs)


def test_truncation_small_population_and_quantile_checks():
    rng = np.random.default_rng(0)
    # floor(quantile * n), but at least one as soon as two members are ranked
    assert truncation({0: 1.0}, rng, 0.25) == []
    assert truncation({0: 1.0, 1: 2.0}, rng, 0.25) == [(0, 1)]
    assert truncation({0: 1.0, 1: 2.0, 2: 3.0}, rng, 0.25) == [(0, 2)]  # floor(0.75) = 0
    assert truncation({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, rng, 0.25) == [(0, 3)]
    with pytest.raises(ConfigError, match=r"quantile must be in \(0, 0.5\], got 0.6"):
        truncation({0: 1.0}, rng, 0.6)


def test_nan_and_inf_never_rank_top():
    fitness = {0: math.nan, 1: math.inf, 2: -math.inf, 3: 0.1, 4: 0.2, 5: 0.3, 6: 0.4, 7: 0.5}
    rng = np.random.default_rng(0)
    for _ in range(50):
        pairs = truncation(fitness, rng, 0.25)
        losers = {loser for loser, _ in pairs}
        assert losers <= {0, 1, 2}
        assert all(src in {6, 7} for _, src in pairs)
    # all non-finite: nobody to copy
    assert truncation({w: math.nan for w in range(8)}, rng, 0.25) == []


def observations(scores):
    return {w: [(100, s)] for w, s in scores.items()}


def test_pbt_exploit_copies_weights_and_hparams_then_explores_within_bounds():
    pbt = PBT(SPACE, 8, seed=0)
    specs = pbt.start()
    assert [s.worker for s in specs] == list(range(8))
    start_hp = {s.worker: dict(s.hparams) for s in specs}
    decisions = pbt.decide(100, observations({w: w / 10 for w in range(8)}))
    assert isinstance(decisions[0], FitnessRecord)
    exploits = [d for d in decisions if isinstance(d, Exploit)]
    assert sorted(d.worker for d in exploits) == [0, 1]
    for d in exploits:
        assert d.source in (6, 7)
        assert d.source_hparams == start_hp[d.source]
        ratio = d.new_hparams["lr"] / d.source_hparams["lr"]
        clipped = d.new_hparams["lr"] in (1e-3, 2.0)
        assert clipped or any(math.isclose(ratio, f) for f in (0.5, 0.8, 1.25, 2.0))
        assert pbt.hparams[d.worker] == d.new_hparams
        assert d.old_hparams == start_hp[d.worker]


def test_pbt_is_deterministic_for_a_seed_and_restores_from_state():
    def trace(seed):
        pbt = PBT(SPACE, 8, seed=seed)
        pbt.start()
        rng = np.random.default_rng(42)
        out = []
        for r in range(5):
            out.append(pbt.decide(100 * (r + 1), observations(
                {w: float(rng.normal()) for w in range(8)})))
        return out

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)

    a = PBT(SPACE, 8, seed=5)
    a.start()
    a.decide(100, observations({w: float(w) for w in range(8)}))
    b = PBT(SPACE, 8, seed=999)
    b.start()
    b.load_state_dict(a.state_dict())
    obs = observations({w: float(-w) for w in range(8)})
    assert a.decide(200, obs) == b.decide(200, obs)


def test_pbt_population_too_small():
    with pytest.raises(ConfigError, match="n_members must be an int >= 2"):
        PBT(SPACE, 1)
    assert len(PBT(SPACE, 2).start()) == 2


def test_selection_sizes_keep_the_papers_layouts_and_select_in_small_groups():
    from firepbt.selection import members_needed, n_selected

    # the paper's numbers: 2 of a sub-population of 8, 5 of 22, 12 of 50, 1 of 4 to 7
    assert [n_selected(n) for n in (8, 22, 50, 4, 5, 6, 7)] == [2, 5, 12, 1, 1, 1, 1]
    # where floor selects nobody, one from two ranked members on; never over half
    assert [n_selected(n) for n in (0, 1, 2, 3)] == [0, 0, 1, 1]
    for q in (0.05, 0.2, 0.25, 0.5):
        assert members_needed(q) == 2
        assert all(1 <= n_selected(n, q) <= n // 2 for n in range(2, 200))
    assert [n_selected(n, 0.5) for n in (2, 3, 4, 5)] == [1, 1, 2, 2]


def test_random_search_follows_hand_tuned_schedule_and_never_exploits():
    rs = RandomSearch(SPACE, 4, 900, schedule_param="lr", seed=0)
    specs = rs.start()
    for s in specs:
        assert s.schedule is not None and s.schedule.total_steps == 900
        base = s.schedule.hparams_at(100)["lr"]  # after the 50-step warmup
        assert s.schedule.hparams_at(299)["lr"] == pytest.approx(base)
        assert s.schedule.hparams_at(300)["lr"] == pytest.approx(base / 10)
        assert s.schedule.hparams_at(600)["lr"] == pytest.approx(base / 100)
        assert s.schedule.hparams_at(800)["lr"] == pytest.approx(base / 1000)
        assert s.schedule.hparams_at(0)["lr"] < base / 10  # warming up
    assert rs.decide(100, observations({w: 0.0 for w in range(4)})) == []


def test_the_warm_up_is_never_cut_finer_than_the_evaluation_grid():
    from firepbt.schedule import hand_tuned

    # 480 steps, an evaluation every 10: the 27-step warm-up becomes 3 pieces of 10 steps,
    # ending on evaluation steps (not 20 pieces of 1-2 steps, each a train() call)
    s = hand_tuned({"lr": 0.5}, "lr", 480, grain=10)
    assert [seg.steps for seg in s.segments[:3]] == [10, 10, 10]
    assert [seg.hparams["lr"] for seg in s.segments[:4]] == pytest.approx(
        [0.5 / 3, 1.0 / 3, 0.5, 0.5])
    assert s.total_steps == 480 and s.hparams_at(160)["lr"] == pytest.approx(0.05)
    # long enough for 20 pieces of at least a grain each: the paper's 20, as before
    long = hand_tuned({"lr": 0.5}, "lr", 6000, grain=10)
    assert len(long.segments) == 24 and long.segments[0].steps == 16
    rs = RandomSearch(SPACE, 2, 480, schedule_param="lr", seed=0, grain=10)
    assert all(st.schedule.segments[0].steps == 10 for st in rs.start())


def test_a_linear_warm_up_is_shown_as_one_row():
    from firepbt.schedule import Schedule, Segment, display_rows, hand_tuned, warmup

    s = hand_tuned({"lr": 0.5, "wd": 1e-4}, "lr", 6000)
    assert warmup(s) == ("lr", 0.5, 333, 20)
    rows = display_rows(s)
    assert rows[0] == ("linear warm-up of lr to 0.5 in 20 pieces", {"lr": 0.5, "wd": 1e-4}, 333)
    assert [r[2] for r in rows[1:]] == [1667, 2000, 1333, 667] and len(rows) == 5
    # a schedule that merely rises is not a warm-up
    rising = Schedule((Segment({"lr": 0.1}, 10), Segment({"lr": 0.3}, 10),
                       Segment({"lr": 0.4}, 10)))
    assert warmup(rising) is None and len(display_rows(rising)) == 3
