"""Checks of the sampling stages ``rpn_targets`` and ``detection_targets`` (exercises 7, 10): properties."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import anchors as _anchors
from .. import matching as _matching
from .check_boxes import _MATTERPORT_ORDER
from .checking import (
    _call,
    _Case,
    _close,
    _diagnose,
    _difference_text,
    _Fail,
    _fmt,
    _gen,
    _indent,
    _inputs_text,
    _random_boxes,
)
from .swap import _REF, _box_iou, _encode


def _outputs(name, where, out, spec: dict, case: _Case) -> dict:
    """Check that ``out`` is a dict with the keys of ``spec`` (key -> (shape, kind)); return the tensors."""
    head = f"FAIL {name}, {where}"
    if not isinstance(out, dict):
        raise _Fail(f"{head}: return a dict with keys {list(spec)}, got {type(out).__name__}.")
    missing = [k for k in spec if k not in out]
    if missing:
        raise _Fail(f"{head}: the dict lacks {missing} (it has {list(out)}); required: {list(spec)}.")
    result = {}
    for key, (shape, kind) in spec.items():
        t = out[key]
        if not isinstance(t, torch.Tensor):
            raise _Fail(f"{head}: {key!r} must be a tensor, got {type(t).__name__}.")
        if shape is not None and list(t.shape) != list(shape):
            raise _Fail(
                f"{head}: {key!r} has shape {list(t.shape)}, expected {list(shape)}.\n  Inputs:\n"
                f"{_inputs_text(case)}"
            )
        if kind == "int" and t.dtype != torch.int64:
            raise _Fail(f"{head}: {key!r} has dtype {t.dtype}, expected torch.int64 (use .long()).")
        if kind == "float" and not t.is_floating_point():
            raise _Fail(f"{head}: {key!r} has dtype {t.dtype}, expected a float tensor.")
        result[key] = t.detach().cpu()
    return result


def _indices(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _check_targets_deltas(name, head, targets, gt, refs, weights, where_pos, key, case) -> None:
    """Regression targets of positives equal encode_deltas(matched GT, reference box, weights); 0 "
    "elsewhere."""
    expected = _encode(gt, refs, weights) if len(refs) else targets[where_pos]
    got = targets[where_pos]
    if not _close(got, expected, 1e-4, 1e-4):
        variants = [
            (
                "the weights were not applied: multiply the deltas by weights.",
                lambda: _encode(gt, refs, (1.0,) * 4),
            ),
            (
                "the arguments of encode_deltas are (target boxes, reference boxes): "
                "encode_deltas(gt_boxes[...], "
                "anchors_or_rois, weights).",
                lambda: _encode(refs, gt, weights),
            ),
            (
                "the deltas are in matterport's order (dy, dx, dh, dw); here (dx, dy, dw, dh).",
                lambda: expected[:, _MATTERPORT_ORDER],
            ),
        ]
        text = (
            f"{head}: {key!r} of the positives must be encode_deltas(gt_boxes[matched_gt], box, weights) "
            f"with weights {tuple(weights)}.\n  " + _difference_text(got, expected, 1e-4, 1e-4)
        )
        for d in _diagnose(got, expected, variants, 1e-4, 1e-4):
            text += "\n  Diagnosis: " + d
        raise _Fail(text)
    if bool((targets[~where_pos] != 0).any()):
        raise _Fail(f"{head}: {key!r} must be 0 for every row that is not a positive.")


def _rpn_case_tiny() -> _Case:
    gt = torch.tensor([[0.0, 0, 4, 4], [20, 0, 28, 8]])
    anchors = torch.tensor(
        [
            [0.0, 0, 4, 4],  # IoU 1 with GT 0: positive
            [0, 0, 4, 2],  # IoU 8/16 = 0.5 = positive_iou: positive (>=)
            [0, 0, 4, 1],  # IoU 0.25 = negative_iou: ignored (not < 0.25)
            [10, 10, 14, 14],  # IoU 0: negative
            [0, 0, 2, 2],  # IoU 4/16 = 0.25: ignored
            [20, 0, 24, 4],  # IoU 16/64 = 0.25 with GT 1, its best anchor: positive (low-quality match)
            [22, 0, 26, 2],  # IoU 8/64 = 0.125: negative
        ]
    )
    kwargs = {
        "positive_iou": 0.5,
        "negative_iou": 0.25,
        "num_samples": 16,
        "positive_fraction": 1.0,
        "weights": (1.0, 1.0, 1.0, 1.0),
    }
    note = (
        "labels [1, 1, -1, 0, -1, 1, 0]: IoU >= 0.5 positive, < 0.25 negative; anchor 5 is GT 1's best "
        "anchor (IoU 0.25): positive by the low-quality rule; nothing is left out by sampling"
    )
    return _Case(
        "7 anchors, 2 GT boxes (every candidate sampled)",
        (anchors, gt),
        kwargs,
        ("anchors", "gt_boxes"),
        note,
    )


