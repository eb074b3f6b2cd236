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


def cli_run(tmp_path, monkeypatch, capsys, source, factory, *options):
    """``firepbt run`` (in this process) on ``factory`` of a module the test writes from
    ``source``, 4 PBT workers x 2 rounds of 1 step, store ``tmp_path/s``: (exit code, stdout,
    stderr)."""
    import sys
    import zlib

    from firepbt.cli import main

    name = f"factory_{zlib.crc32(source.encode()):08x}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    code = main(["run", "x", "--factory", f"{name}:{factory}", "--method", "pbt", "--workers",
                 "4", "--steps", "2", "--ready-interval", "1", "--eval-interval", "1", "--store",
                 str(tmp_path / "s"), "--no-progress", "--executor", "local", *options])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused_in_one_line(tmp_path, result, *words):
    """A CLI run refused before its first round: exit 2, one line naming ``words``, no store
    left behind."""
    code, out, err = result
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firepbt: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "s").exists()


def load_example(filename):
    """``examples/<filename>`` as shipped, imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / filename
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
