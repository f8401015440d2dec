"""The ``mrcnn-edu`` command (also ``python -m mrcnn_edu``): train, evaluate and run Mask R-CNN on your data.

    mrcnn-edu demo                      train shapes on CPU, evaluate on held-out shapes, draw the results
    mrcnn-edu notebooks DIR             copy the course notebooks (stages, exercises) into DIR
    mrcnn-edu shapes-model              retrain the shapes model shipped in the package, print its AP
    mrcnn-edu train  [--preset P] [--set field=value ...] [--train-coco JSON [--coco JSON]] [--out DIR]
    mrcnn-edu train  --out DIR --resume  continue a run with its own data and settings
    mrcnn-edu eval   (--checkpoint PATH | --weights SPEC) [--coco JSON --images DIR]
    mrcnn-edu predict (--checkpoint PATH | --weights SPEC) IMAGE...
    mrcnn-edu explore [IMAGE] [--checkpoint PATH | --weights SPEC] --out page.html   one pass as a web page
    mrcnn-edu export-shapes --out DIR   write a shapes set as COCO json + PNGs ("bring your own data" example)
    mrcnn-edu convert via|labelme SRC --out DIR   VIA or labelme annotations to a COCO folder
    mrcnn-edu config [--preset P]       the fields that --set changes, with their values
    mrcnn-edu grade --assignment NAME PATH...   grade students' notebooks / modules in a sandbox, score table
    mrcnn-edu exercises build           regenerate the student exercise notebooks from the instructor ones
    mrcnn-edu exercises export (--nbgrader DIR | --otter DIR)   the exercises as an nbgrader / otter course

Every config field can be overridden with ``--set field=value`` (``mrcnn-edu config`` lists them); each value
is checked when the command starts, under the field's own name. For eval and predict that changes inference
settings such as ``detection_min_confidence`` or ``min_dim``.

Training on a COCO-format set takes the classes from it: ``num_classes``, ``class_names`` and the category
ids go into the config and the checkpoint, and a validation set (``--coco``) is numbered with the training
set's categories (ids it lacks are refused). ``train --out DIR --resume`` restores the run's config and data
arguments from ``DIR`` (``run.json`` and ``last.pt``); only ``--set`` changes apply, each one reported.

``--checkpoint`` loads a model trained by ``mrcnn-edu train``; ``--weights torchvision:PATH`` loads a
Mask R-CNN state dict saved by torchvision (e.g. its COCO-trained ``maskrcnn_resnet50_fpn``, which you
download once: mrcnn-edu never downloads) into the ``torchvision`` preset, whose labels are COCO category
ids. ``IMAGE`` may be ``photo:NAME``, one of the bundled photographs (``mrcnn_edu.data.photos``).

A user error (a flag, a file, the data, a config value) prints one line naming it and what was expected and
exits with status 2; a traceback means a bug. Training stopped by Ctrl-C exits with 130 and by SIGTERM with
143 (128 + the signal), after saving the last finished step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import sys
import time
import warnings
from pathlib import Path

from .config import ConfigError
from .data.images import DataError

DESCRIPTION = """\
Mask R-CNN, as the mrcnn_edu notebooks build it, from the command line: train it on generated shapes or on
your own COCO-format data (VIA and labelme annotations convert to it), evaluate it, draw its detections.
`mrcnn-edu COMMAND --help` lists a command's options with their defaults."""
EXAMPLES = """\
examples:
  mrcnn-edu demo                                            train, evaluate and draw the shapes model
  mrcnn-edu export-shapes --out data/own --categories cat,dog,bird --num-images 200
  mrcnn-edu export-shapes --out data/own --categories cat,dog,bird --num-images 50 --seed 1 --split val
  mrcnn-edu train --train-coco data/own/annotations/instances_train.json \\
                  --coco data/own/annotations/instances_val.json --out runs/own --minutes 10
  mrcnn-edu train --out runs/own --resume                   continue it (same data, same settings)
  mrcnn-edu eval --checkpoint runs/own/best.pt --coco data/own/annotations/instances_val.json
  mrcnn-edu predict --checkpoint runs/own/last.pt photo.jpg --out runs/predict
  mrcnn-edu convert labelme my_labels/ --out data/mine      (or: convert via via_region_data.json ...)
  mrcnn-edu config --preset coco                            the fields of --set FIELD=VALUE

exit status: 0 done; 2 a usage or data error (one line on stderr); 130 interrupted (Ctrl-C) and 143 terminated
(SIGTERM) after saving the last finished step; 1 with a traceback: a bug, please report it.
"""

#: The exit status of ``train`` for each way it can stop (130 / 143: 128 + SIGINT / SIGTERM, as shells do).
EXIT_STATUS = {"completed": 0, "time_limit": 0, "interrupted": 130, "terminated": 143}


