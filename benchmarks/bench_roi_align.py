"""The RoIAlign case of ``benchmarks/ops.py``: mrcnn_edu's RoIAlign beside onnxruntime's compiled RoiAlign
(and torchvision where it loads). Run it with

    python benchmarks/ops.py --only roi_align [--repeats N] [--threads T]

One case, the box head of an FPN Mask R-CNN on an 800x1088 image: P2 features ``[1, 256, 200, 272]``
(spatial_scale 1/4), 1000 random boxes inside the image, 7x7 output, sampling_ratio 2, aligned=False.
Every implementation runs on the same seeded data (:func:`check_agreement` compares their outputs).
"""

from __future__ import annotations

from unittest import mock

import torch
from bench_nms import median_ms, torch_threads

import mrcnn_edu.roi_align as ra
from mrcnn_edu import references
from mrcnn_edu._tv import torchvision_ops

FEATURES = (1, 256, 200, 272)
IMAGE = (800, 1088)  # (height, width)
SCALE = 0.25
NUM_BOXES = 1000
OUTPUT = (7, 7)
SAMPLING_RATIO = 2
ARGS = (OUTPUT, SCALE, SAMPLING_RATIO, False)  # output_size, spatial_scale, sampling_ratio, aligned
CASE = "P2 [1,256,200,272], 1000 boxes, 7x7, ratio 2"
LOOP_BOXES = 4  # the readable loop is timed on this many boxes and scaled up


def make_case(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded features ``[1, 256, 200, 272]`` and rois ``[1000, 5]`` (image 0, boxes inside the image)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(FEATURES, generator=gen)
    h, w = IMAGE
    size = 16 + torch.rand(NUM_BOXES, 2, generator=gen) * 496  # 16 .. 512 px
    size = torch.minimum(size, torch.tensor([w, h], dtype=torch.float32))
    corner = torch.rand(NUM_BOXES, 2, generator=gen) * (torch.tensor([w, h]) - size)
    rois = torch.cat((torch.zeros(NUM_BOXES, 1), corner, corner + size), dim=1)
    return features.to(device), rois.to(device)


def _timed_rows(fns: dict, repeats: int, device: str, threads, case: str = CASE) -> list[dict]:
    return [
        {"op": "roi_align", "impl": name, "device": device, "threads": threads, "case": case, "ms": ms}
        for name, ms in median_ms(fns, repeats, device).items()
    ]


def run(repeats: int = 5, threads: int | None = 1) -> list[dict]:
    """Time every available implementation; returns rows ``{op, impl, device, threads, case, ms}``.

    ms: median over ``repeats`` after a warm-up. threads: torch's and onnxruntime's CPU threads during the
    run (restored afterwards); None or 0 keeps torch's setting. The onnxruntime row includes the conversion
    of the torch tensors it is given (no copy of the features: they are contiguous float32).
    """
    with torch_threads(threads) as n:
        return _run(repeats, n)


def _run(repeats: int, threads: int) -> list[dict]:
    features, rois = make_case("cpu")
    leaf = features.clone().requires_grad_()
    grad = torch.randn(NUM_BOXES, FEATURES[1], *OUTPUT, generator=torch.Generator().manual_seed(1))

    def forward(x=features, r=rois):
        with torch.no_grad():
            ra.roi_align(x, r, *ARGS)

    def forward_backward(x=leaf, g=grad, r=rois):
        x.grad = None
        ra.roi_align(x, r, *ARGS).backward(g)

    cpu = {}
    if references.available():
        cpu["onnxruntime RoiAlign"] = lambda: references.onnx_roi_align(
            features, rois, *ARGS, intra_op_num_threads=threads
        )
    cpu["roi_align"] = forward
    cpu["roi_align fwd+bwd"] = forward_backward
    tv = torchvision_ops()
    if tv is not None:
        cpu["torchvision roi_align"] = lambda: tv.roi_align(features, rois, *ARGS)
    rows = _timed_rows(cpu, repeats, "cpu", threads)

    few = rois[:LOOP_BOXES]
    with torch.no_grad():
        loop = {"roi_align_loop (readable)": lambda: ra.roi_align_loop(features, few, *ARGS)}
        scaled = f"{CASE}; timed on {LOOP_BOXES} boxes, scaled x{NUM_BOXES // LOOP_BOXES}"
        for row in _timed_rows(loop, max(1, repeats // 2), "cpu", threads, scaled):
            rows.append({**row, "ms": row["ms"] * NUM_BOXES / LOOP_BOXES})

    if torch.cuda.is_available():
        features_gpu, rois_gpu = features.cuda(), rois.cuda()
        leaf_gpu, grad_gpu = features_gpu.clone().requires_grad_(), grad.cuda()
        gpu = {
            "roi_align (embedding_bag)": lambda: forward(features_gpu, rois_gpu),
            "roi_align (embedding_bag) fwd+bwd": lambda: forward_backward(leaf_gpu, grad_gpu, rois_gpu),
        }
        # The pure-torch path, with the delegation to torchvision switched off.
        with mock.patch.object(ra, "torchvision_ops", lambda: None):
            rows += _timed_rows(gpu, repeats, "cuda", "-")
        if tv is not None:
            with torch.no_grad():
                tv_gpu = {"torchvision roi_align": lambda: tv.roi_align(features_gpu, rois_gpu, *ARGS)}
                rows += _timed_rows(tv_gpu, repeats, "cuda", "-")
    return rows


def check_agreement() -> str:
    """Run each implementation once on the case and say how far its output is from roi_align's."""
    features, rois = make_case("cpu")
    with torch.no_grad():
        ours = ra.roi_align(features, rois, *ARGS)
        loop = ra.roi_align_loop(features, rois[:LOOP_BOXES], *ARGS)
    results = {f"roi_align_loop (first {LOOP_BOXES} boxes)": (loop - ours[:LOOP_BOXES])}
    if references.available():
        results["onnxruntime"] = references.onnx_roi_align(features, rois, *ARGS) - ours
    tv = torchvision_ops()
    if tv is not None:
        results["torchvision"] = tv.roi_align(features, rois, *ARGS) - ours
    diffs = ", ".join(f"{name} {d.abs().max().item():.1e}" for name, d in results.items())
    return f"roi_align max |difference| from: {diffs}"
