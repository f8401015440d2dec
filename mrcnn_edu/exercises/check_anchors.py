"""Checks of ``level_anchors`` and ``pyramid_anchors`` (exercises 4, 5)."""

from __future__ import annotations

import math

import torch

from .. import anchors as _anchors
from .checking import _call, _Case, _Fail, _fmt, _gen, _inputs_text, _run_exact
from .swap import _REF


def _anchor_grid(shape, anchor_stride) -> tuple[int, int]:
    return math.ceil(shape[0] / anchor_stride), math.ceil(shape[1] / anchor_stride)


def _level_variants(anchors: torch.Tensor, scale, ratios, shape, stride, anchor_stride, offset):
    """Known-wrong versions of one level's anchors, built from the correct ones."""
    ref = _REF["level_anchors"]
    hh, ww = _anchor_grid(shape, anchor_stride)
    a = len(ratios)
    grid = anchors.view(hh, ww, a, 4)
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    centres = torch.stack((cx, cy, cx, cy), 1)
    swapped = torch.stack((cy, cx, cy, cx), 1)
    base = _anchors.base_anchors(scale, ratios)

    def with_base(new_base):
        return (anchors.view(-1, a, 4) - base + new_base).reshape(-1, 4)

    def sizes(w, h):
        return torch.stack((-w / 2, -h / 2, w / 2, h / 2), 1)

    r = torch.tensor([float(v) for v in ratios])
    return [
        (
            "wrong order: the anchors must be listed row by row, then column, then ratio (anchor (i * W + "
            "j) * A "
            "+ a); you listed the ratios outermost.",
            lambda: grid.permute(2, 0, 1, 3).reshape(-1, 4),
        ),
        (
            "wrong order: rows (y) first, then columns (x), then ratios; you went column by column "
            "(use torch.meshgrid(ys, xs, indexing='ij')).",
            lambda: grid.permute(1, 0, 2, 3).reshape(-1, 4),
        ),
        (
            "x and y are swapped: column j gives the x centre (j + offset) * s, row i the y centre.",
            lambda: anchors - centres + swapped,
        ),
        (
            "the ratio is width / height here: w = scale * sqrt(r), h = scale / sqrt(r) (you used height / "
            "width, "
            "torchvision's convention).",
            lambda: ref(
                scale,
                [1 / float(v) for v in ratios],
                shape,
                stride,
                anchor_stride=anchor_stride,
                offset=offset,
            ),
        ),
        (
            "the ratio changes the shape, keeping the area scale**2: w = scale * sqrt(r), h = scale / "
            "sqrt(r) "
            "(not scale * r and scale / r).",
            lambda: with_base(sizes(scale * r, scale / r)),
        ),
        (
            "the offset is wrong: the centre of cell (i, j) is ((j + offset) * s, (i + offset) * s).",
            lambda: ref(scale, ratios, shape, stride, anchor_stride=anchor_stride, offset=0.5 - offset),
        ),
        (
            "anchor sizes are in image pixels (scale), not in feature cells (scale / stride).",
            lambda: with_base(_anchors.base_anchors(scale / stride, ratios)),
        ),
        (
            "centres are (j + offset) * anchor_stride * feature_stride apart; anchor_stride was ignored.",
            lambda: ref(scale, ratios, shape, stride * anchor_stride, anchor_stride=1, offset=offset)[
                : hh * ww * a
            ],
        ),
    ]


def _check_level_anchors(fn) -> str:
    names = ("scale", "ratios", "feature_shape", "feature_stride")
    fixed = [
        _Case(
            "3 ratios on a 2 x 3 map",
            (4.0, (0.5, 1.0, 2.0), (2, 3), 4),
            {"anchor_stride": 1, "offset": 0.0},
            names,
            "18 anchors; anchor (i * 3 + j) * 3 + a is centred at (4 j, 4 i); ratio 0.5 is 2.83 wide "
            "and 5.66 high",
        ),
        _Case(
            "anchor_stride 2 on a 3 x 2 map",
            (8.0, (1.0, 2.0), (3, 2), 8),
            {"anchor_stride": 2, "offset": 0.0},
            names,
            "ceil(3 / 2) x ceil(2 / 2) = 2 x 1 positions, 16 pixels apart",
        ),
        _Case(
            "offset 0.5",
            (2.0, (1.0,), (2, 2), 4),
            {"anchor_stride": 1, "offset": 0.5},
            names,
            "centres at (2, 2), (6, 2), (2, 6), (6, 6)",
        ),
    ]
    g = _gen(4)
    random = []
    for _ in range(4):
        shape = tuple(int(v) for v in torch.randint(1, 6, (2,), generator=g))
        stride = (4, 8, 16)[int(torch.randint(3, (1,), generator=g))]
        kwargs = {
            "anchor_stride": int(torch.randint(1, 3, (1,), generator=g)),
            "offset": (0.0, 0.5)[int(torch.randint(2, (1,), generator=g))],
        }
        random.append(_Case("", (float(stride * 2), (0.5, 1.0, 2.0), shape, stride), kwargs, names))

    def variants(case, expected):
        scale, ratios, shape, stride = case.args
        return _level_variants(
            expected, scale, ratios, shape, stride, case.kwargs["anchor_stride"], case.kwargs["offset"]
        )

    return _run_exact(
        "level_anchors",
        fn,
        _REF["level_anchors"],
        fixed,
        random,
        atol=1e-4,
        rtol=1e-5,
        variants=variants,
        shape_hint="One row per anchor: [H' * W' * A, 4].",
    )


