"""Checks of the losses: ``rpn_loss`` (objectness and box regression of the RPN) and ``mask_loss``.

Losses are numbers, so the checks also ask for what makes them trainable: the result must carry the gradient
back to the predictions (inputs are given with ``requires_grad=True``), and an empty sample gives 0, not NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checking import _call, _Case, _Fail, _gen, _inputs_text, _run_exact
from .swap import _ORIGINALS, _REF

_OBJECTNESS = _ORIGINALS["rpn_loss"]["rpn_objectness_loss"]
_BOX = _ORIGINALS["rpn_loss"]["rpn_box_loss"]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.clone().requires_grad_(True)


def _no_gradient(name, where, case) -> _Fail:
    return _Fail(
        f"FAIL {name}, {where}: your loss carries no gradient (requires_grad is False), so training could "
        "not learn from it. Compute it with torch operations on the inputs; .item(), float(...), numpy or "
        f"torch.tensor(...) cut the graph.\n  Inputs:\n{_inputs_text(case)}"
    )


# --------------------------------------------------------------------------------------------------------
# rpn_loss


def _rpn_reference(objectness, deltas, labels, target_deltas, beta=1.0 / 9):
    with torch.no_grad():
        return torch.stack((_OBJECTNESS(objectness, labels), _BOX(deltas, target_deltas, labels, beta=beta)))


def _rpn_with(case: _Case, *, ignored_as_negative=False, per="sampled", beta=None, l1=False,
              all_anchors=False, objectness_sum=False):  # fmt: skip
    """The two RPN losses with a mistake switched on (the defaults give the right answer)."""
    logits, deltas, labels, targets = (t.detach() for t in case.args)
    b = case.kwargs["beta"] if beta is None else beta
    sampled = labels >= 0
    chosen = torch.ones_like(sampled) if ignored_as_negative else sampled
    bce = F.binary_cross_entropy_with_logits(logits[chosen], (labels[chosen] == 1).float(), reduction="sum")
    objectness = bce if objectness_sum else bce / max(int(chosen.sum()), 1)
    rows = torch.ones_like(sampled) if all_anchors else labels == 1
    diff = deltas[rows] - targets[rows]
    total = diff.abs().sum() if l1 else F.smooth_l1_loss(deltas[rows], targets[rows], beta=b, reduction="sum")
    count = {"sampled": int(sampled.sum()), "positives": int((labels == 1).sum()),
             "elements": 4 * int((labels == 1).sum()), "none": 1}[per]  # fmt: skip
    return torch.stack((objectness, total / max(count, 1)))


def _rpn_cases():
    names = ("objectness", "deltas", "labels", "target_deltas")
    logits = torch.tensor([2.0, -1.0, 5.0, 0.0])
    labels = torch.tensor([1, 0, -1, -1])
    deltas = torch.tensor([[0.1, -0.05, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 0, 0, 0], [0.0, 0, 0, 3.0]])
    targets = torch.tensor([[0.0, 0.0, 0.2, 0.3], [0.0, 0, 0, 0], [0.0, 0, 0, 0], [0.0, 0, 0, 0]])

    def case(label, lab, beta, note):
        return _Case(label, (_leaf(logits), _leaf(deltas), lab, targets), {"beta": beta}, names, note)

    fixed = [
        case(
            "one positive, one negative, two ignored",
            labels,
            1.0 / 9,
            "objectness: mean of log(1 + e^-2) = 0.1269 (anchor 0, object) and log(1 + e^-1) = 0.3133 "
            "(anchor 1, background) = 0.2201; box: smooth L1 of anchor 0's differences (0.1, -0.05, 0.3, "
            "-0.3; quadratic 0.5 d^2 / beta below beta = 1/9, linear |d| - beta / 2 above), summed, divided "
            "by the 2 sampled anchors",
        ),
        case("beta = 1 (matterport's smooth L1)", labels, 1.0, "every difference is below 1: 0.5 d^2 each"),
        case(
            "only negatives and ignored anchors",
            torch.tensor([0, 0, -1, 0]),
            1.0 / 9,
            "no positive: the box loss is 0; the objectness loss averages the 3 negatives",
        ),
        case("no anchor sampled", torch.tensor([-1, -1, -1, -1]), 1.0 / 9, "both losses are 0, not NaN"),
    ]
    g = _gen(19)
    random = []
    for k in range(4):
        a = 40
        lab = torch.multinomial(torch.tensor([0.25, 0.35, 0.4]), a, replacement=True, generator=g) - 1
        random.append(
            _Case(
                "",
                (
                    _leaf(torch.randn(a, generator=g) * 3),
                    _leaf(torch.randn(a, 4, generator=g) * 0.5),
                    lab.flip(0) if k % 2 else lab,
                    torch.randn(a, 4, generator=g) * 0.5,
                ),
                {"beta": (1.0 / 9, 1.0)[k // 2]},
                names,
            )
        )
    return fixed, random


def _loss_call(name: str, parts: int):
    """A ``call`` for :func:`_run_exact`: the student's loss(es) as one tensor that must carry a gradient."""

    def call(fn, _, case, where):
        out = _call(fn, name, case, where)
        values = out if parts > 1 else (out,)
        if parts > 1 and not (isinstance(out, (tuple, list)) and len(out) == parts):
            raise _Fail(
                f"FAIL {name}, {where}: return a tuple (objectness_loss, box_loss), got {type(out).__name__}."
            )
        odd = [v for v in values if not (isinstance(v, torch.Tensor) and v.numel() == 1)]
        if odd and parts == 1:
            return out  # the comparison's type check explains what is wrong
        if odd:
            what = ", ".join(type(v).__name__ if not isinstance(v, torch.Tensor) else f"shape {list(v.shape)}"
                             for v in values)  # fmt: skip
            raise _Fail(f"FAIL {name}, {where}: each loss must be a 0-d tensor (one number), got {what}.")
        if not all(v.requires_grad for v in values):
            raise _no_gradient(name, where, case)
        return torch.stack([v.reshape(()) for v in values]) if parts > 1 else values[0]

    return call