def _rpn_random_cases() -> list[_Case]:
    anchors, _ = _anchors.image_anchors((64, 64), scales=(8, 16, 32, 64, 128))
    gt = torch.tensor([[6.0, 10, 30, 40], [34, 30, 60, 52]])
    names = ("anchors", "gt_boxes")
    base = {"positive_iou": 0.7, "negative_iou": 0.3, "weights": (1.0, 1.0, 1.0, 1.0)}
    return [
        _Case(
            "1023 anchors, 2 GT, 256 samples",
            (anchors, gt),
            {**base, "num_samples": 256, "positive_fraction": 0.5},
            names,
        ),
        _Case(
            "positives capped",
            (anchors, gt),
            {
                **base,
                "positive_iou": 0.4,
                "num_samples": 16,
                "positive_fraction": 0.25,
                "weights": (10.0, 10.0, 5.0, 5.0),
            },
            names,
        ),
        _Case(
            "no GT box",
            (anchors, torch.zeros(0, 4)),
            {**base, "num_samples": 64, "positive_fraction": 0.5},
            names,
            "every anchor is a negative: 64 sampled negatives",
        ),
    ]


def _rpn_validate(name: str, case: _Case, where: str, out, expected_labels: bool) -> dict:
    anchors, gt = case.args
    kw = {k: v for k, v in case.kwargs.items() if k != "generator"}
    n = anchors.shape[0]
    head = f"FAIL {name}, {where}"
    got = _outputs(
        name,
        where,
        out,
        {"labels": ([n], "int"), "matched_gt": ([n], "int"), "deltas": ([n, 4], "float")},
        case,
    )
    labels, matched, deltas = got["labels"], got["matched_gt"], got["deltas"]
    reference = _REF["rpn_targets"](anchors, gt, **kw)
    cand = reference["labels_before_sampling"]
    if expected_labels and not torch.equal(labels, reference["labels"]):
        text = (
            f"{head}: wrong labels.\n  Inputs:\n{_inputs_text(case)}\n  Expected labels ({case.note}):\n"
            f"{_indent(_fmt(reference['labels']))}\n  Got:\n{_indent(_fmt(labels))}"
        )
        pi, ni = kw["positive_iou"], kw["negative_iou"]
        iou = _box_iou(gt, anchors)
        low = _matching.match_by_iou(iou, pi, ni, allow_low_quality=False)

        def as_labels(m):
            return torch.where(m >= 0, 1, torch.where(m == _matching.BACKGROUND, 0, -1))

        def up(v: float) -> float:  # the next float32 above v: ">" at v is ">=" at up(v)
            return float(torch.nextafter(torch.tensor(v), torch.tensor(math.inf)))

        above = up(pi)
        variants = [
            (
                "a positive needs IoU >= positive_iou (you used >): an anchor exactly at the threshold is "
                "positive.",
                lambda: as_labels(_matching.match_by_iou(iou, above, min(ni, above), True)),
            ),
            (
                "a negative needs IoU < negative_iou (you used <=): an anchor exactly at the threshold is "
                "ignored.",
                lambda: as_labels(_matching.match_by_iou(iou, max(pi, up(ni)), up(ni), True)),
            ),
            (
                "the low-quality matches are missing: each GT box also makes its highest-IoU anchor(s) "
                "positive, "
                "even below positive_iou, so every object gets an anchor.",
                lambda: as_labels(low),
            ),
            (
                "negatives are 0 and ignored anchors -1 (you swapped them).",
                lambda: torch.where(reference["labels"] == 1, 1, -1 - reference["labels"]),
            ),
        ]
        for d in _diagnose(labels, reference["labels"], variants, 0, 0):
            text += "\n  Diagnosis: " + d
        raise _Fail(text)
    bad = set(torch.unique(labels).tolist()) - {-1, 0, 1}
    if bad:
        raise _Fail(f"{head}: labels must be 1, 0 or -1, got also {sorted(bad)}.")
    pos, neg = labels == 1, labels == 0
    best = _box_iou(gt, anchors).max(dim=0).values if gt.shape[0] else torch.zeros(n)
    wrong_pos = _indices(pos & (cand != 1))
    if wrong_pos:
        i = wrong_pos[0]
        raise _Fail(
            f"{head}: anchor {i} is labelled positive but its best IoU is {best[i]:.3f} < positive_iou "
            f"{kw['positive_iou']} and it is no GT box's best anchor."
        )
    wrong_neg = _indices(neg & (cand != 0))
    if wrong_neg:
        i = wrong_neg[0]
        why = (
            "anchors between the thresholds are ignored (-1)"
            if cand[i] == -1
            else "it is a positive (IoU >= positive_iou, or a GT box's best anchor)"
        )
        raise _Fail(
            f"{head}: anchor {i} is labelled negative but its best IoU is {best[i]:.3f} (negatives need "
            f"IoU < negative_iou = {kw['negative_iou']}): {why}."
        )
    num_pos_cand, num_neg_cand = int((cand == 1).sum()), int((cand == 0).sum())
    cap = int(kw["num_samples"] * kw["positive_fraction"])
    want_pos = min(num_pos_cand, cap)
    want_neg = min(num_neg_cand, kw["num_samples"] - want_pos)
    got_pos, got_neg = int(pos.sum()), int(neg.sum())
    if got_pos != want_pos:
        why = (
            f"at most int(num_samples * positive_fraction) = {cap} positives"
            if got_pos > want_pos
            else f"all {num_pos_cand} positive candidates fit under the cap of {cap}, so every one is sampled"
            if num_pos_cand <= cap
            else f"{cap} positives are sampled when there are more candidates"
        )
        raise _Fail(f"{head}: {got_pos} positives, expected {want_pos}: {why}.")
    if got_neg != want_neg:
        hint = ""
        if got_neg == min(num_neg_cand, kw["num_samples"] - cap):
            hint = " Fill up with num_samples minus the positives actually taken, not minus the cap."
        elif got_neg == num_neg_cand:
            hint = " Negatives are sampled too, not all kept."
        raise _Fail(
            f"{head}: {got_neg} negatives, expected {want_neg} (num_samples - positives taken = "
            f"{kw['num_samples']} - {got_pos}, at most the {num_neg_cand} candidates).{hint}"
        )
    if bool((matched[~pos] != -1).any()):
        raise _Fail(f"{head}: matched_gt must be -1 for every anchor that is not a sampled positive.")
    pos_idx = torch.nonzero(pos).flatten()
    if len(pos_idx):
        m = matched[pos_idx]
        if bool(((m < 0) | (m >= gt.shape[0])).any()):
            raise _Fail(f"{head}: matched_gt of a positive must be a GT index in [0, {gt.shape[0]}).")
        own = _box_iou(gt, anchors)[m, pos_idx]
        if bool((own < best[pos_idx] - 1e-6).any()):
            raise _Fail(
                f"{head}: matched_gt must be each positive anchor's highest-IoU GT box (also for a "
                "low-quality match: the anchor regresses to its own best GT)."
            )
    _check_targets_deltas(
        name,
        head,
        deltas,
        gt[matched[pos_idx]] if len(pos_idx) else gt[:0],
        anchors[pos_idx],
        kw["weights"],
        pos,
        "deltas",
        case,
    )
    return got