class UsageError(Exception):
    """A mistake on the command line (flags, files, settings): printed as one line, exit status 2."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's help ends with its default (unless it has none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and action.option_strings
            and default not in (None, False, [], argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (null), so that json.dumps writes JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(_json_safe(value), indent=2, allow_nan=False) + "\n")


def _override(config, assignments, context: str = "--set"):
    """``config.override(*assignments)``; a bad value is a UsageError naming the field."""
    try:
        return config.override(*assignments)
    except ConfigError as err:
        raise UsageError(f"{context} {' '.join(assignments)}: {err}") from None


def _set_fields(assignments) -> list[str]:
    return [item.partition("=")[0].strip() for item in assignments]


def _add_config_args(p: argparse.ArgumentParser, default_preset: str = "shapes") -> None:
    p.add_argument(
        "--preset", default=None, choices=None, metavar="P",
        help=f"shapes | matterport | coco | torchvision (default {default_preset}; see mrcnn-edu config)",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field, checked at once (repeatable; mrcnn-edu config lists the fields)",
    )  # fmt: skip


def _datasets(args, config):
    """(train set or None, validation set, class names) of generated shapes (demo; train without COCO data).

    The held-out images (``mrcnn_edu.demo.shapes_splits``) are never trained on.
    """
    from .demo import shapes_splits

    train, val = shapes_splits(config, getattr(args, "train_images", None) or 0, args.val_images)
    return (train if len(train) else None), val, config.class_names


def _load_model(path, device="cpu", overrides=()):
    """An eval-mode model from a training checkpoint; ``overrides`` are ``"field=value"`` strings."""
    from .checkpoint import load_checkpoint
    from .config import Config
    from .model import MaskRCNN

    try:
        state = load_checkpoint(path)
        saved = Config.from_dict(state["config"])
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise UsageError(f"--checkpoint {path}: {err}") from None
    model = MaskRCNN(_override(saved, overrides))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        if not overrides:
            raise UsageError(f"--checkpoint {path}: its weights do not fit its config: {err}") from None
        raise UsageError(
            f"--set {' '.join(overrides)}: changes the shapes of the checkpoint's weights; only settings "
            "that "
            "shape no weight (detection_min_confidence, min_dim, rpn_post_nms_test, ...) can change"
        ) from None
    return model.to(device).eval()


def _weights_file(option: str, spec: str, kind: str) -> str:
    """The PATH of ``option KIND:PATH``, which must name ``kind`` and an existing file (else a UsageError)."""
    from .pretrained import WEIGHT_KINDS, parse_weights_spec

    try:
        got, path = parse_weights_spec(spec)
    except ValueError as err:
        raise UsageError(f"{option} {spec!r}: {err}") from None
    if got != kind:
        raise UsageError(
            f"{option} {spec!r}: only {kind}:PATH ({WEIGHT_KINDS[kind]}) is accepted here, got kind {got!r}"
        )
    if not Path(path).is_file():
        raise UsageError(
            f"{option} {spec!r}: the file {path} does not exist (mrcnn-edu never downloads: fetch the "
            "weights once on a machine with internet)"
        )
    return path


def _load_weights(spec: str, device="cpu", overrides=()):
    """An eval-mode model from ``--weights SPEC`` (``torchvision:PATH``), in the ``torchvision`` preset."""
    from .config import Config
    from .pretrained import load_torchvision_maskrcnn

    path = _weights_file("--weights", spec, "torchvision")
    fields = _set_fields(overrides)
    if "num_classes" in fields and "class_names" not in fields:  # weights fine-tuned on other classes
        print("note: --set num_classes: the COCO class names no longer apply, labels are shown as numbers "
              "(add --set class_names=(...) to name them)")  # fmt: skip
        overrides = [*overrides, "class_names=()"]
    config = _override(Config.preset("torchvision"), overrides)
    try:
        model = load_torchvision_maskrcnn(path, config.num_classes, config=config, device=device)
    except (ValueError, RuntimeError, KeyError) as err:
        raise UsageError(f"--weights {spec!r}: could not load {path}: {err}") from None
    return model.eval()


def _model_from_args(args):
    """The model of ``--checkpoint`` or ``--weights`` (exactly one, argparse checks), ``--set`` applied."""
    if args.weights:
        return _load_weights(args.weights, args.device, args.set)
    return _load_model(args.checkpoint, args.device, args.set)


def _class_names(model) -> tuple:
    """Names indexed by label: the config's (COCO names for the torchvision preset), else none (numbers)."""
    return tuple(model.config.class_names)


def _relabel(prediction: dict, cat_id_to_label: dict) -> dict:
    """A prediction whose labels are COCO category ids, renumbered to a CocoDataset's contiguous labels.

    Detections of categories the data set does not have are dropped (pycocotools ignores them too: it only
    evaluates the ground truth's categories).
    """
    import torch

    ids = prediction["labels"].tolist()
    device = prediction["labels"].device
    keep = torch.tensor([i in cat_id_to_label for i in ids], dtype=torch.bool, device=device)
    out = {k: v[keep] for k, v in prediction.items()}
    out["labels"] = torch.tensor(
        [cat_id_to_label[i] for i in ids if i in cat_id_to_label], dtype=torch.int64, device=keep.device
    )
    return out


def _predict_all(model, dataset, batch_size=8, cat_id_to_label=None):
    """Eval-mode predictions and targets of a whole data set; labels translated by ``cat_id_to_label``."""
    import torch

    device = next(model.parameters()).device
    predictions, targets = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            predictions += model([im.to(device) for im, _ in items])
            targets += [t for _, t in items]
    if cat_id_to_label is not None:
        predictions = [_relabel(p, cat_id_to_label) for p in predictions]
    return predictions, targets


def _report(model, dataset, class_names, out_dir: Path, prefix: str, cat_id_to_label=None) -> dict:
    from .evaluate import coco_evaluate, format_table, mean_voc_ap, plot_precision_recall

    predictions, targets = _predict_all(model, dataset, cat_id_to_label=cat_id_to_label)
    results = coco_evaluate(predictions, targets, class_names=class_names)
    results["voc_mAP50_masks"] = mean_voc_ap(predictions, targets, iou_threshold=0.5, use_masks=True)
    table = format_table(results)
    print(table)
    print(f"matterport-style mean per-image VOC AP@0.5 (masks): {results['voc_mAP50_masks']:.3f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{prefix}_ap.txt").write_text(table + "\n")
    _write_json(out_dir / f"{prefix}_ap.json", results)  # undefined APs (NaN) as null
    plot_precision_recall(predictions, targets, class_names=class_names, path=out_dir / f"{prefix}_pr.png")
    return results


# ------------------------------------------------------------------------------------------ train: data


#: The data arguments of train, restored by --resume from the run folder's run.json.
DATA_FLAGS = {
    "train_coco": "--train-coco", "train_images_dir": "--train-images-dir", "coco": "--coco",
    "images": "--images", "train_images": "--train-images", "val_images": "--val-images",
}  # fmt: skip
RUN_FILE = "run.json"


