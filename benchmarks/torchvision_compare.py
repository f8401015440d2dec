"""Speed of mrcnn_edu against torchvision's ``maskrcnn_resnet50_fpn``, same weights, same images.

    python benchmarks/torchvision_compare.py                           # CPU inference, bundled photos
    python benchmarks/torchvision_compare.py --repeats 2 --threads 1
    python benchmarks/torchvision_compare.py --train --threads 1       # training step, 512 px, batch 2
    python benchmarks/torchvision_compare.py --device cuda --amp bf16 --repeats 20
    python benchmarks/torchvision_compare.py --weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --images a.jpg

torchvision's real compiled CPU kernels load from a separate environment (never a project dependency)::

    python3 -m venv /work/venv-tv && /work/venv-tv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        numpy matplotlib pycocotools scikit-image tqdm onnxruntime
    PYTHONPATH=. /work/venv-tv/bin/python benchmarks/torchvision_compare.py --threads 1

Both models then run in that environment's torch; the first line printed names the torch, the
torchvision and the kernels (``compiled`` or ``onnxruntime``) the figures ran against.

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

Arithmetic throughput: one extra pass per image under ``torch.utils.flop_counter.FlopCounterMode`` counts
each model's floating-point operations (convolutions and matrix products, 2 per multiply-add); GFLOP/s is
that count over the median time, printed against the FMA peak of the threads used (``--peak-gflops`` per
core, default 78.5: a 2.45 GHz core doing 2 x 8-wide float32 FMAs per cycle; 157 for the 2-core machine).

``--train``: one training step (forward with losses, backward, SGD step with momentum) of each model on
the same batch of generated shapes images (``--batch``, default 2, at ``--size``, default 512 512), the
``coco`` preset (torchvision's recipe: 2000 proposals per image, 512 sampled ROIs at 25 %, GT boxes
added) against ``maskrcnn_resnet50_fpn`` at its defaults, both from the same state dict, both with the
stem and layer1 frozen (torchvision's ``trainable_backbone_layers=3``); steps alternate, median reported.
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

import mrcnn_edu._conv  # noqa: E402
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


def _run_all(model, images, device, amp) -> tuple[float, float, list[dict]]:
    """Wall-clock and process CPU seconds for all images (one per call), and the results, on the CPU."""
    results = []
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad(), _autocast(device, amp):
        for image in images:
            results.append(model([image])[0])
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu_seconds, [{k: v.float().cpu() for k, v in r.items()} for r in results]


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


def count_gflop(model, images, device, amp) -> float:
    """Floating-point operations (GFLOP) of one forward pass over ``images`` (one per call), summed.

    mrcnn_edu's convolutions are counted on ``nn.Conv2d``'s path: the flop counter has no formula for the
    oneDNN operator they call on the CPU, and both compute the same products."""
    from torch.utils.flop_counter import FlopCounterMode

    onednn, mrcnn_edu._conv._onednn = mrcnn_edu._conv._onednn, lambda *args: False
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad(), _autocast(device, amp):
            for image in images:
                model([image])
    finally:
        mrcnn_edu._conv._onednn = onednn
    return counter.get_total_flops() / 1e9


def _freeze_like_torchvision(model, trainable_layers: int = 3) -> None:
    """torchvision's ``trainable_backbone_layers``: only the last ``trainable_layers`` of
    (conv1, layer1, ..., layer4) of its ResNet body learn."""
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for name, parameter in model.backbone.body.named_parameters():
        parameter.requires_grad_(any(name.startswith(layer) for layer in trainable))


def train_main(args, device) -> int:
    from mrcnn_edu.data import ShapesDataset

    size = args.size or (512, 512)
    data = ShapesDataset(args.batch, (size[0], size[0]), seed=0)
    items = [data[i] for i in range(args.batch)]
    images = [im.to(device) for im, _ in items]
    targets = [{k: t[k].to(device) for k in ("boxes", "labels", "masks")} for _, t in items]

    theirs = seeded_torchvision_maskrcnn(seed=0)
    state = theirs.state_dict()
    theirs.transform.min_size, theirs.transform.max_size = (size[0],), size[1]
    _freeze_like_torchvision(theirs)
    config = Config.preset("coco", min_dim=size[0], max_dim=size[1], backbone_bn_eps=0.0)
    ours = load_torchvision_maskrcnn(state, config=config, device=device)
    theirs = theirs.to(device)
    print(
        f"device {device}, amp {args.amp}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"torchvision {tv.__version__} on {KERNELS} kernels"
    )
    print(
        f"training step (forward + losses, backward, SGD momentum step): batch {args.batch} generated shapes "
        f"images at {size[0]}x{size[0]}, resize {size[0]}/{size[1]}; mrcnn_edu preset coco, torchvision "
        f"maskrcnn_resnet50_fpn defaults; same state dict; {args.warmup} warm-up, {args.repeats} timed steps"
    )
    steps = {}
    for label, model in (("mrcnn_edu", ours), ("torchvision", theirs)):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

        def step(model=model, optimizer=optimizer):
            with _autocast(device, args.amp):
                loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        steps[label] = step
        print(f"{label:>12}: {sum(p.numel() for p in params) / 1e6:.2f} M trainable parameters")
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {label: [] for label in steps}
    for _ in range(args.repeats):
        for label, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[label].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    for label in times:
        spread = ", ".join(f"{t:.3f}" for t in times[label])
        print(f"{label:>12}: median {median[label]:.3f} s/step (steps: {spread})")
    print(f"ratio mrcnn_edu / torchvision: {median['mrcnn_edu'] / median['torchvision']:.2f} (target <= 0.9)")
    return 0


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
        default=None,
        help="resize: shorter side MIN, longer side at most MAX (both; default 800 1333, --train 512 512)",
    )
    p.add_argument("--train", action="store_true", help="time a training step instead of inference")
    p.add_argument("--batch", type=int, default=2, help="--train: images per step (default %(default)s)")
    p.add_argument("--peak-gflops", type=float, default=78.5, help="one core's FMA peak, GFLOP/s")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.train:
        return train_main(args, device)
    args.size = args.size or (800, 1333)
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
    cpu_times = {"mrcnn_edu": [], "torchvision": []}
    peak = {}
    for _ in range(args.repeats):
        for label, model in (("mrcnn_edu", ours), ("torchvision", theirs)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, cpu_seconds, results = _run_all(model, images, device, args.amp)
            times[label].append(seconds / len(images))
            cpu_times[label].append(cpu_seconds / len(images))
            if device.type == "cuda":
                peak[label] = max(peak.get(label, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
            if label == "mrcnn_edu":
                our_results = results
            else:
                their_results = results

    median = {k: statistics.median(v) for k, v in times.items()}
    gflop = {"mrcnn_edu": count_gflop(ours, images, device, args.amp) / len(images),
             "torchvision": count_gflop(theirs, images, device, args.amp) / len(images)}  # fmt: skip
    peak_gflops = args.peak_gflops * torch.get_num_threads()
    for label in times:
        spread = ", ".join(f"{t:.3f}" for t in times[label])
        memory = f", peak GPU memory {peak[label]:.0f} MiB" if label in peak else ""
        rate = gflop[label] / median[label]
        throughput = f"{gflop[label]:.0f} GFLOP/img, {rate:.0f} GFLOP/s"
        if device.type == "cpu":
            throughput += f" = {100 * rate / peak_gflops:.0f}% of the {peak_gflops:.0f} GFLOP/s FMA peak"
        print(f"{label:>12}: median {median[label]:.3f} s/img (passes: {spread}){memory}; {throughput}")
    print(f"ratio mrcnn_edu / torchvision: {median['mrcnn_edu'] / median['torchvision']:.2f} (target <= 0.8)")
    if device.type == "cpu":  # less sensitive to other processes than wall time (not to memory contention)
        ours_cpu, theirs_cpu = (statistics.median(cpu_times[k]) for k in ("mrcnn_edu", "torchvision"))
        print(
            f"process CPU time, median s/img: mrcnn_edu {ours_cpu:.3f}, torchvision {theirs_cpu:.3f}, "
            f"ratio {ours_cpu / theirs_cpu:.2f}"
        )

    print("per image: detections ours / torchvision, matched (same label, IoU >= 0.5), max |box diff| px")
    for name, a, b in zip(names, our_results, their_results, strict=True):
        matched, diff = agreement(a, b)
        print(f"  {name:>12}: {len(a['boxes']):3d} / {len(b['boxes']):3d}, matched {matched:3d}, "
              f"max box diff {diff:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