def _seeded(case: _Case, seed: int) -> _Case:
    """The case with ``generator=`` a generator of this seed."""
    return _Case(case.label, case.args, {**case.kwargs, "generator": _gen(seed)}, case.names, case.note)


def _check_sampling_randomness(name: str, fn, case: _Case, key: str, validate) -> None:
    """Same generator seed: same sample; other seed: another sample (and not simply the first ones)."""
    outs = []
    for seed in (1, 1, 2):
        c = _seeded(case, seed)
        where = f"random case '{case.label}' with generator seed {seed}"
        outs.append(validate(name, c, where, _call(fn, name, c, where), False)[key])
    if not torch.equal(outs[0], outs[1]):
        raise _Fail(
            f"FAIL {name}: two calls with the same generator seed gave different samples. Pass "
            "generator=generator to torch.randperm (or torch.multinomial) so results are reproducible."
        )
    if torch.equal(outs[0], outs[2]):
        raise _Fail(
            f"FAIL {name}: generators with different seeds gave exactly the same sample. The sample must "
            "be random (torch.randperm(n, generator=generator)[:k]); taking the first k candidates "
            "favours one corner of the image."
        )


def _run_sampling(name: str, fn, validate, tiny: _Case, random: list, seed: int, key: str, reseeded: int):
    """The hand-made case (exact answer), the random cases (generator seeds ``seed``, ``seed + 1``, ...),
    then the randomness of the sample (``key``) of case ``random[reseeded]``; fails with :class:`_Fail`."""
    where = "hand-made case 1 of 1 (" + tiny.label + ")"
    validate(name, tiny, where, _call(fn, name, tiny, where), True)
    for i, case in enumerate(random):
        c = _seeded(case, seed + i)
        where = f"random case {i + 1} of {len(random)} ({case.label})"
        validate(name, c, where, _call(fn, name, c, where), False)
    _check_sampling_randomness(name, fn, random[reseeded], key, validate)


