"""Every notebook executes headless in full, as a student gets it, and is committed without outputs.

The notebooks run with the shapes model shipped in the package (no training decides what a picture shows) and
one torch thread per kernel, so their outputs are the same on every run. How long each took is printed
(``pytest -s``) and recorded in docs/benchmarks.md; the suite asserts no time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
# Exercise notebooks come in pairs with the same name (exercises/instructor/NN_x, exercises/student/NN_x, the
# student's with unimplemented functions: its check cells print FAIL and its demos run the reference): ids are
# paths relative to notebooks/, which for the top-level notebooks is their stem.
_ID = lambda p: p.relative_to(NOTEBOOK_DIR).with_suffix("").as_posix()  # noqa: E731


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory):
    """A private cache folder and one thread per kernel (2-core machines, and the same numbers every run)."""
    keys = ("MRCNN_EDU_CACHE", "OMP_NUM_THREADS", "MPLBACKEND")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(MRCNN_EDU_CACHE=str(tmp_path_factory.mktemp("cache")), OMP_NUM_THREADS="1")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ID)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ID)
def test_notebook_executes_in_full(path, kernel_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    print(f"{_ID(path)}: {time.perf_counter() - start:.1f} s")
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "mrcnn_edu" in sources  # notebooks call the library; they do not re-implement it
    assert "MRCNN_EDU_FAST" not in sources  # no notebook has a mode in which its pictures differ


# the stage notebooks (the exercise notebooks have their own checks)
COURSE = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", COURSE, ids=_ID)
def test_course_notebook_recaps_and_asks(path):
    """Each stage notebook opens with a recap of the stage before it (a "> **Before this" quote in its first
    cell) and ends with questions whose answers sit in a collapsed cell after them, folded in a <details>
    element too (JupyterLab's "Run All" expands collapsed markdown cells)."""
    cells = json.loads(path.read_text())["cells"]
    source = ["".join(c["source"]) for c in cells]
    assert "> **Before this" in source[0], f"{path.name}: no recap at the top"
    hidden = [i for i, c in enumerate(cells) if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]
    assert hidden and "Answers" in source[hidden[-1]], f"{path.name}: no collapsed answers cell"
    answers = source[hidden[-1]]
    assert "<details>" in answers and "</details>" in answers, f"{path.name}: answers not folded"
    asked = [i for i, s in enumerate(source) if "## Questions" in s or "## Recap and questions" in s]
    assert asked and asked[-1] < hidden[-1], f"{path.name}: the answers must follow the questions"