def _images_dir(json_flag: str, json_path: str, dir_flag: str, given: str | None) -> str:
    """The image folder of a COCO json: ``given``, else the folder its layout implies (said), else an error.

    The COCO layout (that of export-shapes and convert) puts ``annotations/instances_<split>.json`` beside
    ``<split>/``.
    """
    if given:
        if not Path(given).is_dir():
            raise UsageError(f"{dir_flag} {given}: not an existing folder")
        return os.path.abspath(given)
    path = Path(json_path)
    split = path.stem.removeprefix("instances_")
    candidate = path.parent.parent / split
    if path.parent.name == "annotations" and path.stem.startswith("instances_") and candidate.is_dir():
        print(f"{dir_flag} not given: using {candidate}/ (the COCO layout: annotations/{path.name} beside "
              f"{split}/)")  # fmt: skip
        return os.path.abspath(candidate)
    raise UsageError(f"{json_flag} {json_path} needs {dir_flag} DIR: the folder its images' file_name "
                     "entries are relative to")  # fmt: skip


def _data_args(args) -> dict:
    """The data arguments of a new run, checked for combinations that mean nothing, paths made absolute."""
    given = {key: getattr(args, key) for key in DATA_FLAGS}
    if given["train_images_dir"] and not given["train_coco"]:
        raise UsageError("--train-images-dir goes with --train-coco JSON (the training set's annotations)")
    if given["images"] and not given["coco"]:
        raise UsageError("--images goes with --coco JSON (the validation set's annotations)")
    if given["coco"] and not given["train_coco"]:
        raise UsageError("--coco (a COCO validation set) needs --train-coco JSON: the model's classes come "
                         "from its training set, and generated shapes have none of the json's")  # fmt: skip
    if given["train_coco"]:
        for key in ("train_images", "val_images"):
            if given[key] is not None:
                raise UsageError(
                    f"{DATA_FLAGS[key]} counts generated shapes; it does not go with --train-coco"
                )
        for json_key, dir_key in (("train_coco", "train_images_dir"), ("coco", "images")):
            if given[json_key]:
                if not Path(given[json_key]).is_file():
                    raise UsageError(f"{DATA_FLAGS[json_key]} {given[json_key]}: no such file")
                given[dir_key] = _images_dir(DATA_FLAGS[json_key], given[json_key], DATA_FLAGS[dir_key],
                                             given[dir_key])  # fmt: skip
                given[json_key] = os.path.abspath(given[json_key])
    else:
        given["train_images"] = given["train_images"] or 4000
        given["val_images"] = given["val_images"] or 100
    return given


def _coco_set(data: dict, json_key: str, dir_key: str, categories=None):
    from .data import CocoDataset

    try:
        return CocoDataset(data[json_key], data[dir_key], categories=categories)
    except DataError as err:
        raise UsageError(f"{DATA_FLAGS[json_key]}: {err}") from None


def _check_coco_set(dataset, flag: str, what: str) -> None:
    """Every image file present and every mask non-empty (before training starts), and some objects."""
    if dataset.num_annotations == 0:
        raise UsageError(f"{flag} {dataset.annotation_file}: holds no annotations: {what} needs objects")
    try:
        dataset.check()
    except DataError as err:
        raise UsageError(f"{flag}: {err}") from None


def _train_data(data: dict, config, categories=None):
    """(train_set, val_set or None, config with the data's classes) of the data arguments of a run.

    categories: those of a resumed run (the training json is numbered with them, as when the run started).
    """
    if not data["train_coco"]:
        train_set, val_set, _ = _datasets(argparse.Namespace(**data), config)
        return train_set, val_set, config
    train_set = _coco_set(data, "train_coco", "train_images_dir", categories)
    _check_coco_set(train_set, "--train-coco", "a training set")
    val_set = None
    if data["coco"]:
        val_set = _coco_set(data, "coco", "images", categories=train_set.categories)
        _check_coco_set(val_set, "--coco", "a validation set")
    derived = {"num_classes": train_set.num_classes, "class_names": train_set.class_names,
               "category_ids": tuple(cat_id for cat_id, _ in train_set.categories)}  # fmt: skip
    return train_set, val_set, config.replace(**derived).validate()


def _saved_run(out: Path, args):
    """For --resume: (config of last.pt, data arguments of run.json, run.json), refusing what --resume
    restores."""
    from .checkpoint import load_checkpoint
    from .config import Config

    restored = {**DATA_FLAGS, "preset": "--preset", "init": "--init",
                "backbone_weights": "--backbone-weights"}  # fmt: skip
    given = [flag for key, flag in restored.items() if getattr(args, key) is not None]
    if given:
        raise UsageError(f"--resume continues the run in {out} with the data and settings it started with "
                         f"({RUN_FILE}, last.pt): leave out {', '.join(given)} (only --set changes apply), "
                         "or start a new run in another --out")  # fmt: skip
    if not (out / "last.pt").is_file():
        raise UsageError(f"--resume: {out} holds no run to continue (no last.pt)")
    try:
        run = json.loads((out / RUN_FILE).read_text())
        data = {key: run["data"][key] for key in DATA_FLAGS}
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"--resume: {out / RUN_FILE} is missing or damaged: this run was not started by "
            "`mrcnn-edu train` (or by an older version); start a new run"
        ) from None
    try:
        saved = Config.from_dict(load_checkpoint(out / "last.pt")["config"])
    except (ValueError, KeyError) as err:
        raise UsageError(f"--resume: {err}") from None
    return saved, data, run


def _categories_of(config) -> list[tuple[int, str]]:
    """The ``(category id, name)`` of each label 1..K of a model trained on COCO-format data."""
    return list(zip(config.category_ids, config.class_names[1:], strict=True))


def _check_same_architecture(old, new, assignments) -> None:
    """A resumed run cannot change the shapes of its weights: refuse such --set changes up front."""
    from .model import MaskRCNN

    def shapes(config):
        return {k: tuple(v.shape) for k, v in MaskRCNN(config).state_dict().items()}

    if shapes(old) != shapes(new):
        raise UsageError(f"--set {' '.join(assignments)}: changes the shapes of the model's weights, which a "
                         "resumed run keeps; start a new run in another --out")  # fmt: skip