def _check_rpn_loss(fn) -> str:
    fixed, random = _rpn_cases()

    def variants(case, expected):
        return [
            (
                "only sampled anchors count: anchors labelled -1 are ignored, not background (average the "
                "cross-entropy over labels >= 0).",
                lambda: _rpn_with(case, ignored_as_negative=True),
            ),
            (
                "the box loss is divided by the number of *sampled* anchors (torchvision), not of positives.",
                lambda: _rpn_with(case, per="positives"),
            ),
            (
                "the box loss is divided by the number of sampled anchors; you took the mean over the "
                "positives' coordinates (matterport's normalisation).",
                lambda: _rpn_with(case, per="elements"),
            ),
            (
                "use beta: F.smooth_l1_loss(..., beta=beta); its default beta is 1.0.",
                lambda: _rpn_with(case, beta=1.0),
            ),
            ("the box loss is smooth L1, not L1.", lambda: _rpn_with(case, l1=True)),
            (
                "only positive anchors (label 1) have a box loss; you included every anchor.",
                lambda: _rpn_with(case, all_anchors=True),
            ),
            (
                "the box loss is a sum divided by the number of sampled anchors; you did not divide.",
                lambda: _rpn_with(case, per="none"),
            ),
            (
                "the objectness loss is the mean over the sampled anchors, not the sum.",
                lambda: _rpn_with(case, objectness_sum=True),
            ),
        ]

    summary = _run_exact(
        "rpn_loss",
        fn,
        _rpn_reference,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-4,
        variants=variants,
        call=_loss_call("rpn_loss", 2),
        shape_hint="Return two 0-d tensors: (objectness_loss, box_loss).",
    )
    return summary.replace(" cases agree", " cases (both losses, with their gradients) agree")


# --------------------------------------------------------------------------------------------------------
# mask_loss


def _mask_reference(mask_logits, labels, mask_targets):
    with torch.no_grad():
        return _REF["mask_loss"](mask_logits, labels, mask_targets)


