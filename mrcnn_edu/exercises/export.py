"""The exercises as a course for the tools teachers grade with: nbgrader (JupyterHub) and otter-grader
(Gradescope). ``mrcnn-edu exercises export --nbgrader DIR`` / ``--otter DIR``.

Both exports start from the instructor notebooks (:func:`.notebooks.default_dirs`, or ``--src``) and keep
each notebook's task, imports, ``check`` cell, demos, recap and questions; what differs is how the tool hides
the solution and grades:

nbgrader (``DIR/source/<assignment>/<assignment>.ipynb``, ``DIR/nbgrader_config.py``)
    The solution cell becomes an nbgrader *solution cell*: every function keeps its ``def`` and docstring,
    its body is wrapped in ``### BEGIN SOLUTION`` / ``### END SOLUTION`` (``nbgrader generate_assignment``
    replaces it by a stub). After each ``check`` cell comes a locked, graded *test cell* worth ``points``:
    :func:`run_check` on the cases the student sees, then, between ``### BEGIN HIDDEN TESTS`` and ``### END
    HIDDEN TESTS`` (absent from the students' release), on random cases drawn for the export's secret seed
    and the student's id (the folder ``nbgrader autograde`` runs the notebook in). Demo cells, which run the
    model, are skipped while nbgrader executes (``NBGRADER_EXECUTION`` is set then).
otter-grader (``DIR/<assignment>/<assignment>.ipynb``, otter's assign format)
    A raw ``# ASSIGNMENT CONFIG`` cell (exception-based tests, no otter init or export cell), then per
    exercise a question (``# BEGIN QUESTION``): the solution between ``# BEGIN SOLUTION`` blocks, and two
    tests, a visible one (the cases the student sees, 0 points) and a hidden one worth ``points`` (the secret
    seed's cases). ``otter assign`` turns it into the student notebook and the autograder zip that ``otter
    run`` (or Gradescope) grades with. Demo cells are tagged ``otter_ignore``.

Both tools seed only what they know (otter: ``random`` and numpy): every test seeds torch itself. Both run
the tests in the student's own kernel, after the student's code, so a student can defeat them there (both
tools document this); ``mrcnn-edu grade`` keeps the checks out of the student's reach.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import secrets
import sys
import textwrap
from pathlib import Path

from .catalog import ASSIGNMENTS
from .notebooks import (
    COLAB_TAG,
    EXERCISE_TAG,
    SOLUTION_TAG,
    cell_source,
    cell_tags,
    default_dirs,
    read_notebook,
    solution_parts,
    write_notebook,
)

__all__ = ["export_nbgrader", "export_otter", "add_arguments", "run"]

_CHECK = re.compile(r"^\s*\w+\s*=\s*check\(\s*[\"'](\w+)[\"']", re.M)


# --------------------------------------------------------------------------------------------------------
# the instructor notebooks, cell by cell


def _kind(index: int, cell: dict, first_code: int) -> str:
    """What an instructor notebook's cell is: answers, solution, check, setup, imports, demo, markdown."""
    tags = cell_tags(cell)
    if COLAB_TAG in tags:
        return "setup"  # the Colab install cell, kept as it is
    if SOLUTION_TAG in tags and cell.get("cell_type") != "code":
        return "answers"  # instructor-only text
    if cell.get("cell_type") != "code":
        return "markdown"
    if EXERCISE_TAG in tags or SOLUTION_TAG in tags:
        return "solution"
    if _CHECK.search(cell_source(cell)):
        return "check"
    return "imports" if index == first_code else "demo"


def _cells(nb: dict):
    """``(kind, cell)`` for each cell of an instructor notebook."""
    code = [
        i
        for i, c in enumerate(nb["cells"])
        if c.get("cell_type") == "code" and COLAB_TAG not in cell_tags(c)
    ]
    return [(_kind(i, c, code[0] if code else -1), c) for i, c in enumerate(nb["cells"])]


def _marked(source: str, begin: str, end: str) -> str:
    """A solution cell whose function bodies are wrapped in the tool's solution markers."""
    blocks = []
    for head, indent, body in solution_parts(source):
        if not indent:
            blocks.append(head)
            continue
        inside = f"\n{body}" if body else ""
        blocks.append(f"{head}\n{indent}{begin}{inside}\n{indent}{end}")
    return "\n\n\n".join(blocks) + "\n"


