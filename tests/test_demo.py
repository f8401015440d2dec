"""The shipped shapes model, the demo, and the course notebooks copied out of the package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mrcnn_edu.cli import main
from mrcnn_edu.config import Config
from mrcnn_edu.demo import (
    SHIPPED_MODEL,
    build_shipped_model,
    load_shipped_model,
    shapes_splits,
    shipped_model_info,
    training_threads,
)
from mrcnn_edu.notebook import copy_course, course_source, shapes_model
from mrcnn_edu.train import evaluate_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ["steps=2", "batch_size=2", "warmup_steps=1", "rpn_pre_nms_train=200", "rpn_post_nms_train=50",
        "rois_per_image=16"]  # fmt: skip


# ------------------------------------------------------------------------------- the shipped model


def test_shipped_model_reaches_ap50_090_on_the_held_out_images():
    model = load_shipped_model()
    _, held_out = shapes_splits(model.config, val_images=100)
    result = evaluate_model(model, held_out, 8, torch.device("cpu"))
    print(f"shipped model: mask AP50 {result['segm']['AP50']:.4f}, box AP50 {result['bbox']['AP50']:.4f}")
    assert result["segm"]["AP50"] >= 0.90
    # the figure the file states about itself is the one measured here
    assert shipped_model_info()["metrics"]["segm_AP50"] == pytest.approx(result["segm"]["AP50"], abs=1e-6)


def test_shipped_file_is_small_float16_and_loads_safely():
    assert SHIPPED_MODEL.stat().st_size < 8e6
    state = torch.load(SHIPPED_MODEL, map_location="cpu", weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    # the shipped recipe is the shapes preset (only the number of steps differs): rebuild when it changes
    config = Config.from_dict(state["config"])
    assert config == Config.preset("shapes", steps=config.steps)


def test_shapes_model_is_the_shipped_model_in_eval_mode_with_changes():
    model = shapes_model(detection_min_confidence=0.3)
    assert not model.training and model.config.detection_min_confidence == 0.3
    shipped = torch.load(SHIPPED_MODEL, map_location="cpu", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, shipped[key].float() if shipped[key].is_floating_point() else shipped[key])


def test_missing_or_foreign_shipped_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="make shapes-model"):
        load_shipped_model(tmp_path / "nope.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a shipped model"):
        load_shipped_model(tmp_path / "other.pt")


def test_build_writes_only_a_model_that_reaches_the_bar(tmp_path, monkeypatch):
    import mrcnn_edu.demo as demo

    tiny = Config.preset("shapes").override(*TINY)
    monkeypatch.setattr(demo.Config, "preset", classmethod(lambda cls, name, **kw: tiny.replace(**kw)))
    monkeypatch.setattr(demo, "shapes_splits", lambda config, train_images=8: shapes_splits(config, 8, 4))
    with pytest.raises(RuntimeError, match="not written"):
        build_shipped_model(tmp_path / "no.pt", steps=2, work_dir=tmp_path / "a", min_ap50=0.99)
    assert not (tmp_path / "no.pt").exists()
    result = build_shipped_model(tmp_path / "yes.pt", steps=2, work_dir=tmp_path / "b", min_ap50=0.0)
    info = shipped_model_info(tmp_path / "yes.pt")
    assert info["steps"] == 2 and info["metrics"] == result["metrics"]
    assert not load_shipped_model(tmp_path / "yes.pt").training


def test_training_threads_policy():
    assert training_threads() == 1
    assert training_threads(2) == 2
    with pytest.raises(ValueError, match="threads"):
        training_threads(0)


# ------------------------------------------------------------------------------------------ demo


def test_demo_trains_evaluates_and_draws(tmp_path, capsys):
    sets = [a for s in TINY for a in ("--set", s)]
    args = ["demo", "--out", str(tmp_path), "--train-images", "4", "--val-images", "3", *sets]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mask AP@0.5 =" in printed and "2 steps" in printed
    (run,) = tmp_path.iterdir()
    for name in ("demo_predictions.png", "loss_curve.png", "demo_pr.png", "last.pt", "demo_ap.json"):
        assert (run / name).is_file(), name


def test_demo_interrupted_says_undertrained_and_how_to_continue(tmp_path):
    """Ctrl-C in the middle of training: exit 130, no AP, the exact commands that continue the run."""
    cmd = [sys.executable, "-m", "mrcnn_edu", "demo", "--out", str(tmp_path), "--train-images", "8",
           "--val-images", "2", "--set", "steps=2000", "--set", "batch_size=2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while (
        not list(tmp_path.glob("*/metrics.jsonl"))
        or not list(tmp_path.glob("*/metrics.jsonl"))[0].read_text()
    ):
        assert time.monotonic() < deadline and proc.poll() is None, "the demo did not start training"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "UNDERTRAINED" in out and "no AP is reported" in out
    (run,) = tmp_path.iterdir()
    assert f"mrcnn-edu train --out {run} --resume" in out
    assert "mask AP@0.5 =" not in out and (run / "last.pt").is_file()


# ------------------------------------------------------------------------------------- notebooks


def test_copy_course_student_and_instructor(tmp_path, capsys):
    assert main(["notebooks", str(tmp_path / "s")]) == 0
    assert "Open them with" in capsys.readouterr().out
    stages = sorted(p.name for p in (tmp_path / "s").glob("*.ipynb"))
    assert (
        stages == sorted(p.name for p in course_source().glob("*.ipynb")) and "00_quickstart.ipynb" in stages
    )
    student = sorted((tmp_path / "s" / "exercises").glob("*.ipynb"))
    assert student and all("BEGIN SOLUTION" not in p.read_text() for p in student)
    written = copy_course(tmp_path / "i", instructor=True)
    assert (tmp_path / "i" / "exercises" / "README.md") in written
    names = [p.name for p in student]
    assert names == sorted(p.name for p in (tmp_path / "i" / "exercises").glob("*.ipynb"))


def test_copy_course_never_overwrites(tmp_path, capsys):
    (tmp_path / "00_quickstart.ipynb").write_text("my work")
    assert main(["notebooks", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert len(message.splitlines()) == 1 and "00_quickstart.ipynb" in message and "nothing copied" in message
    assert (tmp_path / "00_quickstart.ipynb").read_text() == "my work"
    assert not (tmp_path / "exercises").exists()


# ------------------------------------------------------------------------------------------ set-up


def test_setup_script_names_a_half_made_venv(tmp_path):
    """A .venv without pip (Debian without python3-venv) is recognised and the fix is named."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text((ROOT / "scripts" / "setup.sh").read_text())
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "half-made" in done.stdout and "python3-venv" in done.stdout and "rm -rf .venv" in done.stdout
