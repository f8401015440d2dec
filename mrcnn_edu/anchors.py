"""Anchors: the fixed reference boxes that the RPN scores and refines, one set per FPN level.

The RPN does not predict boxes from nothing. At every position of every feature map it looks at a few
*anchors* (boxes of fixed size and shape centred on that position) and predicts, for each one, an
objectness score and four deltas that move it onto an object (see :func:`mrcnn_edu.boxes.encode_deltas`).
Anchors depend only on the image size and the configuration, never on the image content, so they are made
once per image size and reused.

One scale per pyramid level
    With an FPN each level owns one anchor scale: ``RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)`` pairs
    up with ``BACKBONE_STRIDES = (4, 8, 16, 32, 64)`` (P2..P6), level by level. For a 512x512 image, P2
    has stride 4 and is a 128x128 map; each of its 16,384 cells sees a 4x4 block of pixels and gets the
    32-pixel anchors (three of them, one per ratio: 49,152 anchors on P2). An often-quoted shortcut says
    this map "gets 8x8 anchors": what is 8x8 is the *size of each anchor measured in cells of its own map*
    (32 px / 4 px per cell = 8 cells). In matterport's configuration scale / stride = 8 on every level
    (32/4, 64/8, ..., 512/64), so every anchor spans 8x8 cells of the map it is predicted from, while in
    image pixels it is 32x32 on P2, 64x64 on P3, and so on. Anchor centres are one stride apart: 4 px on
    P2, 64 px on P6.

Three ratios per position, ratio = width / height
    Each scale comes in ``len(ratios)`` shapes of (about) the same area ``scale**2``:
    ``width = scale * sqrt(ratio)``, ``height = scale / sqrt(ratio)``. This is matterport's convention
    (``generate_anchors``: ``widths = scales * sqrt(ratios)``). torchvision's ``AnchorGenerator`` uses the
    reciprocal, ``aspect_ratio = height / width`` (``h_ratios = sqrt(aspect_ratios)``), so the same
    ``(0.5, 1, 2)`` lists the same three shapes *in the opposite order*: torchvision's anchor 0 is wide,
    matterport's is tall. The set of anchors is identical; the channel each shape uses in the RPN head is
    not, which matters when loading weights trained by one into the other. ``ratios=(2.0, 1.0, 0.5)`` here
    reproduces torchvision's order.

Ordering: level -> row -> column -> ratio
    :func:`pyramid_anchors` lists level P2 first, and inside a level the positions row by row (row-major,
    as an image is stored), and at each position the ratios in the order given. This must be exactly the
    order in which the RPN head's outputs are flattened, because anchor ``i`` is paired with prediction
    ``i`` purely by index. The head is a convolution with ``A * D`` output channels (``D`` = 4 deltas, or 1
    or 2 objectness logits), channel ``a * D + d`` holding value ``d`` of anchor ``a``;
    :func:`flatten_head_output` turns ``[B, A*D, H, W]`` into ``[B, H*W*A, D]`` in row -> column -> anchor
    order, and :func:`concat_levels` joins the levels in the same level order. Those two functions are the
    one place that defines the flattening: code that pairs head outputs with anchors should call them
    rather than reshape by hand. (matterport's Keras head does the same with ``Reshape([-1, D])`` on a
    channels-last map; torchvision with ``permute_and_flatten``.)

Centre offset
    ``offset=0.0`` (matterport, torchvision, detectron2's default) puts the anchors of cell ``(i, j)`` at
    ``(x, y) = (j * stride, i * stride)``, the *top-left corner* of the cell's pixel block.
    ``offset=0.5`` (detectron2's ``ANCHOR_GENERATOR.OFFSET`` option) puts them at
    ``((j + 0.5) * stride, (i + 0.5) * stride)``, the centre of the block ``[j*stride, (j+1)*stride)``
    under mrcnn_edu's pixel convention (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``). The difference
    is a shift of half a stride (2 px on P2, 32 px on P6); the regression learns to absorb either, but
    weights trained with one offset expect that offset. With ``anchor_stride > 1`` the offset is a
    fraction of the anchor grid step ``anchor_stride * stride``.

Rounding (torchvision)
    torchvision rounds its base anchors (the corners ``(-w/2, -h/2, w/2, h/2)`` around the centre) to whole
    pixels, so the wide 32-px anchor (width / height = 2) is ``46 x 22`` rather than ``45.25 x 22.63``.
    ``round_base=True`` does the same; matterport keeps the exact sizes (the default here).

Anchor stride
    matterport's ``RPN_ANCHOR_STRIDE`` (default 1) puts anchors only every ``anchor_stride`` cells; its RPN
    convolution then uses the same stride, giving a ``ceil(H / anchor_stride) x ceil(W / anchor_stride)``
    output. torchvision has no such option (always 1).

Shape glossary
    L: number of pyramid levels (5 for P2..P6)
    H, W: feature map height and width of one level (``ceil(image_size / stride)``)
    H', W': anchor grid of one level, ``ceil(H / anchor_stride)`` by ``ceil(W / anchor_stride)``
    A: anchors per position, ``len(ratios)`` (3)
    N: anchors of the whole image, ``sum over levels of H' * W' * A``
    B: images in a batch
    D: values predicted per anchor (4 deltas; 1 objectness logit in torchvision, 2 in matterport)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._checks import check_size, check_tensor

__all__ = [
    "MATTERPORT_ANCHOR_SCALES",
    "MATTERPORT_ANCHOR_RATIOS",
    "MATTERPORT_BACKBONE_STRIDES",
    "base_anchors",
    "level_anchors",
    "level_anchors_loop",
    "pyramid_anchors",
    "feature_shapes_for",
    "image_anchors",
    "flatten_head_output",
    "concat_levels",
]

#: matterport's ``RPN_ANCHOR_SCALES``: one anchor size in pixels per level, P2..P6 (torchvision's too).
MATTERPORT_ANCHOR_SCALES = (32, 64, 128, 256, 512)
#: matterport's ``RPN_ANCHOR_RATIOS`` (width / height).
MATTERPORT_ANCHOR_RATIOS = (0.5, 1.0, 2.0)
#: matterport's ``BACKBONE_STRIDES``: image pixels per feature map cell, P2..P6.
MATTERPORT_BACKBONE_STRIDES = (4, 8, 16, 32, 64)


def _positive_number(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not v > 0 or math.isinf(v):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _ratios(ratios) -> list[float]:
    try:
        values = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise ValueError(f"ratios must be a sequence of positive numbers, got {ratios!r}") from None
    if not values or not all(r > 0 and not math.isinf(r) for r in values):
        raise ValueError(f"ratios must be a non-empty sequence of positive numbers, got {ratios!r}")
    return values


def base_anchors(
    scale: float,
    ratios: Sequence[float],
    round_base: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``A`` anchors of one position, centred on ``(0, 0)``.

    scale: anchor size in pixels (``sqrt`` of its area). ratios: ``A`` ratios ``width / height``.
    round_base: round the corners to whole pixels, as torchvision's ``AnchorGenerator``.
    Returns ``[A, 4]`` boxes ``(-w/2, -h/2, w/2, h/2)`` with ``w = scale * sqrt(r)``, ``h = scale / sqrt(r)``.
    """
    scale = _positive_number("scale", scale)
    ratios = _ratios(ratios)
    # Python floats (double precision) first, then one rounding to dtype.
    half = [(0.5 * scale * math.sqrt(r), 0.5 * scale / math.sqrt(r)) for r in ratios]
    base = torch.tensor([[-hw, -hh, hw, hh] for hw, hh in half], dtype=torch.float64)
    if round_base:
        base = torch.round(base)  # half to even, like torchvision's Tensor.round
    return base.to(device=device, dtype=dtype)


