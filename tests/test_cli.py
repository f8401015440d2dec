"""The mrcnn-edu command: train, eval, predict and export-shapes end to end on tiny settings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import main

TINY = [
    "min_dim=64", "max_dim=64", "steps=2", "batch_size=2", "warmup_steps=1", "rpn_pre_nms_train=200",
    "rpn_post_nms_train=50", "rpn_pre_nms_test=200", "rpn_post_nms_test=50", "rois_per_image=16",
    "mask_conv_channels=16", "box_representation=64", "detection_min_confidence=0.0",
]  # fmt: skip


def run(args, capsys) -> tuple[int, str, str]:
    """``main(args)``: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
    code, _, err = run(
        ["predict", "--checkpoint", str(trained / "last.pt"), str(tmp_path / "missing.png")], capsys
    )
    assert code == 2 and "missing.png" in err


def test_bad_override_and_truncated_checkpoint_are_clear_errors(trained, tmp_path, capsys):
    code, _, err = run(["train", "--out", str(tmp_path), "--set", "no_such_field=1"], capsys)
    assert code == 2 and "no_such_field" in err
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained / "last.pt").read_bytes()[:1000])
    code, _, err = run(["eval", "--checkpoint", str(broken)], capsys)
    assert code == 2 and "broken.pt" in err


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
    code, _, err = run(["predict", "--weights", f"torchvision:{tv_weights}", "photo:no_such_photo"], capsys)
    assert code == 2 and "chelsea" in err  # the valid names are listed


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
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a torch file")
    for args, expected in [
        (["predict", "--weights", "foo:bar", "photo:chelsea"], "KIND:PATH"),
        (
            ["predict", "--weights", f"torchvision:{tmp_path / 'missing.pth'}", "photo:chelsea"],
            "does not exist",
        ),
        (["predict", "--weights", f"imagenet:{tv_weights}", "photo:chelsea"], "only torchvision:PATH"),
        (["predict", "--weights", f"torchvision:{broken}", "photo:chelsea"], "broken.pth"),
        (["eval", "--weights", f"torchvision:{tv_weights}"], "--coco"),
    ]:
        code, _, err = run(args, capsys)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
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
    assert out.returncode == 2
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
    args[2] = str(tmp_path / "other")
    code, _, err = run([*args, "--backbone-weights", f"torchvision:{weights}"], capsys)
    assert code == 2 and "imagenet:PATH" in err
    code, _, err = run([*args, "--backbone-weights", f"imagenet:{tmp_path / 'missing.pth'}"], capsys)
    assert code == 2 and "backbone-weights" in err
    assert not (tmp_path / "other").exists()  # refused before anything was written


# ------------------------------------------------------------------ your own data, as a user meets it
OWN = "5:cat,17:dog,90:bird"
OWN_NAMES = ("background", "cat", "dog", "bird")
SETS = [a for s in TINY for a in ("--set", s)]