def _new_cell(kind: str, source: str, metadata: dict | None = None) -> dict:
    cell = {
        "cell_type": kind,
        "id": hashlib.sha1(source.encode()).hexdigest()[:8],
        "metadata": metadata or {},
        "source": source.splitlines(keepends=True),
    }
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _clean(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    tags = [t for t in cell_tags(cell) if t != SOLUTION_TAG]
    cell.setdefault("metadata", {}).pop("tags", None)
    if tags:
        cell["metadata"]["tags"] = tags
    if cell.get("cell_type") == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _test_code(name: str, seed: str | None, student_id: bool = False, imports: bool = True) -> str:
    """A test: run_check on the notebook's cases (seed None) or on the seed's (and the student's, from the
    folder nbgrader runs the notebook in), with torch seeded (the tools seed only random and numpy)."""
    lines = (
        ["import os", "", "import torch", "", "from mrcnn_edu.exercises import run_check", ""]
        if imports
        else []
    )
    lines.append("torch.manual_seed(0)")
    if seed is None:
        lines.append(f'result = run_check("{name}", {name})')
    elif student_id:
        lines.append(
            "student = os.path.basename(os.path.dirname(os.getcwd()))  # autograded/<student>/<assignment>"
        )
        lines.append(f'result = run_check("{name}", {name}, seed="{seed}/" + student)')
    else:
        lines.append(f'result = run_check("{name}", {name}, seed="{seed}")')
    lines.append("assert result.passed, result.message")
    return "\n".join(lines)


def _sources(src_dir, assignments) -> list[tuple[str, dict]]:
    src = Path(src_dir) if src_dir is not None else default_dirs()[0]
    if not src.is_dir():
        raise ValueError(f"src_dir {src} is not a folder")
    found = {p.stem: p for p in sorted(src.glob("*.ipynb"))}
    names = list(assignments) if assignments else [n for n in ASSIGNMENTS if n in found]
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"assignments {missing} have no notebook in {src} (it holds {sorted(found)})")
    if not names:
        raise ValueError(f"src_dir {src} holds no exercise notebook")
    return [(n, read_notebook(found[n])) for n in names]


def _metadata(nb: dict) -> dict:
    metadata = copy.deepcopy(nb.get("metadata", {}))
    metadata.setdefault("mrcnn_edu", {}).pop("generated", None)
    return metadata


# --------------------------------------------------------------------------------------------------------
# nbgrader


_NBGRADER_CONFIG = """\
# nbgrader configuration of the mrcnn_edu exercises (written by `mrcnn-edu exercises export --nbgrader`).
c = get_config()  # noqa: F821 - nbgrader provides it
c.CourseDirectory.course_id = "mrcnn_edu"
"""


def _nbgrader_meta(**fields) -> dict:
    return {"nbgrader": {"schema_version": 3, "task": False, **fields}}


def _nbgrader_notebook(stem: str, nb: dict, points: float, seed: str) -> dict:
    cells = []
    for kind, cell in _cells(nb):
        if kind == "answers":
            continue
        if kind == "solution":
            names = [
                line.split("(")[0][4:] for line in cell_source(cell).splitlines() if line.startswith("def ")
            ]
            source = _marked(cell_source(cell), "### BEGIN SOLUTION", "### END SOLUTION")
            meta = _nbgrader_meta(
                grade=False, solution=True, locked=False, grade_id=f"{stem}-{'-'.join(names)}"
            )
            cells.append(_new_cell("code", source, {**_clean(cell)["metadata"], **meta}))
            continue
        if kind == "demo":  # the demos train and run the model: not while nbgrader grades
            body = textwrap.indent(cell_source(cell).rstrip("\n"), "    ")
            source = (
                'import os\n\nif not os.environ.get("NBGRADER_EXECUTION"):  # skipped while nbgrader '
                "grades\n"
                f"{body}\n"
            )
            cells.append(_new_cell("code", source, {}))
            continue
        cells.append(_clean(cell))
        if kind == "check":
            name = _CHECK.search(cell_source(cell)).group(1)
            visible = _test_code(name, None)
            hidden = _test_code(name, seed, student_id=True, imports=False)
            source = (
                f"# Graded: {name} on the cases check() shows, then on random cases hidden until grading.\n"
                f"{visible}\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS\n"
            )
            meta = _nbgrader_meta(
                grade=True, solution=False, locked=True, points=points, grade_id=f"{stem}-test-{name}"
            )
            cells.append(_new_cell("code", source, meta))
    return {"cells": cells, "metadata": _metadata(nb), "nbformat": 4, "nbformat_minor": 5}


def export_nbgrader(
    out_dir, src_dir=None, assignments=None, points: float = 1.0, seed: str | None = None
) -> list[Path]:
    """Write an nbgrader course: ``out_dir/nbgrader_config.py`` and ``out_dir/source/<name>/<name>.ipynb``
    for each assignment (default: every exercise notebook, :data:`.catalog.ASSIGNMENTS`).

    src_dir: the instructor notebooks (default :func:`.notebooks.default_dirs`). points: per exercise.
    seed: the secret of the hidden tests' random cases (default: a new random one; write it down to regrade
    with the same cases). Returns the notebooks written. Raises ValueError for an unknown assignment or
    folder.
    """
    seed = secrets.token_hex(8) if seed is None else str(seed)
    out = Path(out_dir)
    written = []
    sources = _sources(src_dir, assignments)
    for stem, nb in sources:
        written.append(
            write_notebook(
                _nbgrader_notebook(stem, nb, points, seed), out / "source" / stem / f"{stem}.ipynb"
            )
        )
    (out / "nbgrader_config.py").write_text(_NBGRADER_CONFIG, encoding="utf-8")
    return written


