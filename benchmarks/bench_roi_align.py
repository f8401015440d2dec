"""Speed of mrcnn_edu's RoIAlign beside onnxruntime's compiled RoiAlign (and torchvision where it loads).

    python benchmarks/bench_roi_align.py [--repeats N]

One case, the box head of an FPN Mask R-CNN on an 800x1088 image: P2 features ``[1, 256, 200, 272]``
(spatial_scale 1/4), 1000 random boxes inside the image, 7x7 output, sampling_ratio 2, aligned=False.
Every implementation runs on the same seeded data; times are medians over ``repeats`` after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch

import mrcnn_edu.roi_align as ra
from mrcnn_edu._tv import torchvision_ops

FEATURES = (1, 256, 200, 272)
IMAGE = (800, 1088)  # (height, width)
SCALE = 0.25
NUM_BOXES = 1000
OUTPUT = (7, 7)
SAMPLING_RATIO = 2
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


def _median_ms(fns: dict, repeats: int, device: str) -> dict:
    """Median milliseconds of each function in ``fns``, timed round-robin so that load from other
    processes on a shared machine hits every implementation alike."""

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _onnxruntime_session():
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    node = helper.make_node(
        "RoiAlign",
        ["X", "rois", "batch_indices"],
        ["Y"],
        mode="avg",
        output_height=OUTPUT[0],
        output_width=OUTPUT[1],
        sampling_ratio=SAMPLING_RATIO,
        spatial_scale=SCALE,
        coordinate_transformation_mode="output_half_pixel",  # = aligned=False
    )
    graph = helper.make_graph(
        [node],
        "roi_align",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("batch_indices", TensorProto.INT64, None),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # same threads as torch
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _row(impl: str, device: str, ms: float, case: str = CASE) -> dict:
    return {"op": "roi_align", "impl": impl, "device": device, "case": case, "ms": ms}


def run(repeats: int = 5) -> list[dict]:
    """Time every available implementation; returns rows ``{op, impl, device, case, ms}`` (median ms)."""
    rows = []
    features, rois = make_case("cpu")
    args = (OUTPUT, SCALE, SAMPLING_RATIO, False)

    leaf = features.clone().requires_grad_()
    grad = torch.randn(NUM_BOXES, FEATURES[1], *OUTPUT, generator=torch.Generator().manual_seed(1))

    def forward(x=features, r=rois):
        with torch.no_grad():
            ra.roi_align(x, r, *args)

    def forward_backward(x=leaf, g=grad, r=rois):
        x.grad = None
        ra.roi_align(x, r, *args).backward(g)

    cpu = {}
    session = _onnxruntime_session()
    if session is not None:
        feeds = {
            "X": features.numpy(),
            "rois": rois[:, 1:].contiguous().numpy(),
            "batch_indices": rois[:, 0].long().numpy(),
        }
        cpu["onnxruntime RoiAlign"] = lambda: session.run(None, feeds)
    cpu["roi_align"] = forward
    cpu["roi_align fwd+bwd"] = forward_backward
    tv = torchvision_ops()
    if tv is not None:
        cpu["torchvision roi_align"] = lambda: tv.roi_align(features, rois, *args)
    rows += [_row(name, "cpu", ms) for name, ms in _median_ms(cpu, repeats, "cpu").items()]

    few = rois[:LOOP_BOXES]
    with torch.no_grad():
        loop = _median_ms(
            {"loop": lambda: ra.roi_align_loop(features, few, *args)}, max(1, repeats // 2), "cpu"
        )
    rows.append(
        _row(
            "roi_align_loop (readable)",
            "cpu",
            loop["loop"] * NUM_BOXES / LOOP_BOXES,
            f"{CASE}; timed on {LOOP_BOXES} boxes, scaled x{NUM_BOXES // LOOP_BOXES}",
        )
    )

    if torch.cuda.is_available():
        features_gpu, rois_gpu = features.cuda(), rois.cuda()
        leaf_gpu, grad_gpu = features_gpu.clone().requires_grad_(), grad.cuda()
        gpu = {
            "roi_align (embedding_bag)": lambda: forward(features_gpu, rois_gpu),
            "roi_align (embedding_bag) fwd+bwd": lambda: forward_backward(leaf_gpu, grad_gpu, rois_gpu),
        }
        # The pure-torch path, with the delegation to torchvision switched off.
        with mock.patch.object(ra, "torchvision_ops", lambda: None):
            rows += [_row(name, "cuda", ms) for name, ms in _median_ms(gpu, repeats, "cuda").items()]
        if tv is not None:
            with torch.no_grad():
                ms = _median_ms({"tv": lambda: tv.roi_align(features_gpu, rois_gpu, *args)}, repeats, "cuda")
            rows.append(_row("torchvision roi_align", "cuda", ms["tv"]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per row (median reported)")
    args = parser.parse_args(argv)
    rows = run(repeats=args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")
    print("| impl | device | case | ms |")
    print("|---|---|---|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['device']} | {r['case']} | {r['ms']:.1f} |")
    reference = [r for r in rows if r["impl"].startswith("onnxruntime")]
    if reference:
        for r in rows:
            if r["device"] == "cpu" and r is not reference[0]:
                print(f"{r['impl']} / onnxruntime RoiAlign = {r['ms'] / reference[0]['ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
