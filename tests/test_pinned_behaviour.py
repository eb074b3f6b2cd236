"""Behaviour pinned by fingerprints: fixed-seed experiments (PBT, random search on the
hand-tuned schedule, FIRE PBT at 8 and 22 workers, the local and vectorized executors, a run
stopped and resumed twice) must record exactly the evaluations, tests, decisions, worker
states, controller states, final member and last checkpoint that ``tests/data/pinned.json``
holds (see ``tests/pinned_runs.py``). A refactoring leaves them as they are; a change of
behaviour rewrites them (``python tests/pinned_runs.py --write``) in the commit that makes it,
saying why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_fixed_seed_experiments_record_exactly_their_pinned_fingerprints(tmp_path):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1",
           "MKL_CBWR": "COMPATIBLE"}
    out = subprocess.run([sys.executable, str(HERE / "pinned_runs.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    pinned = json.loads((HERE / "data" / "pinned.json").read_text())
    assert sorted(got) == sorted(pinned)
    differ = {name: {part: (pinned[name][part], got[name][part]) for part in pinned[name]
                     if got[name].get(part) != pinned[name][part]}
              for name in pinned}
    assert {k: v for k, v in differ.items() if v} == {}
    # a run stopped and resumed twice is the uninterrupted run
    assert got["fire-nqm-8-local-resumed"] == got["fire-nqm-8-local"]
