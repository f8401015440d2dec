"""Checks of the two layers without weights around the heads: ``proposal_layer`` and ``detection_layer``.

Both return several tensors; the checks compare them as one table (boxes, then scores, then labels as
columns), so the first wrong row shows whole.
"""

from __future__ import annotations

import torch

from .. import anchors as _anchors
from .checking import _call, _Case, _Fail, _gen, _inputs_text, _run_exact
from .swap import _REF

_DECODE = _REF["decode_deltas"]
_NMS = _REF["nms"]


def _clip(boxes: torch.Tensor, h: float, w: float) -> torch.Tensor:
    x, y = boxes[:, 0::2].clamp(0, w), boxes[:, 1::2].clamp(0, h)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def _batched_nms(boxes, scores, labels, t) -> torch.Tensor:
    keep = [torch.zeros(0, dtype=torch.long)]
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        keep.append(members[_NMS(boxes[members], scores[members], t)])
    keep = torch.sort(torch.cat(keep)).values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def _tuple_call(name: str, parts: tuple[str, ...], columns):
    """A ``call`` for :func:`_run_exact`: the student's tuple of tensors as one ``[P, columns]`` table."""

    def call(fn, _, case, where):
        out = _call(fn, name, case, where)
        head = f"FAIL {name}, {where}"
        if not (isinstance(out, (tuple, list)) and len(out) == len(parts)):
            what = type(out).__name__
            raise _Fail(
                f"{head}: return a tuple ({', '.join(parts)}), got {what}.\n  Inputs:\n{_inputs_text(case)}"
            )
        for part, t in zip(parts, out, strict=True):
            if not isinstance(t, torch.Tensor):
                raise _Fail(f"{head}: {part} must be a tensor, got {type(t).__name__}.")
        n = out[0].shape[0] if out[0].dim() else -1
        if out[0].dim() != 2 or out[0].shape[1] != 4 or any(t.dim() != 1 or t.shape[0] != n for t in out[1:]):
            shapes = ", ".join(f"{p} {list(t.shape)}" for p, t in zip(parts, out, strict=True))
            raise _Fail(
                f"{head}: {parts[0]} must be [N, 4] and the others [N], got {shapes}.\n  Inputs:\n"
                f"{_inputs_text(case)}"
            )
        if len(parts) == 3 and out[2].dtype != torch.int64:
            raise _Fail(f"{head}: labels must be int64 (torch.long), got {out[2].dtype}.")
        return columns(*out)

    return call


# --------------------------------------------------------------------------------------------------------
# proposal_layer


def _proposal_table(boxes, scores) -> torch.Tensor:
    return torch.cat((boxes, scores[:, None].to(boxes.dtype)), dim=1)


def _proposal_reference(objectness, deltas, anchors, image_size, pre_nms_top_n=6000, post_nms_top_n=2000,
                        nms_threshold=0.7, weights=(1.0, 1.0, 1.0, 1.0)):  # fmt: skip
    out = _REF["proposal_layer"](
        objectness[None], deltas[None], anchors, [image_size], pre_nms_top_n=pre_nms_top_n,
        post_nms_top_n=post_nms_top_n, nms_threshold=nms_threshold, weights=weights,
    )[0]  # fmt: skip
    return _proposal_table(out["boxes"], out["scores"])


def _proposals_with(case: _Case, *, pre_cut=True, post_cut=True, clip=True, swap_hw=False, sigmoid=True,
                    nms=True, decode=True, weights_used=True, clip_after_nms=False):  # fmt: skip
    """The proposal layer with mistakes switched on (the switches' defaults give the right answer)."""
    obj, deltas, anchors, size = case.args
    kw = case.kwargs
    top = obj.topk(min(kw["pre_nms_top_n"], obj.shape[0]) if pre_cut else obj.shape[0]).indices
    weights = kw["weights"] if weights_used else (1.0, 1.0, 1.0, 1.0)
    boxes = _DECODE(deltas[top], anchors[top], weights) if decode else anchors[top]
    h, w = (size[1], size[0]) if swap_hw else size
    clipped = _clip(boxes, h, w) if clip else boxes
    scores = torch.sigmoid(obj[top]) if sigmoid else obj[top]
    keep = (
        _NMS(boxes if clip_after_nms else clipped, scores, kw["nms_threshold"])
        if nms
        else torch.sort(scores, descending=True, stable=True).indices
    )
    if post_cut:
        keep = keep[: kw["post_nms_top_n"]]
    return _proposal_table(clipped[keep], scores[keep])


