"""RoI pooling: cut a fixed-size feature patch (e.g. 7x7 or 14x14) out of a feature map for every box.

The box head and the mask head of Mask R-CNN see each proposal through a small, fixed-size grid of features.
How that grid is read from the feature map matters most for masks, which must line up with the object to
within a pixel of the input image.

**RoIPool** (Fast R-CNN, :func:`roi_pool`) rounds the box to whole feature cells, splits it into bins whose
edges are rounded again (floor / ceil), and takes the maximum of each bin. On a stride-16 map one feature
cell is 16 image pixels, so both roundings can move the pooled region by up to half a cell (8 pixels) or
more: good enough to classify a box, too coarse for a 28x28 mask that must align with the object.

**RoIAlign** (Mask R-CNN, :func:`roi_align`) never rounds. The box, scaled to the feature map by
``spatial_scale`` (1/stride), is cut into ``oh x ow`` equal bins; in each bin a regular grid of
``gh x gw`` sample points sits at the centres of equal sub-cells, every sample is read by bilinear
interpolation between the 4 surrounding feature cells, and the bin's value is their average::

    y(ph, iy) = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh        bin_h = box_h / oh,  iy = 0 .. gh-1

``sampling_ratio > 0`` fixes ``gh = gw = sampling_ratio`` (torchvision's Mask R-CNN uses 2);
``sampling_ratio <= 0`` is adaptive: ``gh = ceil(box_h / oh)``, ``gw = ceil(box_w / ow)``, about one sample
per feature cell, so a big box is averaged over all of its cells (the default of ``torchvision.ops.roi_align``
and of detectron2's poolers). A feature value
sits at the *centre* of its cell, i.e. at continuous coordinate ``c + 0.5``: ``aligned=True`` subtracts
that half pixel from the scaled box (detectron2's choice), ``aligned=False`` (the original Mask R-CNN and
torchvision's default) does not, which shifts every sample by half a cell, and instead forces degenerate
boxes to be at least 1x1 cells. Samples more than one cell outside the map (``y < -1`` or ``y > H``,
same for ``x``) read 0 but still count in the average; the others are clamped into ``[0, H-1]``.
:func:`roi_align_loop` spells all this out with loops and :func:`bilinear`; :func:`roi_align` computes the
same numbers at once (one fused gather-and-sum over a channels-last copy of the features).

**crop_and_resize** (:func:`crop_and_resize`, TensorFlow's ``tf.image.crop_and_resize``) is what matterport
calls instead: one bilinear sample per output cell, placed *corner-aligned*: the first and last output rows
sample exactly the box's edges, in normalised coordinates where 0 and 1 are the centres of the first and last
pixel. No averaging over a bin, so on large boxes it aliases; matterport crops 7x7 for the box head and
14x14 for the mask head.

**FPN level** (:func:`assign_fpn_levels`): a box of ``w x h`` image pixels is pooled from level
``k = k0 + log2(sqrt(w * h) / 224)`` with ``k0 = 4``, so a 224-pixel box (an ImageNet-sized object) reads
P4, a box half that size P3, and so on, clamped to P2..P5. Matterport rounds ``k`` (``tf.round``: half to
even); torchvision floors ``k + 1e-6``.

Gradients: RoIAlign and crop_and_resize are differentiable with respect to the features (each sample's 4
bilinear weights route the output gradient back to 4 cells), never with respect to the boxes: the boxes are
detached, as in torchvision and matterport (which wraps them in ``tf.stop_gradient``), so proposals are not
learned through this path. RoIPool routes each output's gradient to the cell that won the max.

Shape glossary
    B: images in the batch             C: channels of the feature map
    H, W: feature-map height, width    K: boxes (RoIs) over the whole batch; L: boxes of one image
    oh, ow: output size (pooled height and width); ch, cw: crop size of :func:`crop_and_resize`

Boxes are ``(x1, y1, x2, y2)`` in *input-image* pixels (``mrcnn_edu.boxes``); ``spatial_scale`` maps them
to the feature map. A batch of boxes is either a ``[K, 5]`` tensor whose first column is the image index,
or a list of ``B`` tensors ``[L, 4]``, as in ``torchvision.ops.roi_align``.

matterport vs torchvision
    ===================  ==============================  =====================================
    choice               matterport                      torchvision / detectron2
    ===================  ==============================  =====================================
    sampling             ``method="crop_and_resize"``    ``method="roi_align"``,
                         (one corner-aligned sample)     ``sampling_ratio`` 2 (or -1 adaptive)
    half-pixel shift     n/a                             ``aligned=False`` (tv), True (d2)
    FPN level rounding   ``rounding="round"``            ``rounding="floor"`` (+1e-6)
    ===================  ==============================  =====================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_boxes, check_size, check_tensor
from ._tv import torchvision_ops
from .boxes import box_area, box_dtype, to_matterport_normalized

__all__ = [
    "roi_align",
    "roi_align_loop",
    "bilinear",
    "crop_and_resize",
    "roi_pool",
    "assign_fpn_levels",
    "pyramid_roi_align",
    "roi_align_sample_points",
    "roi_align_bins",
    "roi_pool_bins",
    "crop_and_resize_sample_points",
]

# Sample points per chunk of RoIs in the fast paths: bounds the index/weight tensors (4 corners each,
# ~12 bytes per corner) to a few hundred MB even with adaptive sampling on huge boxes.
_MAX_SAMPLES_PER_CHUNK = 1 << 22


# --------------------------------------------------------------------------------------------------------
# argument checks


def _check_features(name: str, t) -> torch.Tensor:
    return check_tensor(name, t, ndim=4, kind="float")


def _pair(name: str, size) -> tuple[int, int]:
    """``output_size`` / ``crop_size``: an int or an ``(h, w)`` pair of positive ints."""
    if isinstance(size, bool):
        raise ValueError(f"{name} must be a positive int or an (h, w) pair of positive ints, got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = size
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise TypeError
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a positive int or an (h, w) pair of positive ints, got {size!r}"
        ) from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def _check_scale(spatial_scale) -> float:
    try:
        scale = float(spatial_scale)
    except (TypeError, ValueError):
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}")
    return scale


def _check_sampling_ratio(sampling_ratio) -> int:
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise ValueError(f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}")
    return sampling_ratio


def _constant(inputs: Sequence[torch.Tensor], shape, value: float = 0.0) -> torch.Tensor:
    """A new ``shape`` tensor full of ``value`` (in ``inputs[0]``'s dtype) that is part of the inputs' graph.

    What an op returns when there is nothing to sample (no boxes, or an empty map). torchvision's kernels
    return such outputs too, so ``backward()`` works on them and the inputs get a zero gradient. An empty
    slice of each input is summed in (0, reading no value: an inf in the map cannot turn it into NaN).
    """
    out = inputs[0].new_full(shape, value)
    for t in inputs:
        out = out + t.reshape(-1)[:0].sum()
    return out


def _rois(input: torch.Tensor, boxes, name: str = "boxes") -> torch.Tensor:
    """Validate ``boxes`` (``[K, 5]`` or a list of ``[L, 4]``) and return detached ``[K, 5]`` rois.

    The rois are on the device of ``input``, in its dtype (at least float32); column 0 is the image index.
    """
    if isinstance(boxes, torch.Tensor):
        check_tensor(name, boxes, ndim=2, last_dim=5, kind="float")
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            check_boxes(f"{name}[{i}]", b)
            index = torch.full_like(b[:, :1], i)
            parts.append(torch.cat((index, b), dim=1))
        if parts:
            rois = torch.cat([p.to(input.device) for p in parts])
        else:
            rois = input.new_zeros((0, 5))
    else:
        raise ValueError(
            f"{name} must be a Tensor[K, 5] (image index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
            f"got {type(boxes).__name__}"
        )
    if rois.device != input.device:
        raise ValueError(f"{name} must be on the device of input ({input.device}), got {rois.device}")
    rois = rois.detach().to(box_dtype(input.dtype))
    if rois.shape[0] > 0:
        index = rois[:, 0]
        if bool(((index < 0) | (index >= input.shape[0])).any()):
            raise ValueError(
                f"{name} image indices (column 0) must lie in [0, {input.shape[0]}) for an input of "
                f"batch size {input.shape[0]}, got values in [{index.min().item()}, {index.max().item()}]"
            )
    return rois


def _check_pool_args(input, boxes, output_size, spatial_scale):
    """The arguments shared by :func:`roi_align`, :func:`roi_align_loop` and :func:`roi_pool`, checked in
    signature order: returns ``(rois [K, 5], oh, ow, spatial_scale)`` (rois as :func:`_rois` gives them)."""
    _check_features("input", input)
    rois = _rois(input, boxes)
    oh, ow = _pair("output_size", output_size)
    return rois, oh, ow, _check_scale(spatial_scale)


# --------------------------------------------------------------------------------------------------------
# readable RoIAlign


def _point_coordinate(name: str, v, dtype: torch.dtype) -> torch.Tensor:
    """A 0-d tensor as it is, a number as a 0-d tensor of ``dtype``; anything else is a ValueError."""
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        return v
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return torch.tensor(float(v), dtype=dtype)
    raise ValueError(f"{name} must be a 0-d tensor or a number, got {v!r}")


def bilinear(feature: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One bilinear sample of a feature map, with RoIAlign's border rules.

    feature: ``[C, H, W]`` float; y, x: 0-d tensors or numbers (continuous coordinates; feature cell
    ``(r, c)`` holds its value at ``(r, c)`` in these coordinates). Returns ``[C]``.

    A point more than one cell outside the map (``y < -1`` or ``y > H``, same for x) reads 0; otherwise it is
    clamped into ``[0, H-1] x [0, W-1]`` and the 4 surrounding cells are mixed by their bilinear weights.
    """
    check_tensor("feature", feature, ndim=3, kind="float")
    y, x = (_point_coordinate(name, v, feature.dtype) for name, v in (("y", y), ("x", x)))
    height, width = feature.shape[-2:]
    if not (-1 <= y <= height and -1 <= x <= width):  # also catches NaN
        return feature.new_zeros(feature.shape[0])
    y = y.clamp(0, height - 1)
    x = x.clamp(0, width - 1)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0  # distance from the top-left cell; 0 on the last row / column
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * feature[:, y0, x0]
        + hy * lx * feature[:, y0, x1]
        + ly * hx * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def roi_align_loop(
    input: torch.Tensor,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign written as loops over boxes, bins and sample points: the version to read.

    Same arguments, result and semantics as :func:`roi_align` (tested equal), but slow (Python loops):
    use it on a handful of small boxes. The arithmetic is done in ``input``'s dtype, in the same order as
    torchvision's kernel, so float32 results agree with the compiled kernels to rounding.
    """
    rois, oh, ow, scale = _check_pool_args(input, boxes, output_size, spatial_scale)
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    offset = 0.5 if aligned else 0.0  # feature cell c has its value at c + 0.5 in box coordinates
    if rois.shape[0] == 0 or input.shape[-2] == 0 or input.shape[-1] == 0:  # (an empty map reads zeros)
        return _constant([input], (rois.shape[0], input.shape[1], oh, ow))

    pooled = []
    for roi in rois:
        feature = input[int(roi[0])]
        x1, y1 = roi[1] * scale - offset, roi[2] * scale - offset
        x2, y2 = roi[3] * scale - offset, roi[4] * scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # the original RoIAlign makes degenerate boxes 1x1 cells
            roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
        bin_h, bin_w = roi_h / oh, roi_w / ow
        if sampling_ratio > 0:
            grid_h = grid_w = sampling_ratio
        else:  # about one sample per feature cell; a negative size (aligned=True) gives no samples
            grid_h, grid_w = max(math.ceil(roi_h / oh), 0), max(math.ceil(roi_w / ow), 0)
        count = max(grid_h * grid_w, 1)

        rows = []
        for ph in range(oh):
            row = []
            for pw in range(ow):
                total = input.new_zeros(input.shape[1])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total = total + bilinear(feature, y, x)
                row.append(total / count)
            rows.append(torch.stack(row, dim=-1))  # [C, ow]
        pooled.append(torch.stack(rows, dim=-2))  # [C, oh, ow]
    return torch.stack(pooled).to(input.dtype)


# --------------------------------------------------------------------------------------------------------
# fast paths: every output cell is a weighted sum of feature rows, computed by one embedding_bag


def _channels_last_rows(input: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B*H*W, C]``: row ``(b*H + y)*W + x`` is the feature vector of one cell."""
    b, c, h, w = input.shape
    return input.permute(0, 2, 3, 1).contiguous().view(b * h * w, c)


def _neighbours(coord: torch.Tensor, valid: torch.Tensor, limit: int):
    """The two cells around each coordinate along one axis, and their linear-interpolation weights.

    coord: float, any shape; valid: bool, same shape (False gives weight 0); limit: cells on the axis.
    The coordinate is clamped into ``[0, limit-1]``; on the last cell the "next" cell is the same cell with
    weight 0 (torchvision's and TensorFlow's rule). Returns int64 ``[..., 2]`` (low, high) and weights
    ``[..., 2]``. A 2-D bilinear sample at ``(y, x)`` is then ``sum w_y[a] * w_x[b] * f[y_a, x_b]``.
    """
    coord = torch.where(valid, coord, 0).clamp(0, limit - 1)
    low = coord.long()  # truncation = floor for non-negative coordinates
    high = (low + 1).clamp(max=limit - 1)
    frac = coord - low
    return torch.stack((low, high), dim=-1), torch.stack((1 - frac, frac), dim=-1) * valid[..., None]


def _bag_sum(rows: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, bags: int) -> torch.Tensor:
    """``out[j] = sum_i weight[j, i] * rows[index[j, i]]``, with index and weight reshaped to ``[bags, -1]``.

    rows: ``[N, C]``. Returns ``[bags, C]``. ``embedding_bag`` fuses the gather and the weighted sum, so the
    gathered ``[bags, L, C]`` rows are never materialised; its backward scatters into ``rows``.
    """
    weight = weight.reshape(bags, -1).to(rows.dtype)
    return F.embedding_bag(index.reshape(bags, -1), rows, mode="sum", per_sample_weights=weight)


def _roi_geometry(rois, scale, oh, ow, sampling_ratio, aligned):
    """Per-roi RoIAlign geometry ``(top, left, bin_h, bin_w, grid_h, grid_w)``, each ``[K]``.

    Same arithmetic, in the same order and dtype, as torchvision's kernel, so float32 results match it.
    """
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    x2, y2 = rois[:, 3] * scale - offset, rois[:, 4] * scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    if sampling_ratio > 0:
        grid_h = torch.full_like(rois[:, 0], sampling_ratio, dtype=torch.long)
        grid_w = grid_h
    else:  # a negative size (aligned=True) gives an empty grid, hence a 0 output
        grid_h = torch.nan_to_num(torch.ceil(roi_h / oh)).clamp(min=0).long()
        grid_w = torch.nan_to_num(torch.ceil(roi_w / ow)).clamp(min=0).long()
    return y1, x1, roi_h / oh, roi_w / ow, grid_h, grid_w


def _axis_samples(start, bin_size, grid, bins: int, padded: int, limit: int):
    """The sample coordinates of every roi along one axis, with their 2 neighbouring cells and weights.

    start, bin_size: ``[k]`` float; grid: ``[k]`` int samples per bin (``<= padded``). Returns cell indices
    ``[k, bins, padded, 2]`` (low, high) and weights of the same shape; padding samples (index ``>= grid``)
    and samples more than one cell outside ``[0, limit]`` get weight 0.
    """
    coord = _axis_coordinates(start, bin_size, grid, bins, padded)
    i = torch.arange(padded, device=start.device, dtype=start.dtype)
    valid = (i < grid[:, None, None]) & (coord >= -1) & (coord <= limit)  # False for NaN too
    return _neighbours(coord, valid, limit)


def _axis_coordinates(start, bin_size, grid, bins: int, padded: int) -> torch.Tensor:
    """RoIAlign's sample coordinates along one axis: ``[k, bins, padded]`` from ``[k]`` start, bin size and
    (int) grid; sample ``i`` of bin ``p`` sits at ``start + p * bin_size + (i + 0.5) * bin_size / grid``
    (entries ``i >= grid`` are padding)."""
    p = torch.arange(bins, device=start.device, dtype=start.dtype)[:, None]
    i = torch.arange(padded, device=start.device, dtype=start.dtype)
    start, bin_size, grid = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    # Same arithmetic, in the same order, as torchvision's kernel.
    return start + p * bin_size + (i + 0.5) * bin_size / grid


def _roi_align_bucket(rows, image, top, left, bin_h, bin_w, grid_h, grid_w, gh, gw, height, width, oh, ow):
    """RoIAlign of ``k`` rois given their geometry (``[k]`` each) as ``[k, oh*ow, C]``, reading ``rows``;
    ``gh, gw`` (ints) are the largest grid of the ``k`` rois.

    Bilinear weights are separable: the sample at ``(y, x)`` reads the cells ``{y_low, y_high} x {x_low,
    x_high}`` with weights ``w_y * w_x``. So the coordinates are computed per axis (``k * oh * gh`` rows and
    ``k * ow * gw`` columns) and only combined, by broadcasting, into the bags of ``gh * gw * 4`` entries.
    Every roi is padded to the largest grid of the bucket with weight-0 samples.
    """
    k = top.shape[0]
    y_index, y_weight = _axis_samples(top, bin_h, grid_h, oh, gh, height)  # [k, oh, gh, 2]
    x_index, x_weight = _axis_samples(left, bin_w, grid_w, ow, gw, width)  # [k, ow, gw, 2]
    # Fold the image offset into the rows and the average (outside samples count too) into the weights.
    y_index = y_index * width + (image * (height * width))[:, None, None, None]
    y_weight = y_weight / (grid_h * grid_w).clamp(min=1)[:, None, None, None]
    # [k, oh, ow, gh, gw, 2, 2]: one bag per output cell (k, ph, pw)
    index = y_index[:, :, None, :, None, :, None] + x_index[:, None, :, None, :, None, :]
    weight = y_weight[:, :, None, :, None, :, None] * x_weight[:, None, :, None, :, None, :]
    return _bag_sum(rows, index, weight, k * oh * ow).view(k, oh * ow, -1)


def _bucket_chunks(bucket, samples, grid_h, grid_w):
    """Cut rois sorted by ``bucket`` into chunks of about ``_MAX_SAMPLES_PER_CHUNK`` padded samples, none
    spanning two buckets. bucket, samples, grid_h, grid_w: ``[K]``. Returns the chunk sizes and each chunk's
    largest ``(grid_h, grid_w)`` (at least 1), read to the host together, once."""
    k = bucket.shape[0]
    new_bucket = torch.ones_like(bucket, dtype=torch.bool)
    new_bucket[1:] = bucket[1:] != bucket[:-1]
    start = torch.cumsum(samples, 0) - samples
    bucket_start = torch.cummax(torch.where(new_bucket, start, 0), 0).values  # start is non-decreasing
    part = torch.div(start - bucket_start, _MAX_SAMPLES_PER_CHUNK, rounding_mode="floor")
    new_chunk = new_bucket.clone()
    new_chunk[1:] |= part[1:] != part[:-1]
    chunk = torch.cumsum(new_chunk, 0) - 1  # 0 .. chunks-1
    largest = [torch.ones(k, dtype=torch.long, device=bucket.device).scatter_reduce(0, chunk, g, "amax")
               for g in (grid_h, grid_w)]  # fmt: skip
    counts, grid_h, grid_w = torch.stack((torch.bincount(chunk, minlength=k), *largest)).tolist()
    chunks = sum(1 for n in counts if n > 0)
    return counts[:chunks], list(zip(grid_h[:chunks], grid_w[:chunks], strict=True))


def _chunks(samples: torch.Tensor, budget: int) -> list[int]:
    """Split consecutive items with ``samples`` ``[K]`` work each into runs of about ``budget`` work."""
    start = torch.cumsum(samples, 0) - samples
    chunk_of = torch.div(start, budget, rounding_mode="floor")
    return torch.unique_consecutive(chunk_of, return_counts=True)[1].tolist()


def roi_align(
    input: torch.Tensor,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign, with ``torchvision.ops.roi_align``'s signature and semantics (vectorised, exact).

    input: ``[B, C, H, W]`` float feature map.
    boxes: ``Tensor[K, 5]`` rows ``(image index, x1, y1, x2, y2)``, or a list of ``B`` tensors ``[L, 4]``
        (``(x1, y1, x2, y2)`` of image ``i``), in input-image pixels. Image indices must lie in ``[0, B)``.
        Detached: no gradient flows to the boxes.
    output_size: ``oh`` (square) or ``(oh, ow)``.
    spatial_scale: feature-map cells per image pixel (1/stride: 1/4 for P2).
    sampling_ratio: sample points per bin side; ``<= 0`` is adaptive, ``ceil(box size / output size)``
        per box and axis.
    aligned: subtract half a cell from the scaled box so samples fall at cell centres (detectron2);
        False (default) is the original RoIAlign, with boxes at least 1x1 cell.
    Returns ``[K, C, oh, ow]`` in ``input``'s dtype, one patch per box in the order of ``boxes``
    (for a list: image 0's boxes first). Differentiable with respect to ``input``.

    Each output cell averages ``gh * gw`` bilinear samples; samples with ``y < -1`` or ``y > H`` (or x
    outside ``[-1, W]``) are 0 and still counted. Implementation: the feature map is copied once to
    channels-last rows ``[B*H*W, C]`` and every output cell becomes a bag of ``4 * gh * gw`` weighted
    rows reduced by one fused ``embedding_bag`` (adaptive grids: boxes are bucketed by grid size and padded
    with weight-0 samples); a ``torch.channels_last`` input skips the copy. On CUDA, where torchvision's
    compiled ops load, the call is delegated to them.
    """
    rois, oh, ow, scale = _check_pool_args(input, boxes, output_size, spatial_scale)
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    _, c, h, w = input.shape
    k = rois.shape[0]
    if k == 0 or c == 0 or h == 0 or w == 0:  # on an empty map every sample is outside: zeros
        return _constant([input], (k, c, oh, ow))
    tv = torchvision_ops()
    if tv is not None and input.is_cuda:
        # Its kernel reads the boxes in the input's dtype: half-precision maps go through float32.
        wide = input.to(rois.dtype)
        return tv.roi_align(wide, rois, (oh, ow), scale, sampling_ratio, aligned).to(input.dtype)

    rows = _channels_last_rows(input)
    image = rois[:, 0].long()
    geometry = _roi_geometry(rois, scale, oh, ow, sampling_ratio, aligned)
    grid_h, grid_w = geometry[4], geometry[5]
    # Adaptive grids differ per box: bucket the boxes by grid size rounded up to a power of 2, so padding
    # every box to its chunk's largest grid at most doubles the samples per axis. Each bucket is then
    # chunked so that the index and weight tensors stay bounded.
    rounded_h = 2 ** torch.ceil(torch.log2(grid_h.clamp(min=1).double())).long()
    rounded_w = 2 ** torch.ceil(torch.log2(grid_w.clamp(min=1).double())).long()
    bucket = rounded_h * (1 << 32) + rounded_w
    order = None
    if bool((bucket != bucket[0]).any()):  # always one bucket with a fixed sampling_ratio
        order = torch.argsort(bucket, stable=True)
        image, geometry, bucket = image[order], [t[order] for t in geometry], bucket[order]
        rounded_h, rounded_w = rounded_h[order], rounded_w[order]
    sizes, grids = _bucket_chunks(bucket, rounded_h * rounded_w * (oh * ow), geometry[4], geometry[5])
    pooled = [
        _roi_align_bucket(rows, *parts, gh, gw, h, w, oh, ow)
        for (gh, gw), parts in zip(grids, zip(*(t.split(sizes) for t in (image, *geometry)), strict=True),
                                   strict=True)
    ]  # fmt: skip
    out = pooled[0] if len(pooled) == 1 else torch.cat(pooled)
    out = out.view(k, oh, ow, c).permute(0, 3, 1, 2)
    if order is None:
        return out.contiguous()
    return input.new_empty((k, c, oh, ow)).index_copy(0, order, out)  # back to the order of the boxes


# --------------------------------------------------------------------------------------------------------
# matterport's sampler


def _crop_coordinates(start: torch.Tensor, end: torch.Tensor, size: int, limit: int) -> torch.Tensor:
    """crop_and_resize's sample coordinates along one axis: ``[K, size]`` from normalised ``[K]`` start and
    end on an axis of ``limit`` cells (TensorFlow's arithmetic: ``start * (limit - 1) + i * step`` with
    ``step = (end - start) * (limit - 1) / (size - 1)``; the centre when ``size == 1``)."""
    if size == 1:
        return (0.5 * (start + end) * (limit - 1))[:, None]
    steps = torch.arange(size, device=start.device, dtype=start.dtype)
    return (start * (limit - 1))[:, None] + steps * ((end - start) * (limit - 1) / (size - 1))[:, None]


def crop_and_resize(
    input: torch.Tensor,
    boxes: torch.Tensor,
    box_indices: torch.Tensor,
    crop_size,
    extrapolation_value: float = 0.0,
) -> torch.Tensor:
    """``tf.image.crop_and_resize`` (bilinear), the sampler matterport uses in ``PyramidROIAlign``.

    input: ``[B, C, H, W]`` float (TensorFlow's image is ``[B, H, W, C]``; the semantics are the same).
    boxes: ``[K, 4]`` float, **normalised** ``(y1, x1, y2, x2)``: 0 and 1 are the *centres* of the first and
        last pixel (row ``y1 * (H - 1)``). ``y1 > y2`` flips the crop. Our pixel boxes ``(x1, y1, x2, y2)``
        become these with ``mrcnn_edu.boxes.to_matterport_normalized(boxes, image_size)`` (matterport's
        ``norm_boxes``; the same normalised box is used on every pyramid level). Detached.
    box_indices: ``[K]`` integer image index of each box, in ``[0, B)``.
    crop_size: ``ch`` (square) or ``(ch, cw)``.
    extrapolation_value: the value of output cells whose sample falls outside ``[0, H-1] x [0, W-1]``.
    Returns ``[K, C, ch, cw]`` in ``input``'s dtype. Differentiable with respect to ``input``.

    Output row ``i`` samples ``y = y1 * (H-1) + i * (y2 - y1) * (H-1) / (ch-1)`` (``0.5 * (y1 + y2) * (H-1)``
    when ``ch == 1``), columns likewise: one bilinear sample per cell, the first and last rows exactly on the
    box's edges (corner-aligned), no averaging within a cell.
    """
    _check_features("input", input)
    check_tensor("boxes", boxes, ndim=2, last_dim=4, kind="float")
    k = boxes.shape[0]
    check_tensor("box_indices", box_indices, ndim=1, kind="int", length=k)
    ch, cw = _pair("crop_size", crop_size)
    b, c, h, w = input.shape
    for name, t in (("boxes", boxes), ("box_indices", box_indices)):
        if t.device != input.device:
            raise ValueError(f"{name} must be on the device of input ({input.device}), got {t.device}")
    if k > 0 and bool(((box_indices < 0) | (box_indices >= b)).any()):
        raise ValueError(
            f"box_indices must lie in [0, {b}), got values in "
            f"[{box_indices.min().item()}, {box_indices.max().item()}]"
        )
    if k == 0 or c == 0:
        return _constant([input], (k, c, ch, cw))
    if h == 0 or w == 0:
        return _constant([input], (k, c, ch, cw), extrapolation_value)

    coordinate = box_dtype(input.dtype)
    y1, x1, y2, x2 = boxes.detach().to(coordinate).unbind(1)
    ys, xs = _crop_coordinates(y1, y2, ch, h), _crop_coordinates(x1, x2, cw, w)  # [K, ch], [K, cw]
    y_inside = (ys >= 0) & (ys <= h - 1)  # False for NaN too
    x_inside = (xs >= 0) & (xs <= w - 1)
    y_index, y_weight = _neighbours(ys, y_inside, h)  # [K, ch, 2]
    x_index, x_weight = _neighbours(xs, x_inside, w)  # [K, cw, 2]
    y_index = y_index * w + (box_indices.long() * (h * w))[:, None, None]
    # [K, ch, cw, 2, 2]: one bag of 4 cells per output cell
    index = y_index[:, :, None, :, None] + x_index[:, None, :, None, :]
    weight = y_weight[:, :, None, :, None] * x_weight[:, None, :, None, :]
    out = _bag_sum(_channels_last_rows(input), index, weight, k * ch * cw)
    out = out.view(k, ch, cw, c).permute(0, 3, 1, 2)
    inside = (y_inside[:, :, None] & x_inside[:, None, :])[:, None]  # [K, 1, ch, cw]
    return torch.where(inside, out, extrapolation_value).contiguous()


# --------------------------------------------------------------------------------------------------------
# RoIPool


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` sends them to the even neighbour)."""
    whole = torch.trunc(v)
    return torch.where((v - whole).abs() == 0.5, whole + torch.sign(v), torch.round(v))


def _roi_pool_bin_edges(rois: torch.Tensor, scale: float, oh: int, ow: int, h: int, w: int):
    """RoIPool's bins of ``[K, 5]`` rois on an ``h x w`` map: int64 ``(row_start, row_end)`` ``[K, oh]`` and
    ``(col_start, col_end)`` ``[K, ow]``, ends exclusive, clipped to ``[0, h]`` / ``[0, w]``."""
    corners = _round_half_away(rois[:, 1:] * scale).long()  # [K, 4] whole cells x1, y1, x2, y2
    size_w = (corners[:, 2] - corners[:, 0] + 1).clamp(min=1)
    size_h = (corners[:, 3] - corners[:, 1] + 1).clamp(min=1)

    def bin_edges(first, size, bins, limit):  # [K] -> start, end [K, bins] in cells, clipped to the map
        # A correctly rounded division, as torchvision's kernels do: on CUDA, dividing by a Python number
        # multiplies by its reciprocal, whose last bit moves floor/ceil at whole cells (seen on an H200).
        step = (size.to(rois.dtype) / torch.full_like(size, bins, dtype=rois.dtype))[:, None]
        p = torch.arange(bins, device=rois.device, dtype=rois.dtype)
        start = torch.floor(p * step).long() + first[:, None]
        end = torch.ceil((p + 1) * step).long() + first[:, None]
        return start.clamp(0, limit), end.clamp(0, limit)

    return (*bin_edges(corners[:, 1], size_h, oh, h), *bin_edges(corners[:, 0], size_w, ow, w))


def roi_pool(input: torch.Tensor, boxes, output_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """RoIPool (Fast R-CNN), with ``torchvision.ops.roi_pool``'s signature and semantics.

    input: ``[B, C, H, W]`` float; boxes: ``Tensor[K, 5]`` ``(image index, x1, y1, x2, y2)`` or a list of
    ``B`` tensors ``[L, 4]``, in input-image pixels (detached); output_size: ``oh`` or ``(oh, ow)``;
    spatial_scale: 1/stride. Returns ``[K, C, oh, ow]``; the gradient of each output reaches the one cell
    that held its maximum.

    The scaled box corners are rounded to whole cells (halves away from zero) and the box, inclusive of its
    last row and column (``x2 - x1 + 1`` cells, at least 1), is split into bins of ``size / oh`` cells; bin
    ``ph`` covers rows ``floor(ph * bin_h)`` to ``ceil((ph + 1) * bin_h)`` (exclusive) from the box's first
    row, clipped to the map, and its value is the maximum over those cells; a bin left empty by clipping
    gives 0.
    Vectorised: every bin is a bag of its cells reduced by ``embedding_bag(mode="max")``.
    """
    rois, oh, ow, scale = _check_pool_args(input, boxes, output_size, spatial_scale)
    _, c, h, w = input.shape
    k = rois.shape[0]
    if k == 0 or c == 0 or h == 0 or w == 0:  # on an empty map every bin is empty: zeros
        return _constant([input], (k, c, oh, ow))

    row0, row1, col0, col1 = _roi_pool_bin_edges(rois, scale, oh, ow, h, w)
    rows_per_bin = (row1 - row0).clamp(min=0)[:, :, None].expand(k, oh, ow).reshape(-1)
    cols_per_bin = (col1 - col0).clamp(min=0)[:, None, :].expand(k, oh, ow).reshape(-1)
    first_row = row0[:, :, None].expand(k, oh, ow).reshape(-1)
    first_col = col0[:, None, :].expand(k, oh, ow).reshape(-1)
    base = (rois[:, 0].long() * (h * w)).repeat_interleave(oh * ow)

    # One bag per bin holding the indices of its cells; bins are chunked to bound the index tensor.
    cells = rows_per_bin * cols_per_bin
    table = _channels_last_rows(input)
    pooled = []
    sizes = _chunks(cells, _MAX_SAMPLES_PER_CHUNK)
    per_bin = (cells, first_row, first_col, cols_per_bin, base)
    for n, r0, c0, nc, b0 in zip(*(t.split(sizes) for t in per_bin), strict=True):
        bag_starts = torch.cumsum(n, 0) - n
        total = int(n.sum())
        bag = torch.repeat_interleave(torch.arange(n.shape[0], device=input.device), n, output_size=total)
        local = torch.arange(total, device=input.device) - bag_starts[bag]
        dy = torch.div(local, nc[bag], rounding_mode="floor")
        dx = local - dy * nc[bag]
        index = b0[bag] + (r0[bag] + dy) * w + c0[bag] + dx
        pooled.append(F.embedding_bag(index, table, bag_starts, mode="max"))  # empty bag -> 0
    out = pooled[0] if len(pooled) == 1 else torch.cat(pooled)
    return out.view(k, oh, ow, c).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------------------
# Feature pyramid


def assign_fpn_levels(
    boxes: torch.Tensor,
    k0: int = 4,
    canonical_size: float = 224,
    min_level: int = 2,
    max_level: int = 5,
    rounding: str = "round",
    eps: float = 1e-6,
    image_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """The FPN level each box is pooled from (FPN paper, eq. 1).

    boxes: ``[K, 4]`` ``(x1, y1, x2, y2)`` in input-image pixels.
    rounding: ``"round"`` gives ``k0 + round(log2(s / canonical_size))`` with ``tf.round``'s halves-to-even
        (matterport); ``"floor"`` gives ``floor(k0 + log2(s / canonical_size) + eps)`` (torchvision's
        ``LevelMapper``), where ``s = sqrt(box area)`` in pixels.
    image_size: None uses the pixel size above. Given ``(height, width)``, ``s`` is computed exactly as
        matterport does from its normalised boxes (:func:`mrcnn_edu.boxes.to_matterport_normalized`):
        ``s = sqrt(h_n * w_n) * sqrt(height * width)``. Matterport writes
        ``log2(sqrt(h_n * w_n) / (224 / sqrt(image_area)))``; for pixel boxes that is the box size in pixels
        up to its normalisation, ``h_n = (y2 - y1 - 1) / (height - 1)``: about one pixel less per side, which
        only matters for boxes within a pixel of a level boundary.
    Returns int64 ``[K]`` levels clamped to ``[min_level, max_level]``; degenerate boxes (zero or negative
    area, NaN) get ``min_level``.

    With the defaults: a 224-pixel box -> 4, 112 -> 3, 448 -> 5; a 180-pixel box is level 4 when rounded
    (log2(180/224) = -0.32) but 3 when floored.
    """
    check_boxes("boxes", boxes)
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' (matterport) or 'floor' (torchvision), got {rounding!r}")
    if not canonical_size > 0:
        raise ValueError(f"canonical_size must be positive, got {canonical_size!r}")
    if min_level > max_level:
        raise ValueError(f"min_level must be <= max_level, got min_level={min_level}, max_level={max_level}")
    if image_size is None:
        size = torch.sqrt(box_area(boxes))
    else:
        height, width = check_size("image_size", image_size)
        y1, x1, y2, x2 = to_matterport_normalized(boxes, (height, width)).unbind(1)
        size = torch.sqrt((y2 - y1).clamp(min=0) * (x2 - x1).clamp(min=0)) * math.sqrt(height * width)
    relative = torch.log2(size / canonical_size)
    if rounding == "round":
        level = k0 + torch.round(relative)
    else:
        level = torch.floor(k0 + relative + eps)
    return torch.nan_to_num(level, nan=min_level).clamp(min_level, max_level).long()


def pyramid_roi_align(
    features: Sequence[torch.Tensor],
    boxes,
    output_size,
    strides: Sequence[int] = (4, 8, 16, 32),
    sampling_ratio: int = 2,
    aligned: bool = False,
    rounding: str = "round",
    canonical_size: float = 224,
    k0: int = 4,
    method: str = "roi_align",
    image_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Pool every box from its FPN level (matterport's ``PyramidROIAlign``, torchvision's
    ``MultiScaleRoIAlign``).

    features: list of ``[B, C, Hl, Wl]`` maps P2, P3, ... in order (``features[i]`` is level ``i + 2``), same
        B, C, dtype and device.
    boxes: ``Tensor[K, 5]`` ``(image index, x1, y1, x2, y2)`` or a list of ``B`` tensors ``[L, 4]``, in
        input-image pixels (detached).
    output_size: ``oh`` or ``(oh, ow)``; strides: one per level (``spatial_scale = 1 / stride``).
    sampling_ratio, aligned: passed to :func:`roi_align`.
    rounding, canonical_size, k0: the level rule of :func:`assign_fpn_levels` (levels clamped to the
        available ``2 .. len(features) + 1``).
    method: ``"roi_align"`` (torchvision) or ``"crop_and_resize"`` (matterport): boxes normalised with
        :func:`mrcnn_edu.boxes.to_matterport_normalized` against ``image_size`` (required), sampled with
        :func:`crop_and_resize` (``sampling_ratio`` and ``aligned`` are then unused) and levels computed
        from the normalised boxes as matterport does.
    image_size: ``(height, width)`` of the input image; only for ``method="crop_and_resize"``.
    Returns ``[K, C, oh, ow]``, row ``i`` for box ``i`` in the input order (matterport sorts the boxes by
    level and un-sorts; here each level fills its rows in place). Differentiable with respect to features.
    """
    if not isinstance(features, (list, tuple)) or len(features) == 0:
        raise ValueError(f"features must be a non-empty list of [B, C, H, W] tensors, got {type(features)}")
    for i, f in enumerate(features):
        _check_features(f"features[{i}]", f)
        first = features[0]
        if f.shape[:2] != first.shape[:2] or f.dtype != first.dtype or f.device != first.device:
            raise ValueError(
                f"features[{i}] must share batch size, channels, dtype and device with features[0] "
                f"({tuple(first.shape[:2])}, {first.dtype}, {first.device}), got "
                f"({tuple(f.shape[:2])}, {f.dtype}, {f.device})"
            )
    if len(strides) != len(features) or any(not s > 0 for s in strides):
        raise ValueError(
            f"strides must hold one positive stride per feature map ({len(features)}), got {strides}"
        )
    if method not in ("roi_align", "crop_and_resize"):
        raise ValueError(f"method must be 'roi_align' or 'crop_and_resize', got {method!r}")
    if method == "crop_and_resize":
        if image_size is None:
            raise ValueError("image_size is required with method='crop_and_resize' (to normalise the boxes)")
        image_size = check_size("image_size", image_size)
    rois = _rois(features[0], boxes)
    oh, ow = _pair("output_size", output_size)
    k, c = rois.shape[0], features[0].shape[1]
    if k == 0:  # connected to every level, as torchvision's MultiScaleRoIAlign: all get a zero gradient
        return _constant(features, (0, c, oh, ow))

    levels = assign_fpn_levels(
        rois[:, 1:],
        k0=k0,
        canonical_size=canonical_size,
        min_level=2,
        max_level=len(features) + 1,
        rounding=rounding,
        image_size=image_size if method == "crop_and_resize" else None,
    )
    parts, order = [], []
    for i, (feature, stride) in enumerate(zip(features, strides, strict=True)):
        chosen = torch.nonzero(levels == i + 2).flatten()
        if chosen.numel() == 0:
            continue
        if method == "roi_align":
            parts.append(roi_align(feature, rois[chosen], (oh, ow), 1.0 / stride, sampling_ratio, aligned))
        else:
            normalised = to_matterport_normalized(rois[chosen, 1:], image_size)
            parts.append(crop_and_resize(feature, normalised, rois[chosen, 0].long(), (oh, ow)))
        order.append(chosen)
    # parts are grouped by level; the inverse permutation puts every box back at its own row
    return torch.cat(parts)[torch.argsort(torch.cat(order))]


# --------------------------------------------------------------------------------------------------------
# Where the samplers read: the geometry of one box, from the same helpers the ops use (for pictures/tests)


def _one_roi(box) -> torch.Tensor:
    """A single box ``[4]`` as a detached ``[1, 5]`` roi of image 0, at least float32."""
    check_tensor("box", box, ndim=1, last_dim=4, kind="float")
    box = box.detach().to(box_dtype(box.dtype))
    return torch.cat((box.new_zeros(1), box))[None]


def roi_align_sample_points(
    box: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Where :func:`roi_align` samples for one box.

    box: ``[4]`` float ``(x1, y1, x2, y2)`` in input-image pixels; the rest as in :func:`roi_align`.
    Returns ``[oh, ow, gh, gw, 2]`` (at least float32, on ``box``'s device): the ``(y, x)`` feature-map
    coordinates of sample ``(iy, ix)`` of bin ``(ph, pw)``, before border clamping (cell ``(r, c)`` holds its
    value at ``(r, c)``). ``gh, gw`` are the box's grid (``sampling_ratio``, or adaptive), possibly 0 for a
    degenerate box with ``aligned=True``. Inside the map, ``roi_align`` of a map whose value is its own x
    coordinate returns the mean of ``[..., 1]`` over each bin's samples.
    """
    roi = _one_roi(box)
    oh, ow = _pair("output_size", output_size)
    scale = _check_scale(spatial_scale)
    sampling_ratio = _check_sampling_ratio(sampling_ratio)
    top, left, bin_h, bin_w, grid_h, grid_w = _roi_geometry(roi, scale, oh, ow, sampling_ratio, aligned)
    gh, gw = int(grid_h[0]), int(grid_w[0])
    ys = _axis_coordinates(top, bin_h, grid_h, oh, gh)[0]  # [oh, gh]
    xs = _axis_coordinates(left, bin_w, grid_w, ow, gw)[0]  # [ow, gw]
    shape = (oh, ow, gh, gw)
    return torch.stack((ys[:, None, :, None].expand(shape), xs[None, :, None, :].expand(shape)), dim=-1)


def roi_align_bins(
    box: torch.Tensor, output_size, spatial_scale: float = 1.0, aligned: bool = False
) -> torch.Tensor:
    """The bins :func:`roi_align` averages over, for one box.

    box: ``[4]`` float ``(x1, y1, x2, y2)`` in input-image pixels; the rest as in :func:`roi_align`.
    Returns ``[oh, ow, 4]`` ``(y1, x1, y2, x2)`` of every bin in feature-map coordinates (the samples'
    coordinates: shifted by half a cell when ``aligned``, at least one cell wide when not). The samples of
    :func:`roi_align_sample_points` lie at the centres of a ``gh x gw`` split of each bin.
    """
    roi = _one_roi(box)
    oh, ow = _pair("output_size", output_size)
    top, left, bin_h, bin_w, _, _ = _roi_geometry(roi, _check_scale(spatial_scale), oh, ow, 1, aligned)
    ys = top + bin_h * torch.arange(oh + 1, device=roi.device, dtype=roi.dtype)  # oh + 1 edges
    xs = left + bin_w * torch.arange(ow + 1, device=roi.device, dtype=roi.dtype)
    shape = (oh, ow)
    return torch.stack(
        (ys[:-1, None].expand(shape), xs[None, :-1].expand(shape), ys[1:, None].expand(shape),
         xs[None, 1:].expand(shape)),
        dim=-1,
    )  # fmt: skip


def roi_pool_bins(box: torch.Tensor, output_size, feature_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """The cells :func:`roi_pool` takes the maximum over, for one box.

    box: ``[4]`` float ``(x1, y1, x2, y2)`` in input-image pixels; feature_size: ``(H, W)`` of the feature map
    (the bins are clipped to it); output_size, spatial_scale as in :func:`roi_pool`.
    Returns int64 ``[oh, ow, 4]`` ``(y_start, x_start, y_end, x_end)``: bin ``(ph, pw)`` covers rows
    ``y_start .. y_end - 1`` and columns ``x_start .. x_end - 1`` (ends exclusive); an empty bin
    (``end <= start`` after clipping) gives 0 in :func:`roi_pool`.
    """
    roi = _one_roi(box)
    oh, ow = _pair("output_size", output_size)
    h, w = check_size("feature_size", feature_size)
    row0, row1, col0, col1 = _roi_pool_bin_edges(roi, _check_scale(spatial_scale), oh, ow, h, w)
    shape = (oh, ow)
    return torch.stack(
        (row0[0, :, None].expand(shape), col0[0, None, :].expand(shape), row1[0, :, None].expand(shape),
         col1[0, None, :].expand(shape)),
        dim=-1,
    )  # fmt: skip


def crop_and_resize_sample_points(box: torch.Tensor, feature_size, crop_size) -> torch.Tensor:
    """Where :func:`crop_and_resize` samples for one box.

    box: ``[4]`` float normalised ``(y1, x1, y2, x2)`` as :func:`crop_and_resize` takes it (e.g. from
    :func:`mrcnn_edu.boxes.to_matterport_normalized`); feature_size: ``(H, W)`` of the map; crop_size:
    ``ch`` or ``(ch, cw)``. Returns ``[ch, cw, 2]`` (at least float32): the ``(y, x)`` feature-map coordinate
    of output cell ``(i, j)``'s single bilinear sample (samples outside ``[0, H-1] x [0, W-1]`` give the
    extrapolation value).
    """
    check_tensor("box", box, ndim=1, last_dim=4, kind="float")
    h, w = check_size("feature_size", feature_size)
    ch, cw = _pair("crop_size", crop_size)
    y1, x1, y2, x2 = box.detach().to(box_dtype(box.dtype))[:, None]
    ys, xs = _crop_coordinates(y1, y2, ch, h)[0], _crop_coordinates(x1, x2, cw, w)[0]
    return torch.stack((ys[:, None].expand(ch, cw), xs[None, :].expand(ch, cw)), dim=-1)
