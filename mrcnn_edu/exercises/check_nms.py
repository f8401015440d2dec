"""Check of ``nms`` (exercise 6)."""

from __future__ import annotations

import torch

from .checking import _PLUS_ONE, _call, _Case, _Fail, _gen, _inputs_text, _plus_one, _random_boxes, _run_exact
from .swap import _REF, _box_iou


def _greedy(boxes, scores, threshold, *, strict=True, only_kept=True, by_score=True, iou=None):
    """Greedy NMS with a mistake switched on (used to recognise the student's mistake)."""
    iou = _box_iou(boxes, boxes) if iou is None else iou
    if by_score:
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    else:  # boxes visited in input order
        order = list(range(len(scores)))
    removed = set()
    keep = []
    for rank, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[rank + 1 :] if only_kept else []:
            if (iou[i, j] > threshold) if strict else (iou[i, j] >= threshold):
                removed.add(j)
    if not only_kept:  # every higher-scored box suppresses, kept or not
        keep = [i for r, i in enumerate(order) if not any(iou[k, i] > threshold for k in order[:r])]
    return torch.tensor(keep, dtype=torch.long)


def _check_nms(fn) -> str:
    ref = _REF["nms"]
    names = ("boxes", "scores", "iou_threshold")
    three = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    fixed = [
        _Case(
            "three boxes",
            (three, torch.tensor([0.9, 0.8, 0.7]), 0.5),
            names=names,
            note="IoU(box 0, box 1) = 81 / 119 = 0.68 > 0.5: box 1 goes; box 2 overlaps nothing",
        ),
        _Case(
            "scores not in input order",
            (
                torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10], [1, 1, 11, 11]]),
                torch.tensor([0.8, 0.7, 0.9]),
                0.5,
            ),
            names=names,
            note="box 2 (0.9) removes box 1 (IoU 0.68); result by decreasing score: [2, 0]",
        ),
        _Case(
            "a chain",
            (
                torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]]),
                torch.tensor([0.9, 0.8, 0.7]),
                0.3,
            ),
            names=names,
            note="box 0 removes box 1 (IoU 1/3 > 0.3); box 1 is gone, so it cannot remove box 2",
        ),
        _Case(
            "IoU exactly at the threshold",
            (torch.tensor([[0.0, 0, 4, 4], [0, 0, 4, 2]]), torch.tensor([0.9, 0.8]), 0.5),
            names=names,
            note="IoU = 8 / 16 = 0.5 is not > 0.5: both stay",
        ),
        _Case(
            "no boxes", (torch.zeros(0, 4), torch.zeros(0), 0.5), names=names, note="an empty int64 tensor"
        ),
    ]
    g = _gen(6)
    random = []
    for k in range(6):
        n = int(torch.randint(5, 40, (1,), generator=g))
        boxes = _random_boxes(n, g, extent=30.0, min_size=4.0)
        random.append(_Case("", (boxes, torch.rand(n, generator=g), (0.3, 0.5, 0.7)[k % 3]), names=names))

    def variants(case, expected):
        boxes, scores, t = case.args
        return [
            (
                "wrong order: return the kept indices by decreasing score (the order they were kept in), not "
                "sorted by index.",
                lambda: torch.sort(expected).values,
            ),
            (
                "you kept the lowest scores first: sort the scores in descending order.",
                lambda: ref(boxes, -scores, t),
            ),
            (
                "a box is removed only when its IoU is > iou_threshold (strictly); you used >=.",
                lambda: _greedy(boxes, scores, t, strict=False),
            ),
            (
                "only *kept* boxes suppress: a box already removed must not remove others (loop over the "
                "remaining boxes, best first).",
                lambda: _greedy(boxes, scores, t, only_kept=False),
            ),
            (_PLUS_ONE, lambda: ref(_plus_one(boxes), scores, t)),
            (
                "you did not sort by score: NMS visits the boxes from the highest score down "
                "(torch.sort(scores, descending=True)), so that a box is only ever removed by a better one; "
                "you went through them in input order.",
                lambda: _greedy(boxes, scores, t, by_score=False),
            ),
        ]

    def call(fn, name, case, where):
        out = _call(fn, name, case, where)
        n = case.args[0].shape[0]
        if isinstance(out, torch.Tensor) and out.dtype == torch.bool and out.shape == (n,) and n:
            raise _Fail(
                f"FAIL {name}, {where}: you returned a True/False keep mask; return the *indices* of "
                f"the kept boxes, by decreasing score.\n  Inputs:\n{_inputs_text(case)}"
            )
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[-1] == 4:
            raise _Fail(
                f"FAIL {name}, {where}: you returned boxes; return the indices of the kept boxes "
                f"(int64 [K]).\n  Inputs:\n{_inputs_text(case)}"
            )
        return out

    return _run_exact("nms", fn, ref, fixed, random, atol=0.0, rtol=0.0, variants=variants, call=call)
