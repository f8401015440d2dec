"""The grader against students who want a free grade: every attack in tests/attacks graded in one run, between
honest neighbours. Each attack scores 0, every file gets its table, the neighbours are graded correctly and no
process a submission started survives the run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from mrcnn_edu.exercises import grading
from mrcnn_edu.exercises import notebooks as xn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="grading's sandbox needs Linux")

ATTACKS = Path(__file__).parent / "attacks"
HONEST = ("honest_neighbour.py", "honest_neighbour.ipynb")
SLEEPER = b"mrcnn-edu-attack-sleeper"


def _processes_with(marker: bytes, where: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/{where}", "rb") as f:
                    if marker in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(reports by file name, the submissions folder, the table) of one grading run over the attack set."""
    folder = tmp_path_factory.mktemp("submissions")
    names = sorted(p.name for p in ATTACKS.iterdir() if p.suffix in (".py", ".ipynb"))
    for name in names:
        shutil.copy(ATTACKS / name, folder / name)
    for name in HONEST:  # a second pair of neighbours, graded after every attack
        shutil.copy(ATTACKS / name, folder / f"zz_{name}")
    paths = sorted(folder.iterdir())
    before = set(_processes_with(SLEEPER, "cmdline"))
    try:
        reports = grading.grade_paths(paths, ["box_iou", "nms"], timeout=20.0, memory_mb=1024, seed="attacks")
        yield {Path(r.path).name: r for r in reports}, folder, grading.format_report(reports, "attacks")
    finally:  # never leave a sleeper on the machine, whatever the assertions say
        for pid in set(_processes_with(SLEEPER, "cmdline")) - before:
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _statuses(report) -> dict[str, str]:
    return {r.exercise: r.status for r in report.results}


def _messages(report) -> str:
    return "\n".join(r.message for r in report.results)


def test_every_file_gets_its_table(graded):
    reports, folder, table = graded
    assert len(reports) == len(list(folder.iterdir())) == 15
    for name, report in reports.items():
        assert [r.exercise for r in report.results] == ["box_iou", "nms"], name
        assert f"{report.path} ({report.kind})" in table
    assert "total: 8/30 exercises passed in 15 file(s)" in table


def test_honest_neighbours_are_graded_correctly_and_kept(graded):
    reports, folder, _ = graded
    for name in (*HONEST, *(f"zz_{n}" for n in HONEST)):
        assert _statuses(reports[name]) == {"box_iou": "pass", "nms": "pass"}, _messages(reports[name])
        assert (folder / name).is_file()  # delete_neighbours.py ran in a folder of its own


def test_every_attack_scores_zero(graded):
    reports, _, _ = graded
    attacks = {n: r for n, r in reports.items() if "honest_neighbour" not in n}
    assert len(attacks) == 11
    for name, report in attacks.items():
        assert report.passed == 0, f"{name}: {_messages(report)}"


def test_forged_and_crafted_messages_fail_only_their_file(graded):
    reports, _, _ = graded
    forged = reports["forged_events.py"]
    assert set(_statuses(forged).values()) <= {"error", "not found"}
    assert "malformed" in _messages(forged) or "not found" in _messages(forged)
    crafted = reports["crafted_event.py"]
    assert _statuses(crafted) == {"box_iou": "error", "nms": "error"}
    assert "malformed" in _messages(crafted)


def test_patched_comparisons_have_no_effect(graded):
    reports, _, _ = graded
    report = reports["monkeypatch_checks.py"]
    assert _statuses(report) == {"box_iou": "fail", "nms": "fail"}
    assert "wrong values" in report.results[0].message and "Expected" in report.results[0].message
    body = reports["class_body.ipynb"]
    assert _statuses(body) == {"box_iou": "fail", "nms": "fail"}
    code = "".join(s for _, s in xn.grading_code(xn.read_notebook(ATTACKS / "class_body.ipynb")))
    assert "Sneaky" not in code  # a class body outside the exercise cell is not run at all


def test_wrapping_the_library_fails_with_a_message_saying_so(graded):
    reports, _, _ = graded
    report = reports["wrapped_reference.py"]
    assert _statuses(report) == {"box_iou": "fail", "nms": "fail"}
    assert "mrcnn_edu.boxes.box_iou is mrcnn_edu's own implementation of box_iou" in report.results[0].message
    assert "mrcnn_edu.nms.nms is mrcnn_edu's own implementation of nms" in report.results[1].message


def test_the_assignment_decides_what_a_notebook_is_graded_on(graded):
    reports, _, _ = graded
    report = reports["metadata_edit.ipynb"]
    assert [r.exercise for r in report.results] == ["box_iou", "nms"] and report.passed == 0
    assert any("metadata lists []" in note for note in report.notes)


def test_limits_and_dying_workers(graded):
    reports, _, _ = graded
    hog = _messages(reports["memory_hog.py"])
    assert "MemoryError" in hog or "memory" in hog
    exits = reports["exits.py"]
    assert _statuses(exits) == {"box_iou": "error", "nms": "fail"}
    assert "died" in exits.results[0].message and "SystemExit" in exits.results[1].message
    assert set(_statuses(reports["kill_supervisor.py"]).values()) <= {"error", "fail"}


def test_nothing_survives(graded):
    reports, _, _ = graded
    assert _processes_with(SLEEPER, "cmdline") == []
    assert _processes_with(f"{grading.RUN_MARK}=".encode(), "environ") == []
    assert any("killed" in note for note in reports["setsid_child.py"].notes)