# --------------------------------------------------------------------------------------------------------
# otter-grader


def _otter_config(stem: str) -> str:
    return textwrap.dedent(
        f"""\
        # ASSIGNMENT CONFIG
        name: {stem}
        init_cell: false
        check_all_cell: false
        export_cell: false
        run_tests: false
        generate: true
        tests:
          ok_format: false
        """
    )


def _otter_test(name: str, seed: str | None, points: float, hidden: bool) -> str:
    config = (
        f'""" # BEGIN TEST CONFIG\nhidden: {str(hidden).lower()}\npoints: {points}\n""" # END TEST CONFIG\n'
    )
    body = textwrap.indent(_test_code(name, seed), "    ")
    which = "hidden" if hidden else "visible"
    return f"{config}def test_{name}_{which}({name}):\n{body}\n"


def _otter_notebook(stem: str, nb: dict, points: float, seed: str) -> dict:
    cells = [_new_cell("raw", _otter_config(stem))]
    pending: list[dict] = []  # the solution cell's question, closed after the cell's check
    for kind, cell in _cells(nb):
        if kind == "answers":
            continue
        if kind == "solution":
            source = _marked(cell_source(cell), "# BEGIN SOLUTION", "# END SOLUTION")
            names = [
                line.split("(")[0][4:] for line in cell_source(cell).splitlines() if line.startswith("def ")
            ]
            name = names[0]
            pending = [
                _new_cell("raw", f"# BEGIN QUESTION\nname: {name}\npoints: {points}\ncheck_cell: false\n"),
                _new_cell(
                    "markdown", f"Write `{name}` (its task is at the top of the notebook) in the cell below."
                ),
                _new_cell("raw", "# BEGIN SOLUTION\n"),
                _new_cell("code", source, _clean(cell)["metadata"]),
                _new_cell("raw", "# END SOLUTION\n"),
                _new_cell("raw", "# BEGIN TESTS\n"),
                _new_cell("code", _otter_test(name, None, 0, hidden=False)),
                _new_cell("code", _otter_test(name, seed, points, hidden=True)),
                _new_cell("raw", "# END TESTS\n"),
                _new_cell("raw", "# END QUESTION\n"),
            ]
            cells += pending
            continue
        cleaned = _clean(cell)
        if kind == "demo":  # the demos train and run the model: not while otter grades
            cleaned["metadata"]["tags"] = [*cell_tags(cleaned), "otter_ignore"]
        cells.append(cleaned)
    return {"cells": cells, "metadata": _metadata(nb), "nbformat": 4, "nbformat_minor": 5}


def export_otter(
    out_dir, src_dir=None, assignments=None, points: float = 1.0, seed: str | None = None
) -> list[Path]:
    """Write one otter-grader assign-format notebook per assignment: ``out_dir/<name>/<name>.ipynb``
    (default: every exercise notebook). Arguments as :func:`export_nbgrader`. Run ``otter assign
    <name>.ipynb dist`` on each to get the student notebook and the autograder zip."""
    seed = secrets.token_hex(8) if seed is None else str(seed)
    out = Path(out_dir)
    return [
        write_notebook(_otter_notebook(stem, nb, points, seed), out / stem / f"{stem}.ipynb")
        for stem, nb in _sources(src_dir, assignments)
    ]


# --------------------------------------------------------------------------------------------------------
# command line: ``mrcnn-edu exercises export``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcnn-edu exercises export``."""
    tool = parser.add_mutually_exclusive_group(required=True)
    tool.add_argument("--nbgrader", type=Path, metavar="DIR", help="write an nbgrader course into DIR")
    tool.add_argument(
        "--otter", type=Path, metavar="DIR", help="write otter-grader assign notebooks into DIR"
    )
    parser.add_argument(
        "--src", type=Path, default=None, help="instructor notebooks (default: the package's)"
    )
    parser.add_argument(
        "--assignment", default=None, metavar="NAME[,NAME...]", help="export these (default: all)"
    )
    parser.add_argument("--points", type=float, default=1.0, help="points per exercise (default %(default)g)")
    parser.add_argument(
        "--seed", default=None, help="secret seed of the hidden tests' cases (default: a new random one)"
    )


def run(args: argparse.Namespace) -> int:
    """Export; exit status 0, or 2 for a bad folder, assignment or points."""
    names = [n.strip() for n in args.assignment.split(",") if n.strip()] if args.assignment else None
    seed = args.seed if args.seed is not None else secrets.token_hex(8)
    if not args.points > 0:
        print(f"exercises export: --points must be > 0, got {args.points}", file=sys.stderr)
        return 2
    try:
        if args.nbgrader is not None:
            written = export_nbgrader(args.nbgrader, args.src, names, args.points, seed)
        else:
            written = export_otter(args.otter, args.src, names, args.points, seed)
    except ValueError as err:
        print(f"exercises export: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"hidden tests' seed: {seed} (keep it secret; export again with --seed {seed} for the same cases)")
    return 0
