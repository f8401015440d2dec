"""Independent compiled reference kernels: onnxruntime's CPU kernels, used by the tests, the benchmarks and
(later) the classroom exercise checks.

A check is only worth something if the reference does not share code with what it checks. onnxruntime's
``NonMaxSuppression``, ``RoiAlign`` and ``MaxRoiPool`` are compiled C++ kernels written to the ONNX operator
specification, by other people, in another language; if :func:`mrcnn_edu.nms.nms` or
:func:`mrcnn_edu.roi_align.roi_align` agrees with them on random inputs, both are very likely right.

Each function here takes and returns torch tensors in this package's conventions (boxes ``(x1, y1, x2, y2)``
in pixels, torchvision's argument order), translates them to the ONNX operator's conventions, and runs a
one-node ONNX model in an onnxruntime ``InferenceSession``. The model and its session are built once per set
of static attributes and thread count, then cached. The inputs are copied to the CPU as float32 (the type
the models declare); results come back on the device of the input.

``onnx`` and ``onnxruntime`` are imported only when a function here is called (they are in the ``test``
extra: ``pip install 'mrcnn-edu[test]'``), so ``import mrcnn_edu`` never needs them; :func:`available` says
whether they import.

Threads: every function takes ``intra_op_num_threads`` (default 1; 0 lets onnxruntime choose, usually one
per physical core). One thread is what the benchmarks compare with (onnxruntime's NonMaxSuppression is
single-threaded anyway) and keeps the tests light on a shared machine; the results do not depend on it.

Shape glossary
    N: boxes given to NMS; K: boxes kept by NMS, or RoIs pooled
    B: images in the batch; C: channels; H, W: feature-map height, width; oh, ow: output (pooled) size
"""

from __future__ import annotations

import functools

import torch

from ._checks import check_tensor

# Argument checks only, so that bad input gets the same errors as in the functions checked against these
# kernels; the computation here is all onnxruntime's.
from .nms import _check_args as _check_nms_args
from .roi_align import _pair

__all__ = ["available", "onnx_nms", "onnx_roi_align", "onnx_max_roi_pool", "import_torchvision",
           "seeded_torchvision_maskrcnn"]

# RoiAlign's coordinate_transformation_mode attribute appeared in opset 16; NonMaxSuppression and
# MaxRoiPool are unchanged there since opsets 11 and 1.
_OPSET = 16


