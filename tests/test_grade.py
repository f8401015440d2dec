"""Exercise notebooks (instructor -> student generator) and the grader (``mrcnn-edu grade``)."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

import pytest

from mrcnn_edu.exercises import ASSIGNMENTS, EXERCISES, run_check
from mrcnn_edu.exercises import grading as grade
from mrcnn_edu.exercises import notebooks as xn

ROOT = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
INSTRUCTOR = sorted((ROOT / "instructor").glob("*.ipynb"))
STUDENT = ROOT / "student"


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _namespace(nb: dict) -> dict:
    """Execute a notebook's grading code (as the grader's worker does) in a fresh namespace."""
    namespace = {"__name__": "submission"}
    for index, source in xn.grading_code(nb):
        exec(compile(source, f"cell {index}", "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------------------------------------
# the notebooks


def test_there_are_enough_exercise_notebooks():
    assert len(INSTRUCTOR) >= 8
    covered = {name for p in INSTRUCTOR for name in xn.notebook_exercises(xn.read_notebook(p))}
    assert covered == set(EXERCISES)  # every exercise has a notebook


def test_student_notebooks_are_up_to_date(tmp_path):
    written = xn.build_student_notebooks(ROOT / "instructor", tmp_path)
    assert [p.name for p in written] == [p.name for p in INSTRUCTOR]
    assert sorted(p.name for p in STUDENT.glob("*.ipynb")) == [p.name for p in INSTRUCTOR]
    for path in written:
        committed = STUDENT / path.name
        stale = f"{committed} is stale: run mrcnn-edu exercises build"
        assert path.read_bytes() == committed.read_bytes(), stale
    assert xn.stale_student_notebooks(ROOT / "instructor", STUDENT) == []


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.stem)
def test_student_notebook_carries_no_solution(path):
    instructor = xn.read_notebook(path)
    student = xn.read_notebook(STUDENT / path.name)
    student_lines = {line.strip() for c in student["cells"] for line in xn.cell_source(c).splitlines()}
    tagged = [c for c in instructor["cells"] if xn.SOLUTION_TAG in xn.cell_tags(c)]
    solutions = [c for c in tagged if c["cell_type"] == "code"]
    assert solutions, "an instructor notebook has solution cells"
    answers = [c for c in tagged if c["cell_type"] != "code"]
    for cell in answers:  # instructor-only text (answers to the questions) is dropped
        assert not set(xn.cell_source(cell).splitlines()) & student_lines - {""}
    for cell in solutions:
        task = xn.task_cell_source(xn.cell_source(cell)).splitlines()
        lines = xn.cell_source(cell).splitlines()
        body = [line.strip() for line in lines if line not in task and line.strip()]
        assert body, "the solution has a body"
        leaked = [line for line in body if line in student_lines]
        assert not leaked, f"solution lines in the student's {path.name}: {leaked}"
    for cell in student["cells"]:
        assert xn.SOLUTION_TAG not in xn.cell_tags(cell)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    exercise_cells = [c for c in student["cells"] if xn.EXERCISE_TAG in xn.cell_tags(c)]
    assert len(exercise_cells) == len(solutions)
    assert all(xn.TASK_BODY in xn.cell_source(c) for c in exercise_cells)


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.stem)
def test_instructor_solutions_pass_and_student_stubs_fail(path):
    names = xn.notebook_exercises(xn.read_notebook(path))
    solved = _namespace(xn.read_notebook(path))
    stubs = _namespace(xn.read_notebook(STUDENT / path.name))
    for name in names:
        result = run_check(name, solved[name])
        assert result.passed, result.message
        required = [p for p in inspect.signature(stubs[name]).parameters.values() if p.default is p.empty]
        with pytest.raises(NotImplementedError):
            stubs[name](*[None] * len(required))  # the stub raises whatever the arguments
        assert not run_check(name, stubs[name]).passed


def test_task_cell_source_keeps_header_and_docstring_only():
    source = (
        "import torch\n\n\n"
        "@staticmethod\n"
        "def f(a,\n      b=1):\n"
        '    """Doc\n    more doc."""\n'
        "    secret = a + b  # the answer\n"
        "    return secret\n"
        "def g(x):\n    return x\n"
    )
    task = xn.task_cell_source(source)
    assert "secret" not in task and "return x" not in task and "the answer" not in task
    assert "import torch" in task and "@staticmethod" in task and "      b=1):" in task
    assert '    """Doc\n    more doc."""\n    raise NotImplementedError' in task
    assert task.count(xn.TASK_BODY) == 2
    compile(task, "task", "exec")
    with pytest.raises(ValueError, match="source"):
        xn.task_cell_source("def f():\n    return 1\nprint(f())\n")  # a call would leak into the student's
    with pytest.raises(ValueError, match="source"):
        xn.task_cell_source("x = 1\n")


def test_grading_code_skips_calls_outside_exercise_cells():
    sources = [
        ("code", [], "%matplotlib inline\nimport math\nprint('setup')\n"),
        ("code", ["exercise"], "K = 2\ndef nms(b, s, t):\n    return K\n"),
        ("code", [], "check('nms', nms)\ndef helper():\n    return 1\n"),
        ("markdown", [], "def not_code(): pass"),
    ]
    nb = {"cells": [{"cell_type": t, "metadata": {"tags": tags}, "source": s} for t, tags, s in sources]}
    chunks = xn.grading_code(nb)
    assert [i for i, _ in chunks] == [0, 1, 2]
    text = "".join(s for _, s in chunks)
    assert "print" not in text and "check(" not in text and "import math" in text and "K = 2" in text
    namespace = _namespace(nb)
    assert namespace["nms"](None, None, None) == 2 and namespace["helper"]() == 1


# --------------------------------------------------------------------------------------------------------
# the grader

SAMPLE = '''
import math

import torch

from mrcnn_edu.roi_align import roi_align  # imported from the library: not the student's, "not found"


def box_iou(boxes1, boxes2):  # correct
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def encode_deltas(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):  # wrong
    return torch.zeros_like(boxes)


def decode_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=None):  # raises
    raise RuntimeError("boom from the student")


def nms(boxes, scores, iou_threshold):  # never returns
    while True:
        pass


def level_anchors(scale, ratios, feature_shape, feature_stride, anchor_stride=1, offset=0.0):  # loud, correct
    print("x" * 1_000_000)
    rows, cols = math.ceil(feature_shape[0] / anchor_stride), math.ceil(feature_shape[1] / anchor_stride)
    step = anchor_stride * feature_stride
    ys, xs = torch.meshgrid((torch.arange(rows) + offset) * step, (torch.arange(cols) + offset) * step,
                            indexing="ij")
    centres = torch.stack((xs, ys, xs, ys), -1).reshape(-1, 1, 4).float()
    r = torch.tensor([float(v) for v in ratios])
    w, h = scale * r.sqrt(), scale / r.sqrt()
    base = torch.stack((-w / 2, -h / 2, w / 2, h / 2), 1)
    return (centres + base[None]).reshape(-1, 4)


def pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride=1, offset=0.0):
    import mrcnn_edu.anchors  # the library's own: fails with a message saying so
    return mrcnn_edu.anchors.pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride,
                                             offset)


if __name__ == "__main__":
    raise SystemExit("a submission is imported, not run")
'''


def _args(paths, **kw):
    defaults = {"timeout": 60.0, "only": None, "assignment": None, "json": False, "memory": 2048}
    defaults["seed"] = "test"
    return argparse.Namespace(paths=[Path(p) for p in paths], **{**defaults, **kw})


def test_grader_scores_a_module(tmp_path, capsys):
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    only = "box_iou,encode_deltas,decode_deltas,nms,level_anchors,pyramid_anchors,roi_align,paste_mask"
    status = grade.run(_args([path], timeout=4.0, only=only, json=True))
    out = capsys.readouterr().out
    assert len(out) < 20_000  # the megabytes printed by the submission are not echoed
    report = json.loads(out)
    assert status == report["exit_status"] == 1 and report["seed"] == "test"
    (file,) = report["files"]
    results = {r["exercise"]: r for r in file["results"]}
    assert list(results) == only.split(",")
    assert {k: r["status"] for k, r in results.items()} == {
        "box_iou": "pass",
        "encode_deltas": "fail",
        "decode_deltas": "fail",
        "nms": "timeout",
        "level_anchors": "pass",
        "pyramid_anchors": "fail",
        "roi_align": "not found",
        "paste_mask": "not found",
    }
    assert "boom from the student" in results["decode_deltas"]["message"]
    assert "line " in results["decode_deltas"]["message"]  # the student's line, from the worker
    assert "timed out after 4 s" in results["nms"]["message"]
    assert "mrcnn_edu.anchors.pyramid_anchors is mrcnn_edu's own implementation" in (
        results["pyramid_anchors"]["message"]
    )
    assert (file["passed"], file["total"], report["passed"], report["total"]) == (2, 8, 2, 8)
    assert file["output_chars"] >= 1_000_000 and len(file["output_head"]) <= grade.OUTPUT_KEPT

    # The table, for the same kind of run on a smaller selection.
    status = grade.run(_args([path], timeout=4.0, only="box_iou,encode_deltas,paste_mask"))
    table = capsys.readouterr().out
    assert status == 1
    assert re.search(r"box_iou +PASS", table) and re.search(r"encode_deltas +FAIL +hand-made", table)
    assert re.search(r"paste_mask +FAIL +not found", table) and "score: 1/3" in table
    assert "total: 1/3 exercises passed" in table and "--seed test" in table


def test_grader_module_that_raises_at_import_and_usage_errors(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("def box_iou(a, b):\n    return a\n\nraise ImportError('no such thing')\n")
    status = grade.run(_args([path], only="box_iou,nms", json=True))
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    for r in report["files"][0]["results"]:
        assert r["status"] == "fail" and "raised ImportError" in r["message"]
        assert "no such thing" in r["message"]

    assert grade.run(_args([tmp_path / "missing.py"], only="nms")) == 2
    (tmp_path / "notes.txt").write_text("hi")
    assert grade.run(_args([tmp_path / "notes.txt"], only="nms")) == 2
    assert grade.run(_args([path], only="not_an_exercise")) == 2
    assert "unknown exercise" in capsys.readouterr().err
    assert grade.run(_args([path])) == 2  # what to grade comes from the teacher: no default
    assert "--assignment" in capsys.readouterr().err
    assert grade.run(_args([path], assignment="99_nothing")) == 2
    assert "unknown assignment" in capsys.readouterr().err


def test_assignments_match_the_notebooks():
    assert {p.stem: tuple(xn.notebook_exercises(xn.read_notebook(p))) for p in INSTRUCTOR} == ASSIGNMENTS
    assert grade.resolve_exercises("04_nms,box_iou", "nms") == ["nms", "box_iou"]
    assert grade.resolve_exercises("all", None) == list(EXERCISES)


def test_grader_scores_notebooks(tmp_path, capsys):
    """The committed student notebook fails (not implemented), the instructor's and a filled one pass."""
    student = STUDENT / "04_nms.ipynb"
    filled = xn.read_notebook(student)
    for cell in _code_cells(filled):
        if xn.EXERCISE_TAG in xn.cell_tags(cell):
            cell["source"] = (
                "def nms(boxes, scores, iou_threshold):\n"
                "    print('my nms')\n"
                "    order = torch.sort(scores, descending=True, stable=True).indices\n"
                "    keep = []\n"
                "    while len(order):\n"
                "        keep.append(int(order[0]))\n"
                "        order = order[1:][box_iou(boxes[order[:1]], boxes[order[1:]])[0] <= iou_threshold]\n"
                "    return torch.tensor(keep, dtype=torch.long)\n"
            )
        elif "check(" in xn.cell_source(cell):
            cell["source"] = "raise RuntimeError('cells outside the exercise are not run')\n"
    xn.write_notebook(filled, tmp_path / "submission.ipynb")
    paths = [student, ROOT / "instructor" / "04_nms.ipynb", tmp_path / "submission.ipynb"]
    status = grade.run(_args(paths, assignment="04_nms", json=True))
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    files = report["files"]
    assert [f["kind"] for f in files] == ["notebook"] * 3
    assert [[r["exercise"] for r in f["results"]] for f in files] == [["nms"]] * 3  # the assignment's
    assert [f["results"][0]["status"] for f in files] == ["fail", "pass", "pass"]
    assert "not implemented yet" in files[0]["results"][0]["message"]
    assert files[2]["notes"] == [] and files[2]["output_chars"] > 0  # printed by the check's calls
    passing = grade.FileReport("a.py", "module", [grade.ExerciseResult("nms", "pass", "PASS")])
    assert grade.exit_status([passing, grade.FileReport("b", "module")]) == 0


