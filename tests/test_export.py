"""The exercises exported to nbgrader and otter-grader: the formats, then both tools run for real on a correct
and a wrong submission of exercise 4 (NMS), which must score full and zero marks."""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrcnn_edu.exercises import ASSIGNMENTS, export
from mrcnn_edu.exercises import notebooks as xn

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret"
CORRECT = '''def nms(boxes, scores, iou_threshold):
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while len(order):
        keep.append(int(order[0]))
        order = order[1:][box_iou(boxes[order[:1]], boxes[order[1:]])[0] <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)
'''
WRONG = '''def nms(boxes, scores, iou_threshold):
    return torch.sort(scores, descending=True).indices  # keeps every box
'''


def _code(cell) -> str:
    return xn.cell_source(cell)


def _tool_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # the tools call their own scripts (nbgrader runs `alembic`): those of this interpreter's environment
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _run(args, cwd) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=_tool_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _with_answer(nb: dict, source: str, is_answer) -> dict:
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        if is_answer(cell):
            cell["source"] = source
    return out


# --------------------------------------------------------------------------------------------------------
# the formats


def test_nbgrader_export_has_solution_and_graded_test_cells(tmp_path):
    written = export.export_nbgrader(tmp_path, seed=SECRET)
    assert [p.parent.name for p in written] == list(ASSIGNMENTS)  # every exercise notebook
    assert (tmp_path / "nbgrader_config.py").is_file()
    for path in written:
        nb = xn.read_notebook(path)
        meta = [c["metadata"].get("nbgrader", {}) for c in nb["cells"]]
        solutions = [c for c, m in zip(nb["cells"], meta, strict=True) if m.get("solution")]
        tests = [c for c, m in zip(nb["cells"], meta, strict=True) if m.get("grade")]
        assert len(solutions) >= 1 and len(tests) == len(ASSIGNMENTS[path.stem])
        for cell in solutions:
            source = _code(cell)
            assert source.count("### BEGIN SOLUTION") == source.count("### END SOLUTION") >= 1
            compile(source, path.name, "exec")
        for cell, name in zip(tests, ASSIGNMENTS[path.stem], strict=True):
            m = cell["metadata"]["nbgrader"]
            assert m["locked"] and m["points"] == 1.0 and m["grade_id"].endswith(name)
            source = _code(cell)
            assert "### BEGIN HIDDEN TESTS" in source and f'seed="{SECRET}/"' in source
            assert "torch.manual_seed(0)" in source  # the tools seed only random and numpy
            compile(source, path.name, "exec")
        sources = "".join(_code(c) for c in nb["cells"])
        assert "**Answers.**" not in sources  # instructor-only text stays out
        demos = [c for c in nb["cells"] if "use_student_if_passed(" in _code(c)]
        assert demos and all('if not os.environ.get("NBGRADER_EXECUTION")' in _code(c) for c in demos)
        # The imports run while nbgrader grades too: the student's code and the tests need them.
        (imports,) = [c for c in nb["cells"] if "from mrcnn_edu.exercises import check" in _code(c)]
        assert "NBGRADER_EXECUTION" not in _code(imports)


def test_otter_export_is_in_assign_format(tmp_path):
    written = export.export_otter(tmp_path, assignments=["02_box_deltas", "04_nms"], seed=SECRET)
    assert [p.name for p in written] == ["02_box_deltas.ipynb", "04_nms.ipynb"]
    nb = xn.read_notebook(written[0])
    raw = [_code(c) for c in nb["cells"] if c["cell_type"] == "raw"]
    assert raw[0].startswith("# ASSIGNMENT CONFIG\nname: 02_box_deltas")
    assert "ok_format: false" in raw[0]
    assert sum(r.startswith("# BEGIN QUESTION") for r in raw) == 2
    assert raw.count("# BEGIN SOLUTION\n") == raw.count("# END QUESTION\n") == 2
    tests = [c for c in nb["cells"] if "BEGIN TEST CONFIG" in _code(c)]
    assert len(tests) == 4
    hidden = [_code(c) for c in tests if "hidden: true" in _code(c)]
    assert len(hidden) == 2 and all(f'seed="{SECRET}"' in h and "torch.manual_seed(0)" in h for h in hidden)
    for cell in tests:
        tree = ast.parse(_code(cell))
        assert isinstance(tree.body[-1], ast.FunctionDef)  # otter's exception-based test: one function
    demos = [c for c in nb["cells"] if "use_student_if_passed(" in _code(c)]
    assert demos and all("otter_ignore" in xn.cell_tags(c) for c in demos)


