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


# ------------------------------------------------------------------ --weights torchvision:PATH (COCO weights)
# A seeded random torchvision maskrcnn_resnet50_fpn state dict stands in for the COCO file (no download): the
# detections are meaningless, but every step of loading, predicting, relabelling and evaluating runs. A R50
# at torchvision's 800 x 1333 takes seconds per image here, so these tests shrink the settings (--set).
SMALL = [
    "min_dim=128", "max_dim=160", "rpn_pre_nms_test=200", "rpn_post_nms_test=50",
    "detection_max_instances=10",
]  # fmt: skip
SMALL_SETS = [a for s in SMALL for a in ("--set", s)]


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    from mrcnn_edu.references import import_torchvision

    try:
        tv, _ = import_torchvision()
    except ImportError as err:
        pytest.skip(f"torchvision's Python code (or onnxruntime) is not installed: {err}")
    torch.manual_seed(0)
    model = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("weights") / "maskrcnn_seed0.pth"
    torch.save(model.state_dict(), path)
    return path


def test_predict_with_torchvision_weights_names_coco_classes(tv_weights, tmp_path, capsys):
    image = tmp_path / "street.png"
    Image.fromarray((np.random.default_rng(1).random((90, 120, 3)) * 255).astype(np.uint8)).save(image)
    weights = f"torchvision:{tv_weights}"
    args = ["predict", "--weights", weights, str(image), "--out", str(tmp_path), "--score-threshold", "0"]
    assert main([*args, *SMALL_SETS, "--set", "detection_min_confidence=0.0"]) == 0
    assert (tmp_path / "street_detections.png").stat().st_size > 0
    found = json.loads((tmp_path / "street_detections.json").read_text())
    assert 1 <= len(found) <= 10  # detection_max_instances=10 reached the model
    from mrcnn_edu.data.coco_names import COCO_CATEGORY_NAMES

    for d in found:
        assert d["name"] == COCO_CATEGORY_NAMES[d["label"]]
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 120 and 0 <= y1 <= y2 <= 90  # original-image pixels
    assert found[0]["name"] in capsys.readouterr().out


def test_predict_on_a_bundled_photo(tv_weights, tmp_path, capsys):
    pytest.importorskip("skimage", reason="the bundled photos are scikit-image's sample images")
    args = ["predict", "--weights", f"torchvision:{tv_weights}", "photo:chelsea", "--out", str(tmp_path)]
    assert main([*args, *SMALL_SETS]) == 0
    assert (tmp_path / "chelsea_detections.png").is_file()
    assert isinstance(json.loads((tmp_path / "chelsea_detections.json").read_text()), list)
    assert "photo:chelsea" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="chelsea"):  # the valid names are listed
        main(["predict", "--weights", f"torchvision:{tv_weights}", "photo:no_such_photo"])


