"""What every adapter's end-to-end test checks (tests/test_integration_*.py): FIRE PBT at 12
workers on the adapter's trainables evolves P2 and hands weights down, and a run stopped after
a few rounds and resumed makes the uninterrupted run's decisions on the same evaluations."""

from __future__ import annotations

from firepbt import ExperimentConfig, resume, run
from firepbt.records import EvaluatorSuccess, Exploit
from firepbt.store import Store


def records(path):
    """A store's evaluations and decisions."""
    st = Store.open(path, readonly=True)
    try:
        return st.evaluations(), st.decisions()
    finally:
        st.close()


def uninterrupted(path, cfg, factory, space):
    run(ExperimentConfig(**cfg), path, factory=factory, space=space, progress=False)
    return records(path)


def assert_fire_evolves(decisions):
    kinds = [d for _r, _s, d in decisions]
    assert any(isinstance(d, EvaluatorSuccess) for d in kinds), "no evaluator success"
    assert any(isinstance(d, Exploit) and d.subpopulation == 1 for d in kinds), "no P2 exploit"


def assert_resume_is_exact(path, cfg, factory, space, expected, rounds):
    run(ExperimentConfig(**cfg), path, factory=factory, space=space, progress=False,
        max_rounds=rounds)
    resume(path, factory=factory, space=space, progress=False)
    assert records(path) == expected