def strict_json(path):
    """json.loads that refuses NaN / Infinity (not JSON, though Python writes them)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """Shapes exported as COCO under categories of our own: train (6 images) and val (3), 64 x 64."""
    root = tmp_path_factory.mktemp("own")
    common = ["export-shapes", "--out", str(root), "--image-size", "64", "--categories", OWN]
    assert main([*common, "--num-images", "6"]) == 0
    assert main([*common, "--num-images", "3", "--seed", "1", "--split", "val"]) == 0
    return root


def coco_args(root, split="train"):
    return [
        f"--{'train-coco' if split == 'train' else 'coco'}",
        str(root / "annotations" / f"instances_{split}.json"),
    ]


def test_train_on_a_coco_set_alone_takes_its_classes(own_data, tmp_path, capsys):
    # it used to ignore --train-coco without --coco and train on generated shapes, exit 0
    out = tmp_path / "run"
    code, printed, _ = run(["train", *coco_args(own_data), "--out", out, *SETS], capsys)
    assert code == 0
    assert "--train-images-dir not given: using" in printed  # the COCO layout, said
    assert "6 images" in printed and "cat, dog, bird" in printed and "no validation set" in printed
    config = load_checkpoint(out / "last.pt")["config"]
    assert tuple(config["class_names"]) == OWN_NAMES and config["num_classes"] == 4
    assert tuple(config["category_ids"]) == (5, 17, 90)
    assert json.loads((out / "config.json").read_text())["class_names"] == list(OWN_NAMES)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and not any(r.get("split") == "val" for r in rows)
    run_file = json.loads((out / "run.json").read_text())
    assert run_file["data"]["train_coco"] == str(
        (own_data / "annotations" / "instances_train.json").absolute()
    )
    assert run_file["data"]["train_images_dir"] == str((own_data / "train").absolute())
    # the closing summary, for people; summary.json, for scripts: JSON, no model repr
    assert "train: finished at step 2 of 2" in printed and "next: mrcnn-edu predict" in printed
    summary = strict_json(out / "summary.json")
    assert summary["steps"] == 2 and summary["stopped"] == "completed" and "model" not in summary
    assert "MaskRCNN(" not in (out / "summary.json").read_text()
    if importlib.util.find_spec("tensorboard") is not None:  # on by default where installed
        assert any((out / "tensorboard").iterdir())


def test_validation_is_numbered_with_the_training_categories(own_data, tmp_path, capsys):
    val = json.loads((own_data / "annotations" / "instances_val.json").read_text())
    val["categories"] = [c for c in val["categories"] if c["name"] != "cat"]  # no cat: dog would become 1
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] != 5]
    lacking = tmp_path / "val_without_cats.json"
    lacking.write_text(json.dumps(val))
    out = tmp_path / "run"
    args = ["train", *coco_args(own_data), "--coco", lacking, "--images", own_data / "val", *SETS]
    assert run([*args, "--out", out], capsys)[0] == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "val"] == [2]
    val["categories"].append({"id": 33, "name": "kite"})
    lacking.write_text(json.dumps(val))
    code, _, err = run([*args, "--out", tmp_path / "other"], capsys)
    assert code == 2 and "category ids [33] ('kite') are not in the training categories" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--train-coco", "{tmp}/missing.json"], "--train-coco {tmp}/missing.json: no such file"),
        (
            ["--train-coco", "{tmp}/notes.json", "--train-images-dir", "{own}/train"],
            "notes.json': not valid json",
        ),
        (
            ["--train-coco", "{json}", "--train-images-dir", "{tmp}/nope"],
            "--train-images-dir {tmp}/nope: not an",
        ),
        (["--train-coco", "{tmp}/copy.json"], "needs --train-images-dir DIR"),
        (
            ["--coco", "{own}/annotations/instances_val.json"],
            "--coco (a COCO validation set) needs --train-coco",
        ),
        (["--train-images-dir", "{own}/train"], "--train-images-dir goes with --train-coco"),
        (["--images", "{own}/val"], "--images goes with --coco"),
        (["--train-coco", "{json}", "--train-images", "5"], "--train-images counts generated shapes"),
        (["--train-coco", "{json}", "--set", "num_classes=7"], "--set num_classes: --train-coco sets it"),
        (["--train-coco", "{json}", "--set", "batch_size=64"], "6 images, fewer than batch_size=64"),
        (["--train-coco", "{tmp}/empty.json", "--train-images-dir", "{own}/train"], "holds no annotations"),
        (
            ["--set", "detection_min_confidence=2"],
            "config.detection_min_confidence must be a number in [0, 1]",
        ),
        (["--set", "lr=abc"], "config.lr must be a number > 0, got 'abc'"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--resume"], "holds no run to continue (no last.pt)"),
    ],
)
def test_train_user_errors_are_one_line_and_exit_2(own_data, tmp_path, capsys, args, expected):
    (tmp_path / "notes.json").write_text("these are not annotations")
    (tmp_path / "copy.json").write_text((own_data / "annotations" / "instances_train.json").read_text())
    empty = json.loads((own_data / "annotations" / "instances_train.json").read_text()) | {"annotations": []}
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    names = {"tmp": tmp_path, "own": own_data, "json": own_data / "annotations" / "instances_train.json"}
    code, printed, err = run(["train", "--out", tmp_path / "run", *[a.format(**names) for a in args]], capsys)
    assert code == 2, (printed, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("mrcnn-edu train: error: "), err
    assert expected.format(**names) in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_restores_the_runs_config_and_data(own_data, tmp_path, capsys):
    # `--out A --resume` used to rebuild the config from the command line: batch size, lr and steps changed,
    # and COCO data not repeated became generated shapes
    args = ["train", *coco_args(own_data), "--log-every", "1", *SETS, "--set", "steps=4", "--set", "lr=0.03"]
    assert run([*args, "--out", tmp_path / "straight"], capsys)[0] == 0
    code, printed, _ = run([*args, "--out", tmp_path / "a", "--minutes", "0"], capsys)
    assert code == 0 and "stopped by --minutes at step 1 of 4" in printed
    assert f"continue: mrcnn-edu train --out {tmp_path / 'a'} --resume" in printed

    code, printed, _ = run(["train", "--out", tmp_path / "a", "--resume"], capsys)
    assert code == 0 and "finished at step 4 of 4" in printed
    assert "own data (" in printed and "instances_train.json" in printed
    final = load_checkpoint(tmp_path / "a" / "last.pt")["config"]
    assert final == load_checkpoint(tmp_path / "straight" / "last.pt")["config"]
    assert final["lr"] == 0.03 and final["batch_size"] == 2 and tuple(final["class_names"]) == OWN_NAMES

    def losses(folder):
        rows = (json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines())
        return [(r["step"], r["total"], r["lr"]) for r in rows if "split" not in r]

    assert losses(tmp_path / "a") == losses(tmp_path / "straight")  # as if never stopped

    # only --set changes apply, each one said
    code, printed, _ = run(["train", "--out", tmp_path / "a", "--resume", "--set", "steps=5"], capsys)
    assert code == 0 and "resume: --set steps=5: steps 4 -> 5" in printed and "at step 5 of 5" in printed
    assert json.loads((tmp_path / "a" / "config.json").read_text())["steps"] == 5
    for extra, expected in [
        ([*coco_args(own_data)], "leave out --train-coco"),
        (["--preset", "coco"], "leave out --preset"),
        (["--set", "fpn_channels=32"], "changes the shapes of the model's weights"),
    ]:
        code, _, err = run(["train", "--out", tmp_path / "a", "--resume", *extra], capsys)
        assert code == 2 and expected in err, err
    code, _, err = run([*args, "--out", tmp_path / "a"], capsys)  # a new run over an old one: refused
    assert code == 2 and "already holds a run (last.pt): add --resume" in err


@pytest.mark.parametrize(
    ("signum", "status", "said"), [(2, 130, "interrupted (Ctrl-C)"), (15, 143, "terminated (SIGTERM)")]
)
def test_a_stopped_run_exits_with_the_signals_status(
    own_data, tmp_path, capsys, monkeypatch, signum, status, said
):
    # Ctrl-C used to exit 0: scripts could not tell an interrupted run from a finished one
    from mrcnn_edu import train as train_module

    real_step, calls = train_module.train_step, []

    def signalled_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", signalled_at_step_2)
    code, printed, _ = run(
        ["train", *coco_args(own_data), "--out", tmp_path, *SETS, "--set", "steps=4"], capsys
    )
    assert code == status and f"{said} at step 2 of 4" in printed
    assert f"continue with mrcnn-edu train --out {tmp_path} --resume" in printed
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_help_has_examples_and_every_option_its_help_and_default():
    from mrcnn_edu.cli import build_parser

    parser = build_parser()
    text = parser.format_help()
    assert "examples:" in text and "mrcnn-edu train --out runs/own --resume" in text and "exit status" in text
    commands = parser._subparsers._group_actions[0].choices
    for name in ("train", "eval", "predict", "convert", "config"):
        command = commands[name]
        shown = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, (name, action.dest)
            if action.default not in (None, False, []):
                assert f"(default: {action.default})" in shown, (name, action.dest)


def test_config_lists_the_fields_that_set_changes(trained, capsys):
    from mrcnn_edu.config import Config

    code, printed, _ = run(["config"], capsys)
    assert code == 0
    first_words = [line.split()[:2] for line in printed.splitlines()]
    for key, value in Config().to_dict().items():
        shown = repr(tuple(value) if isinstance(value, list) else value)
        assert [key, shown.split()[0]] in first_words, key  # each field with its default
    assert "one of cosine, step" in printed
    code, printed, _ = run(["config", "--preset", "coco"], capsys)
    assert code == 0 and any(line.split()[:2] == ["num_classes", "91"] for line in printed.splitlines())
    code, printed, _ = run(["config", "--checkpoint", trained / "last.pt"], capsys)
    assert code == 0 and any(line.split()[:2] == ["max_dim", "64"] for line in printed.splitlines())


def test_eval_outputs_are_json_and_a_model_meets_only_its_own_classes(trained, own_data, tmp_path, capsys):
    out = tmp_path / "eval"
    code, _, _ = run(["eval", "--checkpoint", trained / "last.pt", "--val-images", "2", "--out", out], capsys)
    assert code == 0
    assert strict_json(out / "eval_ap.json")["segm"]["APl"] is None  # undefined (no large objects): null
    # the shapes model on data of other categories: refused, naming the ids (it used to evaluate anyway)
    code, _, err = run(["eval", "--checkpoint", trained / "last.pt", *coco_args(own_data, "val")], capsys)
    assert code == 2 and "category ids [5, 17, 90]" in err
    code, _, err = run(["eval", "--checkpoint", trained / "last.pt", "--set", "lr=abc"], capsys)
    assert code == 2 and "config.lr must be a number" in err


def test_predict_gives_inputs_with_one_stem_their_own_outputs(trained, tmp_path, capsys):
    # two inputs named x.png used to write x_detections.* over each other
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        pixels = (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    inputs = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    args = ["predict", "--checkpoint", trained / "last.pt", *inputs, "--out", out, "--score-threshold", "0"]
    code, printed, _ = run(args, capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "x-2_detections.json", "x-2_detections.png", "x_detections.json", "x_detections.png"
    ]  # fmt: skip
    assert f"-> {out / 'x-2_detections.png'}" in printed.splitlines()[1]
    from mrcnn_edu.cli import _output_names

    assert _output_names(["x", "x", "x-2", "y", "x"]) == ["x", "x-2", "x-2-2", "y", "x-3"]


def test_predict_reads_16_bit_images_and_refuses_nan_pixels(trained, tmp_path, capsys):
    deep = (np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert (
        run(
            ["predict", "--checkpoint", trained / "last.pt", tmp_path / "deep.png", "--out", tmp_path], capsys
        )[0]
        == 0
    )
    nan = np.full((64, 64), np.nan, dtype=np.float32)
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    code, _, err = run(["predict", "--checkpoint", trained / "last.pt", tmp_path / "nan.tif"], capsys)
    assert code == 2 and "nan.tif" in err and "NaN" in err


def test_convert_command(tmp_path, capsys):
    src = tmp_path / "labels"
    src.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(src / "one.png")
    shape = {
        "label": "cat",
        "points": [[2, 3], [12, 3], [12, 9], [2, 9]],
        "shape_type": "polygon",
        "group_id": None,
    }
    (src / "one.json").write_text(json.dumps({"shapes": [shape], "imagePath": "one.png", "imageHeight": 20,
                                              "imageWidth": 30}))  # fmt: skip
    code, printed, _ = run(["convert", "labelme", src, "--out", tmp_path / "coco"], capsys)
    assert code == 0 and "1 images, 1 objects (cat 1)" in printed
    assert (tmp_path / "coco" / "annotations" / "instances_train.json").is_file()
    code, _, err = run(["convert", "labelme", src, "--out", tmp_path / "coco", "--label", "x"], capsys)
    assert code == 2 and "--label is for VIA" in err
    shape["points"] = shape["points"][:2]
    (src / "one.json").write_text(json.dumps({"shapes": [shape], "imagePath": "one.png", "imageHeight": 20,
                                              "imageWidth": 30}))  # fmt: skip
    code, _, err = run(["convert", "labelme", src, "--out", tmp_path / "coco2"], capsys)
    assert code == 2 and "one.json' shape 0" in err and "at least 3" in err


def test_tensorboard_flag_without_the_package(own_data, tmp_path, capsys, monkeypatch):
    import importlib.util as util

    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "tensorboard" else object())
    code, _, err = run(["train", *coco_args(own_data), "--out", tmp_path, *SETS, "--tensorboard"], capsys)
    assert code == 2 and "pip install tensorboard" in err


def test_user_errors_print_no_traceback(tmp_path):
    (tmp_path / "notes.json").write_text("not json")
    for args in (["train", "--train-coco", str(tmp_path / "notes.json"), "--train-images-dir", str(tmp_path)],
                 ["eval", "--checkpoint", str(tmp_path / "missing.pt")]):  # fmt: skip
        out = subprocess.run([sys.executable, "-m", "mrcnn_edu", *args], capture_output=True, text=True)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_init_starts_every_weight_from_the_shipped_model_or_a_checkpoint(trained, tmp_path, capsys):
    data = tmp_path / "own"
    export = ["export-shapes", "--out", str(data), "--num-images", "8", "--categories", "cat,dog,bird"]
    assert main(export) == 0
    train_json = str(data / "annotations" / "instances_train.json")
    common = ["train", "--train-coco", train_json, "--log-every", "1", "--set", "steps=1", "--set",
              "batch_size=4"]  # fmt: skip

    def first_loss(out):
        return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["total"]

    code, out, _ = run([*common, "--out", str(tmp_path / "init"), "--init", "shapes"], capsys)
    assert code == 0 and "--init shapes" in out
    assert run([*common, "--out", str(tmp_path / "scratch")], capsys)[0] == 0
    # the shipped model already knows these shapes (under other names): its first loss is far lower
    assert first_loss(tmp_path / "init") < 0.5 * first_loss(tmp_path / "scratch")
    # a checkpoint with other layers (the tiny settings of `trained`) is refused, naming a tensor
    code, _, err = run([*common, "--out", str(tmp_path / "x"), "--init", str(trained / "last.pt")], capsys)
    assert code == 2 and "do not fit" in err and ("mask_head" in err or "box_head" in err), err
    both = ["--init", "shapes", "--backbone-weights", "imagenet:x.pth"]
    for extra, words in ((["--init", str(tmp_path / "none.pt")], "no such file"), (both, "choose one")):
        code, _, err = run([*common, "--out", str(tmp_path / "y"), *extra], capsys)
        assert code == 2 and words in err, err
    code, _, err = run(["train", "--out", str(tmp_path / "init"), "--resume", "--init", "shapes"], capsys)
    assert code == 2 and "--init" in err