def _tiny_coco_set(folder):
    """Two images, categories with real COCO ids (cat 17, cup 47, person 1): the json and the image folder."""
    rng = np.random.default_rng(2)
    images, annotations = [], []
    for image_id, (h, w) in enumerate([(96, 128), (112, 96)], start=1):
        name = f"im{image_id}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / name)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for k, cat in enumerate((17, 47)):
            x, y, bw, bh = 10 + 30 * k, 12 + 20 * k, 40, 36
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                "bbox": [x, y, bw, bh], "area": bw * bh,
                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
            })  # fmt: skip
    categories = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 47, "name": "cup"}]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_eval_with_torchvision_weights_on_a_coco_set(tv_weights, tmp_path, capsys):
    json_path = _tiny_coco_set(tmp_path)
    out = tmp_path / "eval"
    args = ["eval", "--weights", f"torchvision:{tv_weights}", "--coco", str(json_path)]
    args += ["--images", str(tmp_path), "--out", str(out), *SMALL_SETS, "--set", "detection_min_confidence=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "segm" in printed and "bbox" in printed and "AP50" in printed
    assert "note" not in printed  # the json's names agree with the weights' COCO names
    results = json.loads((out / "eval_ap.json").read_text())
    assert 0.0 <= results["bbox"]["AP50"] <= 1.0 and 0.0 <= results["segm"]["AP"] <= 1.0
    assert (out / "eval_ap.txt").is_file()


def test_eval_matches_categories_by_id_and_reports_other_names(tv_weights, tmp_path, capsys):
    json_path = _tiny_coco_set(tmp_path)
    data = json.loads(json_path.read_text())
    data["categories"][1]["name"] = "kitten"  # id 17 is "cat" for COCO weights
    json_path.write_text(json.dumps(data))
    args = ["eval", "--weights", f"torchvision:{tv_weights}", "--coco", str(json_path)]
    assert main([*args, "--images", str(tmp_path), "--out", str(tmp_path / "o"), *SMALL_SETS]) == 0
    assert "category id 17 is 'kitten' in the json but 'cat'" in capsys.readouterr().out


def test_relabel_keeps_only_the_data_sets_categories():
    from mrcnn_edu.cli import _relabel

    prediction = {
        "boxes": torch.arange(12, dtype=torch.float32).view(3, 4),
        "labels": torch.tensor([17, 3, 47]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "masks": torch.rand(3, 1, 5, 5),
    }
    out = _relabel(prediction, {17: 1, 47: 2, 1: 3})
    assert out["labels"].tolist() == [1, 2]
    assert torch.equal(out["boxes"], prediction["boxes"][[0, 2]])
    assert torch.equal(out["masks"], prediction["masks"][[0, 2]])
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7])
    empty = _relabel(prediction, {5: 1})
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_weights_errors_are_clear(tv_weights, tmp_path, capsys):
    with pytest.raises(SystemExit, match="KIND:PATH"):
        main(["predict", "--weights", "foo:bar", "photo:chelsea"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["predict", "--weights", f"torchvision:{tmp_path / 'missing.pth'}", "photo:chelsea"])
    with pytest.raises(SystemExit, match="only torchvision:PATH"):
        main(["predict", "--weights", f"imagenet:{tv_weights}", "photo:chelsea"])
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(SystemExit, match="broken.pth"):
        main(["predict", "--weights", f"torchvision:{broken}", "photo:chelsea"])
    with pytest.raises(SystemExit, match="--coco"):
        main(["eval", "--weights", f"torchvision:{tv_weights}"])
    # exactly one of --checkpoint and --weights: argparse's usage error (exit status 2)
    both = ["eval", "--checkpoint", "a.pt", "--weights", "torchvision:b"]
    for args in (["predict", "photo:chelsea"], both):
        with pytest.raises(SystemExit) as err:
            main(args)
        assert err.value.code == 2
        assert "--weights" in capsys.readouterr().err


def test_bad_weights_spec_exits_non_zero_without_a_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "mrcnn_edu", "predict", "--weights", "foo:bar", "photo:chelsea"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "foo:bar" in out.stderr and "Traceback" not in out.stderr


def test_train_from_an_imagenet_backbone_file(tmp_path, capsys):
    # A torchvision-layout ResNet-18 file (saved from our own module, whose keys are torchvision's; the
    # loader itself is tested against torchvision in test_pretrained.py) starts the backbone of a run.
    from mrcnn_edu.backbone import build_backbone

    torch.manual_seed(3)
    resnet = build_backbone("resnet18", norm="bn")
    state = {**resnet.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    weights = tmp_path / "resnet18.pth"
    torch.save(state, weights)
    out = tmp_path / "run"
    sets = [a for s in [*TINY, "backbone=resnet18", "steps=1"] for a in ("--set", s)]
    args = ["train", "--out", str(out), "--train-images", "2", "--val-images", "1", *sets]
    assert main([*args, "--backbone-weights", f"imagenet:{weights}"]) == 0
    from mrcnn_edu.checkpoint import load_checkpoint

    first_conv = load_checkpoint(out / "last.pt")["model"]["backbone.conv1.weight"]
    # One warm-up SGD step moves the weights a little; a fresh initialisation would differ by ~0.1 or more.
    assert (first_conv - resnet.conv1.weight).abs().max() < 0.02
    with pytest.raises(SystemExit, match="imagenet:PATH"):
        main([*args, "--backbone-weights", f"torchvision:{weights}"])
    with pytest.raises(SystemExit, match="backbone-weights"):
        main([*args, "--backbone-weights", f"imagenet:{tmp_path / 'missing.pth'}"])