def _check_grid(feature_shape, feature_stride, anchor_stride) -> tuple[int, int, float, float, int]:
    """``(H', W', stride_y, stride_x, anchor_stride)``; ``feature_stride``: a number or a ``(y, x)`` pair."""
    h, w = check_size("feature_shape", feature_shape)
    if isinstance(feature_stride, (tuple, list)):
        if len(feature_stride) != 2:
            raise ValueError(f"feature_stride must be a number or a (y, x) pair, got {feature_stride!r}")
        sy, sx = (_positive_number("feature_stride", s) for s in feature_stride)
    else:
        sy = sx = _positive_number("feature_stride", feature_stride)
    anchor_stride = _positive_int("anchor_stride", anchor_stride)
    return h, w, sy, sx, anchor_stride


def level_anchors_loop(
    scale: float,
    ratios: Sequence[float],
    feature_shape: Sequence[int],
    feature_stride: float,
    anchor_stride: int = 1,
    offset: float = 0.0,
    round_base: bool = False,
) -> torch.Tensor:
    """Readable version of :func:`level_anchors`: three nested loops in the order the head is flattened.

    Returns float32 ``[H' * W' * A, 4]`` on the CPU, equal to :func:`level_anchors` (same arithmetic, in
    double precision, rounded once at the end).
    """
    h, w, sy, sx, anchor_stride = _check_grid(feature_shape, feature_stride, anchor_stride)
    base = base_anchors(scale, ratios, round_base, dtype=torch.float64).tolist()
    step_y, step_x = anchor_stride * sy, anchor_stride * sx  # pixels between neighbouring anchor centres
    boxes = []
    for i in range(0, math.ceil(h / anchor_stride)):  # rows
        for j in range(0, math.ceil(w / anchor_stride)):  # columns
            cx, cy = (j + offset) * step_x, (i + offset) * step_y
            for x1, y1, x2, y2 in base:  # ratios
                boxes.append([cx + x1, cy + y1, cx + x2, cy + y2])
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4).to(torch.float32)


