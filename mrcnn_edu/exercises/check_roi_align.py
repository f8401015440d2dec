"""Checks of ``bilinear`` and ``roi_align`` (exercises 8, 9)."""

from __future__ import annotations

import math

import torch

from .checking import _call, _Case, _Fail, _gen, _random_boxes, _run_exact, _type_problem
from .swap import _REF


def _ramp(h: int = 5, w: int = 5) -> torch.Tensor:
    """[1, h, w] map whose value at cell (r, c) is w * r + c: bilinear reads 5 y + x exactly."""
    return torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)


def _check_bilinear(fn) -> str:
    ref = _REF["bilinear"]
    ramp = _ramp()
    two = torch.cat((ramp, ramp[0].T[None] * 10))  # second channel differs under a transpose
    points = [
        (1.5, 2.25),
        (0.0, 0.0),
        (4.0, 4.0),
        (3.5, 4.0),
        (-0.5, 2.0),
        (-1.5, 2.0),
        (2.0, 5.0),
        (2.0, 5.5),
    ]
    fixed = [
        _Case(
            "a 5 x 5 ramp, value 5 y + x",
            (ramp, points),
            names=("feature", "points (y, x)"),
            note="inside the map bilinear reads 5 y + x exactly; (4, 4) is the last cell; -1 <= y < 0 is "
            "clamped to "
            "row 0; y < -1 or x > 5 reads 0",
        ),
        _Case(
            "2 channels",
            (two, [(1.25, 3.5), (3.0, 0.75)]),
            names=("feature", "points (y, x)"),
            note="channel 1 is channel 0 transposed, times 10",
        ),
    ]
    g = _gen(8)
    random = []
    for _ in range(3):
        feature = torch.randn(3, 4, 6, generator=g)
        pts = (torch.rand(12, 2, generator=g) * torch.tensor([6.0, 8.0]) - 1.5).tolist()
        random.append(_Case("", (feature, pts), names=("feature", "points (y, x)")))

    def run_points(f, feature, pts):
        return torch.stack([f(feature, torch.tensor(y), torch.tensor(x)) for y, x in pts])

    def call(fn, name, case, where):
        feature, pts = case.args
        results = []
        for y, x in pts:
            one = _Case(case.label, (feature, torch.tensor(y), torch.tensor(x)), names=("feature", "y", "x"))
            out = _call(fn, name, one, where + f" at (y, x) = ({y:g}, {x:g})")
            problem = _type_problem(out, ref(*one.args), "Return one value per channel: [C].")
            if problem:
                raise _Fail(f"FAIL {name}, {where} at (y, x) = ({y:g}, {x:g}): {problem}")
            results.append(out)
        return torch.stack(results)

    def variants(case, expected):
        feature, pts = case.args
        c, h, w = feature.shape

        def nearest(y, x, rounding):
            if not (-1 <= y <= h and -1 <= x <= w):
                return feature.new_zeros(c)
            return feature[:, int(rounding(min(max(y, 0), h - 1))), int(rounding(min(max(x, 0), w - 1)))]

        def zero_outside_map(y, x):  # reads 0 as soon as the point leaves [0, H-1]
            inside = 0 <= y <= h - 1 and 0 <= x <= w - 1
            return ref(feature, torch.tensor(y), torch.tensor(x)) if inside else feature.new_zeros(c)

        def swapped_weights(y, x):  # (1 - ly) and ly exchanged: the far cell weighs most
            yc, xc = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
            y0, x0 = int(yc), int(xc)
            flipped = min(y0 + 1, h - 1) - (yc - y0) if y0 + 1 < h else yc
            flipped_x = min(x0 + 1, w - 1) - (xc - x0) if x0 + 1 < w else xc
            inside = -1 <= y <= h and -1 <= x <= w
            return (
                ref(feature, torch.tensor(flipped), torch.tensor(flipped_x))
                if inside
                else feature.new_zeros(c)
            )

        return [
            (
                "x and y are swapped: feature[:, y, x] is row y, column x.",
                lambda: run_points(lambda f, y, x: ref(f, x, y), feature, pts),
            ),
            (
                "you took the nearest cell (rounding); bilinear mixes the 4 surrounding cells by distance.",
                lambda: torch.stack([nearest(y, x, round) for y, x in pts]),
            ),
            (
                "you took the top-left cell only (floor); bilinear mixes the 4 surrounding cells by "
                "distance.",
                lambda: torch.stack([nearest(y, x, math.floor) for y, x in pts]),
            ),
            (
                "the border rule: a point reads 0 only when y < -1 or y > H (same for x); between -1 and "
                "0, or H-1 "
                "and H, clamp it into the map.",
                lambda: torch.stack([zero_outside_map(y, x) for y, x in pts]),
            ),
            (
                "the weights are exchanged: the cell at distance ly gets weight 1 - ly (the nearer cell "
                "counts more).",
                lambda: torch.stack([swapped_weights(y, x) for y, x in pts]),
            ),
        ]

    return _run_exact(
        "bilinear",
        fn,
        lambda f, pts: run_points(ref, f, pts),
        fixed,
        random,
        atol=1e-5,
        rtol=1e-5,
        variants=variants,
        call=call,
    )


