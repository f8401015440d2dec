"""Exercise notebooks: one instructor notebook (with solutions) per exercise, and the student's version of it.

The instructor notebooks in ``notebooks/exercises/instructor/`` are the source. Each states a task, holds the
solution in one code cell, checks it with :func:`mrcnn_edu.exercises.check` and runs the detector with it.
:func:`build_student_notebooks` derives ``notebooks/exercises/student/`` from them
(``mrcnn-edu exercises build [--src DIR --out DIR]``); both versions are committed, without outputs.

Cell tags (Jupyter: View > Cell Toolbar > Tags, stored in the cell's ``metadata.tags``):

``exercise``
    The cell that defines the student's function(s). The grader (:mod:`.grading`) runs these cells
    whole; from every other code cell it runs only the top-level ``import`` statements and ``def``
    statements, never calls, checks, detector runs or class bodies.
``solution``
    Instructor-only content. In the student's version a code cell tagged ``solution`` becomes the *task cell*:
    its imports are kept, every top-level function keeps its ``def`` line(s) and docstring and gets the body
    ``raise NotImplementedError("your code here")``; comments and any other statement are dropped. A markdown
    cell tagged ``solution`` is dropped. The ``solution`` tag itself is removed.

Notebook metadata ``mrcnn_edu.exercises`` lists the exercises a notebook covers (it must agree with
:data:`.catalog.ASSIGNMENTS`, which is what the grader goes by: a student can edit metadata); the student's
version also gets ``mrcnn_edu.generated = true``. Outputs and execution counts are
cleared in both versions.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import sys
from pathlib import Path

__all__ = [
    "EXERCISE_TAG",
    "SOLUTION_TAG",
    "TASK_BODY",
    "default_dirs",
    "read_notebook",
    "write_notebook",
    "cell_source",
    "cell_tags",
    "notebook_exercises",
    "solution_parts",
    "task_cell_source",
    "student_notebook",
    "build_student_notebooks",
    "stale_student_notebooks",
    "grading_code",
    "add_arguments",
    "run",
]

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
#: The Colab cell (book/colab.py), the first code cell of a course notebook: it installs mrcnn_edu in Colab.
COLAB_TAG = "colab-install"
#: The body every function of a task cell gets in the student's version.
TASK_BODY = 'raise NotImplementedError("your code here")'


def default_dirs() -> tuple[Path, Path]:
    """``(instructor, student)`` folders of the course: in the installed package, or in a clone."""
    from ..notebook import course_source

    root = course_source() / "exercises"
    return root / "instructor", root / "student"


# --------------------------------------------------------------------------------------------------------
# reading and writing notebooks (plain JSON: no nbformat needed)


def read_notebook(path: str | Path) -> dict:
    """A notebook file as its JSON dict. Raises ValueError naming ``path`` if it is not a notebook."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"path {path} is not a readable notebook: {err}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"path {path} is not a notebook (no list of cells)")
    return nb


def write_notebook(nb: dict, path: str | Path) -> Path:
    """Write ``nb`` as Jupyter does (one-space indent, a final newline), so regenerating gives equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return path


def cell_source(cell: dict) -> str:
    """A cell's source as one string (notebook files store it as a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def cell_tags(cell: dict) -> list[str]:
    metadata = cell.get("metadata")
    tags = metadata.get("tags", []) if isinstance(metadata, dict) else []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def notebook_exercises(nb: dict) -> list[str] | None:
    """The exercise names listed in the notebook's ``mrcnn_edu.exercises`` metadata, or None."""
    metadata = nb.get("metadata")
    own = metadata.get("mrcnn_edu") if isinstance(metadata, dict) else None
    names = own.get("exercises") if isinstance(own, dict) else None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


# --------------------------------------------------------------------------------------------------------
# instructor -> student


