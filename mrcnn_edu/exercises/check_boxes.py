"""Checks of ``box_iou``, ``encode_deltas`` and ``decode_deltas`` (exercises 1 to 3)."""

from __future__ import annotations

import math

import torch

from .. import boxes as _boxes
from .checking import _PLUS_ONE, _call, _Case, _compare, _gen, _plus_one, _random_boxes, _run_exact
from .swap import _REF, _box_iou, _encode


def _check_box_iou(fn) -> str:
    names = ("boxes1", "boxes2")
    fixed = [
        _Case(
            "two overlapping 2x2 squares",
            (torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])),
            names=names,
            note="intersection 1 x 1 = 1, union 4 + 4 - 1 = 7: IoU = 1/7 = 0.1429",
        ),
        _Case(
            "2 boxes against 3",
            (
                torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 2]]),
                torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [10, 10, 12, 12]]),
            ),
            names=names,
            note="[2, 3]: row i is boxes1[i]; (10, 10, 12, 12) overlaps neither box: IoU 0; "
            "(0, 0, 2, 2) inside (0, 0, 4, 2): 4 / 8 = 0.5",
        ),
        _Case(
            "no boxes in boxes1",
            (torch.zeros(0, 4), torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 3]])),
            names=names,
            note="an empty [0, 2] result",
        ),
    ]
    g = _gen(1)
    random = []
    for _ in range(8):
        n, m = (int(v) for v in torch.randint(1, 8, (2,), generator=g))
        random.append(_Case("", (_random_boxes(n, g), _random_boxes(m, g)), names=names))

    def no_clamp(b1, b2):
        iw = torch.minimum(b1[:, None, 2], b2[None, :, 2]) - torch.maximum(b1[:, None, 0], b2[None, :, 0])
        ih = torch.minimum(b1[:, None, 3], b2[None, :, 3]) - torch.maximum(b1[:, None, 1], b2[None, :, 1])
        return iw, ih

    def areas(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def variants(case, expected):
        b1, b2 = case.args
        iw, ih = no_clamp(b1, b2)
        inter = iw.clamp(min=0) * ih.clamp(min=0)
        a1, a2 = areas(b1)[:, None], areas(b2)[None, :]
        return [
            (_PLUS_ONE, lambda: _box_iou(_plus_one(b1), _plus_one(b2))),
            (
                "the intersection's width or height can be negative (boxes apart): clamp each at 0 "
                "(.clamp(min=0)) before multiplying; two negative sizes gave a positive 'intersection'.",
                lambda: (iw * ih) / (a1 + a2 - iw * ih),
            ),
            (
                "the union must not count the intersection twice: union = area1 + area2 - intersection.",
                lambda: inter / (a1 + a2),
            ),
            ("you divided by the area of boxes1 only; IoU divides by the union.", lambda: inter / a1),
            (
                "you divided by the smaller area; IoU divides by the union.",
                lambda: inter / torch.minimum(a1, a2),
            ),
            ("you returned the intersection area, not intersection / union.", lambda: inter),
            (
                "the result looks transposed: result[i, j] must be the IoU of boxes1[i] and boxes2[j].",
                lambda: _box_iou(b2, b1),
            ),
            (
                "you read the boxes as (x, y, width, height); they are corners (x1, y1, x2, y2).",
                lambda: _box_iou(
                    _boxes.box_convert(b1, "xywh", "xyxy"), _boxes.box_convert(b2, "xywh", "xyxy")
                ),
            ),
        ]

    return _run_exact(
        "box_iou",
        fn,
        _box_iou,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-4,
        variants=variants,
        shape_hint="The result is [N, M]: one row per box of boxes1.",
    )


def _centre_size(b: torch.Tensor):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


_MATTERPORT_ORDER = [1, 0, 3, 2]


def _check_encode_deltas(fn) -> str:
    names = ("boxes", "reference")
    fixed = [
        _Case(
            "one box, weights 1",
            (torch.tensor([[2.0, 0, 6, 2]]), torch.tensor([[0.0, 0, 2, 2]])),
            {"weights": (1.0, 1.0, 1.0, 1.0)},
            names,
            "target centre (4, 1), size 4 x 2; reference centre (1, 1), size 2 x 2: dx = (4 - 1) / 2 = 1.5, "
            "dy = 0, dw = log(4 / 2) = 0.6931, dh = log(2 / 2) = 0",
        ),
        _Case(
            "two boxes, weights (10, 10, 5, 5)",
            (torch.tensor([[2.0, 0, 6, 2], [1, 2, 4, 8]]), torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 4]])),
            {"weights": (10.0, 10.0, 5.0, 5.0)},
            names,
            "the deltas of weights 1, multiplied by (10, 10, 5, 5)",
        ),
    ]
    g = _gen(2)
    random = []
    for k in range(6):
        n = int(torch.randint(1, 10, (1,), generator=g))
        weights = (1.0, 1.0, 1.0, 1.0) if k % 2 == 0 else (10.0, 10.0, 5.0, 5.0)
        random.append(_Case("", (_random_boxes(n, g), _random_boxes(n, g)), {"weights": weights}, names))

    def variants(case, expected):
        b, r = case.args
        w = case.kwargs["weights"]
        wt = b.new_tensor(w)
        gx, gy, gw, gh = _centre_size(b)
        ax, ay, aw, ah = _centre_size(r)
        one = (1.0, 1.0, 1.0, 1.0)
        return [
            (_PLUS_ONE, lambda: _encode(_plus_one(b), _plus_one(r), w)),
            (
                "the deltas are in the order (dy, dx, dh, dw) (matterport's); mrcnn_edu's order is (dx, "
                "dy, dw, "
                "dh), as x1, y1, x2, y2.",
                lambda: expected[:, _MATTERPORT_ORDER],
            ),
            (
                "x and y are mixed up: dx is divided by the reference height or dw uses heights; x goes with "
                "widths, y with heights.",
                lambda: (
                    torch.stack(((gx - ax) / ah, (gy - ay) / aw, torch.log(gh / aw), torch.log(gw / ah)), 1)
                    * wt
                ),
            ),
            (
                "the arguments are swapped: encode_deltas(boxes, reference) moves the *reference* onto boxes "
                "(divide by the reference's size).",
                lambda: _encode(r, b, w),
            ),
            (
                "dx and dy use the top-left corners; they use the centres (x1 + w / 2).",
                lambda: (
                    torch.stack(
                        (
                            (b[:, 0] - r[:, 0]) / aw,
                            (b[:, 1] - r[:, 1]) / ah,
                            torch.log(gw / aw),
                            torch.log(gh / ah),
                        ),
                        1,
                    )
                    * wt
                ),
            ),
            (
                "dw and dh are logarithms: dw = log(gw / aw), not the ratio itself.",
                lambda: torch.stack(((gx - ax) / aw, (gy - ay) / ah, gw / aw, gh / ah), 1) * wt,
            ),
            (
                "dw and dh are logarithms: dw = log(gw / aw), not (gw - aw) / aw.",
                lambda: torch.stack(((gx - ax) / aw, (gy - ay) / ah, (gw - aw) / aw, (gh - ah) / ah), 1) * wt,
            ),
            (
                "dx and dy are divided by the reference's size, not the target's.",
                lambda: (
                    torch.stack(((gx - ax) / gw, (gy - ay) / gh, torch.log(gw / aw), torch.log(gh / ah)), 1)
                    * wt
                ),
            ),
            (
                "the weights multiply the deltas (encode) and divide them (decode); you divided.",
                lambda: _encode(b, r, tuple(1 / v for v in w)),
            ),
            ("the weights were ignored: multiply (dx, dy, dw, dh) by weights.", lambda: _encode(b, r, one)),
        ]

    return _run_exact("encode_deltas", fn, _encode, fixed, random, atol=1e-5, rtol=1e-4, variants=variants)