def _check_rpn_targets(fn) -> str:
    cases = _rpn_random_cases()
    _run_sampling("rpn_targets", fn, _rpn_validate, _rpn_case_tiny(), cases, 10, "labels", 0)
    return (
        f"PASS rpn_targets: the hand-made case gives the exact labels, and on {len(cases)} random cases the "
        "labels follow the IoU thresholds, the sample counts are exact, matched_gt and deltas (atol 1e-4) "
        "are "
        "right, and sampling is random and reproducible with a generator."
    )


def _rectangle_masks(boxes: torch.Tensor, size, cut: bool = True) -> torch.Tensor:
    """Full-image masks of objects in their boxes: the lower-left triangle of each box when ``cut``."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    masks = []
    for x1, y1, x2, y2 in boxes.tolist():
        inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        if cut:  # below the box's diagonal: the crop is not symmetric, so transposes and flips show
            inside &= (xs - x1) / (x2 - x1) <= (ys - y1) / (y2 - y1)
        masks.append(inside)
    return torch.stack(masks).to(torch.uint8)


def _detection_cases():
    names = ("proposals", "gt_boxes", "gt_labels", "gt_masks")
    gt = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16]])
    proposals = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [0, 8, 8, 16], [4, 0, 12, 8], [1, 1, 9, 9]])
    tiny = _Case(
        "5 proposals, 2 GT (every candidate sampled)",
        (proposals, gt, torch.tensor([2, 1]), _rectangle_masks(gt, (16, 16))),
        {
            "num_samples": 8,
            "positive_fraction": 0.5,
            "positive_iou": 0.5,
            "negative_iou": 0.5,
            "mask_size": 4,
            "weights": (10.0, 10.0, 5.0, 5.0),
        },
        names,
        "positives: proposals 0, 1, 4 (IoU 1, 1, 49/79 = 0.62); negatives: 2, 3 (IoU 0 and 32/96 = 0.33); "
        "3 positives allow int(3 / 0.5) - 3 = 3 negatives, 2 exist",
    )
    g = _gen(7)
    random = []
    for k in range(2):
        gt = torch.tensor([[4.0, 6, 20, 26], [18, 4, 30, 16], [8, 20, 28, 30]])
        jitter = gt.repeat(8, 1) + torch.randn(24, 4, generator=g) * 2.5
        jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 2)
        props = torch.cat((jitter, _random_boxes(100, g, extent=24.0, min_size=2.0)))
        kwargs = {
            "num_samples": (16, 128)[k],
            "positive_fraction": 0.25,
            "positive_iou": 0.5,
            "negative_iou": (0.5, 0.4)[k],
            "mask_size": 7,
            "weights": (10.0, 10.0, 5.0, 5.0),
        }
        label = ("positives capped at 4", "fewer positives than the cap; ignore band 0.4 - 0.5")[k]
        masks = _rectangle_masks(gt, (32, 32))
        random.append(_Case(label, (props, gt, torch.tensor([1, 3, 2]), masks), kwargs, names))
    return tiny, random


def _mask_references(mask: torch.Tensor, roi: torch.Tensor, m: int) -> list[torch.Tensor]:
    """Acceptable mask targets: the GT mask cut out at the ROI by roi_align (either half-pixel convention),
    soft or thresholded at 0.5."""
    out = []
    rois = torch.cat((roi.new_zeros(1), roi))[None]
    for aligned in (False, True):
        soft = _REF["roi_align"](mask[None, None].float(), rois, (m, m), 1.0, -1, aligned)[0, 0]
        out += [soft, (soft >= 0.5).float()]
    return out


def _detection_validate(name: str, case: _Case, where: str, out, exact_sets: bool) -> dict:
    proposals, gt, gt_labels, gt_masks = case.args
    kw = {k: v for k, v in case.kwargs.items() if k != "generator"}
    m = kw["mask_size"]
    head = f"FAIL {name}, {where}"
    got = _outputs(
        name,
        where,
        out,
        {
            "rois": (None, "float"),
            "labels": (None, "int"),
            "matched_gt": (None, "int"),
            "box_targets": (None, "float"),
            "mask_targets": (None, None),
        },
        case,
    )
    rois, labels, matched, targets, masks = (
        got[k] for k in ("rois", "labels", "matched_gt", "box_targets", "mask_targets")
    )
    r = rois.shape[0]
    for key in ("labels", "matched_gt"):
        if list(got[key].shape) != [r]:
            raise _Fail(
                f"{head}: {key!r} must have one entry per ROI, shape [{r}], got {list(got[key].shape)}."
            )
    if rois.dim() != 2 or rois.shape[-1] != 4 or list(targets.shape) != [r, 4]:
        raise _Fail(
            f"{head}: 'rois' and 'box_targets' must be [R, 4], got {list(rois.shape)} and "
            f"{list(targets.shape)}."
        )
    same = (rois[:, None, :] == proposals[None, :, :]).all(-1)  # [R, P]
    if not bool(same.any(1).all()):
        raise _Fail(f"{head}: every row of 'rois' must be one of the proposals, unchanged.")
    index = same.float().argmax(1)
    if len(torch.unique(index)) != r:
        raise _Fail(f"{head}: a proposal was sampled twice: sample without replacement (torch.randperm).")
    num_pos = int((labels > 0).sum())
    if not (bool((labels[:num_pos] > 0).all()) and bool((labels[num_pos:] == 0).all())):
        raise _Fail(
            f"{head}: positives come first (rois = positives then negatives) and negatives have label 0; "
            f"got labels {_fmt(labels)}."
        )
    iou = _box_iou(gt, proposals)
    best, best_gt = iou.max(0)
    cand = _matching.match_by_iou(iou, kw["positive_iou"], kw["negative_iou"], allow_low_quality=False)
    pos_idx, neg_idx = index[:num_pos], index[num_pos:]
    if bool((cand[pos_idx] < 0).any()):
        i = int(pos_idx[cand[pos_idx] < 0][0])
        raise _Fail(
            f"{head}: proposal {i} is a positive but its best IoU is {best[i]:.3f} < positive_iou "
            f"{kw['positive_iou']} (no low-quality matches here)."
        )
    if bool((cand[neg_idx] != _matching.BACKGROUND).any()):
        i = int(neg_idx[cand[neg_idx] != _matching.BACKGROUND][0])
        raise _Fail(
            f"{head}: proposal {i} is a negative but its best IoU is {best[i]:.3f}: negatives need IoU < "
            f"negative_iou = {kw['negative_iou']}."
        )
    pf = kw["positive_fraction"]
    want_pos = min(int((cand >= 0).sum()), int(kw["num_samples"] * pf))
    want_neg = min(int((cand == _matching.BACKGROUND).sum()), int(want_pos / pf) - want_pos)
    if num_pos != want_pos:
        raise _Fail(
            f"{head}: {num_pos} positives, expected {want_pos} (all positive candidates up to "
            f"int(num_samples * positive_fraction) = {int(kw['num_samples'] * pf)})."
        )
    if abs(len(neg_idx) - want_neg) > 1:
        hint = ""
        if len(neg_idx) == min(int((cand == _matching.BACKGROUND).sum()), kw["num_samples"] - num_pos):
            hint = (
                " That is 'fill up to num_samples' (torchvision); here matterport keeps the ratio: "
                "int(P / positive_fraction) - P negatives."
            )
        raise _Fail(
            f"{head}: {len(neg_idx)} negatives, expected {want_neg} = int({num_pos} / {pf}) - {num_pos} "
            f"(at most the negatives available).{hint}"
        )
    if exact_sets and set(pos_idx.tolist()) != set(_indices(cand >= 0)):
        raise _Fail(f"{head}: the positives must be proposals {_indices(cand >= 0)}, got {pos_idx.tolist()}.")
    m_pos = matched[:num_pos]
    if bool((matched[num_pos:] != -1).any()):
        raise _Fail(f"{head}: matched_gt must be -1 for negatives.")
    if bool(((m_pos < 0) | (m_pos >= gt.shape[0])).any()) or bool(
        (iou[m_pos.clamp(0, max(gt.shape[0] - 1, 0)), pos_idx] < best[pos_idx] - 1e-6).any()
    ):
        raise _Fail(f"{head}: matched_gt of each positive must be the GT box it overlaps most.")
    if not torch.equal(labels[:num_pos], gt_labels[m_pos].long()):
        raise _Fail(
            f"{head}: the label of a positive is gt_labels[matched_gt] (its GT's class); got "
            f"{_fmt(labels[:num_pos])}, expected {_fmt(gt_labels[m_pos])}."
        )
    is_pos = torch.arange(r) < num_pos
    _check_targets_deltas(
        name, head, targets, gt[m_pos], proposals[pos_idx], kw["weights"], is_pos, "box_targets", case
    )
    if list(masks.shape) != [num_pos, m, m]:
        raise _Fail(
            f"{head}: 'mask_targets' must be [R_pos, mask_size, mask_size] = [{num_pos}, {m}, {m}] "
            f"(positives only), got {list(masks.shape)}."
        )
    masks = masks.float()
    for k in range(num_pos):
        mask, roi, g = gt_masks[m_pos[k]], proposals[pos_idx[k]], int(m_pos[k])
        refs = _mask_references(mask, roi, m)
        error = min(float((masks[k] - ref).abs().mean()) for ref in refs)
        if error <= 0.1:
            continue
        text = (
            f"{head}: the mask target of positive {k} (ROI {_fmt(roi)}, GT {g}) is not GT mask {g} cut out "
            "at "
            f"the ROI and resized to {m} x {m} (mean difference {error:.2f}, allowed 0.1).\n  Expected "
            "(about):\n"
            f"{_indent(_fmt(refs[3]))}\n  Got:\n{_indent(_fmt(masks[k]))}"
        )
        whole = F.interpolate(mask[None, None].float(), size=(m, m), mode="bilinear", align_corners=False)[
            0, 0
        ]
        variants = [
            (
                "you resized the whole image's mask; cut out the ROI first (roi_align on the GT mask does "
                "both).",
                [whole, (whole >= 0.5).float()],
            ),
            ("the mask is transposed: rows are y, columns x.", [t.T for t in refs]),
        ] + [
            (
                f"that is GT {o}'s mask: use the mask of the ROI's matched GT (gt_masks[matched_gt]).",
                _mask_references(gt_masks[o], roi, m),
            )
            for o in range(gt.shape[0])
            if o != g
        ]
        for explanation, options in variants:
            if min(float((masks[k] - t).abs().mean()) for t in options) <= 0.1:
                text += "\n  Diagnosis: " + explanation
        raise _Fail(text)
    return {"rois": rois}


def _check_detection_targets(fn) -> str:
    tiny, random = _detection_cases()
    _run_sampling("detection_targets", fn, _detection_validate, tiny, random, 20, "rois", 1)
    return (
        f"PASS detection_targets: on the hand-made and {len(random)} random cases the sampled ROIs follow "
        "the "
        "IoU threshold, positives come first, counts keep the positive fraction, labels, matched_gt and "
        "box_targets (atol 1e-4) are right, mask targets match the matched GT mask cut out at the ROI (mean "
        "difference <= 0.1), and sampling is random and reproducible with a generator."
    )
