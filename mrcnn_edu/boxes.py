"""Boxes: area, IoU, clipping, formats, and the delta encoding that every regression head predicts.

Convention inside mrcnn_edu: a box is ``(x1, y1, x2, y2)`` in float pixel coordinates, where pixel ``(r, c)``
covers the square ``[c, c+1) x [r, r+1)``. Width is ``x2 - x1`` (no "+1"), as in torchvision.
Matterport stores ``(y1, x1, y2, x2)``, normalised to 0-1 inside the graph; :func:`box_convert` and
:func:`to_matterport_normalized` / :func:`from_matterport_normalized` translate.

Shape glossary
    N, M: numbers of boxes
    H, W: mask or image height and width in pixels
    ...:  any leading dimensions (deltas of K classes: ``[N, K, 4]``)

Deltas (R-CNN parametrisation, the regression target of the RPN and of the box head)::

    dx = (gx - ax) / aw      dy = (gy - ay) / ah      dw = log(gw / aw)      dh = log(gh / ah)

where ``(ax, ay, aw, ah)`` are the reference box's centre and size and ``g`` the target box's. Each is
multiplied by a per-coordinate weight so the four targets have similar spread: torchvision's weights
``(10, 10, 5, 5)`` for the box head are exactly matterport's ``BBOX_STD_DEV = [0.1, 0.1, 0.2, 0.2]``
(``weight = 1 / std``); the RPN uses ``(1, 1, 1, 1)`` in torchvision and the same 1/std in matterport.

Dtypes: every function here computes in float32 or wider, whatever the input dtype, and returns that dtype
(:func:`box_dtype`: float32 for float16 / bfloat16 boxes, the input's own dtype for float32 / float64).
Half precision cannot do box arithmetic: float16's largest number is 65504, so the area of a 300 x 300 box
is ``inf`` (and its IoU NaN), and near 1000 px its coordinates step by 0.5 px; bfloat16 keeps the range but
steps by 4 px there. Such tensors appear under ``torch.autocast`` on a GPU. torchvision likewise computes
IoUs in float32 (its ``_upcast``) and its CPU ``nms`` kernel refuses float16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._checks import check_boxes, check_same_device, check_size, check_tensor

__all__ = [
    "box_dtype",
    "box_area",
    "box_iou",
    "matched_box_iou",
    "clip_boxes",
    "remove_small_boxes",
    "masks_to_boxes",
    "box_convert",
    "to_matterport_normalized",
    "from_matterport_normalized",
    "encode_deltas",
    "decode_deltas",
    "DEFAULT_DELTA_CLAMP",
]

#: Largest log-size delta decoded: exp(log(1000/16)) lets a box grow 62.5x, and keeps exp from overflowing.
DEFAULT_DELTA_CLAMP = math.log(1000.0 / 16)


def box_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype box arithmetic runs in for boxes of ``dtype``: at least float32 (module docstring)."""
    return torch.promote_types(dtype, torch.float32)


def _wide(boxes: torch.Tensor) -> torch.Tensor:
    """``boxes`` in :func:`box_dtype` (the same tensor, no copy, when it is float32 or float64 already)."""
    return boxes.to(box_dtype(boxes.dtype))


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of each box.

    boxes: ``[..., 4]`` float ``(x1, y1, x2, y2)``. Returns ``[...]`` in :func:`box_dtype` (float32 for
    half-precision boxes, whose areas overflow); boxes with ``x2 < x1`` or ``y2 < y1`` have area 0.
    """
    check_boxes("boxes", boxes, ndim=range(1, 8))
    boxes = _wide(boxes)
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _iou(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], area_a, area_b) -> torch.Tensor:
    """IoU from the coordinate columns ``(x1, y1, x2, y2)`` of two broadcastable box sets.

    The single place where IoU arithmetic happens, so :func:`box_iou` and :func:`matched_box_iou` give
    bit-identical values (the fast NMS relies on this to match the readable loop exactly).
    """
    iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    inter = iw * ih
    union = area_a + area_b - inter
    # An empty union means two zero-area boxes, whose intersection is 0 too: 0 / tiny = 0, not NaN.
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def _common_wide(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = box_dtype(torch.promote_types(a.dtype, b.dtype))
    return a.to(dtype), b.to(dtype)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, as ``torchvision.ops.box_iou``.

    boxes1: ``[N, 4]``, boxes2: ``[M, 4]``.
    Returns ``[N, M]`` with ``iou[i, j] = |b1_i ∩ b2_j| / |b1_i ∪ b2_j|``, in the :func:`box_dtype` of the
    two inputs' common dtype (float32 for half precision, as torchvision).
    A pair whose union is empty (two zero-area boxes) has IoU 0, not NaN.
    """
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    boxes1, boxes2 = _common_wide(boxes1, boxes2)
    # Coordinate columns [N, 1] against [M] (no [N, M, 2] temporaries: the RPN target layer calls this
    # with M in the hundreds of thousands).
    return _iou(
        tuple(boxes1.T.unsqueeze(-1)),
        tuple(boxes2.T.contiguous()),
        box_area(boxes1)[:, None],
        box_area(boxes2),
    )


