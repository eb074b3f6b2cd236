"""FIRE PBT's layout: how a worker count splits into sub-populations and evaluators (paper
4.1.1), and which layouts can evolve at all. Arithmetic only; the configuration, the builder
and the read side use it without the controller (:mod:`firepbt.controllers.fire`)."""

from __future__ import annotations

from ..errors import check
from ..selection import members_needed


def fire_split(workers: int, n_subpopulations: int | None = None,
               quantile: float = 0.25) -> tuple[int, int, int]:
    """``(n_subpopulations, subpopulation_size, n_evaluators)`` for a total worker count.

    The paper's splits (4.1.1): 2, 3, 4 sub-populations below 36, below 50, from 50 workers
    (or ``n_subpopulations``), equal sizes, and evaluators three quarters of the parents' total
    size: 22 = 2 x 8 + 6, 36 = 3 x 8 + 12, 50 = 4 x 8 + 18. Other counts get the largest size
    that leaves at least ``floor(3/4)`` of the parents' total as evaluators, and at least 2
    per parent sub-population (the rest become evaluators too): 8 = 3 + 3 + 2, 12 = 4 + 4 + 4.

    A split is accepted only if every sub-population can evolve (:func:`check_evolvable`):
    the smallest FIRE PBT run is 6 = 2 + 2 + 2 with two sub-populations. Otherwise a
    :class:`~firepbt.errors.ConfigError` names the smallest worker count that can.
    """
    check(isinstance(workers, int) and not isinstance(workers, bool) and workers > 0,
          "workers", "an int > 0", workers)
    n = n_subpopulations if n_subpopulations is not None else (
        2 if workers < 36 else 3 if workers < 50 else 4)
    check(isinstance(n, int) and n >= 2, "n_subpopulations", "an int >= 2", n)
    need = members_needed(quantile)
    split = _split(workers, n, need)
    if split is None:
        smallest = next(w for w in range(n * need, 100 * n * need)
                        if _split(w, n, need) is not None)
        check(False, "workers",
              f"an int >= {smallest} for FIRE PBT with {n} sub-populations (each sub-population "
              f"needs {need} members and each parent sub-population {need} evaluators for "
              f"{quantile:.0%} truncation to select in it)", workers)
    assert split is not None  # (refused above otherwise)
    return split


def _split(workers: int, n: int, need: int = 2) -> tuple[int, int, int] | None:
    """The largest sub-population size that leaves at least three quarters of the parents'
    total as evaluators (rounded down) and ``need`` per parent sub-population; None when not
    even ``need`` members per sub-population leave that many."""
    best = None
    for size in range(need, workers // n + 1):
        if workers - n * size >= max(need * (n - 1), (3 * (n - 1) * size) // 4):
            best = size
    return None if best is None else (n, best, workers - n * best)


def check_evolvable(n_subpopulations: int, subpopulation_size: int, n_evaluators: int,
                    quantile: float = 0.25) -> None:
    """Refuse a layout in which some sub-population could never evolve.

    Truncation selection makes :func:`~firepbt.selection.n_selected` losers among ``k``
    ranked members, at least one once ``k >= 2``. In P1 every member is ranked, so P1 needs 2
    members. In a parent sub-population only the members whose evaluator trained this round
    are ranked (3.1.2, the set Φ), so it also needs 2 evaluators at a time, hence
    ``n_evaluators >= 2 * (n - 1)``.
    """
    need = members_needed(quantile)
    check(isinstance(subpopulation_size, int) and subpopulation_size >= need,
          "subpopulation_size", f"an int >= {need} for {quantile:.0%} truncation",
          subpopulation_size)
    check(isinstance(n_evaluators, int) and n_evaluators >= need * (n_subpopulations - 1),
          "n_evaluators", f"an int >= {need * (n_subpopulations - 1)} ({need} per parent "
          f"sub-population, so that {quantile:.0%} truncation can select in each of the "
          f"{n_subpopulations - 1})", n_evaluators)


# the sizes below which FIRE PBT's evaluators rarely succeed, as measured on the noisy
# quadratic (benchmarks/fire_sizing.py; the table in docs/site/methods.md, "How big a FIRE PBT
# run must be"): fewer evaluator-rounds than this made at most ~3 successes a run ...
SMALL_EVALUATOR_ROUNDS = 40
# ... and two evaluators with fewer evaluations per ready interval than this made 1-2 a run
# however long the run (8 workers, 8 to 50 rounds)
FEW_EVALUATIONS = 12


def sizing_note(workers: int, rounds: int, evaluations_per_interval: int,
                n_subpopulations: int | None = None, quantile: float = 0.25) -> str | None:
    """A sentence for a FIRE PBT run too small for its evaluators to do much (None otherwise):
    an evaluator succeeds only after enough binomial trials within ``max_eval_steps``, and a
    run without a success is PBT on smaller sub-populations. Said before the run starts (the
    summary's caveat says it again after, from what happened)."""
    n_sub, size, n_eval = fire_split(workers, n_subpopulations, quantile)
    small = n_eval * rounds < SMALL_EVALUATOR_ROUNDS
    thin = n_eval <= 2 and evaluations_per_interval < FEW_EVALUATIONS
    if not (small or thin):
        return None
    layout = " + ".join([str(size)] * n_sub)
    why = (f"{n_eval} evaluators x {rounds} rounds" if small else
           f"{n_eval} evaluators with {evaluations_per_interval} evaluations per ready interval")
    return (f"FIRE PBT at this size ({workers} workers: {layout} members and {n_eval} "
            f"evaluators; {rounds} rounds of {evaluations_per_interval} evaluations) leaves its "
            f"evaluators little room ({why}): measured runs of this size made few or no "
            "evaluator successes, and without one FIRE PBT acts as PBT on smaller "
            "sub-populations. More rounds (--steps), evaluations per round (--eval-interval) "
            "or workers help: see 'How big a FIRE PBT run must be' in the methods page.")