def solution_parts(source: str) -> list[tuple[str, str, str]]:
    """A solution cell split for the tools that hide solutions: one ``(head, indent, body)`` per statement.

    source: Python code of a solution cell: only ``import`` statements and function definitions.
    An import gives ``(its text, "", "")``; a function gives its head (decorators, ``def`` line(s) and
    docstring, verbatim), the indentation of its body and the rest of its body (verbatim, possibly empty).
    Raises ValueError (naming ``source``) on anything else, so that no solution code can slip into a student's
    version unnoticed, and when there is no function.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"source of a solution cell does not parse: {err}") from None
    lines = source.splitlines()
    parts = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parts.append(("\n".join(lines[node.lineno - 1 : node.end_lineno]), "", ""))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            body = node.body
            head_end = body[0].lineno - 1
            if ast.get_docstring(node, clean=False) is not None:
                if body[0].lineno == node.lineno:  # one-line function: ``def f(x): "doc"; ...``
                    raise ValueError(f"source: put the body of {node.name}() on its own lines")
                head_end = body[0].end_lineno
            head = "\n".join(lines[first - 1 : head_end])
            rest = "\n".join(lines[head_end : node.end_lineno])
            parts.append((head, " " * body[0].col_offset, rest))
        else:
            raise ValueError(
                "source of a solution cell may hold only imports and function definitions, got a "
                f"{type(node).__name__} statement on line {node.lineno}"
            )
    if not any(indent for _, indent, _ in parts):
        raise ValueError("source of a solution cell defines no function")
    return parts


def task_cell_source(source: str) -> str:
    """The student's task cell made from a solution cell: imports, and each function's header and docstring.

    source: Python code of a solution cell (see :func:`solution_parts`, which raises ValueError on anything
    else). Returns the same imports and functions (decorators, ``def`` line(s) and docstring kept verbatim)
    with every body replaced by :data:`TASK_BODY`.
    """
    parts = solution_parts(source)
    imports = [head for head, indent, _ in parts if not indent]
    functions = [f"{head}\n{indent}{TASK_BODY}" for head, indent, _ in parts if indent]
    blocks = (["\n".join(imports)] if imports else []) + functions
    return "\n\n\n".join(blocks) + "\n"


def _clean(cell: dict) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None


def student_notebook(nb: dict) -> dict:
    """The student's version of an instructor notebook (a new dict; ``nb`` is unchanged).

    Code cells tagged ``solution`` become task cells (:func:`task_cell_source`), markdown or raw cells tagged
    ``solution`` are dropped, the ``solution`` tag is removed, all outputs are cleared and the notebook
    metadata gets ``mrcnn_edu.generated = true``.
    """
    out = copy.deepcopy(nb)
    cells = []
    for cell in out["cells"]:
        tags = cell_tags(cell)
        if SOLUTION_TAG in tags:
            if cell.get("cell_type") != "code":
                continue
            _set_source(cell, task_cell_source(cell_source(cell)))
            cell["metadata"]["tags"] = [t for t in tags if t != SOLUTION_TAG]
        _clean(cell)
        cells.append(cell)
    out["cells"] = cells
    out.setdefault("metadata", {}).setdefault("mrcnn_edu", {})["generated"] = True
    return out


def _instructor_notebooks(src_dir: Path) -> list[Path]:
    if not src_dir.is_dir():
        raise ValueError(f"src_dir {src_dir} is not a folder")
    paths = sorted(p for p in src_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"src_dir {src_dir} holds no .ipynb notebooks")
    return paths


def _rendered(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def build_student_notebooks(
    src_dir: str | Path | None = None, out_dir: str | Path | None = None
) -> list[Path]:
    """Write the student's version of every instructor notebook in ``src_dir`` to ``out_dir``.

    src_dir, out_dir: folders; default :func:`default_dirs`. A notebook in ``out_dir`` marked as generated
    whose instructor source no longer exists is deleted (other files there are left alone).
    Returns the paths written, in name order.
    """
    default_src, default_out = default_dirs()
    src = Path(src_dir) if src_dir is not None else default_src
    out = Path(out_dir) if out_dir is not None else default_out
    sources = _instructor_notebooks(src)
    written = [write_notebook(student_notebook(read_notebook(p)), out / p.name) for p in sources]
    names = {p.name for p in sources}
    for old in out.glob("*.ipynb"):
        if old.name not in names and _is_generated(old):
            old.unlink()
    return written


def _is_generated(path: Path) -> bool:
    try:
        return bool(read_notebook(path).get("metadata", {}).get("mrcnn_edu", {}).get("generated"))
    except ValueError:
        return False


def stale_student_notebooks(
    src_dir: str | Path | None = None, out_dir: str | Path | None = None
) -> list[str]:
    """What :func:`build_student_notebooks` would change in ``out_dir``, one line each (empty: up to date)."""
    default_src, default_out = default_dirs()
    src = Path(src_dir) if src_dir is not None else default_src
    out = Path(out_dir) if out_dir is not None else default_out
    sources = _instructor_notebooks(src)
    problems = []
    for p in sources:
        target = out / p.name
        if not target.is_file():
            problems.append(f"{target}: missing")
        elif target.read_text(encoding="utf-8") != _rendered(student_notebook(read_notebook(p))):
            problems.append(f"{target}: differs from what {p} generates")
    names = {p.name for p in sources}
    problems += [
        f"{old}: no instructor source"
        for old in sorted(out.glob("*.ipynb"))
        if old.name not in names and _is_generated(old)
    ]
    return problems


# --------------------------------------------------------------------------------------------------------
# the code the grader runs


def _strip_magics(source: str) -> str:
    """IPython-only lines (``%magic``, ``!shell``) become blank, so the rest parses as Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def grading_code(nb: dict) -> list[tuple[int, str]]:
    """The code the grader executes from a notebook: ``(cell index, source)`` in cell order.

    Code cells tagged ``exercise`` are taken whole (a syntax error there is the student's and is reported);
    from every other code cell only the top-level imports and ``def`` statements (with their decorators) are
    taken, so that checks, plots, detector runs and class bodies (code that runs at definition) are not
    executed while grading. Cells that do not parse, outside the exercise cells, are skipped.
    """
    chunks = []
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _strip_magics(cell_source(cell))
        if EXERCISE_TAG in cell_tags(cell):
            chunks.append((index, source))
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        lines = source.splitlines()
        kept = []
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                kept.append("\n".join(lines[first - 1 : node.end_lineno]))
        if kept:
            chunks.append((index, "\n".join(kept) + "\n"))
    return chunks


# --------------------------------------------------------------------------------------------------------
# command line: ``mrcnn-edu exercises build``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcnn-edu exercises build``."""
    src, out = default_dirs()
    parser.add_argument("--src", type=Path, default=None, help=f"instructor notebooks (default {src})")
    parser.add_argument("--out", type=Path, default=None, help=f"student notebooks (default {out})")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether the student notebooks are up to date (exit 1 if not)",
    )


def run(args: argparse.Namespace) -> int:
    """Build (or with ``--check`` verify) the student notebooks.

    Exit status 0 (done / up to date), 1 (out of date), 2 (bad folder or notebook).
    """
    try:
        if args.check:
            problems = stale_student_notebooks(args.src, args.out)
            for line in problems:
                print(line)
            print(
                "student notebooks are up to date"
                if not problems
                else f"{len(problems)} student notebook(s) out of date: run `mrcnn-edu exercises build`"
            )
            return 1 if problems else 0
        written = build_student_notebooks(args.src, args.out)
    except ValueError as err:
        print(f"exercises build: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