def matched_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of each pair ``(boxes1[e], boxes2[e])``: the diagonal of :func:`box_iou` without the matrix.

    boxes1, boxes2: ``[E, 4]``. Returns ``[E]`` (dtype as :func:`box_iou`), bit-identical to
    ``box_iou(boxes1, boxes2).diagonal()``.
    """
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"boxes1 and boxes2 must have the same shape, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    boxes1, boxes2 = _common_wide(boxes1, boxes2)
    return _iou(tuple(boxes1.T), tuple(boxes2.T), box_area(boxes1), box_area(boxes2))


def clip_boxes(boxes: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """Clip boxes to the image ``[0, width] x [0, height]``.

    boxes: ``[..., 4]``; image_size: ``(height, width)``. Returns a new tensor of the same shape, in
    :func:`box_dtype` (float16 cannot hold every width above 2048).
    """
    check_boxes("boxes", boxes, ndim=range(1, 8))
    h, w = check_size("image_size", image_size)
    boxes = _wide(boxes)
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of boxes at least ``min_size`` wide and high, as ``torchvision.ops.remove_small_boxes``.

    boxes: ``[N, 4]``. Returns int64 ``[K]`` indices into ``boxes``, in increasing order. Sizes are computed
    in :func:`box_dtype`.
    """
    check_boxes("boxes", boxes)
    boxes = _wide(boxes)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((w >= min_size) & (h >= min_size)).flatten()


def masks_to_boxes(masks: torch.Tensor, exclusive: bool = True) -> torch.Tensor:
    """The tight box around each mask's non-zero pixels.

    masks: ``[N, H, W]`` (bool, integer or float; non-zero means "inside").
    exclusive: True (default) gives ``x2 = last column + 1``: the box covers the pixels' full extent, which is
        what pasting a mask back at its box needs (matterport's ``extract_bboxes``). False gives the last
        pixel index itself, as ``torchvision.ops.masks_to_boxes``.
    Returns float32 ``[N, 4]``; an empty mask gets the box ``(0, 0, 0, 0)``.
    """
    check_tensor("masks", masks, ndim=3)
    n, h, w = masks.shape
    out = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0 or h == 0 or w == 0:
        return out
    filled = masks != 0
    rows, cols = filled.any(dim=2), filled.any(dim=1)  # [N, H], [N, W]
    present = rows.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    # First/last occupied index: min/max over positions, with empty positions pushed out of range.
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1)
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1)
    box = torch.stack((x1, y1, x2, y2), dim=1).float()
    if exclusive:
        box[:, 2:] += 1
    out[present] = box[present]
    return out


_FORMATS = ("xyxy", "xywh", "cxcywh", "yxyx")


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Convert between box formats, as ``torchvision.ops.box_convert`` plus matterport's ``yxyx``.

    boxes: ``[..., 4]``. Formats: ``xyxy`` (mrcnn_edu, torchvision), ``xywh`` (COCO json), ``cxcywh`` (centre
    and size), ``yxyx`` (matterport: ``y1, x1, y2, x2``). Returns ``[..., 4]`` in ``out_fmt``, in
    :func:`box_dtype`.
    """
    check_boxes("boxes", boxes, ndim=range(1, 8))
    boxes = _wide(boxes)
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{name} must be one of {_FORMATS}, got {fmt!r}")
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    elif in_fmt == "yxyx":
        a, b, c, d = b, a, d, c
    # a, b, c, d are now x1, y1, x2, y2
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = 0.5 * (a + c), 0.5 * (b + d), c - a, d - b
    elif out_fmt == "yxyx":
        a, b, c, d = b, a, d, c
    return torch.stack((a, b, c, d), dim=-1)


def to_matterport_normalized(boxes: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """Our pixel ``xyxy`` boxes as matterport's normalised ``(y1, x1, y2, x2)`` (its ``norm_boxes``).

    Matterport divides by ``(height - 1, width - 1)`` and treats ``y2, x2`` as exclusive by shifting them by 1
    pixel, so ``(0, 0, W, H)`` maps to ``(0, 0, 1, 1)``. boxes: ``[..., 4]``; image_size: ``(height, width)``.
    Returns ``[..., 4]`` in :func:`box_dtype`.
    """
    check_boxes("boxes", boxes, ndim=range(1, 8))
    h, w = check_size("image_size", image_size)
    if h < 2 or w < 2:
        raise ValueError(f"image_size must be at least (2, 2) to normalise, got {image_size!r}")
    boxes = _wide(boxes)
    scale = boxes.new_tensor([h - 1, w - 1, h - 1, w - 1])
    shift = boxes.new_tensor([0, 0, 1, 1])
    return (box_convert(boxes, "xyxy", "yxyx") - shift) / scale


def from_matterport_normalized(boxes: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_matterport_normalized` (matterport's ``denorm_boxes``, without its rounding).

    Returns ``[..., 4]`` pixel ``(x1, y1, x2, y2)`` in :func:`box_dtype`.
    """
    h, w = check_size("image_size", image_size)
    check_boxes("boxes", boxes, ndim=range(1, 8))
    boxes = _wide(boxes)
    scale = boxes.new_tensor([h - 1, w - 1, h - 1, w - 1])
    shift = boxes.new_tensor([0, 0, 1, 1])
    return box_convert(boxes * scale + shift, "yxyx", "xyxy")


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        wx, wy, ww, wh = (float(v) for v in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}") from None
    return wx, wy, ww, wh