def _check_decode_deltas(fn) -> str:
    ref = _REF["decode_deltas"]
    names = ("deltas", "reference")
    clamp = _boxes.DEFAULT_DELTA_CLAMP
    log2 = math.log(2.0)
    fixed = [
        _Case(
            "one box, weights 1",
            (torch.tensor([[1.5, 0, log2, 0]]), torch.tensor([[0.0, 0, 2, 2]])),
            {"weights": (1.0, 1.0, 1.0, 1.0), "clamp": clamp},
            names,
            "centre (1 + 1.5 * 2, 1) = (4, 1), size (2 * e^0.6931, 2) = (4, 2): box (2, 0, 6, 2)",
        ),
        _Case(
            "weights (10, 10, 5, 5)",
            (torch.tensor([[15.0, 0, 5 * log2, 0]]), torch.tensor([[0.0, 0, 2, 2]])),
            {"weights": (10.0, 10.0, 5.0, 5.0), "clamp": clamp},
            names,
            "divided by the weights these are the deltas of case 1: box (2, 0, 6, 2)",
        ),
        _Case(
            "a huge dw and dh, clamped",
            (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 2, 2]])),
            {"weights": (1.0, 1.0, 1.0, 1.0), "clamp": clamp},
            names,
            "dw = dh = 10 capped at clamp = log(1000 / 16): size 2 * 62.5 = 125 around (1, 1)",
        ),
        _Case(
            "no clamp",
            (torch.tensor([[0.0, 0, 3, 3]]), torch.tensor([[0.0, 0, 2, 2]])),
            {"weights": (1.0, 1.0, 1.0, 1.0), "clamp": None},
            names,
            "size 2 * e^3 = 40.17 around (1, 1)",
        ),
    ]
    g = _gen(3)
    random = []
    for k in range(6):
        n = int(torch.randint(1, 10, (1,), generator=g))
        weights = (1.0, 1.0, 1.0, 1.0) if k % 2 == 0 else (10.0, 10.0, 5.0, 5.0)
        deltas = torch.randn(n, 4, generator=g) * torch.tensor(weights) * 0.5
        kwargs = {"weights": weights, "clamp": (clamp, None, 0.5)[k % 3]}
        random.append(_Case("", (deltas, _random_boxes(n, g)), kwargs, names))

    def variants(case, expected):
        d, r = case.args
        w, c = case.kwargs["weights"], case.kwargs["clamp"]
        wt = d.new_tensor(w)
        ax, ay, aw, ah = _centre_size(r)
        dx, dy, dw, dh = (d / wt).unbind(1)
        if c is not None:
            dw, dh = dw.clamp(max=c), dh.clamp(max=c)
        cx, cy = ax + dx * aw, ay + dy * ah
        pre = d.clone()
        if c is not None:
            pre[:, 2:] = pre[:, 2:].clamp(max=c)
        return [
            (_PLUS_ONE, lambda: ref(d, _plus_one(r), w, c) - d.new_tensor([0.0, 0, 1, 1])),
            (
                "the deltas are (dx, dy, dw, dh) (you read them as matterport's (dy, dx, dh, dw)).",
                lambda: ref(d[:, _MATTERPORT_ORDER], r, w, c),
            ),
            (
                "decoding divides the deltas by the weights (encoding multiplied); you multiplied.",
                lambda: ref(d, r, tuple(1 / v for v in w), c),
            ),
            (
                "the weights were ignored: divide the deltas by weights first.",
                lambda: ref(d, r, (1.0,) * 4, c),
            ),
            (
                "dw and dh were not clamped: cap them with .clamp(max=clamp) before exp (unless clamp is "
                "None).",
                lambda: ref(d, r, w, None),
            ),
            (
                "the clamp applies to dw / ww (after dividing by the weights), not to dw itself.",
                lambda: ref(pre, r, w, None),
            ),
            (
                "return corners (x1, y1, x2, y2), not (centre x, centre y, width, height).",
                lambda: _boxes.box_convert(expected, "xyxy", "cxcywh"),
            ),
            (
                "the new size is aw * exp(dw): you forgot the exp.",
                lambda: torch.stack(
                    (cx - 0.5 * aw * dw, cy - 0.5 * ah * dh, cx + 0.5 * aw * dw, cy + 0.5 * ah * dh), 1
                ),
            ),
            (
                "x1 = cx - w / 2 (half the width on each side), not cx - w.",
                lambda: torch.stack(
                    (cx - aw * dw.exp(), cy - ah * dh.exp(), cx + aw * dw.exp(), cy + ah * dh.exp()), 1
                ),
            ),
            (
                "x and y are mixed up: the x centre moves by dx * width (not height) and w = aw * exp(dw).",
                lambda: _boxes.box_convert(
                    torch.stack((ax + dx * ah, ay + dy * aw, ah * dh.exp(), aw * dw.exp()), 1),
                    "cxcywh",
                    "xyxy",
                ),
            ),
        ]

    summary = _run_exact("decode_deltas", fn, ref, fixed, random, atol=1e-4, rtol=1e-4, variants=variants)
    # The default clamp is part of the signature: a call without it must clamp too.
    case = _Case(
        "the default clamp",
        (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 2, 2]])),
        names=names,
        note="called without clamp=: the default log(1000 / 16) applies",
    )
    got = _call(fn, "decode_deltas", case, "default arguments")
    _compare(
        "decode_deltas",
        case,
        "default arguments",
        got,
        ref(*case.args),
        atol=1e-4,
        rtol=1e-4,
        variants=[
            ("the default clamp must be math.log(1000 / 16), not None.", lambda: ref(*case.args, clamp=None))
        ],
    )
    return summary
