"""The report's words: what happened in a run, in a few sentences."""

from __future__ import annotations

import math
from typing import Any

from ._data import ExperimentData

# -- words ----------------------------------------------------------------------------------

METHOD_NAMES = {"fire": "FIRE PBT", "pbt": "PBT", "random": "random search"}


def fmt_num(x: Any) -> str:
    """A value rounded for reading: 4 significant digits (``n/a`` for None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def _hp(hparams: dict[str, Any] | None) -> str:
    if not hparams:
        return "-"
    return ", ".join(f"{k} {fmt_num(v)}" for k, v in hparams.items())


def objective_word(data: ExperimentData) -> str:
    return "objective" if data.best_test is None and (data.top is None or data.top.test is None) \
        else "validation"


def story(data: ExperimentData) -> list[str]:
    """What happened in a run, in a few sentences (the report's opening)."""
    cfg, st = data.config, data.settings
    method = METHOD_NAMES.get(cfg["method"], cfg["method"])
    what = objective_word(data)
    better = "lower is better" if data.mode == "min" else "higher is better"
    layout = ""
    if cfg["method"] == "fire":
        layout = (f" ({st['subpopulations']} sub-populations of {st['members_per_subpopulation']}"
                  f" members, {st['evaluators']} evaluators)")
    state = "finished" if data.finished else "stopped or still running"
    out = [f"{method} on {cfg['task']}: {cfg['workers']} workers{layout} x {cfg['steps']:,} "
           f"steps, seed {cfg['seed']}; {state} at step {data.steps_done:,}. The {what} "
           f"value is what the trainable's evaluate() returns ({better})."]
    if data.top is not None:
        test = "" if data.top.test is None else f", test {fmt_num(data.top.test)} there"
        out.append(f"Winner: worker {data.top.worker} reached the top {what} value "
                   f"{fmt_num(data.top.value)} at step {data.top.step:,}{test}.")
    if data.best_worker is not None:
        test = "" if data.best_test is None else f", test {fmt_num(data.best_test)}"
        out.append(f"{'At the end' if data.finished else 'Now'}, the best member is worker "
                   f"{data.best_worker}: {what} {fmt_num(data.best_value)}{test}, "
                   f"hyperparameters {_hp(data.best_hparams)}.")
    if data.best_segments:
        from ..schedule import Schedule, Segment, display_rows

        rows = display_rows(Schedule(tuple(Segment(hp, b - a)
                                           for a, b, hp in data.best_segments)))
        first, last = rows[0], rows[-1][1]
        start = (f"with a {first[0]} over {first[2]:,} steps" if first[0] else
                 f"at {_hp(first[1])}")
        if len(rows) == 1:
            out.append(f"The winning schedule kept {_hp(first[1])} throughout.")
        else:
            out.append(f"The winning schedule (table below) starts {start} and ends at "
                       f"{_hp(last)}, in {len(rows)} pieces.")
    if data.replay is not None:
        if data.replay.get("test") is not None:
            out.append(f"Retrained from scratch on the full training set, that schedule gives "
                       f"test {fmt_num(data.replay['test'])}.")
        else:
            out.append(f"Retrained from scratch, that schedule ends at {what} "
                       f"{fmt_num(data.replay['value'])}.")
    act = data.activity
    if act is not None and cfg["method"] == "fire":
        ex = ", ".join(f"P{i + 1} {n}" for i, n in act.exploits.items())
        out.append(f"Exploits (a member copying a better one of its sub-population): {ex}. "
                   f"Evaluators: {act.assignments} assigned, {act.successes} successes "
                   "(a parent's weights, trained with the hyperparameters of a target in the "
                   "sub-population below, improved faster than the target and replaced its "
                   "weights).")
    elif act is not None and cfg["method"] == "pbt":
        out.append(f"Exploits (a bottom member copying a top one): {sum(act.exploits.values())}.")
    moves = []
    for band in data.bands:
        if band.median:
            moves.append(f"P{band.subpopulation + 1} {fmt_num(band.median[0])} -> "
                         f"{fmt_num(band.median[-1])}")
    if cfg["method"] == "fire" and moves:
        out.append(f"Median {data.param} per sub-population, first round -> last: "
                   f"{'; '.join(moves)} (Figure 4a).")
    out += data.caveats
    return out
