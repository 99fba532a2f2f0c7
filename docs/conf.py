"""Sphinx configuration of the bayesfm documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).
The notebooks are rendered from their committed outputs; they are not executed here
(``tools/run_notebooks.py`` executes them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bayesfm

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Sphinx reads sources under docs/ only: mirror the committed notebooks (git-ignored copy).
# Their links to docs pages (``../docs/x.md``, right from notebooks/) become ``../x.md`` here.
_NB_COPY = DOCS / "notebooks"
shutil.rmtree(_NB_COPY, ignore_errors=True)
_NB_COPY.mkdir()
for _nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
    _text = _nb.read_text(encoding="utf-8").replace("](../docs/", "](../")
    (_NB_COPY / _nb.name).write_text(_text, encoding="utf-8")

# The run-time table of the notebooks page, from the runner's record.
_GENERATED = DOCS / "_generated"
_GENERATED.mkdir(exist_ok=True)
_times_file = ROOT / "notebooks" / "run_times.json"
_times = json.loads(_times_file.read_text()) if _times_file.exists() else {}
_lines = [
    "| notebook | quick mode s | load | full size s | load |",
    "|---|---|---|---|---|",
]
for _name in sorted(_times):
    _t = _times[_name]
    _cells = [str(_t.get(key, "-")) for key in ("quick", "quick_load", "full", "full_load")]
    _lines.append(f"| {_name} | {' | '.join(_cells)} |")
(_GENERATED / "notebooks_times.md").write_text("\n".join(_lines) + "\n")

project = "bayesfm"
author = "the bayesfm developers"
copyright = "2026, the bayesfm developers"
release = bayesfm.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated", "**.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks keep their full-size outputs; the docs build never re-runs them.
nb_execution_mode = "off"
nb_merge_streams = True

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters section carries the types
autodoc_default_options = {"inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every public class and function needs a docstring with an Examples section
# (tests/test_docstrings.py checks the same thing and runs the examples).
numpydoc_validation_checks = {"GL08", "EX01"}

intersphinx_mapping = {}  # no network at build time: plain links instead

html_theme = "furo"
html_title = f"bayesfm {release}"
html_static_path: list[str] = []
templates_path = ["_templates"]