def level_anchors(
    scale: float,
    ratios: Sequence[float],
    feature_shape: Sequence[int],
    feature_stride: float,
    anchor_stride: int = 1,
    offset: float = 0.0,
    round_base: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """All anchors of one pyramid level, ordered row -> column -> ratio (matterport's ``generate_anchors``).

    scale: anchor size in pixels for this level (e.g. 32 on P2). ratios: ``A`` ratios ``width / height``.
    feature_shape: ``(H, W)`` of this level's feature map. feature_stride: image pixels per cell (4 on P2),
        or a ``(stride_y, stride_x)`` pair (torchvision derives them per axis: canvas size // feature size).
    anchor_stride: put anchors on every ``anchor_stride``-th cell (matterport's ``RPN_ANCHOR_STRIDE``).
    offset: anchor centre within its grid step, 0.0 (cell corner, matterport/torchvision) or 0.5 (centre).
    round_base: round the base anchors to whole pixels (torchvision).
    Returns ``[H' * W' * A, 4]`` ``(x1, y1, x2, y2)`` in image pixels; anchor ``(i * W' + j) * A + a`` is
    ratio ``a`` centred on ``((j + offset) * s_x, (i + offset) * s_y)``, ``s = anchor_stride * stride``.
    """
    h, w, sy, sx, anchor_stride = _check_grid(feature_shape, feature_stride, anchor_stride)
    # Double precision until the end, so the only rounding to ``dtype`` is the last one.
    work = torch.float64
    base = base_anchors(scale, ratios, round_base, device=device, dtype=work)  # [A, 4]
    rows = torch.arange(0, math.ceil(h / anchor_stride), device=device, dtype=work)
    cols = torch.arange(0, math.ceil(w / anchor_stride), device=device, dtype=work)
    ys = (rows + offset) * (anchor_stride * sy)
    xs = (cols + offset) * (anchor_stride * sx)
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # [H', W'], row-major like the feature map
    centres = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)  # [H'*W', 1, 4]
    return (centres + base[None]).reshape(-1, 4).to(dtype)


def pyramid_anchors(
    scales: Sequence[float],
    ratios: Sequence[float],
    feature_shapes: Sequence[Sequence[int]],
    feature_strides: Sequence[float],
    anchor_stride: int = 1,
    offset: float = 0.0,
    round_base: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, list[int]]:
    """Anchors of all levels, level by level (matterport's ``generate_pyramid_anchors``).

    scales, feature_shapes, feature_strides: one entry per level, ``L`` each, paired by position
    (scale ``scales[l]`` on the map of shape ``feature_shapes[l]`` and stride ``feature_strides[l]``).
    ratios, anchor_stride, offset, round_base: as :func:`level_anchors`, the same on every level.
    Returns ``(anchors [N, 4], num_per_level)``: the levels concatenated in order, and ``L`` ints
    ``H'_l * W'_l * A`` (to split per-anchor results back into levels).
    """
    lengths = {
        "scales": len(scales),
        "feature_shapes": len(feature_shapes),
        "feature_strides": len(feature_strides),
    }
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"scales, feature_shapes and feature_strides need one entry per level, got lengths {lengths}"
        )
    per_level = [
        level_anchors(scale, ratios, shape, stride, anchor_stride, offset, round_base, device, dtype)
        for scale, shape, stride in zip(scales, feature_shapes, feature_strides, strict=True)
    ]
    if not per_level:
        return torch.zeros((0, 4), device=device, dtype=dtype), []
    return torch.cat(per_level), [a.shape[0] for a in per_level]


