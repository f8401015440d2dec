"""The ``mrcnn-edu`` command (also ``python -m mrcnn_edu``).

    mrcnn-edu demo                      train shapes on CPU, evaluate on held-out shapes, draw the results
    mrcnn-edu train  [--preset P] [--set field=value ...] [--resume]
    mrcnn-edu eval   --checkpoint PATH [--coco JSON --images DIR]
    mrcnn-edu predict --checkpoint PATH IMAGE...
    mrcnn-edu export-shapes --out DIR   write a shapes set as COCO json + PNGs ("bring your own data" example)

Every config field can be overridden with ``--set field=value`` (see ``mrcnn_edu.config.Config``).
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


def _load_model(path, device="cpu"):
    from .checkpoint import load_checkpoint
    from .config import Config
    from .model import MaskRCNN

    state = load_checkpoint(path)
    model = MaskRCNN(Config.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _predict_all(model, dataset, batch_size=8):
    import torch

    predictions, targets = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            predictions += model([im for im, _ in items])
            targets += [t for _, t in items]
    return predictions, targets


def _report(model, dataset, class_names, out_dir: Path, prefix: str) -> dict:
    from .evaluate import coco_evaluate, format_table, mean_voc_ap, plot_precision_recall

    predictions, targets = _predict_all(model, dataset)
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
    summary = train(
        config, train_set, val_set, out_dir=args.out, resume=args.resume, max_minutes=args.minutes
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args) -> int:
    model = _load_model(args.checkpoint)
    _, val_set, class_names = _datasets(args, model.config)
    _report(model, val_set, class_names, Path(args.out), "eval")
    return 0


def cmd_predict(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from .visualize import save_detections

    model = _load_model(args.checkpoint)
    class_names = model.config.class_names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise SystemExit(f"predict: image file {path} does not exist")
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(
            2, 0, 1
        )
        with torch.no_grad():
            result = model([image])[0]
        target = out / f"{path.stem}_detections.png"
        save_detections(image, result, class_names, target, score_threshold=args.score_threshold)
        print(f"{path}: {len(result['boxes'])} detections -> {target}")
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

    p = sub.add_parser("eval", help="COCO AP (bbox, segm) and VOC AP@0.5 of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--coco", help="COCO json to evaluate on (default: generated held-out shapes)")
    p.add_argument("--images", help="image folder for --coco")
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--out", default="runs/eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="draw detections of a checkpoint on images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="runs/predict")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.set_defaults(func=cmd_predict)

    # Listed for --help; its own arguments are parsed by mrcnn_edu.data.export.main (see main below).
    sub.add_parser("export-shapes", help="write generated shapes as COCO json + PNGs", add_help=False)
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
