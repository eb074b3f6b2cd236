"""Hyperparameter schedules: what a member trained with, and for how long.

A :class:`Schedule` is the list of ``(hparams, steps)`` segments that lineage retraces, that
replay trains with, and that random search follows. The hand-tuned baseline of the paper
(section 4.1.1, after Goyal et al. 2017) is built by :func:`hand_tuned`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .errors import ConfigError, check


@dataclass(frozen=True, slots=True)
class Segment:
    """``steps`` training steps with fixed ``hparams``."""

    hparams: Mapping[str, Any]
    steps: int

    def __post_init__(self) -> None:
        check(isinstance(self.steps, int) and self.steps > 0, "Segment.steps", "an int > 0",
              self.steps)
        object.__setattr__(self, "hparams", dict(self.hparams))


@dataclass(frozen=True, slots=True)
class Schedule:
    """Consecutive segments starting at step 0."""

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.segments))
        check(len(self.segments) >= 1, "Schedule.segments", "at least one segment", self.segments)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.segments)

    def hparams_at(self, step: int) -> dict[str, Any]:
        """Hyperparameters in force at ``step`` (the last segment's beyond the end)."""
        start = 0
        for seg in self.segments:
            if step < start + seg.steps:
                return dict(seg.hparams)
            start += seg.steps
        return dict(self.segments[-1].hparams)

    def pieces(self, start: int, stop: int) -> Iterator[tuple[dict[str, Any], int]]:
        """``(hparams, steps)`` pieces covering ``[start, stop)``; the last segment extends."""
        pos = start
        seg_start = 0
        for i, seg in enumerate(self.segments):
            seg_stop = seg_start + seg.steps if i < len(self.segments) - 1 else max(stop, seg_start + seg.steps)
            if pos < seg_stop and pos < stop:
                n = min(stop, seg_stop) - pos
                if n > 0:
                    yield dict(seg.hparams), n
                    pos += n
            seg_start += seg.steps
            if pos >= stop:
                return

    def merged(self) -> Schedule:
        """Adjacent segments with equal hyperparameters joined."""
        out: list[Segment] = []
        for seg in self.segments:
            if out and out[-1].hparams == seg.hparams:
                out[-1] = Segment(out[-1].hparams, out[-1].steps + seg.steps)
            else:
                out.append(seg)
        return Schedule(tuple(out))

    def to_json(self) -> str:
        return json.dumps({"segments": [{"hparams": dict(s.hparams), "steps": s.steps}
                                        for s in self.segments]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
            raise ConfigError("schedule", "a JSON object with a 'segments' list", text[:80])
        segs = []
        for i, seg in enumerate(data["segments"]):
            steps = seg.get("steps") if isinstance(seg, dict) else None
            # an int, as written: 200.9, true or "200" are not a number of steps
            check(type(steps) is int and steps > 0, f"schedule.segments[{i}].steps",
                  "an int > 0", steps)
            segs.append(Segment(seg["hparams"], cast(int, steps)))  # (checked above)
        return cls(tuple(segs))

    @classmethod
    def constant(cls, hparams: Mapping[str, Any], steps: int) -> Schedule:
        return cls((Segment(hparams, steps),))


HAND_TUNED = {"warmup_fraction": 5 / 90, "decay_fractions": (30 / 90, 60 / 90, 80 / 90),
              "decay_factor": 0.1}


def hand_tuned_settings(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hand-tuned schedule's shape (:func:`hand_tuned`'s keywords): the paper's
    (``HAND_TUNED``) with ``given``'s keys in place, each validated: ``warmup_fraction`` in
    [0, 1), ``decay_fractions`` increasing, in (warmup_fraction, 1), ``decay_factor`` in
    (0, 1]. A :class:`~firepbt.errors.ConfigError` names the key."""
    given = {} if given is None else dict(given)
    unknown = sorted(set(given) - set(HAND_TUNED))
    check(not unknown, "hand_tuned", f"keys among {sorted(HAND_TUNED)}", unknown)
    out = {**HAND_TUNED, **given}
    w = out["warmup_fraction"]
    check(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < 1,
          "hand_tuned['warmup_fraction']", "a number in [0, 1)", w)
    fr = out["decay_fractions"]
    ok = (isinstance(fr, (list, tuple)) and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and w < f < 1 for f in fr)
        and all(a < b for a, b in zip(fr[:-1], fr[1:], strict=True)))
    check(ok, "hand_tuned['decay_fractions']", f"increasing numbers in ({w:g}, 1) (after the "
          "warm-up, before the end)", fr)
    f = out["decay_factor"]
    check(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1,
          "hand_tuned['decay_factor']", "a number in (0, 1]", f)
    out["decay_fractions"] = tuple(float(x) for x in fr)
    return out


def hand_tuned(hparams: Mapping[str, Any], name: str, total_steps: int, *,
               warmup_fraction: float = 5 / 90,
               decay_fractions: Sequence[float] = (30 / 90, 60 / 90, 80 / 90),
               decay_factor: float = 0.1, warmup_pieces: int = 20, grain: int = 1) -> Schedule:
    """The hand-tuned schedule of the paper's random-search baseline (4.1.1, Goyal et al.).

    ``hparams[name]`` (the reference value, e.g. lambda with learning rate
    ``lambda * batch_size / 256``) is warmed up linearly from near zero over the first
    ``warmup_fraction`` of training, then held and multiplied by ``decay_factor`` at each of
    ``decay_fractions`` of training (1/10 at 30/90, 60/90 and 80/90 by default). The linear
    warmup is applied in ``warmup_pieces`` equal constant pieces, the k-th at k/pieces of the
    reference, each one call of the trainable - but never in pieces shorter than ``grain``
    steps (the run's evaluation interval): a warm-up of fewer than ``warmup_pieces * grain``
    steps is rounded to whole grains, one piece each, so that its pieces end on evaluation
    steps and cost no call more than a constant rate would.
    """
    check(isinstance(total_steps, int) and total_steps > 0, "total_steps", "an int > 0", total_steps)
    check(name in hparams, "name", f"one of {sorted(hparams)}", name)
    check(isinstance(grain, int) and grain >= 1, "grain", "an int >= 1", grain)
    base = float(hparams[name])
    warm = max(0, int(round(warmup_fraction * total_steps)))
    if warm and warm < warmup_pieces * grain and grain > 1:
        warm = min(total_steps, max(grain, int(round(warm / grain)) * grain))
        pieces = warm // grain
    else:
        pieces = max(1, min(warmup_pieces, warm)) if warm else 0
    segs: list[Segment] = []
    for k in range(pieces):
        a = warm * k // pieces
        b = warm * (k + 1) // pieces
        if b > a:
            segs.append(Segment({**hparams, name: base * (k + 1) / pieces}, b - a))
    bounds = [warm] + [max(warm, int(round(f * total_steps))) for f in decay_fractions] + [
        total_steps]
    value = base
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        if b > a:
            segs.append(Segment({**hparams, name: value}, b - a))
        value *= decay_factor
    if not segs:
        segs.append(Segment(dict(hparams), total_steps))
    return Schedule(tuple(segs))


def warmup(schedule: Schedule) -> tuple[str, float, int, int] | None:
    """The linear warm-up a schedule starts with, as :func:`hand_tuned` writes one: ``n >= 2``
    segments in which one hyperparameter takes ``k/n`` (k = 1..n) of the value the segment
    after them holds, everything else as there. Returns ``(name, value, steps, n)``, or None
    when the schedule starts otherwise."""
    segs = schedule.segments
    for n in range(len(segs) - 1, 1, -1):
        after = segs[n].hparams
        for name, value in after.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value == 0:
                continue
            if all({**seg.hparams, name: value} == dict(after)
                   and isinstance(seg.hparams.get(name), (int, float))
                   and abs(float(seg.hparams[name]) - value * (k + 1) / n)
                   <= 1e-9 * abs(value) for k, seg in enumerate(segs[:n])):
                return name, float(value), sum(seg.steps for seg in segs[:n]), n
    return None


def display_rows(schedule: Schedule) -> list[tuple[str | None, dict[str, Any], int]]:
    """The schedule as rows to print: a leading linear warm-up (:func:`warmup`) as one row
    ``("linear warm-up of NAME to VALUE (n pieces)", hparams after it, steps)``, then each
    segment as ``(None, hparams, steps)``."""
    rows: list[tuple[str | None, dict[str, Any], int]] = []
    segs = list(schedule.segments)
    found = warmup(schedule)
    if found is not None:
        name, value, steps, n = found
        rows.append((f"linear warm-up of {name} to {value:.4g} in {n} pieces",
                     dict(segs[n].hparams), steps))
        segs = segs[n:]
    rows += [(None, dict(seg.hparams), seg.steps) for seg in segs]
    return rows
