"""Checks of ``roi_pool`` (Fast R-CNN's quantised pooling), ``crop_and_resize`` (TensorFlow's, matterport's
sampler) and ``assign_fpn_levels`` (which pyramid level pools a box).

The known-wrong variants are small loop implementations written here with a mistake switched on; with every
switch at its default they compute the right answer.
"""

from __future__ import annotations

import math

import torch

from .check_roi_align import _ramp
from .checking import _Case, _gen, _random_boxes, _run_exact
from .swap import _REF

# --------------------------------------------------------------------------------------------------------
# roi_pool


def _round_away(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _roi_pool_with(x, boxes, size, scale, *, rounding=_round_away, plus_one=True, reduce="max", bins="floor",
                   empty=0.0, from_zero=False):  # fmt: skip
    """RoIPool with a mistake switched on (the defaults give the right answer)."""
    oh, ow = size
    _, c, h, w = x.shape
    out = torch.zeros(boxes.shape[0], c, oh, ow, dtype=x.dtype)
    for k, (b, *corners) in enumerate(boxes.tolist()):
        x1, y1, x2, y2 = (rounding(v * scale) for v in corners)
        extra = 1 if plus_one else 0
        bw, bh = max(x2 - x1 + extra, 1), max(y2 - y1 + extra, 1)
        for ph in range(oh):
            for pw in range(ow):
                if bins == "floor":
                    r0, r1 = math.floor(ph * bh / oh), math.ceil((ph + 1) * bh / oh)
                    c0, c1 = math.floor(pw * bw / ow), math.ceil((pw + 1) * bw / ow)
                else:  # both ends rounded to the nearest cell
                    r0, r1 = round(ph * bh / oh), round((ph + 1) * bh / oh)
                    c0, c1 = round(pw * bw / ow), round((pw + 1) * bw / ow)
                r0, r1 = min(max(r0 + y1, 0), h), min(max(r1 + y1, 0), h)
                c0, c1 = min(max(c0 + x1, 0), w), min(max(c1 + x1, 0), w)
                cells = x[int(b), :, r0:r1, c0:c1].reshape(c, -1)
                if cells.shape[1] == 0:
                    out[k, :, ph, pw] = empty
                elif reduce == "max":
                    value = cells.amax(dim=1)
                    out[k, :, ph, pw] = value.clamp(min=0) if from_zero else value
                else:
                    out[k, :, ph, pw] = cells.mean(dim=1)
    return out


def _check_roi_pool(fn) -> str:
    ref = _REF["roi_pool"]
    names = ("input", "boxes", "output_size")
    ramp = _ramp()[None]  # [1, 1, 5, 5], value 5 y + x
    fixed = [
        _Case(
            "5 x 5 ramp, value 5 y + x",
            (ramp, torch.tensor([[0.0, 1, 1, 3, 3]]), (2, 2)),
            {"spatial_scale": 1.0},
            names,
            "the box covers cells 1..3 both ways (3 x 3, both ends included); bins of 1.5 cells become rows "
            "1-2 and 2-3 (floor / ceil), so they overlap; the max of a bin is its bottom-right cell: 5 * 2 "
            "+ 2 = 12, ...",
        ),
        _Case(
            "halves round away from zero",
            (ramp, torch.tensor([[0.0, 1, 1, 5, 5]]), (2, 2)),
            {"spatial_scale": 0.5},
            names,
            "scaled, the box is (0.5, 0.5, 2.5, 2.5): it rounds to (1, 1, 3, 3) as C's round does; "
            "torch.round (halves to even) would give (0, 0, 2, 2)",
        ),
        _Case(
            "negative values, a box past the map's edge",
            (-1 - ramp, torch.tensor([[0.0, 1, 1, 8, 8]]), (4, 4)),
            {"spatial_scale": 1.0},
            names,
            "8 x 8 cells from (1, 1) in bins of 2: the last bins lie outside the 5 x 5 map and are empty "
            "(0); the others hold negative maxima (a max that starts from 0 would give 0)",
        ),
        _Case(
            "two images",
            (torch.cat((ramp, 100 - ramp)), torch.tensor([[1.0, 0, 0, 4, 4], [0, 0, 0, 4, 4]]), (1, 2)),
            {"spatial_scale": 1.0},
            names,
            "column 0 of boxes is the image index: box 0 reads image 1 (100 minus the ramp)",
        ),
        _Case("no boxes", (ramp, torch.zeros(0, 5), (2, 2)), {"spatial_scale": 1.0}, names, "[0, 1, 2, 2]"),
    ]
    g = _gen(15)
    random = []
    for k in range(4):
        feats = torch.randn(2, 3, 8, 10, generator=g)
        b = _random_boxes(3, g, extent=(12.0, 24.0)[k % 2], min_size=1.0)
        index = torch.randint(0, 2, (3, 1), generator=g).float()
        kwargs = {"spatial_scale": (1.0, 0.5)[k % 2]}
        random.append(_Case("", (feats, torch.cat((index, b), 1), ((2, 3), (3, 3))[k // 2]), kwargs, names))

    def variants(case, expected):
        x, boxes, size = case.args
        s = case.kwargs["spatial_scale"]
        return [
            (
                "halves round away from zero (C's round, math.floor(v + 0.5) for v >= 0); torch.round and "
                "Python's round send them to the even neighbour (2.5 -> 2).",
                lambda: _roi_pool_with(x, boxes, size, s, rounding=lambda v: int(round(v))),
            ),
            (
                "round the scaled corners to the nearest cell; you cut them down (floor / int()).",
                lambda: _roi_pool_with(x, boxes, size, s, rounding=math.floor),
            ),
            (
                "the box includes its last row and column: x2 - x1 + 1 cells (RoIPool's corners are cells, "
                "not edges).",
                lambda: _roi_pool_with(x, boxes, size, s, plus_one=False),
            ),
            (
                "RoIPool takes the maximum of each bin, not the average.",
                lambda: _roi_pool_with(x, boxes, size, s, reduce="mean"),
            ),
            (
                "a bin starts at floor(ph * h / oh) and ends at ceil((ph + 1) * h / oh); you rounded both "
                "ends.",
                lambda: _roi_pool_with(x, boxes, size, s, bins="round"),
            ),
            (
                "your maximum starts from 0: a bin of negative values must give its (negative) maximum.",
                lambda: _roi_pool_with(x, boxes, size, s, from_zero=True),
            ),
            (
                "an empty bin (outside the map) gives 0.",
                lambda: _roi_pool_with(x, boxes, size, s, empty=-math.inf),
            ),
            (
                "spatial_scale was ignored: multiply the box by it to get feature-map cells.",
                lambda: ref(x, boxes, size, 1.0),
            ),
            (
                "x and y are swapped: boxes are (index, x1, y1, x2, y2) and the map is [B, C, H, W].",
                lambda: ref(x, boxes[:, [0, 2, 1, 4, 3]], size, s),
            ),
        ]

    return _run_exact(
        "roi_pool",
        fn,
        ref,
        fixed,
        random,
        atol=1e-6,
        rtol=1e-6,
        variants=variants,
        shape_hint="The result is [K, C, oh, ow].",
    )


# --------------------------------------------------------------------------------------------------------
# crop_and_resize


def _crop_with(image, boxes, indices, size, extrapolation, *, cells="H-1", nearest=False, clamp=False,
               centre=True, index_used=True):  # fmt: skip
    """crop_and_resize with a mistake switched on (the defaults give the right answer)."""
    ch, cw = size
    _, c, h, w = image.shape
    out = torch.zeros(boxes.shape[0], c, ch, cw, dtype=image.dtype)

    def coordinates(start, end, n, limit):
        span = limit - 1 if cells == "H-1" else limit
        if n == 1:
            return [(0.5 * (start + end) if centre else start) * span]
        return [start * span + i * (end - start) * span / (n - 1) for i in range(n)]

    for k, (y1, x1, y2, x2) in enumerate(boxes.tolist()):
        im = image[int(indices[k]) if index_used else 0]
        for i, y in enumerate(coordinates(y1, y2, ch, h)):
            for j, x in enumerate(coordinates(x1, x2, cw, w)):
                if not (0 <= y <= h - 1 and 0 <= x <= w - 1):
                    if not clamp:
                        out[k, :, i, j] = extrapolation
                        continue
                    y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
                if nearest:
                    out[k, :, i, j] = im[:, int(round(y)), int(round(x))]
                    continue
                y0, x0 = int(math.floor(y)), int(math.floor(x))
                y1_, x1_ = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                ly, lx = y - y0, x - x0
                out[k, :, i, j] = (
                    (1 - ly) * (1 - lx) * im[:, y0, x0] + (1 - ly) * lx * im[:, y0, x1_]
                    + ly * (1 - lx) * im[:, y1_, x0] + ly * lx * im[:, y1_, x1_]
                )  # fmt: skip
    return out


def _check_crop_and_resize(fn) -> str:
    ref = _REF["crop_and_resize"]
    names = ("image", "boxes", "box_indices", "crop_size")
    ramp = _ramp()[None]  # [1, 1, 5, 5]
    one = torch.zeros(1, dtype=torch.long)
    fixed = [
        _Case(
            "the whole 5 x 5 ramp, a 5 x 5 crop",
            (ramp, torch.tensor([[0.0, 0, 1, 1]]), one, (5, 5)),
            {"extrapolation_value": 0.0},
            names,
            "0 and 1 are the centres of the first and last pixel: each sample lands on a cell, the crop is "
            "the map itself",
        ),
        _Case(
            "a 3 x 3 crop of the top half",
            (ramp, torch.tensor([[0.0, 0, 0.5, 1]]), one, (3, 3)),
            {"extrapolation_value": 0.0},
            names,
            "rows y = 0, 1, 2 (0.5 * (5 - 1) = 2 is the last), columns x = 0, 2, 4",
        ),
        _Case(
            "crop_size 1 samples the centre",
            (ramp, torch.tensor([[0.25, 0.25, 0.75, 1.0]]), one, (1, 1)),
            {"extrapolation_value": 0.0},
            names,
            "y = 0.5 * (0.25 + 0.75) * 4 = 2, x = 0.5 * (0.25 + 1) * 4 = 2.5: 5 * 2 + 2.5 = 12.5",
        ),
        _Case(
            "partly outside, extrapolation_value -1",
            (ramp, torch.tensor([[-0.25, 0, 0.75, 1]]), one, (3, 2)),
            {"extrapolation_value": -1.0},
            names,
            "rows y = -1, 1, 3: the first row is outside the map and gives -1",
        ),
        _Case(
            "a flipped box, two images",
            (torch.cat((ramp, -ramp)), torch.tensor([[1.0, 0, 0, 1], [0, 0, 1, 1]]), torch.tensor([1, 0]),
             (2, 2)),
            {"extrapolation_value": 0.0},
            names,
            "y1 > y2 flips the crop upside down; box 0 reads image 1 (minus the ramp)",
        ),  # fmt: skip
        _Case(
            "no boxes",
            (ramp, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (2, 2)),
            {"extrapolation_value": 0.0},
            names,
            "an empty [0, 1, 2, 2]",
        ),
    ]
    g = _gen(16)
    random = []
    for k in range(4):
        image = torch.randn(2, 2, 6, 7, generator=g)
        corners = torch.rand(3, 2, 2, generator=g) * 1.4 - 0.2
        boxes = torch.cat((corners[:, 0], corners[:, 1]), dim=1)  # (y1, x1, y2, x2), either way round
        indices = torch.randint(0, 2, (3,), generator=g)
        kwargs = {"extrapolation_value": (0.0, -1.0)[k % 2]}
        random.append(_Case("", (image, boxes, indices, ((3, 4), (5, 5))[k // 2]), kwargs, names))

    def variants(case, expected):
        image, boxes, indices, size = case.args
        e = case.kwargs["extrapolation_value"]
        return [
            (
                "boxes are (y1, x1, y2, x2) (TensorFlow's order); you read them as (x1, y1, x2, y2).",
                lambda: ref(image, boxes[:, [1, 0, 3, 2]], indices, size, e),
            ),
            (
                "a normalised coordinate is multiplied by H - 1 (1 is the centre of the last pixel), not H.",
                lambda: _crop_with(image, boxes, indices, size, e, cells="H"),
            ),
            (
                "each output cell is a bilinear sample (mix the 4 cells around it); you took the nearest "
                "cell.",
                lambda: _crop_with(image, boxes, indices, size, e, nearest=True),
            ),
            (
                "a sample outside the map gives extrapolation_value; you clamped it into the map.",
                lambda: _crop_with(image, boxes, indices, size, e, clamp=True),
            ),
            (
                "with crop size 1 the single sample is at the box's centre, 0.5 * (y1 + y2) * (H - 1).",
                lambda: _crop_with(image, boxes, indices, size, e, centre=False),
            ),
            (
                "box_indices says which image each box reads: image[box_indices[k]].",
                lambda: _crop_with(image, boxes, indices, size, e, index_used=False),
            ),
        ]

    return _run_exact(
        "crop_and_resize",
        fn,
        ref,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-5,
        variants=variants,
        shape_hint="The result is [K, C, ch, cw].",
    )


# --------------------------------------------------------------------------------------------------------
# assign_fpn_levels


def _levels_with(boxes, k0, canonical, lo, hi, *, size="sqrt", log=torch.log2, rounding=torch.round,
                 clamp=True):  # fmt: skip
    """FPN levels with a mistake switched on (the defaults give the right answer)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    s = {"sqrt": torch.sqrt(w * h), "area": w * h, "mean": (w + h) / 2}[size]
    level = k0 + rounding(log(s / canonical))
    level = torch.nan_to_num(level, nan=lo, posinf=hi, neginf=lo)
    return (level.clamp(lo, hi) if clamp else level).long()


def _check_assign_fpn_levels(fn) -> str:
    ref = _REF["assign_fpn_levels"]
    names = ("boxes",)
    default = {"k0": 4, "canonical_size": 224.0, "min_level": 2, "max_level": 5}

    def squares(sides):
        return torch.tensor([[10.0, 10, 10 + s, 10 + s] for s in sides])

    fixed = [
        _Case(
            "squares of 224, 112, 448, 56 and 1000 pixels",
            (squares([224, 112, 448, 56, 1000]),),
            default,
            names,
            "224 -> P4, half -> P3, twice -> P5, a quarter -> P2; 1000 would be 4 + 2.16 -> 6, clamped to 5",
        ),
        _Case(
            "180 and 150 pixels",
            (squares([180, 150]),),
            default,
            names,
            "log2(180 / 224) = -0.32 rounds to 0: P4 (floor would give P3); log2(150 / 224) = -0.58 rounds "
            "to -1: P3",
        ),
        _Case(
            "long thin boxes",
            (torch.tensor([[0.0, 0, 896, 56], [0, 0, 28, 448]]),),
            default,
            names,
            "sqrt(896 * 56) = 224: P4 (not the mean side (896 + 56) / 2); sqrt(28 * 448) = 112: P3",
        ),
        _Case(
            "a box of zero area",
            (torch.tensor([[10.0, 10, 10, 30], [0, 0, 224, 224]]),),
            default,
            names,
            "log2(0) = -inf, clamped to min_level",
        ),
        _Case(
            "k0 = 3, canonical_size 112, levels 1 to 4",
            (squares([112, 56, 224, 20]),),
            {"k0": 3, "canonical_size": 112.0, "min_level": 1, "max_level": 4},
            names,
            "112 -> 3, 56 -> 2, 224 -> 4, 20 -> 3 + round(-2.49) = 1",
        ),
    ]
    g = _gen(17)
    random = []
    for k in range(4):
        n = 12
        sides = torch.exp(torch.rand(n, 2, generator=g) * math.log(100) + math.log(10))  # 10 .. 1000 pixels
        xy = torch.rand(n, 2, generator=g) * 200
        kwargs = (default, {"k0": 5, "canonical_size": 160.0, "min_level": 2, "max_level": 6})[k % 2]
        random.append(_Case("", (torch.cat((xy, xy + sides), dim=1),), kwargs, names))

    def variants(case, expected):
        (boxes,) = case.args
        kw = case.kwargs
        args = (boxes, kw["k0"], kw["canonical_size"], kw["min_level"], kw["max_level"])
        return [
            (
                "round to the nearest level (torch.round); you rounded down (floor: torchvision's rule).",
                lambda: _levels_with(*args, rounding=torch.floor),
            ),
            (
                "round to the nearest level; int() / .long() cut towards zero.",
                lambda: _levels_with(*args, rounding=torch.trunc),
            ),
            ("the logarithm is base 2 (torch.log2), not e.", lambda: _levels_with(*args, log=torch.log)),
            (
                "the box's size is sqrt(w * h), not its area w * h.",
                lambda: _levels_with(*args, size="area"),
            ),
            (
                "the box's size is sqrt(w * h) (its geometric mean side), not (w + h) / 2.",
                lambda: _levels_with(*args, size="mean"),
            ),
            (
                "clamp the levels to [min_level, max_level].",
                lambda: _levels_with(*args, clamp=False),
            ),
            (
                "use the arguments k0 and canonical_size, not 4 and 224.",
                lambda: ref(boxes, 4, 224.0, kw["min_level"], kw["max_level"]),
            ),
        ]

    return _run_exact(
        "assign_fpn_levels",
        fn,
        ref,
        fixed,
        random,
        atol=0.0,
        rtol=0.0,
        variants=variants,
        shape_hint="One level per box: [K].",
    )