def _proposal_cases():
    names = ("objectness", "deltas", "anchors", "image_size")
    anchors = torch.tensor([[2.0, 2, 10, 10], [3, 2, 11, 10], [10, 10, 20, 20], [0, 0, 4, 4]])
    logits = torch.tensor([3.0, 2.0, 1.0, -1.0])
    zero = torch.zeros(4, 4)
    base = {"pre_nms_top_n": 6000, "post_nms_top_n": 10, "nms_threshold": 0.7}
    base["weights"] = (1.0, 1.0, 1.0, 1.0)
    moved = zero.clone()
    moved[3] = torch.tensor([10.0, 0, 0, 0])
    fixed = [
        _Case(
            "4 anchors, no deltas",
            (logits, zero, anchors, (16, 16)),
            base,
            names,
            "anchor 1 overlaps anchor 0 (IoU 56 / 72 = 0.78 > 0.7): removed; anchor 2 is clipped to the 16 "
            "x 16 image, (10, 10, 16, 16); scores sigmoid(3), sigmoid(1), sigmoid(-1)",
        ),
        _Case(
            "pre_nms_top_n = 2",
            (logits, zero, anchors, (16, 16)),
            {**base, "pre_nms_top_n": 2},
            names,
            "only anchors 0 and 1 (the two best logits) enter NMS, and anchor 0 removes anchor 1",
        ),
        _Case(
            "post_nms_top_n = 2",
            (logits, zero, anchors, (16, 16)),
            {**base, "post_nms_top_n": 2},
            names,
            "the two best after NMS: anchors 0 and 2",
        ),
        _Case(
            "weights (10, 10, 5, 5), an image 12 high and 16 wide",
            (logits, moved, anchors, (12, 16)),
            {**base, "weights": (10.0, 10.0, 5.0, 5.0)},
            names,
            "anchor 3's dx = 10 / 10 = 1 moves it one width right, to (4, 0, 8, 4); anchor 2 is clipped to "
            "(10, 10, 16, 12)",
        ),
    ]
    anchors, _ = _anchors.image_anchors((32, 32), scales=(4, 8, 16, 32, 64))
    g = _gen(13)
    random = []
    for k in range(4):
        n = anchors.shape[0]
        kwargs = {
            "pre_nms_top_n": (50, 300)[k % 2],
            "post_nms_top_n": (20, 100)[k // 2],
            "nms_threshold": (0.5, 0.7)[k % 2],
            "weights": ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0))[k // 2],
        }
        logits = torch.randn(n, generator=g) * 2
        deltas = torch.randn(n, 4, generator=g) * 0.2 * torch.tensor(kwargs["weights"])
        random.append(_Case("", (logits, deltas, anchors, (28, 30)), kwargs, names))
    return fixed, random


def _check_proposal_layer(fn) -> str:
    fixed, random = _proposal_cases()

    def variants(case, expected):
        return [
            (
                "the boxes are not clipped to the image: x into [0, W], y into [0, H] (image_size is (H, "
                "W)).",
                lambda: _proposals_with(case, clip=False),
            ),
            (
                "image_size is (height, width): x is clipped to [0, W] = [0, image_size[1]], y to "
                "[0, image_size[0]]; you swapped them.",
                lambda: _proposals_with(case, swap_hw=True),
            ),
            (
                "the scores are probabilities: sigmoid(logit), not the logits themselves.",
                lambda: _proposals_with(case, sigmoid=False),
            ),
            (
                "post_nms_top_n was ignored: keep only the best post_nms_top_n after NMS.",
                lambda: _proposals_with(case, post_cut=False),
            ),
            (
                "pre_nms_top_n was ignored: only the pre_nms_top_n best anchors enter NMS.",
                lambda: _proposals_with(case, pre_cut=False),
            ),
            (
                "NMS is missing: near-duplicate boxes must be removed.",
                lambda: _proposals_with(case, nms=False),
            ),
            (
                "the deltas were not applied: decode_deltas(deltas, anchors, weights) moves each anchor.",
                lambda: _proposals_with(case, decode=False),
            ),
            (
                "the weights were not passed to decode_deltas.",
                lambda: _proposals_with(case, weights_used=False),
            ),
            (
                "NMS ran on the boxes before clipping; clip first (two boxes can overlap more once clipped).",
                lambda: _proposals_with(case, clip_after_nms=True),
            ),
        ]

    return _run_exact(
        "proposal_layer",
        fn,
        _proposal_reference,
        fixed,
        random,
        atol=1e-4,
        rtol=1e-4,
        variants=variants,
        call=_tuple_call("proposal_layer", ("boxes", "scores"), _proposal_table),
        shape_hint="Compared as one table: [P, 5] = boxes and scores side by side.",
    ).replace(" cases agree", " cases (boxes and scores) agree")


