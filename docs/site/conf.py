"""Sphinx configuration of firepbt's documentation (``make docs``).

Sphinx, because the docstrings are already written in its roles (``:class:``, ``:func:``,
``:mod:``), so the API reference is generated from them as they are; the pages are Markdown
(MyST), the same text a reader sees on GitHub. The CLI reference is generated from the
argument parser at each build (``cli.md``, not kept in git).
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
    """``cli.md``: every command's ``--help``, from the parser itself."""
    from firepbt.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = ["# Command-line reference", "",
             "Generated from the parser (`firepbt COMMAND --help` prints the same).", "",
             "<!-- not run: help text, as the parser prints it -->", "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in sub.choices.items():
        parts += [f"## firepbt {name}", "", "<!-- not run: help text, as the parser prints it -->", "```text",
                  p.format_help().rstrip(), "```", ""]
    (HERE / "cli.md").write_text("\n".join(parts))


_cli_reference()
