"""The NMS case of ``benchmarks/ops.py``: mrcnn_edu's NMS beside onnxruntime's compiled NonMaxSuppression
(and torchvision where it loads). Run it with

    python benchmarks/ops.py --only nms [--repeats N] [--threads T]

One case, the RPN's NMS on one image: 6000 proposals at IoU 0.7 (matterport's PRE_NMS_LIMIT and
RPN_NMS_THRESHOLD). Boxes are seeded: centres uniform over an 800x1333 image, sizes log-uniform in 16..512 px,
aspect ratios uniform in 0.5..2, clipped to the image; scores uniform. Every implementation runs on the same
data (:func:`check_agreement` checks that they keep the same boxes).

Also home of the timing helpers both op benchmarks use (:func:`torch_threads`, :func:`median_ms`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from unittest import mock

import numpy as np
import torch

import mrcnn_edu.nms as nms_module
from mrcnn_edu import references
from mrcnn_edu._tv import torchvision_ops

NUM_BOXES = 6000
IMAGE = (800, 1333)  # (height, width)
IOU_THRESHOLD = 0.7
CASE = f"{NUM_BOXES} boxes @{IOU_THRESHOLD}"


# --------------------------------------------------------------------------------------------------------
# timing helpers shared with bench_roi_align


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (None or 0: torch's setting), restored after.

    Yields the thread count in effect, which the benchmarks also give onnxruntime's session.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def median_ms(fns: dict, repeats: int, device: str = "cpu", warmup: bool = True) -> dict:
    """Median milliseconds of each callable in ``fns`` over ``repeats`` calls, after one warm-up call.

    The callables are timed round-robin, so that load from other processes on a shared machine hits every
    implementation alike; on CUDA the device is synchronised around each call.
    """

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if warmup:
        for fn in fns.values():
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------------------------------------------------------
# the NMS case


def make_case(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded RPN-like boxes ``[6000, 4]`` (x1, y1, x2, y2) float32 and scores ``[6000]``."""
    rng = np.random.default_rng(0)
    h, w = IMAGE
    centre = rng.uniform((0, 0), (w, h), size=(NUM_BOXES, 2))
    size = np.exp(rng.uniform(np.log(16), np.log(512), NUM_BOXES))
    ratio = np.sqrt(rng.uniform(0.5, 2.0, NUM_BOXES))  # width / height = ratio**2
    half = 0.5 * np.stack((size * ratio, size / ratio), axis=1)
    boxes = np.concatenate((centre - half, centre + half), axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    scores = rng.uniform(0, 1, NUM_BOXES)
    return (
        torch.from_numpy(boxes.astype(np.float32)).to(device),
        torch.from_numpy(scores.astype(np.float32)).to(device),
    )


def _timed_rows(fns: dict, repeats: int, device: str, threads, warmup: bool = True) -> list[dict]:
    return [
        {"op": "nms", "impl": name, "device": device, "threads": threads, "case": CASE, "ms": ms}
        for name, ms in median_ms(fns, repeats, device, warmup).items()
    ]


def run(repeats: int = 10, threads: int | None = 1) -> list[dict]:
    """Time every available implementation; returns rows ``{op, impl, device, threads, case, ms}``.

    ms: median over ``repeats`` after a warm-up. threads: torch's and onnxruntime's CPU threads during the
    run (restored afterwards); None or 0 keeps torch's setting. One by default: onnxruntime's
    NonMaxSuppression kernel is single-threaded, so this compares like with like, and the ops here are too
    small to gain from threads (on a busy shared CPU, torch's thread pool even makes them several times
    slower). The onnxruntime row includes the conversion of the torch tensors it is given.
    """
    with torch_threads(threads) as n:
        return _run(repeats, n)


def _run(repeats: int, threads: int) -> list[dict]:
    boxes, scores = make_case("cpu")
    cpu = {}
    if references.available():
        cpu["onnxruntime NonMaxSuppression"] = lambda: references.onnx_nms(
            boxes, scores, IOU_THRESHOLD, intra_op_num_threads=threads
        )
    cpu["nms"] = lambda: nms_module.nms(boxes, scores, IOU_THRESHOLD)
    tv = torchvision_ops()
    if tv is not None:
        cpu["torchvision nms"] = lambda: tv.nms(boxes, scores, IOU_THRESHOLD)
    rows = _timed_rows(cpu, repeats, "cpu", threads)
    # The readable loop takes seconds: a few runs without a warm-up show its cost.
    loop = {"nms_loop (readable)": lambda: nms_module.nms_loop(boxes, scores, IOU_THRESHOLD)}
    rows += _timed_rows(loop, max(1, repeats // 5), "cpu", threads, warmup=False)

    if torch.cuda.is_available():
        b, s = boxes.cuda(), scores.cuda()
        name = "nms (= torchvision)" if tv is not None else "nms"  # nms delegates to torchvision on CUDA
        gpu = {name: lambda: nms_module.nms(b, s, IOU_THRESHOLD)}
        if tv is not None:
            gpu["torchvision nms"] = lambda: tv.nms(b, s, IOU_THRESHOLD)
        rows += _timed_rows(gpu, repeats, "cuda", "-")
        if tv is not None:
            # mrcnn_edu's own path on the GPU, with torchvision's delegation switched off.
            with mock.patch.object(nms_module, "torchvision_ops", lambda: None):
                own = {"nms (without torchvision)": lambda: nms_module.nms(b, s, IOU_THRESHOLD)}
                rows += _timed_rows(own, repeats, "cuda", "-")
    return rows


def check_agreement() -> str:
    """Run each CPU implementation once on the case and say whether they keep the same boxes."""
    boxes, scores = make_case("cpu")
    fast = nms_module.nms(boxes, scores, IOU_THRESHOLD)
    results = {"nms_loop": nms_module.nms_loop(boxes, scores, IOU_THRESHOLD)}
    if references.available():
        results["onnxruntime"] = references.onnx_nms(boxes, scores, IOU_THRESHOLD)
    tv = torchvision_ops()
    if tv is not None:
        results["torchvision"] = tv.nms(boxes, scores, IOU_THRESHOLD)
    same = [name for name, keep in results.items() if torch.equal(keep, fast)]
    differ = [name for name in results if name not in same]
    return f"nms keeps {fast.numel()} of {NUM_BOXES} boxes; identical to: {', '.join(same) or '-'}" + (
        f"; DIFFERENT from: {', '.join(differ)}" if differ else ""
    )