def _check_broadcast(name: str, t: torch.Tensor, other_name: str, other: torch.Tensor, enlarge=True) -> None:
    """``t`` on ``other``'s device and broadcastable against it (without enlarging it unless ``enlarge``)."""
    check_same_device(**{other_name: other, name: t})
    try:
        shape = torch.broadcast_shapes(t.shape, other.shape)
    except RuntimeError:
        shape = None
    if shape is None or (not enlarge and shape != other.shape):
        raise ValueError(
            f"{name} must {'broadcast against' if enlarge else 'broadcast to'} {other_name}'s shape "
            f"{tuple(other.shape)} (one box per row), got shape {tuple(t.shape)}"
        )


def encode_deltas(
    boxes: torch.Tensor, reference: torch.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Deltas that move each reference box (an anchor or a proposal) onto its target box.

    boxes: ``[..., 4]`` target boxes (ground truth); reference: ``[..., 4]`` anchors or proposals,
    broadcastable against ``boxes`` and on its device; both need positive width and height.
    weights: ``(wx, wy, ww, wh)`` multipliers (``1 / BBOX_STD_DEV`` in matterport).
    Returns ``[..., 4]`` deltas ``(dx, dy, dw, dh)`` in the :func:`box_dtype` of the inputs' common dtype.
    """
    check_boxes("boxes", boxes, ndim=range(1, 8))
    check_boxes("reference", reference, ndim=range(1, 8))
    _check_broadcast("reference", reference, "boxes", boxes)
    wx, wy, ww, wh = _check_weights(weights)
    boxes, reference = _common_wide(boxes, reference)
    gx, gy, gw, gh = _centre_size(boxes)
    ax, ay, aw, ah = _centre_size(reference)
    return torch.stack(
        (wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1
    )


def decode_deltas(
    deltas: torch.Tensor,
    reference: torch.Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float | None = DEFAULT_DELTA_CLAMP,
) -> torch.Tensor:
    """Apply deltas to reference boxes: the inverse of :func:`encode_deltas`.

    deltas: ``[..., 4]`` ``(dx, dy, dw, dh)``, e.g. ``[N, 4]`` or per-class ``[N, K, 4]``.
    reference: ``[..., 4]`` broadcastable to the shape of ``deltas`` (``anchors[:, None, :]`` for per-class
        deltas), on its device.
    weights: the same ``(wx, wy, ww, wh)`` used to encode.
    clamp: upper bound on ``dw / ww`` and ``dh / wh`` before ``exp`` (torchvision's ``log(1000/16)``), so an
        untrained head cannot produce ``inf`` boxes; None disables it (matterport does not clamp).
    Returns ``[..., 4]`` boxes ``(x1, y1, x2, y2)``, in the :func:`box_dtype` of ``deltas`` (float32 for
    half-precision deltas, as a head under autocast predicts them: half-precision coordinates would be
    0.5 px coarse at 1000 px; float64 deltas give float64 boxes).
    """
    check_boxes("deltas", deltas, ndim=range(1, 8))
    check_boxes("reference", reference, ndim=range(1, 8))
    _check_broadcast("reference", reference, "deltas", deltas, enlarge=False)
    wx, wy, ww, wh = _check_weights(weights)
    deltas = _wide(deltas)
    reference = reference.to(deltas.dtype)
    ax, ay, aw, ah = _centre_size(reference)
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw, dh = deltas[..., 2] / ww, deltas[..., 3] / wh
    if clamp is not None:
        dw, dh = dw.clamp(max=clamp), dh.clamp(max=clamp)
    cx, cy = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
