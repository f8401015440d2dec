"""Inference speed of mrcnn_edu against torchvision's ``maskrcnn_resnet50_fpn``, same weights, same images.

    python benchmarks/torchvision_compare.py                           # CPU, bundled photos, 5 repeats
    python benchmarks/torchvision_compare.py --repeats 2 --threads 1
    python benchmarks/torchvision_compare.py --device cuda --amp bf16 --repeats 20
    python benchmarks/torchvision_compare.py --weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --images a.jpg

One state dict goes into both models: torchvision's own model loads it with ``load_state_dict``, ours with
:func:`mrcnn_edu.pretrained.load_torchvision_maskrcnn` (``Config.preset("torchvision")``, torchvision's
inference settings: 800 / 1333 resize, 1000 proposals per image, score 0.05, NMS 0.5, 100 detections). Without
``--weights`` it is :func:`mrcnn_edu.references.seeded_torchvision_maskrcnn` (seeded random weights that
produce detections, in the structure of torchvision's COCO_V1 model); the speed does not depend on the
weights, except through the number of detections, which is printed. Images: the bundled
photographs (:mod:`mrcnn_edu.data.photos`) or ``--images``.

Both run in eval mode under ``torch.no_grad()`` (and ``torch.autocast`` with ``--amp``), one image per call;
after a warm-up pass each repeat times ours then torchvision over all images, so load changes on a shared
machine hit both alike; the figure is the median seconds per image. Peak memory is reported on CUDA
(``torch.cuda.max_memory_allocated``, reset between the two); on the CPU both share one process, so it is not.

torchvision's ``nms`` / ``roi_align`` run on its compiled kernels where they load (``kernels: compiled``, a
GPU machine), else on onnxruntime's CPU kernels registered by :func:`mrcnn_edu.references.import_torchvision`
(``kernels: onnxruntime``), which changes torchvision's CPU time a little.

The agreement line per image is a sanity check, not the parity test: detections of the same label are matched
at IoU >= 0.5 (:func:`mrcnn_edu.matching.match_by_iou`) and the largest box coordinate difference over the
matched pairs is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mrcnn_edu.references import (  # noqa: E402  (before anything imports torchvision)
    import_torchvision,
    seeded_torchvision_maskrcnn,
)

tv, KERNELS = import_torchvision()

from mrcnn_edu.boxes import box_iou  # noqa: E402
from mrcnn_edu.config import Config  # noqa: E402
from mrcnn_edu.matching import BACKGROUND, match_by_iou  # noqa: E402
from mrcnn_edu.pretrained import load_torchvision_maskrcnn  # noqa: E402


def _load_images(paths) -> list[tuple[str, torch.Tensor]]:
    if not paths:
        from mrcnn_edu.data.photos import load_photo, photo_names

        return [(name, load_photo(name)) for name in photo_names()]
    import numpy as np
    from PIL import Image

    images = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        images.append((Path(path).name, torch.from_numpy(pixels).permute(2, 0, 1).contiguous()))
    return images


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device, amp):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _run_all(model, images, device, amp) -> tuple[float, list[dict]]:
    """Seconds for all images (one per call) and the results, on the CPU."""
    results = []
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad(), _autocast(device, amp):
        for image in images:
            results.append(model([image])[0])
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, [{k: v.float().cpu() for k, v in r.items()} for r in results]


def agreement(ours: dict, theirs: dict, iou_threshold: float = 0.5) -> tuple[int, float]:
    """``(matched detections of ours, max |box difference| over them in pixels)`` (NaN when none match)."""
    iou = box_iou(theirs["boxes"], ours["boxes"])  # [T, N]
    iou[theirs["labels"][:, None] != ours["labels"][None, :]] = 0.0  # only the same class matches
    if iou.numel() == 0:
        return 0, float("nan")
    match = match_by_iou(iou, iou_threshold, iou_threshold, allow_low_quality=False)
    matched = match != BACKGROUND
    if not matched.any():
        return 0, float("nan")
    diff = (ours["boxes"][matched] - theirs["boxes"][match[matched]]).abs().max()
    return int(matched.sum()), float(diff)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="a torchvision Mask R-CNN state dict (.pth); default: seeded random")
    p.add_argument("--images", nargs="+", help="image files (default: the bundled photos)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the images (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(800, 1333),
        help="resize: shorter side MIN, longer side at most MAX (both models; default %(default)s)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images = _load_images(args.images)
    names = [n for n, _ in images]
    images = [im.to(device) for _, im in images]

    # torchvision's COCO_V1 structure (frozen BN, eps 0), with weights that detect something
    theirs = seeded_torchvision_maskrcnn(seed=0)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        theirs.load_state_dict(state)
    else:
        state = theirs.state_dict()
    theirs.transform.min_size, theirs.transform.max_size = (args.size[0],), args.size[1]
    theirs = theirs.to(device).eval()
    config = Config.preset("torchvision", min_dim=args.size[0], max_dim=args.size[1])
    ours = load_torchvision_maskrcnn(state, config=config, device=device)

    print(
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"amp {args.amp}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"torchvision {tv.__version__} on {KERNELS} kernels"
    )
    print(
        f"weights: {args.weights or 'seeded_torchvision_maskrcnn(seed=0)'}; {len(images)} images "
        f"({', '.join(names)}); resize {args.size[0]}/{args.size[1]}; {args.warmup} warm-up, "
        f"{args.repeats} timed passes"
    )

    for _ in range(args.warmup):
        _run_all(ours, images, device, args.amp)
        _run_all(theirs, images, device, args.amp)
    times = {"mrcnn_edu": [], "torchvision": []}
    peak = {}
    for _ in range(args.repeats):
        for label, model in (("mrcnn_edu", ours), ("torchvision", theirs)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, results = _run_all(model, images, device, args.amp)
            times[label].append(seconds / len(images))
            if device.type == "cuda":
                peak[label] = max(peak.get(label, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
            if label == "mrcnn_edu":
                our_results = results
            else:
                their_results = results

    median = {k: statistics.median(v) for k, v in times.items()}
    for label in times:
        spread = ", ".join(f"{t:.3f}" for t in times[label])
        memory = f", peak GPU memory {peak[label]:.0f} MiB" if label in peak else ""
        print(f"{label:>12}: median {median[label]:.3f} s/img (passes: {spread}){memory}")
    print(f"ratio mrcnn_edu / torchvision: {median['mrcnn_edu'] / median['torchvision']:.2f} (target <= 1.0)")

    print("per image: detections ours / torchvision, matched (same label, IoU >= 0.5), max |box diff| px")
    for name, a, b in zip(names, our_results, their_results, strict=True):
        matched, diff = agreement(a, b)
        print(f"  {name:>12}: {len(a['boxes']):3d} / {len(b['boxes']):3d}, matched {matched:3d}, "
              f"max box diff {diff:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
