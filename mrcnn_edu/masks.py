"""Masks: pasting the head's small per-box masks into the full image ("unmolding"), and mask IoU.

The mask head does not predict a full-image mask. For each detected box it predicts an ``M x M`` grid
(``M = 28``, matterport's ``MASK_SHAPE``) of probabilities per class, laid out *inside the box*: mask cell
``(i, j)`` covers the ``1/M``-th of the box at row ``i``, column ``j``. To get an image mask the grid is
resized to the box's size in pixels, placed at the box, and thresholded (0.5). Matterport calls this step
``unmold_mask`` (round the box to integers, ``resize`` the mask to it, threshold, paste);
torchvision's ``paste_masks_in_image`` does the same on integer boxes after padding the mask with a ring of
zeros and enlarging the box to match, so the mask fades to 0 just outside the box instead of stopping sharply.

Resolution matters: a 28 x 28 grid stretched over a 400-pixel object is blocky (each cell covers about
14 x 14 pixels, smoothed by the bilinear interpolation), whereas a 10-pixel object is described by more cells
than it has pixels. Fine detail on large objects is lost either way; that is the price of a fixed ``M``.

Two implementations, tested to agree:

* :func:`paste_mask_loop` is what a student reads: one mask, integer box, ``F.interpolate``, slice-assign.
* :func:`paste_masks` is the fast path for training/evaluation on many boxes, on exact fractional boxes.
  Bilinear interpolation on a regular grid is *separable*: every image row reads (at most) two mask rows and
  every image column two mask columns, with "tent" weights ``max(0, 1 - |s - k|)`` where ``s`` is the
  continuous mask coordinate. So a pasted mask is two small matrix products ``Wy @ mask @ Wx^T``
  (``Wy``: ``[H, M]``, ``Wx``: ``[W, M]``), with no ``[H, W, 2]`` sampling grid as ``grid_sample`` needs.
  On the GPU all masks are done at once over the whole image (batched products, chunked to bound memory);
  on the CPU each mask is done over its box's pixels only, which is several times less work.

Pixel convention (see :mod:`mrcnn_edu.boxes`): pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``, its centre is
``(c + 0.5, r + 0.5)``. A pixel belongs to the pasted mask's footprint when its centre lies in the half-open
box ``[x1, x2) x [y1, y2)``; inside that footprint the mask is sampled at the pixel centre, with the mask's
edge cells extended up to the box edge (as ``F.interpolate(..., align_corners=False)`` does when it resizes).
Outside the footprint the result is 0.

Shape glossary
    N, N2: numbers of masks (one per box)
    M:     side of the predicted mask grid (28)
    H, W:  image height and width in pixels

Matterport vs torchvision: matterport thresholds at 0.5 (``>= 0.5``) and pastes binary masks; torchvision
returns the pasted probabilities and leaves thresholding to the caller. ``threshold=None`` gives the latter,
``threshold=0.5`` the former. Mapping boxes from the resized, padded network input back to the original image
is done before pasting (the molding stage); here boxes are already in the target image's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_boxes, check_same_device, check_size, check_tensor
from .boxes import box_dtype

__all__ = ["paste_masks", "paste_mask_loop", "pad_masks_and_snap_boxes", "mask_iou"]

#: Largest number of image pixels (masks x H x W) that :func:`paste_masks` computes at once on the GPU (its
#: whole-image path); bounds the float temporaries (about 128 MiB in float32) for many masks in a large image.
PASTE_CHUNK_PIXELS = 1 << 25


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold must be a number or None, got {threshold!r}")


def _tent_weights(
    lo: torch.Tensor, hi: torch.Tensor, first: torch.Tensor, length: int, m: int, dtype: torch.dtype
) -> torch.Tensor:
    """Bilinear weights ``[N, length, m]`` mapping ``m`` mask cells onto ``length`` image pixels of one axis.

    lo, hi: ``[N]`` box edges along the axis (pixels); first: ``[N]`` first pixel of each box's range.
    Row ``p`` holds the weights of the mask cells that pixel ``first + p`` reads; rows of pixels whose
    centre lies outside ``[lo, hi)`` are all zero.
    """
    centres = first[:, None] + torch.arange(length, device=lo.device, dtype=lo.dtype) + 0.5  # [N, length]
    lo, hi = lo[:, None], hi[:, None]
    inside = (centres >= lo) & (centres < hi)
    # Continuous mask coordinate of each pixel centre: cell k has its centre at k (align_corners=False).
    # Clamping to [0, m-1] extends the edge cells up to the box edge instead of fading to 0.
    s = ((centres - lo) / (hi - lo) * m - 0.5).clamp(0, m - 1)  # NaN for empty boxes, masked below
    cells = torch.arange(m, device=lo.device, dtype=lo.dtype)
    tent = (1 - (s[..., None] - cells).abs()).clamp(min=0)  # [N, length, m]
    zero = torch.zeros((), dtype=tent.dtype, device=tent.device)
    return torch.where(inside[..., None], tent, zero).to(dtype)


def _paste_in_boxes(values: torch.Tensor, coords: torch.Tensor, out: torch.Tensor, threshold) -> None:
    """Fill ``out`` box by box, computing each mask only over the pixels its box covers (CPU path)."""
    n, h, w = out.shape
    mh, mw = values.shape[1:]
    # Pixel ranges that surely hold every pixel centre inside each box (the weights zero the extra pixels).
    limits = torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
    low = (coords[:, :2] - 0.5).floor().clamp(min=0)
    high = torch.minimum((coords[:, 2:] + 0.5).ceil(), limits)
    size = (high - low).clamp(min=0)
    if size.numel() == 0 or size.max() == 0:
        return
    # All weights at once, over the longest range; each box then uses the first rows of its own.
    wx = _tent_weights(coords[:, 0], coords[:, 2], low[:, 0], int(size[:, 0].max()), mw, values.dtype)
    wy = _tent_weights(coords[:, 1], coords[:, 3], low[:, 1], int(size[:, 1].max()), mh, values.dtype)
    for i, (c0, r0, cols, rows) in enumerate(torch.cat((low, size), dim=1).long().tolist()):
        if rows == 0 or cols == 0:
            continue
        pasted = wy[i, :rows] @ values[i] @ wx[i, :cols].T  # [rows, cols]
        out[i, r0 : r0 + rows, c0 : c0 + cols] = pasted >= threshold if threshold is not None else pasted


def _paste_full_image(values: torch.Tensor, coords: torch.Tensor, out: torch.Tensor, threshold) -> None:
    """Fill ``out`` with whole-image batched products, :data:`PASTE_CHUNK_PIXELS` at a time (GPU path)."""
    n, h, w = out.shape
    mh, mw = values.shape[1:]
    chunk = max(1, PASTE_CHUNK_PIXELS // (h * w))
    for start in range(0, n, chunk):
        b = coords[start : start + chunk]
        origin = torch.zeros_like(b[:, 0])
        wy = _tent_weights(b[:, 1], b[:, 3], origin, h, mh, values.dtype)  # [n, H, Mh]
        wx = _tent_weights(b[:, 0], b[:, 2], origin, w, mw, values.dtype)  # [n, W, Mw]
        pasted = wy @ values[start : start + chunk] @ wx.transpose(1, 2)  # [n, H, W]
        out[start : start + chunk] = pasted >= threshold if threshold is not None else pasted


def paste_masks(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_size: Sequence[int],
    threshold: float | None = None,
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """Paste each ``M x M`` box-relative mask into an ``H x W`` image at its box (bilinear, vectorised).

    masks: ``[N, M, M]`` (or ``[N, Mh, Mw]``) mask values in box coordinates, usually probabilities
        (``sigmoid`` of the mask head's logits for each box's class). Bool/integer masks are read as 0/1.
    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` pixels in the target image, on the device of ``masks``.
        Boxes may be fractional, extend past the image (only the part inside is pasted) or be empty/tiny: a
        box whose half-open extent contains no pixel centre pastes nothing (all-zero result). NaN or
        infinite coordinates raise ValueError.
    image_size: ``(H, W)`` of the target image.
    threshold: None returns the interpolated values (torchvision); a number returns ``values >= threshold``
        as a bool mask (matterport uses 0.5).
    check_finite: False skips the NaN check of ``boxes``, a read of the device's result by the host (a GPU
        waits for it), for a caller whose boxes are finite by construction (the model's: ``detect`` drops
        NaN boxes).
    Returns ``[N, H, W]``: float (the dtype of ``masks``, float32 for non-float masks), or bool with a
    threshold. Pixels outside each box are 0 / False.

    On CPU each mask is computed over its own box's pixels only (one small product per box: far less
    arithmetic than the whole image). On other devices all masks are computed over the whole image in a few
    batched products (no per-box kernel launches), in chunks of at most :data:`PASTE_CHUNK_PIXELS` output
    pixels, so thresholded pasting of many masks keeps memory low. Both apply the same formula.
    """
    check_tensor("masks", masks, ndim=3)
    check_boxes("boxes", boxes)
    h, w = check_size("image_size", image_size)
    _check_threshold(threshold)
    n, mh, mw = masks.shape
    if boxes.shape[0] != n:
        raise ValueError(f"boxes must have one row per mask ({n}), got shape {tuple(boxes.shape)}")
    check_same_device(masks=masks, boxes=boxes)
    if check_finite and n and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"boxes must be finite, got {boxes[~torch.isfinite(boxes).all(1)].tolist()[:3]}")
    dtype = masks.dtype if masks.is_floating_point() else torch.float32
    out = torch.zeros((n, h, w), dtype=torch.bool if threshold is not None else dtype, device=masks.device)
    if n == 0 or h == 0 or w == 0 or mh == 0 or mw == 0:
        return out
    values = masks.to(dtype)
    # Box coordinates in at least float32: half precision cannot address pixels of large images.
    coords = boxes.to(device=masks.device, dtype=box_dtype(boxes.dtype))
    paste = _paste_in_boxes if masks.device.type == "cpu" else _paste_full_image
    paste(values, coords, out, threshold)
    return out


def paste_mask_loop(
    mask: torch.Tensor,
    box: torch.Tensor | Sequence[float],
    image_size: Sequence[int],
    threshold: float | None = None,
) -> torch.Tensor:
    """Paste one mask the readable way (matterport's ``unmold_mask``): round, resize, paste.

    mask: ``[M, M]`` (or ``[Mh, Mw]``) mask values inside the box (probabilities).
    box: 4 numbers ``(x1, y1, x2, y2)`` in pixels (a ``[4]`` tensor or a sequence).
    image_size: ``(H, W)``.
    threshold: None returns values; a number returns ``values >= threshold`` as bool.
    Returns ``[H, W]``, float (bool with a threshold).

    Each box edge is rounded to the nearest pixel boundary (halves round down, so the pasted pixels are
    exactly those whose centres lie inside the box, the same footprint :func:`paste_masks` fills). The mask
    is resized to the rounded box with bilinear ``F.interpolate`` and the part inside the image is copied in.
    On integer boxes this equals :func:`paste_masks` up to float rounding; on fractional boxes the rounding
    stretches the mask over a slightly different width (up to one pixel), so values differ slightly near
    edges and the thresholded masks agree in all but a few border pixels.
    """
    check_tensor("mask", mask, ndim=2)
    h, w = check_size("image_size", image_size)
    _check_threshold(threshold)
    box_values = box.tolist() if isinstance(box, torch.Tensor) else list(box)
    if len(box_values) != 4:
        raise ValueError(f"box must hold 4 numbers (x1, y1, x2, y2), got {box!r}")
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    out = torch.zeros((h, w), dtype=dtype, device=mask.device)
    x1, y1, x2, y2 = (math.ceil(float(v) - 0.5) for v in box_values)
    box_w, box_h = x2 - x1, y2 - y1
    if box_w > 0 and box_h > 0 and mask.numel() > 0:
        resized = F.interpolate(mask.to(dtype)[None, None], size=(box_h, box_w), mode="bilinear",
                                align_corners=False)[0, 0]
        # Only the part of the box inside the image is pasted.
        left, top, right, bottom = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if left < right and top < bottom:
            out[top:bottom, left:right] = resized[top - y1 : bottom - y1, left - x1 : right - x1]
    return out >= threshold if threshold is not None else out


def pad_masks_and_snap_boxes(
    masks: torch.Tensor, boxes: torch.Tensor, padding: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's pasting geometry, as inputs for :func:`paste_masks`.

    masks: ``[N, M, M]`` values inside the boxes; boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``.
    padding: cells of zeros added around every mask (torchvision: 1).
    Returns ``(padded [N, M + 2p, M + 2p], snapped [N, 4])``, the boxes in at least float32
    (:func:`mrcnn_edu.boxes.box_dtype`).

    torchvision (``paste_masks_in_image``) surrounds each mask with a ring of zeros and enlarges its box
    about the centre by ``(M + 2p) / M`` to match, so the pasted mask fades to 0 across the box edge instead
    of stopping at it. The enlarged corners are truncated to whole pixels (toward zero) and the mask is
    resized to ``x2 - x1 + 1`` by ``y2 - y1 + 1`` pixels (at least 1) starting at the top-left corner: a
    box that ends on pixel ``x2`` covers it. ``paste_masks(padded, snapped, ...)`` then pastes exactly what
    torchvision pastes (the same bilinear resize, up to float rounding).
    """
    check_tensor("masks", masks, ndim=3)
    check_boxes("boxes", boxes)
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(
            f"boxes must have one row per mask ({masks.shape[0]}), got shape {tuple(boxes.shape)}"
        )
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    scale = (masks.shape[-1] + 2 * padding) / masks.shape[-1]
    padded = F.pad(masks, (padding,) * 4)
    boxes = boxes.to(box_dtype(boxes.dtype))  # half precision would truncate to the wrong pixel
    # The same float32 operations, in the same order, as torchvision, so the truncation agrees.
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    x1, y1 = (cx - half_w).trunc(), (cy - half_h).trunc()
    x2, y2 = (cx + half_w).trunc(), (cy + half_h).trunc()
    width = (x2 - x1 + 1).clamp(min=1)
    height = (y2 - y1 + 1).clamp(min=1)
    return padded, torch.stack((x1, y1, x1 + width, y1 + height), dim=1)


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binary masks (as ``pycocotools.mask.iou`` with ``iscrowd = 0``).

    masks1: ``[N, H, W]``, masks2: ``[N2, H, W]``; non-zero pixels are "inside" (bool, integer or float).
    Returns float32 ``[N, N2]``; a pair of two empty masks has IoU 0.
    Intersections are one matrix product of the flattened masks (exact: counts below 2**24 in float32,
    float64 beyond).
    """
    check_tensor("masks1", masks1, ndim=3)
    check_tensor("masks2", masks2, ndim=3)
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(
            f"masks1 and masks2 must have the same (H, W), got {tuple(masks1.shape[1:])} and "
            f"{tuple(masks2.shape[1:])}"
        )
    pixels = masks1.shape[1] * masks1.shape[2]
    dtype = torch.float32 if pixels < (1 << 24) else torch.float64
    a = (masks1 != 0).reshape(masks1.shape[0], pixels).to(dtype)
    b = (masks2 != 0).reshape(masks2.shape[0], pixels).to(dtype)
    inter = a @ b.T  # [N, N2]
    union = a.sum(dim=1)[:, None] + b.sum(dim=1)[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.to(torch.float32)
