"""Stores written by an earlier schema version are converted when opened (firepbt._migrations):
a reader sees the current shape and leaves the file as it is, a writer converts it once and
continues it exactly, and what cannot be converted without guessing is refused in one line.

``tests/data/store-v1`` was written by schema version 1 (main at 6085c41): FIRE PBT on a
100-dimension NQM, 8 workers, stopped after round 4 of 10; ``store-v1.finished.json`` is the
fingerprint (tests/pinned_runs.py) of the same run finished without a stop, by that version.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tree

from firepbt.errors import StoreError
from firepbt.results import open_experiment
from firepbt.store import SCHEMA_VERSION, Store

HERE = Path(__file__).parent
V1 = HERE / "data" / "store-v1"


@pytest.fixture()
def v1(tmp_path):
    """A copy of the version-1 store (never the committed file itself)."""
    shutil.copytree(V1, tmp_path / "v1")
    return tmp_path / "v1"


def _version(path: Path) -> str:
    db = sqlite3.connect(path / "experiment.sqlite")
    try:
        return db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    finally:
        db.close()


def test_a_reader_sees_the_current_shape_and_leaves_the_file_as_it_was(v1):
    before = tree(v1)
    with open_experiment(v1) as exp:
        status = exp.status()
        facts = exp.facts
        initial = exp.worker_states(0)
        fourth = exp.worker_states(4)
    assert (status.steps_done, status.rounds_done, status.finished) == (240, 4, False)
    assert (facts.mode, facts.best_candidates, facts.subpopulations, facts.main_param) == (
        "min", (0, 1, 2), 2, "lr")
    assert facts.schedule_param is None  # FIRE PBT: no hand-tuned schedule
    assert [initial[w].role for w in range(8)] == ["member"] * 6 + ["evaluator"] * 2
    assert [initial[w].subpopulation for w in range(8)] == [0, 0, 0, 1, 1, 1, None, None]
    assert any(st.active for w, st in fourth.items() if st.role == "evaluator")
    assert tree(v1) == before and _version(v1) == "1"


def test_a_writer_converts_it_once_and_the_resumed_run_ends_as_one_never_stopped(v1):
    # the fingerprint was taken with PyTorch's portable kernels, as the pinned runs are
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1",
           "MKL_CBWR": "COMPATIBLE"}
    code = ("import json, sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
            "from firepbt import resume; from pinned_runs import fingerprint; "
            "resume(sys.argv[1], progress=False); print(json.dumps(fingerprint(Path(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, str(v1), str(HERE)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == json.loads((HERE / "data" / "store-v1.finished.json")
                                                .read_text())
    assert _version(v1) == str(SCHEMA_VERSION)
    db = sqlite3.connect(v1 / "experiment.sqlite")
    keys = {k for (k,) in db.execute("SELECT key FROM meta")}
    columns = [c[1] for c in db.execute("PRAGMA table_info(rounds)")]
    db.close()
    assert not keys & {"initial_runner_state", "mode", "executor", "space", "random_schedule"}
    assert {"run", "initial_workers"} <= keys
    assert "runner_state" not in columns and {"workers", "best_score"} <= set(columns)


def _edit(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path / "experiment.sqlite")
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize(("edit", "why"), [
    (["DROP TABLE checkpoint_digests"], "its checkpoints have no digests"),
    (["UPDATE decisions SET payload=json_set(payload, '$.comparison', json('null')) "
      "WHERE kind='evaluator_success'"], "evaluator successes do not carry their comparison"),
    (["UPDATE rounds SET controller_state=json_set(controller_state, '$.members.\"0\".curve', "
      "json('[[0, 0.5]]'))"], "its FIRE PBT states hold whole curves"),
    (["DELETE FROM meta WHERE key='device_last'"], "does not record the device"),
])
def test_an_earlier_development_store_is_refused_in_one_line_and_left_as_it_was(v1, edit, why):
    _edit(v1, *edit)
    before = tree(v1)
    for readonly in (True, False):
        with pytest.raises(StoreError, match=why) as err:
            Store.open(v1, readonly=readonly)
        assert "early development build" in str(err.value) and "\n" not in str(err.value)
    assert tree(v1) == before and _version(v1) == "1"


def test_a_store_of_a_newer_firepbt_is_refused(v1):
    _edit(v1, f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=f"at most {SCHEMA_VERSION}"):
        Store.open(v1, readonly=True)
