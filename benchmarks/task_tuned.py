"""A hand-tuned schedule tuned for MNIST-1D itself (issue 32, part 3), against the schedules
FIRE PBT and random search found in ``benchmarks/peers.py``.

Random search follows the paper's schedule (Goyal et al.: warm-up over 5/90 of training, /10
at 30/90, 60/90 and 80/90), tuned for ImageNet. Here a grid over the step schedule's decay
points and lambda, and a cosine schedule's peak lambda (with and without the warm-up), is
trained as replay trains - ``firepbt.replay.train_schedule``, 6,000 steps, no interleaved
evaluation - on the training split only, and scored on the validation split only (mean over
``--seeds`` trainings). The best schedule is then tested the way replay tests: retrained with
``full_train=True`` from ``replay_seed(s)`` for s = 0, 1, 2 - the very seeds
``firepbt replay`` used for the runs of ``peers.py`` with those seeds, so the comparison is
paired seed by seed.

    .venv/bin/python benchmarks/task_tuned.py                      # the grid, 3 seeds each
    .venv/bin/python benchmarks/task_tuned.py --procs 2 --peers runs/peers
    .venv/bin/python benchmarks/task_tuned.py --out runs/task-tuned-smoke --steps 600 \\
        --seeds 1 --small                                          # a smoke test

Every training is cached as JSON in ``OUT/grid`` and ``OUT/final`` and skipped when the command
is run again; the tables go to ``OUT/task_tuned.md``, ``OUT/grid.csv`` and ``OUT/task_tuned.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

WARMUP = 5 / 90  # the paper's
PAPER_DECAYS = (30 / 90, 60 / 90, 80 / 90)
STEP_LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
STEP_DECAYS: tuple[tuple[float, ...], ...] = (
    PAPER_DECAYS, (0.5, 0.75, 0.9), (0.6, 0.8, 0.95), (0.7, 0.85, 0.95), (0.5, 0.8),
    (0.7, 0.9), (0.8, 0.95), (0.6,), (0.8,), ())
COSINE_LAMBDAS = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
COSINE_WARMUPS = (0.0, WARMUP)
COSINE_PIECES = 60


def grid(small: bool = False) -> list[dict[str, Any]]:
    """The schedules tried: step (warm-up 5/90, /10 at each decay point) and cosine."""
    out: list[dict[str, Any]] = []
    lambdas = STEP_LAMBDAS[2:4] if small else STEP_LAMBDAS
    for decays in (STEP_DECAYS[:2] if small else STEP_DECAYS):
        for lam in lambdas:
            out.append({"kind": "step", "lambda": lam, "decays": list(decays),
                        "warmup": WARMUP})
    for warm in COSINE_WARMUPS:
        for lam in (COSINE_LAMBDAS[1:3] if small else COSINE_LAMBDAS):
            out.append({"kind": "cosine", "lambda": lam, "warmup": warm})
    return out


def key(cfg: dict[str, Any]) -> str:
    if cfg["kind"] == "step":
        d = "-".join(f"{x:.4f}" for x in cfg["decays"]) or "none"
        return f"step-l{cfg['lambda']}-d{d}"
    return f"cosine-l{cfg['lambda']}-w{cfg['warmup']:.4f}"


def describe(cfg: dict[str, Any]) -> str:
    if cfg["kind"] == "step":
        if tuple(cfg["decays"]) == PAPER_DECAYS:
            where = "30/90, 60/90, 80/90 (paper)"
        elif not cfg["decays"]:
            where = "none (constant)"
        else:
            where = ", ".join(f"{x:g}" for x in cfg["decays"])
        return f"step, lambda {cfg['lambda']:g}, /10 at {where}, warm-up 5/90"
    warm = "warm-up 5/90" if cfg["warmup"] else "no warm-up"
    return f"cosine, peak lambda {cfg['lambda']:g}, {warm}"


def schedule_of(cfg: dict[str, Any], total: int) -> Any:
    from firepbt.schedule import Schedule, Segment, hand_tuned

    lam = float(cfg["lambda"])
    if cfg["kind"] == "step":
        return hand_tuned({"lambda": lam}, "lambda", total, warmup_fraction=cfg["warmup"],
                          decay_fractions=tuple(cfg["decays"]), decay_factor=0.1)
    # cosine from the peak to zero over the steps after the warm-up, in constant pieces (each
    # at the curve's value at its middle), after hand_tuned's linear warm-up pieces
    warm = int(round(cfg["warmup"] * total))
    segs, pos = [], 0
    for seg in hand_tuned({"lambda": lam}, "lambda", total, warmup_fraction=cfg["warmup"],
                          decay_fractions=()).segments:
        if pos >= warm:
            break
        segs.append(seg)
        pos += seg.steps
    rest = total - warm
    pieces = min(COSINE_PIECES, rest)
    for k in range(pieces):
        a, b = rest * k // pieces, rest * (k + 1) // pieces
        mid = (a + b) / 2 / rest
        segs.append(Segment({"lambda": lam * 0.5 * (1 + math.cos(math.pi * mid))}, b - a))
    return Schedule(tuple(segs))


def train_seed(stage: str, index: int) -> int:
    """Grid trainings use their own seeds (branch 6), the final tests replay_seed(s)."""
    import numpy as np

    from firepbt.replay import replay_seed

    if stage == "final":
        return replay_seed(index)
    return int(np.random.SeedSequence([index, 6]).generate_state(1)[0])


def train_one(cfg: dict[str, Any], stage: str, index: int, total: int,
              path: str) -> dict[str, Any]:
    """One training (in a child process, one thread), cached at ``path``."""
    import torch

    from firepbt.replay import train_schedule
    from firepbt.tasks import get_task

    torch.set_num_threads(1)
    task = get_task("mnist1d")
    full = stage == "final"
    sched = schedule_of(cfg, total)
    seed = train_seed(stage, index)
    t0 = time.process_time()
    value, test = train_schedule(lambda s: task.make(s, full_train=full), sched, seed)
    rec = {"config": cfg, "key": key(cfg), "stage": stage, "index": index, "seed": seed,
           "steps": total, "full_train": full, "value": value,
           "test": test if full else None,  # the grid never looks at the test set
           "cpu_s": time.process_time() - t0, "segments": len(sched.segments)}
    Path(path).write_text(json.dumps(rec))
    return rec


def run_all(jobs: list[tuple[dict[str, Any], str, int, Path]], total: int,
            procs: int) -> list[dict[str, Any]]:
    todo = [j for j in jobs if not j[3].exists()]
    if todo:
        print(f"{time.strftime('%H:%M:%S')} {len(todo)} trainings to do "
              f"({len(jobs) - len(todo)} cached)", flush=True)
        with ProcessPoolExecutor(procs) as pool:
            futures = [pool.submit(train_one, c, s, i, total, str(p)) for c, s, i, p in todo]
            for n, f in enumerate(futures, 1):
                f.result()
                if n % 20 == 0 or n == len(futures):
                    print(f"{time.strftime('%H:%M:%S')} {n}/{len(futures)}", flush=True)
    return [json.loads(p.read_text()) for _c, _s, _i, p in jobs]


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return m, s


def pct(ms: tuple[float, float]) -> str:
    m, s = ms
    if math.isnan(m):
        return "n/a"
    return f"{m * 100:.2f}" + ("" if math.isnan(s) else f" ± {s * 100:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/task-tuned"))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seeds", type=int, default=3, help="grid trainings per schedule")
    p.add_argument("--final-seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="experiment seeds whose replay seeds test the chosen schedules")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--peers", type=Path, default=Path("runs/peers"),
                   help="benchmarks/peers.py's output folder (replays to compare with)")
    p.add_argument("--peer-workers", type=int, default=22,
                   help="the population size of the peers.py runs to compare with")
    p.add_argument("--small", action="store_true", help="a small grid (smoke test)")
    a = p.parse_args(argv)
    out = a.out
    (out / "grid").mkdir(parents=True, exist_ok=True)
    (out / "final").mkdir(parents=True, exist_ok=True)
    configs = grid(a.small)
    jobs = [(c, "grid", k, out / "grid" / f"{key(c)}-s{k}.json")
            for c in configs for k in range(a.seeds)]
    results = run_all(jobs, a.steps, a.procs)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_key.setdefault(r["key"], []).append(r)
    scored = sorted(((mean_std([r["value"] for r in rs]), rs[0]["config"])
                     for rs in by_key.values()), key=lambda x: -x[0][0])
    best = scored[0][1]
    best_paper = next(c for _m, c in scored
                      if c["kind"] == "step" and tuple(c["decays"]) == PAPER_DECAYS)
    best_cosine = next(c for _m, c in scored if c["kind"] == "cosine")
    also = [name for name, cfg in (("paper's shape, lambda tuned", best_paper),
                                   ("best cosine", best_cosine)) if key(cfg) == key(best)]
    chosen = {"task-tuned (best of the grid" + "".join(f"; also the {n}" for n in also)
              + ")": best}
    for name, cfg in (("paper's shape, lambda tuned", best_paper),
                      ("best cosine", best_cosine)):
        if name not in also:
            chosen[name] = cfg
    finals: dict[str, list[dict[str, Any]]] = {}
    final_jobs = []
    for cfg in {key(c): c for c in chosen.values()}.values():
        final_jobs += [(cfg, "final", s, out / "final" / f"{key(cfg)}-s{s}.json")
                       for s in a.final_seeds]
    for r in run_all(final_jobs, a.steps, a.procs):
        finals.setdefault(r["key"], []).append(r)
    grid_cpu = sum(r["cpu_s"] for r in results)
    val_of = {key(c): m for m, c in scored}

    # the grid, best first
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["schedule", "kind", "lambda", "decays", "warmup", "val_mean", "val_std",
                "trainings", "cpu_s"])
    for (m, s), c in scored:
        rs = by_key[key(c)]
        w.writerow([describe(c), c["kind"], c["lambda"], " ".join(f"{x:.4f}" for x in
                                                                   c.get("decays", [])),
                    c["warmup"], m, s, len(rs), sum(r["cpu_s"] for r in rs)])
    (out / "grid.csv").write_text(buf.getvalue())

    lines = [f"Grid: {len(configs)} schedules x {a.seeds} trainings = {len(results)} "
             f"trainings of {a.steps} steps on the training split, {grid_cpu:.0f} CPU-s "
             f"({grid_cpu / len(results):.1f} per training); validation accuracy in %, mean "
             "± std over the grid's seeds. Best 10:", "",
             "| Schedule | Validation |", "|---|---|"]
    lines += [f"| {describe(c)} | {pct(ms)} |" for ms, c in scored[:10]]
    lines += ["", "Tested as replay tests: retrained on training + validation from "
              f"replay_seed(s), s = {', '.join(map(str, a.final_seeds))}; test accuracy in "
              "%, mean ± std:", "",
              "| Schedule | Chosen by | Grid validation | Replay test | Trainings | CPU-s |",
              "|---|---|---|---|---|---|"]
    rows_json: dict[str, Any] = {}
    for name, cfg in chosen.items():
        rs = finals[key(cfg)]
        t = mean_std([r["test"] for r in rs])
        lines.append(f"| {describe(cfg)} | {name} | {pct(val_of[key(cfg)])} | {pct(t)} | "
                     f"{len(results)} + {len(rs)} | {grid_cpu + sum(r['cpu_s'] for r in rs):.0f} |")
        rows_json[name] = {"config": cfg, "describe": describe(cfg),
                           "grid_val": val_of[key(cfg)], "test": t,
                           "tests": {r["index"]: r["test"] for r in rs}}
    peers = {}
    for method in ("fire", "random", "pbt", "tune-pbt", "tune-pb2"):
        recs = [json.loads(f.read_text()) for s in a.final_seeds
                if (f := a.peers / "runs" / f"{method}-w{a.peer_workers}-s{s}.json").exists()]
        if recs:
            peers[method] = {r["seed"]: r for r in recs}
            t = mean_std([r["replay_test"] for r in recs])
            lines.append(f"| replay of {recs[0]['label']}'s top schedule (peers.py) | its "
                         f"run | - | {pct(t)} | {len(recs)} runs + replays | "
                         f"{sum(r['cpu_s'] + r['replay_cpu_s'] for r in recs) / len(recs):.0f}"
                         " / run |")
    tuned = {r["index"]: r["test"] for r in finals[key(best)]}
    if "fire" in peers:
        diffs = [peers["fire"][s]["replay_test"] - tuned[s] for s in a.final_seeds
                 if s in peers["fire"] and s in tuned]
        if diffs:
            md, sd = mean_std(diffs)
            lines += ["", f"FIRE PBT's replay minus the task-tuned schedule, seed by seed "
                      f"(same replay seed): {', '.join(f'{d * 100:+.2f}' for d in diffs)} "
                      f"points (mean {md * 100:+.2f}" + ("" if math.isnan(sd) else
                                                        f", std {sd * 100:.2f}") + ")"]
    text = "\n".join(lines) + "\n"
    (out / "task_tuned.md").write_text(text)
    import firepbt

    (out / "task_tuned.json").write_text(json.dumps({
        "grid": [{"config": c, "describe": describe(c), "val": ms} for ms, c in scored],
        "chosen": rows_json, "grid_trainings": len(results), "grid_cpu_s": grid_cpu,
        "steps": a.steps, "seeds": a.seeds, "package": firepbt.__file__}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