# ------------------------------------------------------------------------------------------ train


def _tensorboard(choice: bool | None) -> bool:
    installed = importlib.util.find_spec("tensorboard") is not None
    if choice and not installed:
        raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return installed if choice is None else choice


def _summary_lines(summary: dict, config, out: Path, tensorboard: bool) -> list[str]:
    """``train``'s closing words: how it ended, the losses, validation, the files, what to do next."""
    from .losses import LOSS_NAMES

    how = {"completed": "finished", "time_limit": "stopped by --minutes",
           "interrupted": "interrupted (Ctrl-C)", "terminated": "terminated (SIGTERM)"}  # fmt: skip
    how = how[summary["stopped"]]
    lines = [f"train: {how} at step {summary['steps']} of {config.steps} ({summary['epochs']:.2f} epochs), "
             f"{summary['seconds']:.0f} s of training in all"]  # fmt: skip
    losses = summary["losses"]
    if losses:
        parts = ", ".join(f"{k} {losses[k]:.3f}" for k in LOSS_NAMES)
        lines.append(f"  last step: loss {losses['total']:.3f} ({parts}), {summary['images_per_second']:.1f} "
                     "images/s in this call")  # fmt: skip
    if summary["val"]:
        segm, bbox = summary["val"]["segm"], summary["val"]["bbox"]
        best = summary["best_metric"]
        best = "" if best is None else f"; best mask AP {best:.3f} (best.pt)"
        lines.append(f"  validation: mask AP {segm['AP']:.3f} (AP50 {segm['AP50']:.3f}), box AP "
                     f"{bbox['AP']:.3f}{best}")  # fmt: skip
    files = ["last.pt", "metrics.jsonl", "loss_curve.png", "summary.json"]
    files += ["tensorboard/"] if tensorboard else []
    lines.append(f"  run folder {out}/: {', '.join(files)}")
    if summary["stopped"] == "completed":
        lines.append(f"  next: mrcnn-edu predict --checkpoint {out / 'last.pt'} IMAGE")
    else:
        lines.append(f"  continue: mrcnn-edu train --out {out} --resume")
    return lines


def _resumed_run(out: Path, args):
    """(config, data arguments, train_set, val_set, run.json) of ``train --out DIR --resume``."""
    saved, data, run = _saved_run(out, args)
    config = _override(saved, args.set)
    for item, key in zip(args.set, _set_fields(args.set), strict=True):
        old, new = getattr(saved, key), getattr(config, key)
        print(f"resume: --set {item}: {key} {old!r} -> {new!r}" + (" (unchanged)" if old == new else ""))
    if args.set:
        _check_same_architecture(saved, config, args.set)
    categories = _categories_of(saved) if data["train_coco"] else None
    train_set, val_set, _ = _train_data(data, config, categories)
    where = data["train_coco"] or f"{data['train_images']} generated shapes images"
    print(f"resume: {out} at its own data ({where}) and config ({config.name}, {config.steps} steps of "
          f"{config.batch_size})")  # fmt: skip
    return config, data, train_set, val_set, run


def _new_run(out: Path, args):
    """(config, data arguments, train_set, val_set, {}) of a new ``train`` run."""
    from .config import Config

    if (out / "last.pt").exists():
        raise UsageError(f"--out {out} already holds a run (last.pt): add --resume to continue it, or "
                         "choose another --out")  # fmt: skip
    data = _data_args(args)
    for key in ("num_classes", "class_names", "category_ids"):
        if data["train_coco"] and key in _set_fields(args.set):
            raise UsageError(f"--set {key}: --train-coco sets it (with num_classes, class_names and "
                             "category_ids) from the training data; leave it out")  # fmt: skip
    try:
        config = Config.preset(args.preset or "shapes")
    except ConfigError as err:
        raise UsageError(f"--preset: {err}") from None
    train_set, val_set, config = _train_data(data, _override(config, args.set))
    if data["train_coco"]:
        names = ", ".join(config.class_names[1:])
        print(f"train: {len(train_set)} images, {train_set.num_annotations} objects of "
              f"{config.num_classes - 1} categories ({names}) from {data['train_coco']}"
              + ("" if val_set is not None else "; no validation set (--coco adds one)"))  # fmt: skip
    return config, data, train_set, val_set, {}


def _write_run(out: Path, preset: str, sets: list, data: dict, log_every: int, tensorboard: bool) -> None:
    """run.json: what ``train --out DIR --resume`` needs to continue the run with its own data."""
    out.mkdir(parents=True, exist_ok=True)
    run = {"preset": preset, "set": sets, "data": data, "log_every": log_every, "tensorboard": tensorboard}
    (out / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")


def _initial_model(spec: str, config):
    """A model of ``config`` holding the weights of a checkpoint, or of the shipped shapes model (``shapes``).

    Every tensor must fit: the classes of the data decide the heads' shapes, so weights trained on another
    number of classes are refused, naming the tensors (start from ImageNet with --backbone-weights instead).
    """
    from .checkpoint import load_checkpoint
    from .demo import load_shipped_model
    from .model import MaskRCNN

    try:
        state = load_shipped_model().state_dict() if spec == "shapes" else load_checkpoint(spec)["model"]
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"--init {spec}: {err}") from None
    model = MaskRCNN(config)
    mine = model.state_dict()
    unfit = [f"{k} {tuple(state[k].shape)} (here {tuple(v.shape)})" for k, v in mine.items()
             if k in state and state[k].shape != v.shape]  # fmt: skip
    missing = sorted(set(mine) - set(state))
    if unfit or missing:
        what = "; ".join(unfit[:3] + [f"missing {k}" for k in missing[:3]])
        raise UsageError(
            f"--init {spec}: its weights do not fit this model ({what}): another number of classes or "
            "another architecture; --backbone-weights imagenet:PATH starts anew"
        )
    model.load_state_dict({k: state[k] for k in mine})
    print(f"--init {spec}: every weight starts from it; the classes, names and ids come from the data")
    return model


