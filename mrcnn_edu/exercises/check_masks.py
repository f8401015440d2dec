"""Checks of ``paste_mask`` (pasting a mask into the image) and ``mask_target`` (cutting one out)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .check_targets import _rectangle_masks
from .checking import (
    _PLUS_ONE,
    _call,
    _Case,
    _close,
    _compare,
    _gen,
    _plus_one,
    _random_boxes,
    _run_exact,
    _type_problem,
)
from .swap import _ORIGINALS, _REF


def _paste_other(mask, box, size, mode="bilinear", align_corners=False, rounding=None, transpose=False):
    """Pasting with a mistake: another interpolation, another rounding of the box."""
    h, w = size
    out = torch.zeros((h, w))
    rounding = rounding or (lambda v: math.ceil(v - 0.5))
    x1, y1, x2, y2 = (rounding(float(v)) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        return out
    src = mask.T if transpose else mask
    kwargs = {"align_corners": align_corners} if mode == "bilinear" else {}
    resized = F.interpolate(src.float()[None, None], size=(bh, bw), mode=mode, **kwargs)[0, 0]
    left, top, right, bottom = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if left < right and top < bottom:
        out[top:bottom, left:right] = resized[top - y1 : bottom - y1, left - x1 : right - x1]
    return out


def _check_paste_mask(fn) -> str:
    ref = _REF["paste_mask"]
    exact = _ORIGINALS["paste_mask"]["paste_masks"]
    names = ("mask", "box", "image_size")
    corner = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    fixed = [
        _Case(
            "a 2 x 2 mask on a 4 x 2 box",
            (corner, torch.tensor([1.0, 2, 5, 4]), (6, 7)),
            names=names,
            note="box 4 wide, 2 high at column 1, row 2; the mask's top-right cell is 1, resized bilinearly",
        ),
        _Case(
            "a box partly outside the image",
            (torch.rand(3, 3, generator=_gen(11)), torch.tensor([-2.0, -1, 4, 3]), (4, 5)),
            names=names,
            note="only the part inside is pasted",
        ),
        _Case(
            "a box outside the image",
            (corner, torch.tensor([10.0, 10, 14, 14]), (4, 4)),
            names=names,
            note="nothing to paste: all zeros",
        ),
    ]
    g = _gen(12)
    random = []
    for _ in range(4):
        xy = torch.randint(-2, 8, (2,), generator=g).float()
        wh = torch.randint(2, 9, (2,), generator=g).float()
        random.append(
            _Case("", (torch.rand(5, 5, generator=g), torch.cat((xy, xy + wh)), (10, 12)), names=names)
        )
    fractional = []
    for _ in range(3):
        xy = torch.rand(2, generator=g) * 6
        wh = torch.rand(2, generator=g) * 6 + 2
        fractional.append(
            _Case(
                "fractional box",
                (torch.rand(4, 4, generator=g), torch.cat((xy, xy + wh)), (10, 12)),
                names=names,
            )
        )

    def variants(case, expected):
        mask, box, size = case.args
        yx = box[[1, 0, 3, 2]]
        return [
            (_PLUS_ONE, lambda: ref(mask, _plus_one(box), size)),
            (
                "x and y are swapped: box is (x1, y1, x2, y2); rows of the image are y, columns x.",
                lambda: ref(mask, yx, size),
            ),
            (
                "the mask is transposed: mask[i, j] is row i (y), column j (x) inside the box.",
                lambda: ref(mask.T, box, size),
            ),
            (
                "use align_corners=False: mask cells are squares covering the box, not points on its "
                "corners.",
                lambda: _paste_other(mask, box, size, align_corners=True),
            ),
            (
                "use bilinear interpolation (mode='bilinear'), not nearest.",
                lambda: _paste_other(mask, box, size, mode="nearest"),
            ),
            (
                "round the box edges to the nearest pixel (math.ceil(v - 0.5)), not down with int().",
                lambda: _paste_other(mask, box, size, rounding=math.floor),
            ),
            (
                "return the pasted values (floats), not a thresholded mask: thresholding comes later.",
                lambda: (ref(mask, box, size) >= 0.5).float(),
            ),
        ]

    summary = _run_exact(
        "paste_mask",
        fn,
        ref,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-5,
        variants=variants,
        shape_hint="The result is the whole image: [H, W].",
    )
    for i, case in enumerate(fractional):
        where = f"fractional case {i + 1} of {len(fractional)}"
        got = _call(fn, "paste_mask", case, where)
        mask, box, size = case.args
        sampled = exact(mask[None], box[None], size)[0]
        rounded = ref(*case.args)
        if _type_problem(got, rounded) is None and (
            _close(got, rounded, 1e-5, 1e-5) or _close(got, sampled, 1e-5, 1e-5)
        ):
            continue
        _compare(
            "paste_mask", case, where, got, rounded, atol=1e-5, rtol=1e-5, variants=variants(case, rounded)
        )
    return summary.replace(" cases agree", f" cases (and {len(fractional)} fractional boxes) agree")


# --------------------------------------------------------------------------------------------------------
# mask_target


def _mask_target_reference(gt_mask, roi, mask_size=28):
    one = torch.zeros(1, dtype=torch.long)
    return _REF["mask_target"](gt_mask[None], roi[None], one, mask_size)[0]


def _soft_crop(gt_mask, roi, m, aligned=False):
    rois = torch.cat((roi.new_zeros(1), roi))[None]
    return _REF["roi_align"](gt_mask[None, None].float(), rois, (m, m), 1.0, -1, aligned)[0, 0]


def _check_mask_target(fn) -> str:
    names = ("gt_mask", "roi", "mask_size")
    square = torch.zeros(16, 16, dtype=torch.uint8)
    square[4:12, 2:10] = 1
    half = torch.zeros(4, 4, dtype=torch.uint8)
    half[:, :2] = 1
    triangle = _triangle((20, 24), (4.0, 2.0, 20.0, 18.0))
    fixed = [
        _Case(
            "the ROI is the object's box",
            (square, torch.tensor([2.0, 4, 10, 12]), 4),
            names=names,
            note="every sample lies inside the object: all ones",
        ),
        _Case(
            "a sample exactly on the edge",
            (half, torch.tensor([0.0, 0, 4, 4]), 4),
            names=names,
            note="a cell holds its value at its index (x = c); with aligned=False the samples sit at "
            "x = 0.5, 1.5, 2.5, 3.5: x = 1.5 lies halfway between a 1 (column 1) and a 0 (column 2), reads "
            "0.5, and 0.5 >= 0.5 gives 1",
        ),
        _Case(
            "a triangle (not symmetric: transposes show)",
            (triangle, torch.tensor([4.0, 2, 20, 18]), 7),
            names=names,
            note="the lower-left triangle of the ROI",
        ),
        _Case(
            "an ROI larger than the object, partly outside the image",
            (square, torch.tensor([-4.0, 0, 12, 16]), 8),
            names=names,
            note="the ROI's left quarter lies outside the image (samples there read 0)",
        ),
    ]
    g = _gen(18)
    random = []
    for k in range(4):
        box = _random_boxes(1, g, extent=14.0, min_size=6.0)[0]
        mask = _triangle((24, 24), tuple(box.tolist()))
        roi = box + torch.randn(4, generator=g) * 2
        roi[2:] = torch.maximum(roi[2:], roi[:2] + 2)
        random.append(_Case("", (mask, roi, (7, 14)[k % 2]), names=names))

    def variants(case, expected):
        gt_mask, roi, m = case.args
        whole = F.interpolate(gt_mask[None, None].float(), size=(m, m), mode="bilinear", align_corners=False)
        x1, y1, x2, y2 = (int(math.floor(v)) for v in roi.tolist())
        return [
            (
                "you resized the whole image's mask; cut out the ROI first (roi_align of the mask at the "
                "ROI).",
                lambda: (whole[0, 0] >= 0.5).float(),
            ),
            (
                "the target is binary: 1.0 where the cut-out value is >= 0.5, else 0.0 (you kept the soft "
                "values).",
                lambda: _soft_crop(gt_mask, roi, m),
            ),
            (
                "threshold with >= 0.5 (a sample halfway between inside and outside counts as inside); you "
                "used > 0.5.",
                lambda: (_soft_crop(gt_mask, roi, m) > 0.5).float(),
            ),
            (
                "use aligned=False (the original RoIAlign, as the model's targets); you shifted by half a "
                "pixel.",
                lambda: (_soft_crop(gt_mask, roi, m, aligned=True) >= 0.5).float(),
            ),
            ("the target is transposed: rows are y, columns x.", lambda: expected.T),
            (
                "RoIAlign samples the mask at the ROI's exact (fractional) position; you cropped whole "
                "pixels and resized them with F.interpolate.",
                lambda: _pixel_crop(gt_mask, (x1, y1, x2, y2), m),
            ),
        ]

    return _run_exact(
        "mask_target",
        fn,
        _mask_target_reference,
        fixed,
        random,
        atol=0.0,
        rtol=0.0,
        variants=variants,
        shape_hint="The result is one [mask_size, mask_size] target.",
    )


def _triangle(size, box) -> torch.Tensor:
    """A full-image 0/1 mask ``[H, W]``: the lower-left triangle of ``box``."""
    return _rectangle_masks(torch.tensor([box], dtype=torch.float32), size)[0]


def _pixel_crop(gt_mask, corners, m) -> torch.Tensor:
    """The mask cropped at whole pixels (zeros outside the image), resized with F.interpolate, thresholded."""
    x1, y1, x2, y2 = corners
    h, w = gt_mask.shape
    crop = torch.zeros(max(y2 - y1, 1), max(x2 - x1, 1))
    top, left, bottom, right = max(y1, 0), max(x1, 0), min(y2, h), min(x2, w)
    if top < bottom and left < right:
        crop[top - y1 : bottom - y1, left - x1 : right - x1] = gt_mask[top:bottom, left:right].float()
    resized = F.interpolate(crop[None, None], size=(m, m), mode="bilinear", align_corners=False)[0, 0]
    return (resized >= 0.5).float()