def _import_onnx():
    """``(onnx, onnxruntime)``, or ImportError naming what is missing and where to get it."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(
            "mrcnn_edu.references needs the 'onnx' package (in the test extra: pip install 'mrcnn-edu[test]')"
        ) from err
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "mrcnn_edu.references needs the 'onnxruntime' package "
            "(in the test extra: pip install 'mrcnn-edu[test]')"
        ) from err
    return onnx, onnxruntime


@functools.cache
def available() -> bool:
    """True if ``onnx`` and ``onnxruntime`` import, i.e. the functions of this module can run."""
    try:
        _import_onnx()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _session(op: str, inputs: tuple, output: tuple, attrs: tuple, threads: int):
    """An onnxruntime CPU session for a one-node model ``op(*inputs) -> "Y"``.

    inputs: ``(name, element type, rank)`` triples, e.g. ``("X", "FLOAT", 4)``; output: ``(element type,
    rank)`` of ``"Y"``; attrs: ``(name, value)`` pairs of the node's static attributes. Cached on all
    arguments.
    """
    onnx, ort = _import_onnx()
    helper, types = onnx.helper, onnx.TensorProto
    node = helper.make_node(op, [name for name, _, _ in inputs], ["Y"], **dict(attrs))

    def value_info(name, kind, rank):  # every dimension dynamic
        return helper.make_tensor_value_info(name, getattr(types, kind), [None] * rank)

    graph = helper.make_graph([node], op, [value_info(*spec) for spec in inputs], [value_info("Y", *output)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one node: nothing runs in parallel between ops
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _numpy(t: torch.Tensor, dtype: torch.dtype = torch.float32):
    return t.detach().to("cpu", dtype).contiguous().numpy()


def _threads(intra_op_num_threads) -> int:
    if isinstance(intra_op_num_threads, bool) or not isinstance(intra_op_num_threads, int):
        raise ValueError(f"intra_op_num_threads must be an int >= 0, got {intra_op_num_threads!r}")
    if intra_op_num_threads < 0:
        raise ValueError(f"intra_op_num_threads must be an int >= 0, got {intra_op_num_threads}")
    return intra_op_num_threads


def onnx_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, intra_op_num_threads: int = 1
) -> torch.Tensor:
    """Greedy NMS by onnxruntime's ``NonMaxSuppression`` kernel (one image, one class, no box limit).

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``; scores: ``[N]`` float; iou_threshold: a box is suppressed
    by a kept, higher-scoring box when their IoU is strictly greater than this.
    Returns int64 ``[K]``: indices into ``boxes`` of the kept boxes, by decreasing score (the order among
    equal scores is the kernel's, so compare with distinct scores). On ``boxes``' device.

    ONNX semantics: ``NonMaxSuppression(boxes [1, N, 4], scores [1, 1, N], max_output_boxes_per_class,
    iou_threshold)`` with ``center_point_box=0`` reads each box as corners ``[y1, x1, y2, x2]``, so the
    columns are reordered here (swapping x and y in every box leaves every IoU as it is, but this is the
    documented layout); it returns rows ``(batch, class, box index)``, of which the box index is kept.
    ``max_output_boxes_per_class`` is N (no limit) and there is no score threshold. Computed in float32.
    """
    iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    n = boxes.shape[0]
    session = _session(
        "NonMaxSuppression",
        (
            ("boxes", "FLOAT", 3),
            ("scores", "FLOAT", 3),
            ("max_output_boxes_per_class", "INT64", 1),
            ("iou_threshold", "FLOAT", 1),
        ),
        ("INT64", 2),
        (("center_point_box", 0),),
        _threads(intra_op_num_threads),
    )
    feeds = {
        "boxes": _numpy(boxes[:, [1, 0, 3, 2]])[None],
        "scores": _numpy(scores)[None, None],
        "max_output_boxes_per_class": torch.tensor([n], dtype=torch.int64).numpy(),
        "iou_threshold": torch.tensor([iou_threshold], dtype=torch.float32).numpy(),
    }
    selected = session.run(None, feeds)[0]
    return torch.from_numpy(selected[:, 2].copy()).to(device=boxes.device, dtype=torch.int64)


def _check_rois(input: torch.Tensor, rois: torch.Tensor) -> None:
    check_tensor("input", input, ndim=4, kind="float")
    check_tensor("rois", rois, ndim=2, last_dim=5, kind="float")


def onnx_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    intra_op_num_threads: int = 1,
) -> torch.Tensor:
    """RoIAlign (average mode) by onnxruntime's ``RoiAlign`` kernel, in ``torchvision.ops.roi_align``'s terms.

    input: ``[B, C, H, W]`` float; rois: ``[K, 5]`` float rows ``(image index, x1, y1, x2, y2)`` in
    input-image pixels; output_size: ``oh`` or ``(oh, ow)``; spatial_scale: 1/stride; sampling_ratio:
    samples per bin side, ``<= 0`` adaptive (``ceil(box size / output size)``); aligned: see below.
    Returns float32 ``[K, C, oh, ow]`` on ``input``'s device (not differentiable).

    ONNX semantics (opset 16): ``RoiAlign(X [B, C, H, W], rois [K, 4] (x1, y1, x2, y2), batch_indices [K]
    int64)`` with ``mode="avg"``; ``sampling_ratio`` 0 means adaptive (negative values are passed as 0).
    ``coordinate_transformation_mode="half_pixel"`` subtracts half a cell from the scaled box
    (``aligned=True``); ``"output_half_pixel"`` does not and makes every box at least 1x1 cell, the original
    RoIAlign (``aligned=False``). Computed in float32.
    """
    _check_rois(input, rois)
    oh, ow = _pair("output_size", output_size)
    k, c = rois.shape[0], input.shape[1]
    if k == 0:
        return torch.zeros((0, c, oh, ow), device=input.device)
    attrs = (
        ("mode", "avg"),
        ("output_height", oh),
        ("output_width", ow),
        ("sampling_ratio", max(int(sampling_ratio), 0)),
        ("spatial_scale", float(spatial_scale)),
        ("coordinate_transformation_mode", "half_pixel" if aligned else "output_half_pixel"),
    )
    session = _session(
        "RoiAlign",
        (("X", "FLOAT", 4), ("rois", "FLOAT", 2), ("batch_indices", "INT64", 1)),
        ("FLOAT", 4),
        attrs,
        _threads(intra_op_num_threads),
    )
    feeds = {
        "X": _numpy(input),
        "rois": _numpy(rois[:, 1:]),
        "batch_indices": _numpy(rois[:, 0], torch.int64),
    }
    return torch.from_numpy(session.run(None, feeds)[0]).to(input.device)


def onnx_max_roi_pool(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    *,
    intra_op_num_threads: int = 1,
) -> torch.Tensor:
    """RoIPool (Fast R-CNN) by onnxruntime's ``MaxRoiPool`` kernel, in ``torchvision.ops.roi_pool``'s terms.

    input: ``[B, C, H, W]`` float; rois: ``[K, 5]`` float rows ``(image index, x1, y1, x2, y2)`` in
    input-image pixels; output_size: ``oh`` or ``(oh, ow)``; spatial_scale: 1/stride.
    Returns float32 ``[K, C, oh, ow]`` on ``input``'s device (not differentiable).

    ONNX semantics: ``MaxRoiPool(X [B, C, H, W], rois [K, 5])`` with ``pooled_shape=(oh, ow)``; the scaled
    corners are rounded to whole cells, the box (inclusive of its last row and column) is split into
    ``oh x ow`` bins with floor / ceil edges, and each bin gives the maximum of its cells (0 if it is empty).
    Some onnxruntime builds lack this kernel: the session then fails to build and the error propagates.
    """
    _check_rois(input, rois)
    oh, ow = _pair("output_size", output_size)
    if rois.shape[0] == 0:
        return torch.zeros((0, input.shape[1], oh, ow), device=input.device)
    session = _session(
        "MaxRoiPool",
        (("X", "FLOAT", 4), ("rois", "FLOAT", 2)),
        ("FLOAT", 4),
        (("pooled_shape", (oh, ow)), ("spatial_scale", float(spatial_scale))),
        _threads(intra_op_num_threads),
    )
    out = session.run(None, {"X": _numpy(input), "rois": _numpy(rois)})[0]
    return torch.from_numpy(out).to(input.device)


# Kept alive for the life of the process: dropping the Library object would unregister the operators.
_TORCHVISION_LIBRARY: list = []


def _purge_torchvision_modules() -> None:
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_torchvision_operators() -> None:
    """Register ``torchvision::nms`` and ``torchvision::roi_align`` with onnxruntime's kernels behind them.

    The schemas are those torchvision's C++ extension declares, so torchvision's Python code calls them as
    it would call its own kernels. ``qnms`` (quantized NMS) is declared only because torchvision registers a
    shape function for it at import; calling it raises.
    """
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    )

    def nms_kernel(dets, scores, iou_threshold):
        return onnx_nms(dets, scores, iou_threshold, intra_op_num_threads=torch.get_num_threads())

    def roi_align_kernel(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        out = onnx_roi_align(
            input,
            rois,
            (pooled_height, pooled_width),
            spatial_scale,
            sampling_ratio,
            aligned,
            intra_op_num_threads=torch.get_num_threads(),
        )
        return out.to(input.dtype)

    def qnms_kernel(dets, scores, iou_threshold):
        raise NotImplementedError("torchvision::qnms has no reference kernel in mrcnn_edu.references")

    for name, kernel in (("nms", nms_kernel), ("roi_align", roi_align_kernel), ("qnms", qnms_kernel)):
        lib.impl(name, kernel, "CPU")
    _TORCHVISION_LIBRARY.append(lib)


@functools.cache
def import_torchvision():
    """torchvision, for its pure-Python detection models, and which kernels its ``nms``/``roi_align`` run on.

    Returns ``(torchvision, kernels)``: ``kernels`` is ``"compiled"`` where torchvision's own C++/CUDA
    extension loads (a matching torchvision install, e.g. on a GPU machine), else ``"onnxruntime"``: the
    two operators its detection models need, ``torchvision::nms`` and ``torchvision::roi_align``, are then
    registered here (CPU only) with onnxruntime's compiled kernels behind them, so that torchvision's model
    code runs unchanged on a machine where its extension does not load. That makes torchvision's
    ``maskrcnn_resnet50_fpn`` an independent reference for :mod:`mrcnn_edu.pretrained` (torchvision's Python,
    onnxruntime's kernels, none of this package's code). Nothing else of torchvision works in that mode.

    Raises ImportError when torchvision is not installed (a CPU set-up installs its Python code with
    ``pip install --no-deps torchvision==<the version matching torch>``) or onnxruntime is missing.
    :func:`mrcnn_edu._tv.torchvision_ops` keeps ignoring torchvision in that mode: the package's fast paths
    only ever hand work to torchvision's own compiled kernels.
    """
    try:
        import torchvision
        import torchvision.extension

        if torchvision.extension._has_ops():
            return torchvision, "compiled"
    except ImportError:
        raise
    except Exception:  # the import itself fails where the extension's operators are missing
        _purge_torchvision_modules()
    _import_onnx()
    if not hasattr(torch.ops.torchvision, "nms"):
        _define_torchvision_operators()
    import importlib

    import torchvision

    # torchvision's Python wrappers check that its extension loaded before calling an operator (roi_align
    # falls back to a slow Python version); the operators they call are now registered, so those checks
    # are lifted, in these two modules only. (``torchvision.ops.roi_align`` is the function, hence
    # import_module for the module of the same name.)
    boxes_module = importlib.import_module("torchvision.ops.boxes")
    roi_align_module = importlib.import_module("torchvision.ops.roi_align")
    boxes_module._assert_has_ops = lambda: None
    roi_align_module._assert_has_ops = lambda: None
    roi_align_module._has_ops = lambda: True
    return torchvision, "onnxruntime"


def seeded_torchvision_maskrcnn(seed: int = 0, num_classes: int = 91):
    """torchvision's ``maskrcnn_resnet50_fpn``, eval mode, seeded random weights that act like trained ones.

    A parity test or a benchmark needs a model whose every stage does real work without any download.
    torchvision's own random initialisation does not give that: its classifier scores every class about
    1 / num_classes, below the 0.05 detection threshold, so nothing is detected and the mask branch never
    runs. So, from ``torch.manual_seed(seed)``: the BatchNorm layers become torchvision's
    ``FrozenBatchNorm2d`` with eps 0 and random statistics (the structure of torchvision's COCO_V1 model, so
    its speed too), the RPN gets small deltas and moderate objectness (its proposals stay near the
    anchors), the classifier gets spread-out biases (scores around 0.1-0.2: detections exist, without ties
    at 1.0), and the mask logits are scaled to a few units (so the thresholded masks do not hinge on
    probabilities that are 0.5 up to rounding). Needs :func:`import_torchvision`.
    """
    torchvision, _ = import_torchvision()
    torch.manual_seed(seed)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    g = torch.Generator().manual_seed(seed)
    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    bn = frozen(child.num_features, eps=0.0)
                    bn.weight.copy_(child.weight)
                    bn.bias.copy_(child.bias)
                    bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
                    bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) * 0.5 + 0.75)
                    setattr(parent, name, bn)
        model.rpn.head.bbox_pred.weight.normal_(0, 5e-4, generator=g)
        model.rpn.head.cls_logits.weight.normal_(0, 2e-3, generator=g)
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.normal_(0, 2e-3, generator=g)
        predictor.cls_score.bias.normal_(0, 1.0, generator=g)
        predictor.bbox_pred.weight.normal_(0, 1e-2, generator=g)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.05)
    return model.eval()