# --------------------------------------------------------------------------------------------------------
# detection_layer


def _detection_table(boxes, scores, labels) -> torch.Tensor:
    return torch.cat((boxes, scores[:, None].to(boxes.dtype), labels[:, None].to(boxes.dtype)), dim=1)


def _detection_reference(class_logits, box_deltas, proposals, image_size, score_threshold=0.7,
                         nms_threshold=0.3, max_detections=100, weights=(10.0, 10.0, 5.0, 5.0)):  # fmt: skip
    out = _REF["detection_layer"](
        class_logits, box_deltas, proposals, image_size, score_threshold=score_threshold,
        nms_threshold=nms_threshold, max_detections=max_detections, weights=weights,
    )  # fmt: skip
    return _detection_table(out["boxes"], out["scores"], out["labels"])


def _detections_with(case: _Case, *, softmax=True, background=True, which="class", clip=True, per_class=True,
                     cut=True, weights_used=True, threshold=True):  # fmt: skip
    """The detection layer with mistakes switched on (the switches' defaults give the right answer)."""
    logits, deltas, rois, size = case.args
    kw = case.kwargs
    probs = torch.softmax(logits, dim=1) if softmax else logits
    scores, labels = probs.max(dim=1) if background else probs[:, 1:].max(dim=1)
    if not background:
        labels = labels + 1
    keep = torch.nonzero((labels > 0) & ((scores >= kw["score_threshold"]) if threshold else True)).flatten()
    scores, labels = scores[keep], labels[keep]
    column = {"class": labels, "first": torch.ones_like(labels), "background": torch.zeros_like(labels)}
    column = column[which]
    weights = kw["weights"] if weights_used else (1.0, 1.0, 1.0, 1.0)
    boxes = _DECODE(deltas[keep, column], rois[keep], weights)
    boxes = _clip(boxes, *size) if clip else boxes
    groups = labels if per_class else torch.zeros_like(labels)
    order = _batched_nms(boxes, scores, groups, kw["nms_threshold"])
    if cut:
        order = order[: kw["max_detections"]]
    return _detection_table(boxes[order], scores[order], labels[order])


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(probs))


