"""The documentation site (docs/site, ``make docs``): it builds with warnings as errors, and
every code block in it either runs or says why not (``<!-- not run: REASON -->`` on the line
before it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parents[1] / "docs" / "site"


def blocks():
    """``(page, line, language, code, reason)`` for each fenced block of the pages."""
    out = []
    for page in sorted(SITE.glob("*.md")):
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("```"):
                info = lines[i][3:].strip()
                j = i + 1
                while not lines[j].startswith("```"):
                    j += 1
                if not info.startswith("{"):  # ({toctree}, {eval-rst}: directives, not code)
                    before = lines[i - 1] if i else ""
                    why = re.match(r"<!-- not run: (.+) -->$", before)
                    out.append((page.name, i + 1, info, "\n".join(lines[i + 1:j]),
                                why.group(1) if why else None))
                i = j
            i += 1
    return out


def test_every_block_runs_or_says_why_not():
    found = blocks()
    assert len(found) > 20
    bare = [(p, n) for p, n, lang, _code, why in found if why is None and lang != "python"]
    assert not bare, f"blocks neither run nor marked 'not run' with a reason: {bare}"
    assert all(len(why) > 10 for *_x, why in found if why is not None)


@pytest.mark.parametrize("page, line, code", [(p, n, c) for p, n, lang, c, why in blocks()
                                              if lang == "python" and why is None])
def test_python_blocks_run(page, line, code, tmp_path):
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"{page}:{line}\n{out.stderr[-2000:]}"


@pytest.mark.slow
def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html",
                          str(SITE), str(tmp_path / "html")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    html = (tmp_path / "html" / "api.html").read_text()
    assert "tune_factory" in html and "RoundReport" in html  # the reference, from docstrings
    cli = (tmp_path / "html" / "cli.html").read_text()
    assert "firepbt run" in cli and "--time-budget" in cli  # generated from the parser


def test_the_committed_cli_reference_is_what_the_parser_says():
    from firepbt.cli import reference_markdown

    assert (SITE / "cli.md").read_text() == reference_markdown(), (
        "docs/site/cli.md is stale: 'make docs' writes it again")
