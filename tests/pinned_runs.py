"""Fixed-seed experiments whose every evaluation, test, decision, worker state, controller state,
final member and last checkpoint are pinned by fingerprints (``tests/data/pinned.json``).

A change of shape (moving code, renaming, new records) must leave every fingerprint as it is;
a change of behaviour (a rule that decides otherwise) changes them, and is then committed with
the new fingerprints and a word on why (``python tests/pinned_runs.py --write``).

The runs execute in a subprocess of their own (``tests/test_pinned_behaviour.py``) with
PyTorch's portable CPU kernels (``ATEN_CPU_CAPABILITY=default``), one thread and MKL's
conditional numerical reproducibility, so that the floating-point sums do not depend on the
machine's vector width.

What a fingerprint reads is projected onto fixed fields (``DECISION_FIELDS``, the worker
state's five fields): a field added later to a record does not move a fingerprint, a value that
changes does.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The fields of each decision kind that the fingerprints cover (the records' fields when the
# fingerprints were first taken; comparisons by their five numbers).
DECISION_FIELDS: dict[str, tuple[str, ...]] = {
    "exploit": ("worker", "source", "subpopulation", "old_hparams", "source_hparams",
                "new_hparams", "fitness", "source_fitness"),
    "assign_evaluator": ("evaluator", "parent", "target", "parent_subpopulation", "hparams"),
    "evaluator_success": ("evaluator", "parent", "target", "score_diff", "p_value",
                          "trained_steps", "comparison"),
    "stop_evaluator": ("evaluator", "parent", "target", "reason", "p_value", "score_diff",
                       "trained_steps", "comparison"),
    "fitness": ("subpopulation", "fitness"),
    "worker_failure": ("worker", "step", "error", "action"),
}
COMPARISON_FIELDS = ("overlap", "k", "n", "p", "diff")


def _plain(x: Any) -> Any:
    """JSON-able with exact floats (``float.hex``) and sorted keys."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return "nan" if math.isnan(x) else x.hex()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return _plain(float(x)) if hasattr(x, "__float__") else str(x)


def _digest(obj: Any) -> str:
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _decision(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": d.kind}
    for name in DECISION_FIELDS[d.kind]:
        value = getattr(d, name)
        if name == "comparison" and value is not None:
            value = {f: getattr(value, f) for f in COMPARISON_FIELDS}
        elif name == "fitness" and isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        out[name] = value
    return out


def _state_bytes(state: Any) -> bytes:
    import numpy as np
    import torch

    if isinstance(state, torch.Tensor):
        return str(state.dtype).encode() + state.detach().cpu().contiguous().numpy().tobytes()
    if isinstance(state, np.ndarray):
        return str(state.dtype).encode() + np.ascontiguousarray(state).tobytes()
    if isinstance(state, dict):
        return b"".join(str(k).encode() + _state_bytes(v) for k, v in sorted(
            state.items(), key=lambda kv: str(kv[0])))
    if isinstance(state, (list, tuple)):
        return b"".join(_state_bytes(v) for v in state)
    return repr(state).encode()


def fingerprint(path: Path) -> dict[str, Any]:
    """What a store recorded, each part as a short digest (and a few numbers to read)."""
    from firepbt.store import Store

    st = Store.open(path, readonly=True)
    try:
        rounds = st.rounds()
        evals = st.evaluations()
        tests = st.tests()
        decisions = [(r, s, _decision(d)) for r, s, d in st.decisions()]
        states = [_workers(st.worker_states(0))] + [_workers(r.workers) for r in rounds]
        best = [r.best_score for r in rounds]
        controller = [_controller(r.controller_state) for r in rounds]
        final = st.final_member()
        final_dict = None if final is None else final.to_dict()
        last = [r.checkpoint for r in rounds if r.checkpoint is not None][-1]
        weights = hashlib.sha256(_state_bytes(st.read_checkpoint(last))).hexdigest()[:16]
    finally:
        st.close()
    kinds: dict[str, int] = {}
    for _r, _s, d in decisions:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    return {
        "evaluations": _digest(evals), "tests": _digest(tests), "decisions": _digest(decisions),
        "workers": _digest([states, best]), "controller": _digest(controller),
        "final": _digest(final_dict), "checkpoint": weights,
        "counts": {"rounds": len(rounds), "evaluations": len(evals), "tests": len(tests),
                   **dict(sorted(kinds.items()))},
    }


def _workers(workers: Any) -> Any:
    """Each worker's role, sub-population, hyperparameters, schedule and whether it trains."""
    return {str(w): st.to_dict() for w, st in workers.items()}


def _controller(state: Any) -> Any:
    """A controller's state with the key names the fingerprints were first taken with (FIRE
    PBT's members' ``subpopulation`` was ``sub``) and without FIRE PBT's rules (kept in its
    state since; which rules ran shows in every decision): a renamed key or a record of the
    configuration is not a change of behaviour."""
    members = state.get("members") if isinstance(state, dict) else None
    if not isinstance(members, dict):
        return state
    state = {k: v for k, v in state.items() if k != "rules"}
    return {**state, "members": {w: {("sub" if k == "subpopulation" else k): v
                                     for k, v in m.items()} for w, m in members.items()}}


# -- the experiments -------------------------------------------------------------------------------

def _nqm(method: str, workers: int, steps: int, seed: int, executor: str = "local",
         **more: Any) -> Any:
    from firepbt import ExperimentConfig

    return ExperimentConfig(task="nqm", method=method, workers=workers, steps=steps,
                            ready_interval=60, eval_interval=5, seed=seed, executor=executor,
                            threads=1, **more)


def _run(config: Any, store: Path, **kw: Any) -> Path:
    from firepbt import run

    run(config, store, progress=False, **kw)
    return store


def _resumed(config: Any, store: Path) -> Path:
    from firepbt import resume, run

    run(config, store, progress=False, max_rounds=4)
    resume(store, progress=False, max_rounds=3)
    resume(store, progress=False)
    return store


def _mnist1d_vectorized(store: Path) -> Path:
    from firepbt import ExperimentConfig

    config = ExperimentConfig(task="mnist1d", method="fire", workers=8, steps=240,
                              ready_interval=40, eval_interval=10, seed=5,
                              executor="vectorized", threads=1)
    return _run(config, store)


SCENARIOS: dict[str, Callable[[Path], Path]] = {
    "pbt-nqm-8-local": lambda p: _run(_nqm("pbt", 8, 900, 3), p),
    "random-nqm-8-hand-tuned": lambda p: _run(_nqm("random", 8, 600, 4), p,
                                              schedule_param="lr"),
    "fire-nqm-8-local": lambda p: _run(_nqm("fire", 8, 1500, 0), p),
    "fire-nqm-8-local-resumed": lambda p: _resumed(_nqm("fire", 8, 1500, 0), p),
    "fire-nqm-22-local": lambda p: _run(_nqm("fire", 22, 900, 1), p),
    "fire-nqm-22-vectorized": lambda p: _run(_nqm("fire", 22, 900, 1, "vectorized"), p),
    "fire-mnist1d-8-vectorized": _mnist1d_vectorized,
}


def main(argv: list[str]) -> int:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="firepbt-pinned-") as tmp:
        for name, make in SCENARIOS.items():
            out[name] = fingerprint(make(Path(tmp) / name))
    text = json.dumps(out, indent=1, sort_keys=True)
    if argv[:1] == ["--write"]:
        target = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "data" / "pinned.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