def _detection_cases():
    names = ("class_logits", "box_deltas", "proposals", "image_size")
    rois = torch.tensor([[2.0, 2, 12, 12], [3, 3, 13, 13], [20, 4, 30, 14], [0, 16, 8, 24]])
    zero = torch.zeros(4, 3, 4)
    base = {"score_threshold": 0.7, "nms_threshold": 0.3, "max_detections": 100}
    base["weights"] = (10.0, 10.0, 5.0, 5.0)
    same_class = _logits_for([[0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.1, 0.05, 0.85], [0.6, 0.3, 0.1]])
    two_classes = _logits_for([[0.05, 0.9, 0.05], [0.1, 0.1, 0.8], [0.1, 0.05, 0.85], [0.2, 0.75, 0.05]])
    moved = zero.clone()
    moved[2, 2] = torch.tensor([10.0, 0, 0, 0])  # class 2's deltas of ROI 2: one width right
    moved[2, 1] = torch.tensor([0.0, 10, 0, 0])  # class 1's: one height down (must not be used)
    fixed = [
        _Case(
            "4 ROIs, 2 classes + background",
            (same_class, zero, rois, (32, 32)),
            {**base, "score_threshold": 0.25},
            names,
            "ROI 1 (class 1, 0.8) overlaps ROI 0 (class 1, 0.9) with IoU 81 / 119 = 0.68 > 0.3: removed; "
            "ROI 3's best class is background (0.6): dropped, although its class 1 (0.3) passes the "
            "threshold. Detections: ROI 0 (class 1, 0.9), ROI 2 (class 2, 0.85)",
        ),
        _Case(
            "overlapping boxes of different classes",
            (two_classes, zero, rois, (32, 32)),
            base,
            names,
            "ROI 1 is class 2 now: NMS runs per class, so it stays next to ROI 0 (class 1)",
        ),
        _Case(
            "a score below the threshold, a box moved by its class's deltas and clipped",
            (two_classes, moved, rois, (32, 28)),
            {**base, "score_threshold": 0.78},
            names,
            "ROI 3 (class 1, 0.75 < 0.78) is dropped; ROI 2 uses class 2's deltas: dx = 10 / 10 = 1 moves it "
            "10 pixels right, to (30, 4, 40, 14), clipped to the 28-pixel-wide image: (28, 4, 28, 14)",
        ),
        _Case(
            "max_detections = 1",
            (two_classes, zero, rois, (32, 32)),
            {**base, "max_detections": 1},
            names,
            "only the best detection: ROI 0 (0.9)",
        ),
    ]
    g = _gen(14)
    random = []
    for k in range(4):
        r, classes = 24, 4
        centres = torch.rand(3, 2, generator=g) * 40 + 10
        jitter = centres.repeat(8, 1) + torch.randn(r, 2, generator=g) * 3
        sizes = torch.rand(r, 2, generator=g) * 10 + 8
        rois = torch.cat((jitter - sizes / 2, jitter + sizes / 2), dim=1)
        kwargs = {
            "score_threshold": (0.3, 0.5)[k % 2],
            "nms_threshold": (0.3, 0.5)[k // 2],
            "max_detections": (100, 5)[k // 2],
            "weights": (10.0, 10.0, 5.0, 5.0),
        }
        logits = torch.randn(r, classes + 1, generator=g) * 2
        deltas = torch.randn(r, classes + 1, 4, generator=g) * torch.tensor([1.0, 1.0, 0.5, 0.5])
        random.append(_Case("", (logits, deltas, rois, (56, 60)), kwargs, names))
    return fixed, random


def _check_detection_layer(fn) -> str:
    fixed, random = _detection_cases()

    def variants(case, expected):
        return [
            (
                "NMS must run within each class (batched_nms with the labels as groups): boxes of different "
                "classes never suppress each other.",
                lambda: _detections_with(case, per_class=False),
            ),
            (
                "the score is a probability: softmax the class logits first (you thresholded the logits).",
                lambda: _detections_with(case, softmax=False),
            ),
            (
                "the candidate is the most likely class *including* background (column 0): an ROI whose best "
                "class is background gives no detection; you took the best foreground class.",
                lambda: _detections_with(case, background=False),
            ),
            (
                "decode the deltas of the detection's own class, box_deltas[r, label]; you used class 1's.",
                lambda: _detections_with(case, which="first"),
            ),
            (
                "decode the deltas of the detection's own class, box_deltas[r, label]; you used column 0 "
                "(background).",
                lambda: _detections_with(case, which="background"),
            ),
            (
                "the boxes are not clipped to the image (x into [0, W], y into [0, H]).",
                lambda: _detections_with(case, clip=False),
            ),
            (
                "max_detections was ignored: keep only the best max_detections.",
                lambda: _detections_with(case, cut=False),
            ),
            (
                "the weights were not passed to decode_deltas.",
                lambda: _detections_with(case, weights_used=False),
            ),
            (
                "score_threshold was ignored: keep candidates with score >= score_threshold.",
                lambda: _detections_with(case, threshold=False),
            ),
        ]

    return _run_exact(
        "detection_layer",
        fn,
        _detection_reference,
        fixed,
        random,
        atol=1e-4,
        rtol=1e-4,
        variants=variants,
        call=_tuple_call("detection_layer", ("boxes", "scores", "labels"), _detection_table),
        shape_hint="Compared as one table: [N, 6] = boxes, scores and labels side by side.",
    ).replace(" cases agree", " cases (boxes, scores, labels) agree")