def test_build_command_and_check_flag(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    xn.add_arguments(parser)
    out = tmp_path / "student"
    assert xn.run(parser.parse_args(["--src", str(ROOT / "instructor"), "--out", str(out), "--check"])) == 1
    assert xn.run(parser.parse_args(["--src", str(ROOT / "instructor"), "--out", str(out)])) == 0
    assert xn.run(parser.parse_args(["--src", str(ROOT / "instructor"), "--out", str(out), "--check"])) == 0
    # A generated notebook whose source is gone is removed; other files are left alone.
    xn.write_notebook({**xn.read_notebook(out / INSTRUCTOR[0].name)}, out / "99_gone.ipynb")
    (out / "mine.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    assert xn.run(parser.parse_args(["--src", str(ROOT / "instructor"), "--out", str(out), "--check"])) == 1
    xn.build_student_notebooks(ROOT / "instructor", out)
    assert not (out / "99_gone.ipynb").exists() and (out / "mine.ipynb").exists()
    assert xn.run(parser.parse_args(["--src", str(tmp_path / "nothing"), "--out", str(out)])) == 2
    capsys.readouterr()


def test_grader_passes_instructor_solutions_that_sample_and_train(capsys):
    """Through the worker protocol: generators (sampling), large inputs, tensors that carry a gradient."""
    paths = [ROOT / "instructor" / "05_rpn_targets.ipynb", ROOT / "instructor" / "15_rpn_loss.ipynb"]
    reports = grade.grade_paths(paths, ["rpn_targets", "rpn_loss"], timeout=120.0, memory_mb=2048, seed="x")
    statuses = [[r.status for r in rep.results] for rep in reports]
    assert statuses == [["pass", "not found"], ["not found", "pass"]], [rep.results for rep in reports]


def test_protocol_round_trips_values_and_refuses_malformed_messages():
    import numpy as np
    import torch

    from mrcnn_edu.exercises import protocol

    g = torch.Generator().manual_seed(3)
    value = {
        "t": torch.arange(6.0).reshape(2, 3).requires_grad_(),
        "big": torch.rand(1023, 4),
        "b": torch.tensor([True, False]),
        "h": torch.ones(2, dtype=torch.bfloat16),
        "e": torch.zeros(0, 4, dtype=torch.int64),
        "n": np.float32(1.5),
        "x": (1, 2.5, None, "s", [torch.tensor(3)]),
        "g": g,
        "o": object(),
    }
    back = protocol.decode(json.loads(json.dumps(protocol.encode(value))))
    assert torch.equal(back["t"], value["t"]) and back["t"].requires_grad
    assert torch.equal(back["big"], value["big"]) and torch.equal(back["b"], value["b"])
    assert back["h"].dtype == torch.bfloat16 and back["e"].shape == (0, 4)
    assert isinstance(back["n"], np.ndarray) and back["x"][:4] == (1, 2.5, None, "s")
    assert torch.equal(torch.rand(3, generator=back["g"]), torch.rand(3, generator=g))
    assert isinstance(back["o"], protocol.Opaque) and back["o"].type_name == "builtins.object"
    bad = [
        {"$": "tensor", "dtype": "float32", "shape": [2], "data": "AAAA"},  # 3 bytes for 8
        {"$": "tensor", "dtype": "object", "shape": [1], "data": ""},
        {"$": "tensor", "dtype": "float32", "shape": [1 << 40], "data": ""},
        {"$": "tensor", "dtype": "float32", "shape": [1], "data": "!!!!"},
        {"$": "eval", "code": "1"},
        {"no": "kind"},
    ]
    deep: list = []
    for _ in range(40):
        deep = [deep]
    bad.append(deep)
    for data in bad:
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(data)


def test_random_cases_differ_per_student_and_repeat_with_the_seed(tmp_path):
    """The module prints a digest of every input it is given: another file (student) gets other random cases,
    the same file and --seed the same ones."""
    source = SAMPLE + (
        "\n\nimport hashlib\n\n_correct = box_iou\n\n\ndef box_iou(boxes1, boxes2):\n"
        "    print(hashlib.sha1(boxes1.numpy().tobytes()).hexdigest()[:8])\n"
        "    return _correct(boxes1, boxes2)\n"
    )
    for name in ("alice.py", "bob.py"):
        (tmp_path / name).write_text(source)
    alice, bob = grade.grade_paths([tmp_path / "alice.py", tmp_path / "bob.py"], ["box_iou"], seed="s")
    (again,) = grade.grade_paths([tmp_path / "alice.py"], ["box_iou"], seed="s")
    (other,) = grade.grade_paths([tmp_path / "alice.py"], ["box_iou"], seed="t")
    assert alice.output_head == again.output_head != bob.output_head != other.output_head != alice.output_head