def _check_roi_align(fn) -> str:
    ref = _REF["roi_align"]
    names = ("input", "boxes", "output_size")
    ramp = _ramp()[None]  # [1, 1, 5, 5]
    box = torch.tensor([[0.0, 1, 1, 3, 3]])
    g = _gen(9)
    bumpy = torch.randn(1, 2, 6, 7, generator=g)
    fixed = [
        _Case(
            "5 x 5 ramp, aligned=False",
            (ramp, box, (2, 2)),
            {"spatial_scale": 1.0, "sampling_ratio": 2, "aligned": False},
            names,
            "the map is 5 y + x, linear, so a bin's average is the value at its centre: bins of 1 x 1 from "
            "(1, 1), "
            "centres 1.5 and 2.5: 5 * 1.5 + 1.5 = 9, ...",
        ),
        _Case(
            "5 x 5 ramp, aligned=True",
            (ramp, box, (2, 2)),
            {"spatial_scale": 1.0, "sampling_ratio": 2, "aligned": True},
            names,
            "aligned shifts the box by -0.5: bin centres 1.0 and 2.0: 5 * 1 + 1 = 6, ...",
        ),
        _Case(
            "spatial_scale 0.5",
            (ramp, torch.tensor([[0.0, 2, 2, 6, 6]]), (2, 2)),
            {"spatial_scale": 0.5, "sampling_ratio": 2, "aligned": False},
            names,
            "the box scaled by 0.5 is (1, 1, 3, 3): the same as the first case",
        ),
        _Case(
            "a random map, adaptive sampling",
            (bumpy, torch.tensor([[0.0, 0.5, 0.25, 6.5, 5.75]]), (2, 3)),
            {"spatial_scale": 1.0, "sampling_ratio": -1, "aligned": False},
            names,
            "sampling_ratio -1: the box is 6 wide and 5.5 high, so ceil(5.5 / 2) = 3 samples per bin along y "
            "and ceil(6 / 3) = 2 along x (a fixed ratio of 2 or 3 gives other values)",
        ),
        _Case(
            "two images",
            (torch.cat((ramp, -ramp)), torch.tensor([[1.0, 1, 1, 3, 3]]), (2, 2)),
            {"spatial_scale": 1.0, "sampling_ratio": 2, "aligned": False},
            names,
            "column 0 of boxes is the image index: image 1 is minus the ramp",
        ),
        _Case(
            "no boxes",
            (ramp, torch.zeros(0, 5), (2, 2)),
            {"spatial_scale": 1.0, "sampling_ratio": 2, "aligned": False},
            names,
            "an empty [0, 1, 2, 2] result",
        ),
    ]
    random = []
    for k in range(4):
        feats = torch.randn(2, 2, 6, 8, generator=g)
        b = _random_boxes(3, g, extent=10.0, min_size=1.0)
        index = torch.randint(0, 2, (3, 1), generator=g).float()
        kwargs = {
            "spatial_scale": (1.0, 0.5)[k % 2],
            "sampling_ratio": (2, -1)[k // 2 % 2],
            "aligned": k in (1, 2),
        }
        random.append(_Case("", (feats, torch.cat((index, b), 1), (3, 2)), kwargs, names))

    def variants(case, expected):
        x, boxes, size = case.args
        kw = case.kwargs
        s, sr, al = kw["spatial_scale"], kw["sampling_ratio"], kw["aligned"]
        swapped = boxes[:, [0, 2, 1, 4, 3]]
        rounded = torch.cat((boxes[:, :1], torch.round(boxes[:, 1:] * s) / s), 1)
        return [
            (
                "the half-pixel shift: with aligned=True subtract 0.5 from the scaled box coordinates (a "
                "cell's value sits at its centre, c + 0.5); you never did.",
                lambda: ref(x, boxes, size, s, sr, False),
            ),
            (
                "the half-pixel shift: subtract 0.5 from the scaled box coordinates only with aligned=True; "
                "with aligned=False (the original RoIAlign) do not.",
                lambda: ref(x, boxes, size, s, sr, True),
            ),
            (
                "x and y are swapped: boxes are (index, x1, y1, x2, y2), not (index, y1, x1, y2, x2).",
                lambda: ref(x, swapped, size, s, sr, al),
            ),
            (
                "x and y are swapped: features are [B, C, H, W]: the point (y, x) reads input[b, :, y, x].",
                lambda: ref(x.transpose(-1, -2).contiguous(), boxes, size, s, sr, al),
            ),
            (
                "spatial_scale was ignored: multiply the box by spatial_scale to get feature-map "
                "coordinates.",
                lambda: ref(x, boxes, size, 1.0, sr, al),
            ),
            (
                "you divided by spatial_scale; multiply by it (it is 1 / stride).",
                lambda: ref(x, boxes, size, 1 / s, sr, al),
            ),
            (
                "one sample per bin (at its centre): take sampling_ratio x sampling_ratio samples per bin "
                "(adaptive "
                "ceil(box_h / oh) x ceil(box_w / ow) when sampling_ratio <= 0).",
                lambda: ref(x, boxes, size, s, 1, al),
            ),
            (
                "sampling_ratio <= 0 means adaptive: ceil(box_h / oh) samples along y, ceil(box_w / ow) "
                "along x.",
                lambda: ref(x, boxes, size, s, 2 if sr <= 0 else sr, al),
            ),
            (
                "you rounded the box to whole cells (that is RoIPool); RoIAlign never rounds.",
                lambda: ref(x, rounded, size, s, sr, al),
            ),
            (
                "column 0 of boxes is the image index: read input[int(box[0])].",
                lambda: ref(x, torch.cat((torch.zeros_like(boxes[:, :1]), boxes[:, 1:]), 1), size, s, sr, al),
            ),
        ]

    return _run_exact(
        "roi_align",
        fn,
        ref,
        fixed,
        random,
        atol=1e-4,
        rtol=1e-4,
        variants=variants,
        shape_hint="The result is [K, C, oh, ow].",
    )
