"""The mrcnn-edu command: train, eval, predict and export-shapes end to end on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_edu.cli import main

TINY = [
    "min_dim=64", "max_dim=64", "steps=2", "batch_size=2", "warmup_steps=1", "rpn_pre_nms_train=200",
    "rpn_post_nms_train=50", "rpn_pre_nms_test=200", "rpn_post_nms_test=50", "rois_per_image=16",
    "mask_conv_channels=16", "box_representation=64", "detection_min_confidence=0.0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--out", str(out), "--train-images", "4", "--val-images", "2", *sets]) == 0
    return out


def test_train_writes_checkpoints_metrics_and_curve(trained):
    assert (trained / "last.pt").is_file()
    assert (trained / "loss_curve.png").is_file()
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "val" for r in rows)
    assert json.loads((trained / "config.json").read_text())["max_dim"] == 64


def test_eval_prints_and_saves_the_ap_table(trained, tmp_path, capsys):
    assert (
        main(["eval", "--checkpoint", str(trained / "last.pt"), "--val-images", "3", "--out", str(tmp_path)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "segm" in printed and "bbox" in printed and "AP50" in printed
    results = json.loads((tmp_path / "eval_ap.json").read_text())
    assert 0.0 <= results["segm"]["AP50"] <= 1.0
    assert (tmp_path / "eval_pr.png").stat().st_size > 0


def test_eval_on_an_exported_coco_folder(trained, tmp_path):
    assert (
        main(["export-shapes", "--out", str(tmp_path / "coco"), "--num-images", "3", "--image-size", "64"])
        == 0
    )
    json_path = tmp_path / "coco" / "annotations" / "instances_train.json"
    assert json_path.is_file()
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(trained / "last.pt"), "--coco", str(json_path)]
    assert main([*args, "--images", str(tmp_path / "coco" / "train"), "--out", str(out)]) == 0
    assert (out / "eval_ap.txt").is_file()


def test_predict_draws_detections(trained, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)).save(image)
    args = ["predict", "--checkpoint", str(trained / "last.pt"), str(image), "--out", str(tmp_path)]
    assert main([*args, "--score-threshold", "0"]) == 0
    drawn = tmp_path / "photo_detections.png"
    assert drawn.is_file() and "detections" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="missing.png"):
        main(["predict", "--checkpoint", str(trained / "last.pt"), str(tmp_path / "missing.png")])


def test_bad_override_and_truncated_checkpoint_are_clear_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="no_such_field"):
        main(["train", "--out", str(tmp_path), "--set", "no_such_field=1"])
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained / "last.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pt"):
        main(["eval", "--checkpoint", str(broken)])


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "mrcnn_edu", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "train", "eval", "predict", "export-shapes"):
        assert command in out.stdout


def test_cli_results_are_torch_free_of_gradients(trained):
    from mrcnn_edu.cli import _load_model

    model = _load_model(trained / "last.pt")
    assert not model.training
    with torch.no_grad():
        (result,) = model([torch.rand(3, 64, 64)])
    assert set(result) == {"boxes", "labels", "scores", "masks"}
