"""The Colab cell, the first code cell of every course notebook: in Google Colab it installs mrcnn_edu from
the repository named in pyproject.toml (``[project.urls] Repository``); anywhere else it does nothing.

    python book/colab.py            # put the cell into the stage and instructor notebooks (or update it)
    python book/colab.py --check    # exit 1, naming them, if a notebook lacks the cell or has a stale one
    mrcnn-edu exercises build       # then: the student notebooks are generated from the instructor ones

The cell is found by its tag (``colab-install``), so running this again replaces it in place: after a merge
that rewrote the notebooks, run it to put the cell back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrcnn_edu.exercises.notebooks import COLAB_TAG, cell_tags

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: The notebooks that get the cell (the student versions are generated from the instructor ones).
NOTEBOOK_GLOBS = ("notebooks/[0-9]*.ipynb", "notebooks/exercises/instructor/*.ipynb")


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The repository URL of ``[project.urls] Repository`` in pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return project["urls"]["Repository"]


def cell_source(url: str) -> str:
    """The cell's code: pip-installs ``mrcnn-edu`` from ``url`` when the kernel is Colab's, else nothing."""
    return (
        "# In Google Colab, install mrcnn_edu first (anywhere else this cell does nothing).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    package = "mrcnn-edu @ git+{url}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)'
    )


def _is_colab_cell(cell: dict) -> bool:
    return COLAB_TAG in cell_tags(cell)


def put_cell(nb: dict, source: str) -> bool:
    """Give ``nb`` the cell ``source`` as its first code cell; returns whether ``nb`` changed."""
    cells = nb["cells"]
    existing = [i for i, c in enumerate(cells) if _is_colab_cell(c)]
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    if existing == [first_code] and "".join(cells[first_code]["source"]) == source:
        return False
    for i in reversed(existing):
        del cells[i]
    cell = {"cell_type": "code", "execution_count": None, "id": COLAB_TAG, "metadata": {"tags": [COLAB_TAG]},
            "outputs": [], "source": source.splitlines(keepends=True)}  # fmt: skip
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
        del cell["id"]  # cell ids came with nbformat 4.5
    cells.insert(next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells)), cell)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a cell is missing")
    args = parser.parse_args(argv)
    source = cell_source(repository_url())
    stale = []
    for pattern in NOTEBOOK_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            nb = json.loads(path.read_text(encoding="utf-8"))
            if put_cell(nb, source):
                stale.append(path.relative_to(ROOT))
                if not args.check:  # written as read (key order kept): the diff is the cell alone
                    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "lack the Colab cell (run python book/colab.py)" if args.check else "given the Colab cell"
    print(f"{len(stale)} notebooks {verb}" + "".join(f"\n  {p}" for p in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
