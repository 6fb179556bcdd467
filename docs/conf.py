"""Sphinx configuration of the probkit reference site.

Build from the repository root (CI does, with warnings as errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here reaches the network: no intersphinx inventories, no remote images. MathJax is
loaded by the reader's browser, not at build time.
"""

from __future__ import annotations

import os
import sys

# Build against the checkout even when probkit is not installed (CI installs it editable).
sys.path.insert(0, os.path.abspath(".."))

import probkit  # noqa: E402

project = "probkit"
author = "the probkit developers"
copyright = "the probkit developers"  # noqa: A001 - Sphinx's name
release = probkit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- autodoc / napoleon (NumPy-style docstrings) ------------------------------------------------
autodoc_default_options = {
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = False  # types as text: no guessed cross-references to shapes
napoleon_use_rtype = False
napoleon_use_ivar = True
add_module_names = False
python_display_short_literal_types = True

# -- MyST (Markdown pages, the included README/BENCHMARKS) --------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"probkit {release}"
html_show_sourcelink = False