def _check_pyramid_anchors(fn) -> str:
    ref = _REF["pyramid_anchors"]
    names = ("scales", "ratios", "feature_shapes", "feature_strides")
    fixed = [
        _Case(
            "two levels",
            ((8.0, 16.0), (0.5, 1.0, 2.0), ((2, 2), (1, 1)), (4, 8)),
            {"anchor_stride": 1, "offset": 0.0},
            names,
            "level 0: 2 x 2 x 3 = 12 anchors of scale 8, then level 1: 3 anchors of scale 16; counts [12, 3]",
        ),
    ]
    g = _gen(5)
    random = []
    for _ in range(3):
        side = int(torch.randint(4, 9, (1,), generator=g))
        shapes = ((side, side + 1), ((side + 1) // 2, (side + 2) // 2), ((side + 3) // 4, (side + 4) // 4))
        kwargs = {"anchor_stride": 1, "offset": (0.0, 0.5)[int(torch.randint(2, (1,), generator=g))]}
        random.append(_Case("", ((8.0, 16.0, 32.0), (0.5, 1.0, 2.0), shapes, (4, 8, 16)), kwargs, names))

    def call(fn, name, case, where):
        out = _call(fn, name, case, where)
        anchors, counts = ref(*case.args, **case.kwargs)
        head = f"FAIL {name}, {where}"
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            what = "a tensor" if isinstance(out, torch.Tensor) else type(out).__name__
            raise _Fail(
                f"{head}: return a tuple (anchors, num_per_level), got {what}. num_per_level lists how "
                f"many anchors each level has, here {counts}.\n  Inputs:\n{_inputs_text(case)}"
            )
        try:
            got_counts = [int(c) for c in out[1]]
        except Exception:
            got_counts = None
        if got_counts != counts:
            a = len(case.args[1])
            hint = ""
            if got_counts == [c // a for c in counts]:
                hint = " You counted positions; count anchors (positions x ratios)."
            raise _Fail(
                f"{head}: num_per_level is {_fmt(out[1])}, expected {counts} (anchors per level, "
                f"H'_l * W'_l * A).{hint}\n  Inputs:\n{_inputs_text(case)}"
            )
        return out[0]

    def variants(case, expected):
        scales, ratios, shapes, strides = case.args
        kw = case.kwargs
        parts = expected.split(ref(*case.args, **kw)[1])
        out = [
            (
                "the levels are in reverse order: level 0 (P2, the finest) comes first.",
                lambda: torch.cat(parts[::-1]),
            ),
            (
                "every level used the first scale: level l uses scales[l].",
                lambda: ref([scales[0]] * len(scales), ratios, shapes, strides, **kw)[0],
            ),
            (
                "scales and levels are paired backwards: scales[l] goes with feature_shapes[l].",
                lambda: ref(scales[::-1], ratios, shapes, strides, **kw)[0],
            ),
        ]
        for part, s, shape, st in zip(parts, scales, shapes, strides, strict=True):
            for text, make in _level_variants(part, s, ratios, shape, st, kw["anchor_stride"], kw["offset"]):
                out.append(
                    (
                        text,
                        lambda make=make, part=part: torch.cat([make() if p is part else p for p in parts]),
                    )
                )
        return out

    summary = _run_exact(
        "pyramid_anchors",
        fn,
        lambda *a, **k: ref(*a, **k)[0],
        fixed,
        random,
        atol=1e-4,
        rtol=1e-5,
        variants=variants,
        call=call,
    )
    return summary.replace(" (atol", " (anchors and num_per_level; atol")