def _mask_with(case: _Case, *, channel="label", per="pixels"):
    """The mask loss with a mistake switched on (the defaults give the right answer)."""
    logits, labels, targets = (t.detach() for t in case.args)
    positive = torch.nonzero(labels > 0).flatten()
    if channel == "all":
        chosen = logits[positive]  # [R_pos, K + 1, M, M], every channel against the target
        total = F.binary_cross_entropy_with_logits(
            chosen, targets[:, None].expand_as(chosen).float(), reduction="sum"
        )
        count = chosen.numel()
    elif channel == "softmax":
        probs = torch.softmax(logits[positive], dim=1)[torch.arange(len(positive)), labels[positive]]
        total = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets.float(), reduction="sum")
        count = probs.numel()
    else:
        zeros = torch.zeros_like(positive)
        index = {"label": labels[positive], "zero": zeros, "one": zeros + 1}
        chosen = logits[positive, index[channel]]
        total = F.binary_cross_entropy_with_logits(chosen, targets.float(), reduction="sum")
        count = chosen.numel()
    divide = {"pixels": max(count, 1), "rois": max(len(positive), 1), "all_rois": max(len(labels), 1)}[per]
    return total / divide


def _mask_cases():
    names = ("mask_logits", "labels", "mask_targets")
    g = _gen(20)
    logits = torch.randn(3, 3, 2, 2, generator=g) * 2
    labels = torch.tensor([2, 0, 1])
    targets = torch.tensor([[[1.0, 0], [1, 1]], [[0.0, 1], [0, 0]]])
    fixed = [
        _Case(
            "3 ROIs (ROI 1 negative), 2 classes, 2 x 2 masks",
            (_leaf(logits), labels, targets),
            names=names,
            note="ROI 0 is read on channel 2 against mask_targets[0], ROI 2 on channel 1 against "
            "mask_targets[1]; the mean over those 8 pixels",
        ),
        _Case(
            "no positive ROI",
            (_leaf(logits), torch.tensor([0, 0, 0]), torch.zeros(0, 2, 2)),
            names=names,
            note="0 (not NaN), still connected to mask_logits",
        ),
        _Case(
            "soft targets",
            (_leaf(logits), torch.tensor([1, 1, 2]), torch.rand(3, 2, 2, generator=g)),
            names=names,
            note="targets in [0, 1] (torchvision keeps RoIAlign's soft values)",
        ),
    ]
    random = []
    for _ in range(4):
        r, classes, m = 8, 4, 5
        lab = torch.randint(0, classes, (r,), generator=g)
        npos = int((lab > 0).sum())
        random.append(
            _Case(
                "",
                (
                    _leaf(torch.randn(r, classes, m, m, generator=g) * 2),
                    lab,
                    (torch.rand(npos, m, m, generator=g) > 0.5).float(),
                ),
                names=names,
            )
        )
    return fixed, random


def _check_mask_loss(fn) -> str:
    fixed, random = _mask_cases()

    def variants(case, expected):
        return [
            (
                "each positive ROI is trained on the mask of its own class only: mask_logits[r, labels[r]]; "
                "you used every class's channel.",
                lambda: _mask_with(case, channel="all"),
            ),
            (
                "use the channel of the ROI's class, labels[r]; you used channel 0 (background).",
                lambda: _mask_with(case, channel="zero"),
            ),
            (
                "use the channel of the ROI's class, labels[r]; you used channel 1 for every ROI.",
                lambda: _mask_with(case, channel="one"),
            ),
            (
                "the masks of different classes do not compete: a per-pixel sigmoid (binary cross-entropy), "
                "not a softmax across classes.",
                lambda: _mask_with(case, channel="softmax"),
            ),
            (
                "average over all the positives' pixels; you divided the sum by the number of positive ROIs.",
                lambda: _mask_with(case, per="rois"),
            ),
            (
                "average over the positives' pixels; you divided by the number of all ROIs.",
                lambda: _mask_with(case, per="all_rois"),
            ),
        ]

    summary = _run_exact(
        "mask_loss",
        fn,
        _mask_reference,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-4,
        variants=variants,
        call=_loss_call("mask_loss", 1),
        shape_hint="Return one 0-d tensor.",
    )
    return summary.replace(" cases agree", " cases (with their gradients) agree")
