"""Sphinx configuration of firepbt's documentation (``make docs``).

Sphinx, because the docstrings are already written in its roles (``:class:``, ``:func:``,
``:mod:``), so the API reference is generated from them as they are; the pages are Markdown
(MyST), the same text a reader sees on GitHub. The CLI reference is generated from the
argument parser (``cli.md``, kept in git and checked by the tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

project = "firepbt"
author = "firepbt's developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
# the docstrings cross-reference a few names Sphinx cannot resolve (private helpers, third-party
# classes without an inventory here): those are left as plain text, not warnings
nitpicky = False
suppress_warnings = ["myst.xref_missing"]


def _cli_reference() -> None:
    """``cli.md``: every command's ``--help``, from the parser itself (kept in git, so the page
    reads on GitHub too; ``tests/test_docs.py`` checks it is what the parser says)."""
    from firepbt.cli import reference_markdown

    page = HERE / "cli.md"
    text = reference_markdown()
    if not page.exists() or page.read_text() != text:
        page.write_text(text)


_cli_reference()