def feature_shapes_for(image_size: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature map shape of each level: ``(ceil(H / stride), ceil(W / stride))``.

    As matterport's ``compute_backbone_shapes`` for ResNet: each stride-2 convolution or pooling of a
    ResNet/FPN (padding as in ResNet) maps ``n`` cells to ``ceil(n / 2)``, and nested ceilings compose, so
    ``ceil(H / 4)`` is P2's height for any ``H``.
    image_size: ``(height, width)``; strides: ``L`` positive ints.
    Returns ``L`` tuples ``(H_l, W_l)``.
    """
    h, w = check_size("image_size", image_size)
    strides = [_positive_int("strides", s) for s in strides]
    return [(-(-h // s), -(-w // s)) for s in strides]


def image_anchors(
    image_size: Sequence[int],
    scales: Sequence[float] = MATTERPORT_ANCHOR_SCALES,
    ratios: Sequence[float] = MATTERPORT_ANCHOR_RATIOS,
    strides: Sequence[int] = MATTERPORT_BACKBONE_STRIDES,
    anchor_stride: int = 1,
    offset: float = 0.0,
    round_base: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, list[int]]:
    """All anchors of an image of ``image_size = (height, width)``: :func:`feature_shapes_for` then
    :func:`pyramid_anchors`. Defaults are matterport's configuration (261,888 anchors for 1024x1024).

    Returns ``(anchors [N, 4], num_per_level)``.
    """
    shapes = feature_shapes_for(image_size, strides)
    return pyramid_anchors(scales, ratios, shapes, strides, anchor_stride, offset, round_base, device, dtype)


def flatten_head_output(head_output: torch.Tensor, values_per_anchor: int) -> torch.Tensor:
    """One level of RPN head output in anchor order: ``[B, A*D, H, W] -> [B, H*W*A, D]``.

    head_output: ``[B, A*D, H, W]``, channel ``a * D + d`` = value ``d`` of anchor ``a`` (the layout of
    matterport's and torchvision's heads). values_per_anchor: ``D``.
    Returns ``[B, H*W*A, D]``: row ``(i * W + j) * A + a`` belongs to the anchor of the same index in
    :func:`level_anchors` (row ``i``, column ``j``, ratio ``a``).
    """
    check_tensor("head_output", head_output, ndim=4)
    d = _positive_int("values_per_anchor", values_per_anchor)
    b, c, h, w = head_output.shape
    if c % d != 0:
        raise ValueError(f"head_output must have A * {d} channels (values_per_anchor={d}), got {c} channels")
    # [B, A, D, H, W] -> [B, H, W, A, D]: position-major, anchor next, value last.
    return head_output.reshape(b, c // d, d, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * (c // d), d)


def concat_levels(head_outputs: Sequence[torch.Tensor], values_per_anchor: int) -> torch.Tensor:
    """All levels of RPN head output in anchor order: flatten each level, then join them in level order.

    head_outputs: ``L`` tensors ``[B, A*D, H_l, W_l]`` in the level order used by :func:`pyramid_anchors`.
    values_per_anchor: ``D``. Returns ``[B, N, D]`` aligned index by index with the pyramid's anchors.
    """
    if len(head_outputs) == 0:
        raise ValueError("head_outputs must hold at least one level, got an empty sequence")
    flat = [flatten_head_output(x, values_per_anchor) for x in head_outputs]
    batch = {x.shape[0] for x in flat}
    if len(batch) != 1:
        raise ValueError(f"head_outputs must share one batch size, got {[x.shape[0] for x in flat]}")
    return torch.cat(flat, dim=1)
