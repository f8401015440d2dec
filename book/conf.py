"""Sphinx configuration of the course book. ``book/build.py`` stages the sources and runs Sphinx with it
(``-c book``); read that file first.

Offline by design: Sphinx, myst-nb and sphinx-book-theme bring every asset in their wheels; MathJax, which
Sphinx would load from a CDN, comes from the ``sphinx-mathjax-offline`` wheel and is copied next to the pages
(only ``tex-chtml.js`` and its fonts); myst-nb's ipywidgets scripts (also a CDN) are switched off, and the
notebooks' widget outputs are replaced by a note under their static figure (build.py).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (in the book extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
_project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: The repository the launch buttons open the notebooks from (Colab and Binder read it from GitHub).
REPOSITORY = _project["urls"]["Repository"]
BRANCH = "main"

project = "mrcnn_edu"
author = "the mrcnn_edu authors"
copyright = "the mrcnn_edu authors, MIT licence"
version = release = _project["version"]

extensions = ["myst_nb", "sphinx.ext.autodoc"]
exclude_patterns = ["**.ipynb_checkpoints"]
root_doc = "index"

# MyST: $...$ and $$...$$ math in the notebooks, anchors for headings (README links to sections)
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# the notebooks arrive executed (build.py); no scripts from a CDN for widgets
nb_execution_mode = "off"
nb_ipywidgets_js: dict = {}
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
add_module_names = False

html_theme = "sphinx_book_theme"
html_title = "mrcnn_edu · Mask R-CNN, stage by stage"
html_last_updated_fmt = None
html_context = {"default_mode": "light"}  # the theme's script complains on a first visit without one
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "path_to_docs": "",  # build.py stages the notebooks at their paths in the repository
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {
        "colab_url": "https://colab.research.google.com",
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
}

# MathJax from the sphinx-mathjax-offline wheel (its Sphinx extension would copy all 25 MB of it)
_spec = importlib.util.find_spec("sphinx-mathjax-offline")
if _spec is None:
    raise RuntimeError("the book needs sphinx-mathjax-offline (MathJax, no CDN): pip install -e .[book]")
_MATHJAX = Path(_spec.origin).parent / "static" / "mathjax"
_MATHJAX_FILES = ("tex-chtml.js", "output/chtml/fonts/woff-v2")
mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    for name in _MATHJAX_FILES:
        source = _MATHJAX / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


# A "name: text" entry of a docstring (an argument, "Returns ...:"), which starts a paragraph of its own.
_ENTRY = re.compile(r"^\s*(?:[*\w][\w ,*.()\[\]=-]*|Returns?\b[^:]*|Raises\b[^:]*):\s")


def _paragraphs(app, what, name, obj, options, lines) -> None:
    """The package's docstrings are plain text for ``help()`` and Jupyter: ``name: text`` entries whose lines
    go on with a hanging indent. reStructuredText reads a hanging indent as a definition or a quote and wants
    blank lines around it, else it warns and runs the lines together. So: an entry's hanging lines join it,
    each entry starts a paragraph, and a change of indent gets a blank line, except inside a bullet (its text
    goes on two spaces in) and inside inline markup that goes on on the next line. Literal blocks (after
    ``::``) stay as they are."""
    out, literal, previous, bullet, entry, markup = [], None, None, False, None, False
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if literal is not None and (not line.strip() or indent > literal):
            out.append(line)
            continue
        literal = None
        if not line.strip():
            out.append(line)
            previous, bullet, entry, markup = None, False, None, False
            continue
        in_bullet = bullet and indent == previous + 2
        if (markup or (entry is not None and indent > entry)) and not in_bullet:
            line, indent = " " * previous + line.lstrip(), previous  # goes on: the same paragraph
        else:
            if previous is not None and not in_bullet and (indent != previous or _ENTRY.match(line)):
                out.append("")
            if not in_bullet:
                previous, bullet = indent, line.lstrip().startswith(("* ", "- "))
            entry = indent if _ENTRY.match(line) else None
        out.append(line)
        outside = re.sub(r"``.*?``", "", line)  # ** inside a literal is not markup
        markup ^= line.count("``") % 2 == 1 or outside.count("**") % 2 == 1
        literal = indent if line.rstrip().endswith("::") else None
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _paragraphs)
    # build.py writes the explorer page into the staged sources' _extra/, which lands at the site's root
    app.config.html_extra_path = [str(Path(app.srcdir) / "_extra")]
    app.connect("build-finished", _copy_mathjax)
