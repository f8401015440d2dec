"""Speed of mrcnn_edu's NMS beside onnxruntime's compiled NonMaxSuppression (and torchvision where it loads).

    python benchmarks/bench_nms.py [--repeats N] [--threads T]

One case, the RPN's NMS on one image: 6000 proposals at IoU 0.7 (matterport's PRE_NMS_LIMIT and
RPN_NMS_THRESHOLD). Boxes are seeded: centres uniform over an 800x1333 image, sizes log-uniform in 16..512 px,
aspect ratios uniform in 0.5..2, clipped to the image; scores uniform. Every implementation runs on the same
data (and the script checks that they keep the same boxes); times are medians over ``repeats`` after a
warm-up, with CUDA synchronised around each call; CPU rows run on one thread unless asked otherwise
(onnxruntime gets as many threads as torch).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch

import mrcnn_edu.nms as nms_module
from mrcnn_edu._tv import torchvision_ops

NUM_BOXES = 6000
IMAGE = (800, 1333)  # (height, width)
IOU_THRESHOLD = 0.7
CASE = f"{NUM_BOXES} boxes @{IOU_THRESHOLD}"


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


def _median_ms(fn, repeats: int, device: str, warmup: bool = True) -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if warmup:
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _onnxruntime_nms():
    """A callable running onnxruntime's NonMaxSuppression on (boxes, scores) tensors, or None."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    node = helper.make_node(
        "NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["selected"], center_point_box=0
    )
    graph = helper.make_graph(
        [node],
        "nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, None]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        initializer=[
            helper.make_tensor("max_out", TensorProto.INT64, [1], [NUM_BOXES]),
            helper.make_tensor("iou", TensorProto.FLOAT, [1], [IOU_THRESHOLD]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # same threads as torch
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run_nms(boxes: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
        # center_point_box=0: corners as (y1, x1, y2, x2); the reorder is part of the timed call.
        feeds = {"boxes": boxes[:, [1, 0, 3, 2]].numpy()[None], "scores": scores.numpy()[None, None]}
        return session.run(None, feeds)[0][:, 2]

    return run_nms


def _row(impl: str, device: str, ms: float) -> dict:
    return {"op": "nms", "impl": impl, "device": device, "case": CASE, "ms": ms}


def run(repeats: int = 10, threads: int | None = 1) -> list[dict]:
    """Time every available implementation; returns rows ``{op, impl, device, case, ms}`` (median ms).

    threads: torch (and onnxruntime) CPU threads during the run, restored afterwards; None keeps torch's
        setting. One by default: onnxruntime's NonMaxSuppression kernel is single-threaded, so this compares
        like with like, and the ops here are too small to gain from threads (on a busy shared CPU, torch's
        thread pool even makes them several times slower).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(repeats)
    finally:
        torch.set_num_threads(previous)


def _run(repeats: int) -> list[dict]:
    rows = []
    boxes, scores = make_case("cpu")
    reference = _onnxruntime_nms()
    if reference is not None:
        rows.append(
            _row(
                "onnxruntime NonMaxSuppression",
                "cpu",
                _median_ms(lambda: reference(boxes, scores), repeats, "cpu"),
            )
        )
    rows.append(
        _row("nms", "cpu", _median_ms(lambda: nms_module.nms(boxes, scores, IOU_THRESHOLD), repeats, "cpu"))
    )
    # The readable loop takes seconds: a few runs without a warm-up show its cost.
    ms = _median_ms(
        lambda: nms_module.nms_loop(boxes, scores, IOU_THRESHOLD), max(1, repeats // 5), "cpu", False
    )
    rows.append(_row("nms_loop (readable)", "cpu", ms))

    tv = torchvision_ops()
    if tv is not None:
        rows.append(
            _row(
                "torchvision nms",
                "cpu",
                _median_ms(lambda: tv.nms(boxes, scores, IOU_THRESHOLD), repeats, "cpu"),
            )
        )

    if torch.cuda.is_available():
        boxes_gpu, scores_gpu = boxes.cuda(), scores.cuda()
        ms = _median_ms(lambda: nms_module.nms(boxes_gpu, scores_gpu, IOU_THRESHOLD), repeats, "cuda")
        rows.append(_row("nms" + (" (= torchvision)" if tv is not None else ""), "cuda", ms))
        if tv is not None:
            # mrcnn_edu's own path on the GPU, with torchvision's delegation switched off.
            with mock.patch.object(nms_module, "torchvision_ops", lambda: None):
                ms = _median_ms(lambda: nms_module.nms(boxes_gpu, scores_gpu, IOU_THRESHOLD), repeats, "cuda")
            rows.append(_row("nms (without torchvision)", "cuda", ms))
            ms = _median_ms(lambda: tv.nms(boxes_gpu, scores_gpu, IOU_THRESHOLD), repeats, "cuda")
            rows.append(_row("torchvision nms", "cuda", ms))
    return rows


def check_agreement() -> str:
    """Run each CPU implementation once on the case and say whether they keep the same boxes."""
    boxes, scores = make_case("cpu")
    fast = nms_module.nms(boxes, scores, IOU_THRESHOLD)
    results = {"nms_loop": nms_module.nms_loop(boxes, scores, IOU_THRESHOLD)}
    reference = _onnxruntime_nms()
    if reference is not None:
        results["onnxruntime"] = torch.from_numpy(reference(boxes, scores))
    tv = torchvision_ops()
    if tv is not None:
        results["torchvision"] = tv.nms(boxes, scores, IOU_THRESHOLD)
    same = [name for name, keep in results.items() if torch.equal(keep, fast)]
    differ = [name for name in results if name not in same]
    return f"nms keeps {fast.numel()} of {NUM_BOXES} boxes; identical to: {', '.join(same) or '-'}" + (
        f"; DIFFERENT from: {', '.join(differ)}" if differ else ""
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per row (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime CPU threads (0: torch's)")
    args = parser.parse_args(argv)
    rows = run(repeats=args.repeats, threads=args.threads or None)
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, numpy {np.__version__}")
    print(check_agreement())
    print("| impl | device | case | ms |")
    print("|---|---|---|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['device']} | {r['case']} | {r['ms']:.1f} |")
    reference = [r for r in rows if r["impl"].startswith("onnxruntime")]
    if reference:
        for r in rows:
            if r["device"] == "cpu" and r is not reference[0]:
                print(f"{r['impl']} / onnxruntime NonMaxSuppression = {r['ms'] / reference[0]['ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