def cmd_train(args) -> int:
    from .train import train

    out = Path(args.out)
    if args.init and args.backbone_weights:
        raise UsageError("--init and --backbone-weights both give the starting weights: choose one")
    if args.backbone_weights:  # the file first: a wrong one must not cost the data checks
        backbone_path = _weights_file("--backbone-weights", args.backbone_weights, "imagenet")
    if args.init and args.init != "shapes" and not Path(args.init).is_file():
        raise UsageError(f"--init {args.init}: no such file (a checkpoint, e.g. runs/a/last.pt, or 'shapes')")
    config, data, train_set, val_set, saved_run = (_resumed_run if args.resume else _new_run)(out, args)
    if len(train_set) < config.batch_size:
        raise UsageError(f"the training set has {len(train_set)} images, fewer than batch_size="
                         f"{config.batch_size}: add images or --set batch_size=N")  # fmt: skip
    # how the run logs: as it started (run.json), unless this command says otherwise
    log_every = args.log_every or saved_run.get("log_every") or 10
    tensorboard = _tensorboard(
        args.tensorboard if args.tensorboard is not None else saved_run.get("tensorboard")
    )
    model = None
    if args.backbone_weights:
        from .model import MaskRCNN
        from .pretrained import init_backbone_from_imagenet

        try:
            model = init_backbone_from_imagenet(MaskRCNN(config), backbone_path)
        except (OSError, ValueError) as e:
            raise UsageError(f"--backbone-weights {args.backbone_weights!r}: {e}") from None
    if args.init:
        model = _initial_model(args.init, config)
    if not args.resume:
        _write_run(out, args.preset or "shapes", args.set, data, log_every, tensorboard)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="resuming with a changed config")  # reported above
        summary = train(config, train_set, val_set, model=model, out_dir=out, resume=args.resume,
                        max_minutes=args.minutes, log_every=log_every, tensorboard=tensorboard,
                        resume_hint=f"mrcnn-edu train --out {out} --resume")  # fmt: skip
    _write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "model"})
    print("\n".join(_summary_lines(summary, config, out, tensorboard)))
    return EXIT_STATUS[summary["stopped"]]


# ------------------------------------------------------------------------------------------ eval


def _category_ids_by_label(model, val_set) -> dict:
    """For torchvision weights (label = COCO category id): the data set's category id -> its label.

    Categories are matched by id, as COCO's own evaluation does; a name that differs between the json and
    the weights is reported (e.g. a data set numbering its own categories from 1).
    """
    names = _class_names(model)
    for cat_id, label in val_set.cat_id_to_label.items():
        ours = names[cat_id] if cat_id < len(names) else None
        if names and ours != val_set.class_names[label]:
            print(
                f"eval: note: category id {cat_id} is {val_set.class_names[label]!r} in the json but "
                f"{ours!r} for the weights; categories are matched by id"
            )
    return dict(val_set.cat_id_to_label)


def _eval_set(args, config):
    """The data set ``eval`` scores a checkpoint on: its COCO json numbered with the model's categories, or
    generated shapes (for a model of the shapes' classes)."""
    from .data import CLASS_NAMES

    if args.coco:
        data = {"coco": args.coco, "images": _images_dir("--coco", args.coco, "--images", args.images)}
        if config.category_ids and config.class_names:
            categories = _categories_of(config)
        else:
            categories = None
            print("eval: note: the checkpoint records no category ids; labels are the json's categories in "
                  "id order")  # fmt: skip
        val_set = _coco_set(data, "coco", "images", categories)
        if val_set.num_classes != config.num_classes:
            raise UsageError(f"--coco {args.coco} has {val_set.num_classes - 1} categories but the model has "
                             f"{config.num_classes - 1} classes")  # fmt: skip
        _check_coco_set(val_set, "--coco", "an evaluation set")
        return val_set
    if tuple(config.class_names) != CLASS_NAMES:
        names = ", ".join(config.class_names[1:]) or "unnamed"
        raise UsageError(f"the model's classes are {names}, not the generated shapes': evaluate it on its "
                         "data with --coco JSON --images DIR")  # fmt: skip
    _, val_set, _ = _datasets(argparse.Namespace(val_images=args.val_images or 100), config)
    return val_set


def cmd_eval(args) -> int:
    if args.images and not args.coco:
        raise UsageError("--images goes with --coco JSON (the annotations of those images)")
    if args.coco and args.val_images is not None:
        raise UsageError("--val-images counts generated shapes; it does not go with --coco")
    if args.coco and not Path(args.coco).is_file():
        raise UsageError(f"--coco {args.coco}: no such file")
    if args.weights and not args.coco:
        raise UsageError("eval --weights needs a COCO-format set: --coco JSON --images DIR")
    model = _model_from_args(args)
    if args.weights:
        images = _images_dir("--coco", args.coco, "--images", args.images)
        val_set = _coco_set({"coco": args.coco, "images": images}, "coco", "images")
        _check_coco_set(val_set, "--coco", "an evaluation set")
        cat_map = _category_ids_by_label(model, val_set)
    else:
        val_set, cat_map = _eval_set(args, model.config), None
    _report(model, val_set, val_set.class_names, Path(args.out), "eval", cat_id_to_label=cat_map)
    return 0


# ------------------------------------------------------------------------------------------ predict


def _read_image(name: str):
    """``(image [3, H, W] float 0-1, stem)`` of an image file or of ``photo:NAME`` (a bundled photograph)."""
    from .data import read_image

    if name.startswith("photo:"):
        from .data.photos import load_photo

        try:
            return load_photo(name.removeprefix("photo:")), name.removeprefix("photo:")
        except (ValueError, ImportError) as err:
            raise UsageError(f"{name}: {err}") from None
    return read_image(name), Path(name).stem  # DataError naming the file


