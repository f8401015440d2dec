"""The ``mrcnn-edu`` command (also ``python -m mrcnn_edu``).

    mrcnn-edu demo                      train shapes on CPU, evaluate on held-out shapes, draw the results
    mrcnn-edu train  [--preset P] [--set field=value ...] [--resume] [--backbone-weights imagenet:PATH]
    mrcnn-edu eval   (--checkpoint PATH | --weights SPEC) [--coco JSON --images DIR]
    mrcnn-edu predict (--checkpoint PATH | --weights SPEC) IMAGE...
    mrcnn-edu export-shapes --out DIR   write a shapes set as COCO json + PNGs ("bring your own data" example)
    mrcnn-edu grade --assignment NAME PATH...   grade students' notebooks / modules in a sandbox, score table
    mrcnn-edu exercises build           regenerate the student exercise notebooks from the instructor ones
    mrcnn-edu exercises export (--nbgrader DIR | --otter DIR)   the exercises as an nbgrader / otter course

Every config field can be overridden with ``--set field=value`` (see ``mrcnn_edu.config.Config``); for
eval and predict that changes inference settings such as ``detection_min_confidence`` or ``min_dim``.

``--checkpoint`` loads a model trained by ``mrcnn-edu train``; ``--weights torchvision:PATH`` loads a
Mask R-CNN state dict saved by torchvision (e.g. its COCO-trained ``maskrcnn_resnet50_fpn``, which you
download once: mrcnn-edu never downloads) into the ``torchvision`` preset, whose labels are COCO category
ids. ``IMAGE`` may be ``photo:NAME``, one of the bundled photographs (``mrcnn_edu.data.photos``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _config(args):
    from .config import Config

    return Config.preset(args.preset).override(*args.set)


def _add_config_args(p: argparse.ArgumentParser, default_preset: str = "shapes") -> None:
    p.add_argument(
        "--preset", default=default_preset, help="shapes | matterport | coco (default %(default)s)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field"
    )


def _datasets(args, config):
    """(train set or None, validation set, class names): a COCO-format set when given, else generated shapes.

    Generated training and validation shapes use different seeds, so the held-out images are never trained on.
    """
    from .data import CocoDataset, ShapesDataset

    if getattr(args, "coco", None):
        val = CocoDataset(args.coco, args.images)
        train_json = getattr(args, "train_coco", None)
        train = CocoDataset(train_json, args.train_images_dir) if train_json else None
        return train, val, val.class_names
    size = (config.max_dim, config.max_dim)
    train_count = getattr(args, "train_images", None)
    train = ShapesDataset(train_count, size, seed=config.seed + 1) if train_count else None
    val = ShapesDataset(args.val_images, size, seed=config.seed + 1000)
    return train, val, config.class_names


def _load_model(path, device="cpu", overrides=()):
    """An eval-mode model from a training checkpoint; ``overrides`` are ``"field=value"`` strings."""
    from .checkpoint import load_checkpoint
    from .config import Config
    from .model import MaskRCNN

    state = load_checkpoint(path)
    model = MaskRCNN(Config.from_dict(state["config"]).override(*overrides))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _weights_file(option: str, spec: str, kind: str) -> str:
    """The PATH of ``option KIND:PATH``, which must name ``kind`` and an existing file.

    Anything else ends the command with a message saying what was expected (SystemExit, so the console shows
    one line, not a traceback).
    """
    from .pretrained import WEIGHT_KINDS, parse_weights_spec

    try:
        got, path = parse_weights_spec(spec)
    except ValueError as err:
        raise SystemExit(f"{option} {spec!r}: {err}") from None
    if got != kind:
        raise SystemExit(
            f"{option} {spec!r}: only {kind}:PATH ({WEIGHT_KINDS[kind]}) is accepted here, got kind {got!r}"
        )
    if not Path(path).is_file():
        raise SystemExit(
            f"{option} {spec!r}: the file {path} does not exist (mrcnn-edu never downloads: fetch the "
            "weights once on a machine with internet)"
        )
    return path


def _load_weights(spec: str, device="cpu", overrides=()):
    """An eval-mode model from ``--weights SPEC`` (``torchvision:PATH``), in the ``torchvision`` preset."""
    from .config import Config
    from .pretrained import load_torchvision_maskrcnn

    path = _weights_file("--weights", spec, "torchvision")
    config = Config.preset("torchvision").override(*overrides)
    if config.num_classes != len(config.class_names):  # weights fine-tuned on other classes: no names
        config = config.replace(class_names=())
    try:
        model = load_torchvision_maskrcnn(path, config.num_classes, config=config, device=device)
    except (ValueError, RuntimeError, KeyError) as err:
        raise SystemExit(f"--weights {spec!r}: could not load {path}: {err}") from None
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
    (out_dir / f"{prefix}_ap.json").write_text(json.dumps(results, indent=2))
    plot_precision_recall(predictions, targets, class_names=class_names, path=out_dir / f"{prefix}_pr.png")
    return results


def cmd_train(args) -> int:
    from .train import train

    config = _config(args)
    train_set, val_set, _ = _datasets(args, config)
    model = None
    if args.backbone_weights:
        from .model import MaskRCNN
        from .pretrained import init_backbone_from_imagenet

        path = _weights_file("--backbone-weights", args.backbone_weights, "imagenet")
        try:
            model = init_backbone_from_imagenet(MaskRCNN(config), path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"--backbone-weights {args.backbone_weights!r}: {e}") from None
    summary = train(
        config,
        train_set,
        val_set,
        model=model,
        out_dir=args.out,
        resume=args.resume,
        max_minutes=args.minutes,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


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


def cmd_eval(args) -> int:
    if args.weights and not args.coco:
        raise SystemExit("eval --weights needs a COCO-format set: --coco JSON --images DIR")
    model = _model_from_args(args)
    _, val_set, class_names = _datasets(args, model.config)
    cat_map = _category_ids_by_label(model, val_set) if args.weights else None
    _report(model, val_set, class_names, Path(args.out), "eval", cat_id_to_label=cat_map)
    return 0


def _read_image(name: str):
    """``(image [3, H, W] float 0-1, stem)`` of an image file or of ``photo:NAME`` (a bundled photograph)."""
    import numpy as np
    import torch
    from PIL import Image

    if name.startswith("photo:"):
        from .data.photos import load_photo

        try:
            return load_photo(name.removeprefix("photo:")), name.removeprefix("photo:")
        except (ValueError, ImportError) as err:
            raise SystemExit(f"predict: {name}: {err}") from None
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"predict: image file {path} does not exist")
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1), path.stem


def cmd_predict(args) -> int:
    import torch

    from .visualize import save_detections

    images = [_read_image(name) for name in args.images]  # a bad name fails before the model is built
    model = _model_from_args(args)
    device = next(model.parameters()).device
    class_names = _class_names(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (image, stem) in zip(args.images, images, strict=True):
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
        (out / f"{stem}_detections.json").write_text(json.dumps(found, indent=1))
        summary = ", ".join(f"{d['name']} {d['score']:.2f}" for d in found[:8])
        summary += " ..." if len(found) > 8 else ""
        print(
            f"{name}: {len(result['boxes'])} detections, {len(found)} scoring >= {args.score_threshold}"
            f"{': ' + summary if found else ''} -> {target}"
        )
    return 0


def cmd_demo(args) -> int:
    from .config import Config
    from .train import train
    from .visualize import compare_figure

    start = time.perf_counter()
    config = Config.preset("shapes").override(*args.set)
    train_set, val_set, class_names = _datasets(args, config)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    print(
        f"demo: training the shapes preset from scratch on {len(train_set)} generated images "
        f"({config.steps} steps of {config.batch_size}, at most {args.minutes} min); "
        f"{len(val_set)} held-out images for evaluation; output in {out}/"
    )
    summary = train(config, train_set, None, out_dir=out, max_minutes=args.minutes)
    model = summary["model"].eval()
    results = _report(model, val_set, class_names, out, "demo")
    items = [val_set[i] for i in range(8)]
    predictions, targets = _predict_all(model, items)
    compare_figure(
        [im for im, _ in items], targets, predictions, class_names, path=out / "demo_predictions.png"
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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint written by mrcnn-edu train (last.pt)")
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
    p.add_argument("--device", default="cpu", help="cpu | cuda (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrcnn-edu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train shapes on CPU, evaluate on held-out shapes, write figures")
    p.add_argument("--out", default="runs/demo")
    p.add_argument(
        "--minutes", type=float, default=8.0, help="training time budget (stops early, keeps the model)"
    )
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice, one per core)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model")
    _add_config_args(p)
    p.add_argument("--out", default="runs/train")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument(
        "--backbone-weights",
        metavar="imagenet:PATH",
        help="start the backbone from torchvision ImageNet ResNet weights (a local .pth file)",
    )
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes")
    p.add_argument("--train-images", type=int, default=4000, help="generated shapes images (no --train-coco)")
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--train-coco", help="COCO json of the training set")
    p.add_argument("--train-images-dir", dest="train_images_dir")
    p.add_argument("--coco", help="COCO json of the validation set")
    p.add_argument("--images", help="image folder of the validation set")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice, one per core)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO AP (bbox, segm) and VOC AP@0.5 of a checkpoint or of weights")
    _add_model_args(p)
    p.add_argument("--coco", help="COCO json to evaluate on (default: generated held-out shapes)")
    p.add_argument("--images", help="image folder for --coco")
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--out", default="runs/eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="draw detections of a checkpoint or of weights on images")
    _add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="an image file, or photo:NAME (bundled photo)")
    p.add_argument("--out", default="runs/predict")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.set_defaults(func=cmd_predict)

    # Listed for --help; its own arguments are parsed by mrcnn_edu.data.export.main (see main below).
    sub.add_parser("export-shapes", help="write generated shapes as COCO json + PNGs", add_help=False)

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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
