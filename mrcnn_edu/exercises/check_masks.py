"""Check of ``paste_mask`` (exercise 11)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checking import _PLUS_ONE, _call, _Case, _close, _compare, _gen, _plus_one, _run_exact, _type_problem
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