def _output_names(stems: list[str]) -> list[str]:
    """One output name per input, all different: its stem, or ``stem-2``, ``stem-3``... if it is taken."""
    names: list[str] = []
    for stem in stems:
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def cmd_predict(args) -> int:
    import torch

    from .visualize import save_detections

    images = [_read_image(name) for name in args.images]  # a bad name fails before the model is built
    model = _model_from_args(args)
    device = next(model.parameters()).device
    class_names = _class_names(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = _output_names([stem for _, stem in images])
    for name, (image, _), stem in zip(args.images, images, names, strict=True):
        with torch.no_grad():
            result = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        target = out / f"{stem}_detections.png"
        save_detections(image, result, class_names, target, score_threshold=args.score_threshold)
        kept = result["scores"] >= args.score_threshold
        found = [
            {
                "label": label,
                "name": class_names[label] if label < len(class_names) else str(label),
                "score": round(score, 4),
                "box": [round(v, 2) for v in box],
            }
            for label, score, box in zip(
                result["labels"][kept].tolist(),
                result["scores"][kept].tolist(),
                result["boxes"][kept].tolist(),
                strict=True,
            )
        ]
        _write_json(out / f"{stem}_detections.json", found)
        summary = ", ".join(f"{d['name']} {d['score']:.2f}" for d in found[:8])
        summary += " ..." if len(found) > 8 else ""
        print(
            f"{name}: {len(result['boxes'])} detections, {len(found)} scoring >= {args.score_threshold}"
            f"{': ' + summary if found else ''} -> {target}"
        )
    return 0


def _explore_image(spec: str):
    """``(image, source text, target or None)`` of explore's IMAGE: a file, photo:NAME or shapes:INDEX."""
    if spec.startswith("shapes:"):
        from .config import Config
        from .demo import shapes_splits

        _, held_out = shapes_splits(Config.preset("shapes"))
        index = spec.removeprefix("shapes:")
        if not index.isdigit() or int(index) >= len(held_out):
            last = len(held_out) - 1
            raise UsageError(f"IMAGE {spec}: shapes:INDEX names a held-out shapes image, INDEX 0..{last}")
        image, target = held_out[int(index)]
        return image, f"held-out shapes image {index} (never trained on)", target
    image, stem = _read_image(spec)
    return image, (f"photo {stem} (bundled)" if spec.startswith("photo:") else spec), None


def cmd_explore(args) -> int:
    from .demo import SHIPPED_MODEL
    from .explore import write_page

    image, source, target = _explore_image(args.image)  # a bad name fails before the model is built
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; name the page's file, e.g. {out / 'explore.html'}")
    if args.weights or args.checkpoint:
        model = _model_from_args(args)
        name = f"weights {args.weights}" if args.weights else f"checkpoint {args.checkpoint}"
    else:
        model = _load_model(SHIPPED_MODEL, args.device, args.set)
        name = "the shapes model shipped with mrcnn_edu"
    written = write_page(out, model, image, source=source, model_name=name, target=target)
    print(f"explore: {written['proposals']} proposals, {written['detections']} detections -> {out} "
          f"({written['bytes'] / 1e6:.2f} MB): open it in a browser, no server needed")  # fmt: skip
    return 0


def cmd_demo(args) -> int:
    import torch

    from .config import Config
    from .demo import training_threads
    from .train import train
    from .visualize import compare_figure

    start = time.perf_counter()
    config = _override(Config.preset("shapes"), args.set)
    counts = {"train_images": args.train_images, "val_images": args.val_images}
    data = _data_args(argparse.Namespace(**{**dict.fromkeys(DATA_FLAGS), **counts}))
    train_set, val_set, _ = _datasets(argparse.Namespace(**data), config)
    if train_set is None or len(train_set) < config.batch_size:
        raise UsageError(f"--train-images {args.train_images}: fewer than batch_size={config.batch_size}")
    try:
        torch.set_num_threads(training_threads(args.threads))
    except ValueError as err:
        raise UsageError(f"--threads: {err}") from None
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    _write_run(out, "shapes", args.set, data, 10, False)  # so that `train --out RUN --resume` continues it
    print(
        f"demo: training the shapes preset from scratch: {config.steps} steps of {config.batch_size} images "
        f"from {len(train_set)} generated ones, on {torch.get_num_threads()} CPU thread(s) (the progress bar "
        f"gives the ETA); then mask AP on {len(val_set)} held-out images. Output in {out}/"
    )
    hint = f"mrcnn-edu train --out {out} --resume"
    summary = train(config, train_set, None, out_dir=out, resume_hint=hint)
    if summary["stopped"] != "completed":
        print(
            f"demo: training stopped early ({summary['stopped']}) at step {summary['steps']} of "
            f"{config.steps}: the model is UNDERTRAINED, so no AP is reported.\n"
            f"Continue it with: {hint}\n"
            f"then evaluate it: mrcnn-edu eval --checkpoint {out}/last.pt"
        )
        return EXIT_STATUS[summary["stopped"]] or 1
    model = summary["model"].eval()
    results = _report(model, val_set, config.class_names, out, "demo")
    items = [val_set[i] for i in range(min(8, len(val_set)))]
    predictions, targets = _predict_all(model, items)
    compare_figure(
        [im for im, _ in items], targets, predictions, config.class_names, path=out / "demo_predictions.png"
    )
    minutes = (time.perf_counter() - start) / 60
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        2**20 if sys.platform == "darwin" else 2**10
    )
    print(
        f"demo: mask AP@0.5 = {results['segm']['AP50']:.3f} (COCO segm AP50) on {len(val_set)} held-out "
        f"images after {summary['steps']} steps; {minutes:.1f} min in all, peak memory {peak_mib:.0f} MiB.\n"
        f"Figures: {out}/demo_predictions.png, {out}/loss_curve.png, {out}/demo_pr.png"
    )
    return 0