def test_export_command_and_its_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args(["--otter", str(tmp_path / "o"), "--assignment", "01_box_iou"])
    assert export.run(args) == 0
    assert "hidden tests' seed:" in capsys.readouterr().out
    args = parser.parse_args(["--nbgrader", str(tmp_path / "n"), "--assignment", "99_nothing"])
    assert export.run(args) == 2 and "99_nothing" in capsys.readouterr().err
    args = parser.parse_args(["--nbgrader", str(tmp_path / "n"), "--src", str(tmp_path / "missing")])
    assert export.run(args) == 2 and "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # exactly one of --nbgrader / --otter
        parser.parse_args(["--assignment", "04_nms"])


# --------------------------------------------------------------------------------------------------------
# the tools, for real

_INSTALL = "pip install -e '.[test]' installs it"
needs_nbgrader = pytest.mark.skipif(
    importlib.util.find_spec("nbgrader") is None, reason=f"nbgrader is not installed ({_INSTALL})"
)
needs_otter = pytest.mark.skipif(
    importlib.util.find_spec("otter") is None, reason=f"otter-grader is not installed ({_INSTALL})"
)


@needs_nbgrader
def test_nbgrader_generates_and_autogrades(tmp_path):
    export.export_nbgrader(tmp_path, assignments=["04_nms"], seed=SECRET)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    _run([*nbgrader, "generate_assignment", "04_nms", "--force"], tmp_path)
    release = xn.read_notebook(tmp_path / "release" / "04_nms" / "04_nms.ipynb")
    text = "".join(_code(c) for c in release["cells"])
    assert "box_iou(boxes[order[:1]]" not in text and "BEGIN HIDDEN TESTS" not in text and SECRET not in text

    def is_answer(cell):
        return cell["metadata"].get("nbgrader", {}).get("solution", False)

    for student, source in (("alice", CORRECT), ("bob", WRONG)):
        path = tmp_path / "submitted" / student / "04_nms" / "04_nms.ipynb"
        xn.write_notebook(_with_answer(release, source, is_answer), path)
    _run([*nbgrader, "autograde", "04_nms", "--create"], tmp_path)

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission("04_nms", s).score for s in ("alice", "bob")}
    assert scores == {"alice": 1.0, "bob": 0.0}


@needs_otter
def test_otter_assigns_and_runs(tmp_path):
    (source,) = export.export_otter(tmp_path / "src", assignments=["04_nms"], seed=SECRET)
    otter = [sys.executable, "-m", "otter"]
    _run([*otter, "assign", str(source), str(tmp_path / "dist")], tmp_path)
    student = xn.read_notebook(tmp_path / "dist" / "student" / "04_nms.ipynb")
    assert SECRET not in json.dumps(student) and "box_iou(boxes[order[:1]]" not in json.dumps(student)
    (zip_path,) = (tmp_path / "dist" / "autograder").glob("*.zip")

    def is_answer(cell):
        return "otter_answer_cell" in xn.cell_tags(cell)

    runs = {}
    for name, answer in (("alice", CORRECT), ("bob", WRONG)):  # both at once: each waits for its kernel
        xn.write_notebook(_with_answer(student, answer, is_answer), tmp_path / f"{name}.ipynb")
        (tmp_path / f"out-{name}").mkdir()
        args = [*otter, "run", "-a", str(zip_path), "-o", str(tmp_path / f"out-{name}"), f"{name}.ipynb"]
        runs[name] = subprocess.Popen(args, cwd=tmp_path, env=_tool_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)  # fmt: skip
    scores = {}
    for name, proc in runs.items():
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f"otter run {name} failed:\n{output[-3000:]}"
        results = json.loads((tmp_path / f"out-{name}" / "results.json").read_text())
        scores[name] = sum(t.get("score", 0) or 0 for t in results["tests"])
    assert scores == {"alice": 1.0, "bob": 0.0}