def cmd_shapes_model(args) -> int:
    from .demo import build_shipped_model

    steps = {} if args.steps is None else {"steps": args.steps}
    result = build_shipped_model(args.out, work_dir=args.work_dir, threads=args.threads, **steps)
    m = result["metrics"]
    print(
        f"shapes-model: {result['path']}: {result['steps']} steps; on {m['held_out_images']} held-out images "
        f"(float16 weights): mask AP@0.5 {m['segm_AP50']:.3f}, mask AP {m['segm_AP']:.3f}, "
        f"box AP@0.5 {m['bbox_AP50']:.3f}, VOC mAP@0.5 {m['voc_mAP50']:.3f}"
    )
    return 0


def cmd_notebooks(args) -> int:
    from .notebook import copy_course

    try:
        written = copy_course(args.dir, instructor=args.instructor)
    except FileExistsError as e:
        raise UsageError(f"notebooks: {e}") from None
    kind = "instructor (with solutions)" if args.instructor else "student"
    print(f"notebooks: {len(written)} files in {args.dir}/ (exercises: {kind} versions). "
          f"Open them with: jupyter lab {args.dir}")  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------------ config, convert


def cmd_config(args) -> int:
    from .checkpoint import load_checkpoint
    from .config import Config, field_rule

    if args.checkpoint:
        try:
            config = Config.from_dict(load_checkpoint(args.checkpoint)["config"])
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise UsageError(f"--checkpoint {args.checkpoint}: {err}") from None
        source = args.checkpoint
    else:
        try:
            config = Config.preset(args.preset)
        except ConfigError as err:
            raise UsageError(f"--preset: {err}") from None
        source = f"preset {args.preset!r}"
    print(f"config of {source}: every field can be changed with --set FIELD=VALUE")
    for key, value in config.to_dict().items():
        shown = repr(tuple(value) if isinstance(value, list) else value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        print(f"  {key:<27} {shown:<41} {field_rule(key)}")
    return 0


def cmd_convert(args) -> int:
    from .data.convert import convert_labelme, convert_via
    from .data.export import parse_categories

    if args.format == "labelme":
        for key, flag in (
            ("images", "--images"),
            ("label_attribute", "--label-attribute"),
            ("label", "--label"),
        ):
            if getattr(args, key) is not None:
                raise UsageError(f"{flag} is for VIA files; labelme json names its image and its labels")
    try:
        categories = parse_categories(args.categories) if args.categories else None
    except ValueError as err:
        raise UsageError(f"--categories: {err}") from None
    try:
        if args.format == "via":
            path = convert_via(
                args.src,
                args.out,
                image_dir=args.images,
                split_name=args.split,
                categories=categories,
                label_attribute=args.label_attribute,
                label=args.label,
            )
        else:
            path = convert_labelme(args.src, args.out, split_name=args.split, categories=categories)
    except ValueError as err:  # DataError (the files), or a bad --split
        raise UsageError(str(err)) from None
    data = json.loads(path.read_text())
    counts = {
        c["name"]: sum(a["category_id"] == c["id"] for a in data["annotations"]) for c in data["categories"]
    }
    print(f"convert: {len(data['images'])} images, {len(data['annotations'])} objects ("
          + ", ".join(f"{name} {n}" for name, n in counts.items()) + f") -> {path}")  # fmt: skip
    return 0


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    source = p.add_mutually_exclusive_group(required=required)
    source.add_argument("--checkpoint", help="a checkpoint written by mrcnn-edu train (last.pt or best.pt)")
    source.add_argument(
        "--weights",
        metavar="SPEC",
        help="torchvision:PATH, a torchvision maskrcnn_resnet50_fpn state dict (labels = COCO category ids)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an inference setting, e.g. detection_min_confidence=0.3 or min_dim=512",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrcnn-edu",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train shapes on CPU, evaluate on held-out shapes, write figures")
    p.add_argument("--out", default="runs/demo", help="a new timestamped folder in it (default %(default)s)")
    p.add_argument("--train-images", type=int, default=4000, help="generated images (default %(default)s)")
    p.add_argument("--val-images", type=int, default=100, help="held-out images (default %(default)s)")
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a config field, e.g. steps=2000"
    )
    p.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for torch (default 1: fast on a busy machine too; see mrcnn_edu.demo)",
    )  # fmt: skip
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("shapes-model", help="retrain the shipped shapes model, print its AP")
    p.add_argument("--out", default=None, help="file to write (default: the package's)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: demo.SHIPPED_STEPS)")
    p.add_argument("--work-dir", default="runs/shipped-shapes", help="its training run (resumed)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1: deterministic)")
    p.set_defaults(func=cmd_shapes_model)

    p = sub.add_parser("notebooks", help="copy the course notebooks (stages and exercises) into a folder")
    p.add_argument("dir", help="a folder (created; existing files are never overwritten)")
    p.add_argument("--instructor", action="store_true", help="exercise notebooks with solutions")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("train", help="train a model on generated shapes or on a COCO-format set of your own",
                       epilog=EXAMPLES)  # fmt: skip
    _add_config_args(p)
    p.add_argument("--out", default="runs/train", help="the run folder (checkpoints, metrics, run.json)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its own data and config (only --set changes apply)",
    )
    p.add_argument(
        "--backbone-weights",
        metavar="imagenet:PATH",
        help="start the backbone from torchvision ImageNet ResNet weights (a local .pth file)",
    )
    p.add_argument(
        "--init",
        metavar="CHECKPOINT|shapes",
        help="start every weight from a checkpoint of another run (last.pt, best.pt) or from 'shapes', the "
        "model shipped in the package; its layers must fit the data's classes",
    )
    p.add_argument(
        "--minutes",
        type=_non_negative,
        default=None,
        help="stop (and save) after this many minutes; --resume continues (default: no limit)",
    )
    p.add_argument(
        "--log-every",
        type=_positive_int,
        default=None,
        help="log the losses every N steps (default 10; --resume keeps the run's)",
    )
    p.add_argument(
        "--train-coco", metavar="JSON", help="COCO json of your training set (its classes are used)"
    )
    p.add_argument(
        "--train-images-dir",
        metavar="DIR",
        help="image folder of --train-coco (default: DIR/<split> beside DIR/annotations/"
        "instances_<split>.json, the layout export-shapes and convert write)",
    )
    p.add_argument(
        "--coco",
        metavar="JSON",
        help="COCO json of the validation set (needs --train-coco; "
        "numbered with the training set's categories)",
    )
    p.add_argument("--images", metavar="DIR", help="image folder of --coco (default: as --train-images-dir)")
    p.add_argument(
        "--train-images",
        type=_positive_int,
        default=None,
        help="generated shapes images to train on, without --train-coco (default 4000)",
    )
    p.add_argument(
        "--val-images",
        type=_positive_int,
        default=None,
        help="generated shapes images to validate on, without --train-coco (default 100)",
    )
    p.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write TensorBoard events to --out/tensorboard (default: if tensorboard is installed; "
        "--resume keeps the run's choice)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice, one per core)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO AP (bbox, segm) and VOC AP@0.5 of a checkpoint or of weights")
    _add_model_args(p)
    p.add_argument(
        "--coco", metavar="JSON", help="COCO json to evaluate on (default: generated held-out shapes)"
    )
    p.add_argument(
        "--images", metavar="DIR", help="image folder of --coco (default: its COCO layout's folder)"
    )
    p.add_argument(
        "--val-images",
        type=_positive_int,
        default=None,
        help="generated shapes images, without --coco (default 100)",
    )
    p.add_argument("--out", default="runs/eval", help="where the AP table, json and PR curve go")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="draw detections of a checkpoint or of weights on images")
    _add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="an image file, or photo:NAME (bundled photo)")
    p.add_argument("--out", default="runs/predict", help="where IMAGE_detections.png / .json go")
    p.add_argument("--score-threshold", type=_fraction, default=0.5, help="draw and list detections above it")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explore", help="one forward pass as an offline web page: every stage, clickable")
    p.add_argument("image", nargs="?", default="shapes:0", metavar="IMAGE",
                   help="an image file, photo:NAME (bundled photo) or shapes:INDEX (held-out shapes image "
                   "0-99, with its ground truth)")  # fmt: skip
    _add_model_args(p, required=False)
    p.add_argument("--out", default="explore.html", help="the HTML file to write (one file, opens from disk)")
    p.epilog = """\
Without --checkpoint or --weights the page shows the shapes model shipped with mrcnn_edu.
examples:
  mrcnn-edu explore --out page.html          held-out shapes image 0, the shipped model
  mrcnn-edu explore shapes:7 --checkpoint runs/a/best.pt --out shapes7.html
  mrcnn-edu explore photo:astronaut --weights torchvision:maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth \\
                    --out astronaut.html"""
    p.set_defaults(func=cmd_explore)

    # Listed for --help; its own arguments are parsed by mrcnn_edu.data.export.main (see main below).
    sub.add_parser("export-shapes", help="write generated shapes as COCO json + PNGs", add_help=False)

    p = sub.add_parser(
        "convert", help="VIA or labelme annotations -> a COCO folder (the layout of export-shapes)"
    )
    p.add_argument("format", choices=["via", "labelme"], help="the annotation tool that wrote SRC")
    p.add_argument("src", metavar="SRC", help="VIA: its json file; labelme: a json file or a folder of them")
    p.add_argument("--out", required=True, help="the COCO folder to write (DIR/<split>/, DIR/annotations/)")
    p.add_argument("--split", default="train", help="names the image folder and instances_<split>.json")
    p.add_argument(
        "--categories",
        metavar="NAMES",
        help="fix the categories: 'cat,dog' or '5:cat,17:dog' (default: the labels found, sorted, "
        "ids 1..K); give a validation set its training set's",
    )
    p.add_argument("--images", metavar="DIR", help="VIA: the images' folder (default: the json's folder)")
    p.add_argument(
        "--label-attribute",
        metavar="NAME",
        help="VIA: the region attribute that holds the label (default: a region's only attribute)",
    )
    p.add_argument("--label", metavar="NAME", help="VIA: one category for every region (e.g. 'balloon')")
    p.set_defaults(func=cmd_convert)

    from .config import PRESETS

    p = sub.add_parser(
        "config", help="list the config fields (what --set FIELD=VALUE changes) with their values"
    )
    p.add_argument("--preset", default="shapes", choices=sorted(PRESETS), help="the preset to show")
    p.add_argument("--checkpoint", help="show the config saved in this checkpoint instead")
    p.set_defaults(func=cmd_config)

    from .exercises import export, grading, notebooks

    p = sub.add_parser("grade", help="grade students' exercise notebooks or modules (sandboxed workers)")
    grading.add_arguments(p)
    p.set_defaults(func=grading.run)

    p = sub.add_parser("exercises", help="classroom exercise notebooks")
    exercises_sub = p.add_subparsers(dest="exercises_command", required=True)
    p = exercises_sub.add_parser("build", help="regenerate the student notebooks from the instructor ones")
    notebooks.add_arguments(p)
    p.set_defaults(func=notebooks.run)
    p = exercises_sub.add_parser("export", help="the exercises as an nbgrader course or otter notebooks")
    export.add_arguments(p)
    p.set_defaults(func=export.run)
    for command in sub.choices.values():  # defaults shown in every command's help
        command.formatter_class = _HelpFormatter
    return parser


def _set_threads(args) -> None:
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-shapes"]:
        from .data.export import main as export_main

        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    _set_threads(args)
    try:
        return args.func(args)
    except (UsageError, DataError, ConfigError) as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"mrcnn-edu {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside training (which saves and returns on Ctrl-C itself)
        print(f"mrcnn-edu {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mrcnn-edu config | head`: the reader left; no traceback about it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
