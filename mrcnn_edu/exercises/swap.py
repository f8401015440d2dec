"""Swapping a student's function into the library and the model: :func:`use_student`, :func:`use_reference`.

:data:`SITES` lists where each stage is looked up; the originals (and the references the checks use, ``_REF``)
are saved when this module is imported, so a swapped-in function is never its own reference. The adapters give
the student's simpler signatures the library's. Every module of this package is left alone by a swap: the
checks hold references of their own.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable

import torch

from .. import anchors as _anchors
from .. import boxes as _boxes
from .. import masks as _masks
from .catalog import EXERCISES, _exercise_name

#: stage -> library attribute name -> modules that hold it (the first one defines it).
SITES: dict[str, dict[str, tuple[str, ...]]] = {
    "box_iou": {
        "box_iou": (
            "mrcnn_edu.boxes",
            "mrcnn_edu.nms",
            "mrcnn_edu.rpn_targets",
            "mrcnn_edu.detection_targets",
            "mrcnn_edu.evaluate",
            "mrcnn_edu.data.shapes",
            "mrcnn_edu.ops",
        )
    },
    "encode_deltas": {
        "encode_deltas": ("mrcnn_edu.boxes", "mrcnn_edu.rpn_targets", "mrcnn_edu.detection_targets")
    },
    "decode_deltas": {"decode_deltas": ("mrcnn_edu.boxes", "mrcnn_edu.proposals", "mrcnn_edu.detection")},
    "level_anchors": {"level_anchors": ("mrcnn_edu.anchors",)},
    "pyramid_anchors": {"pyramid_anchors": ("mrcnn_edu.anchors", "mrcnn_edu.model")},
    "nms": {
        "nms": ("mrcnn_edu.nms", "mrcnn_edu.proposals", "mrcnn_edu.ops"),
        "batched_nms": ("mrcnn_edu.nms", "mrcnn_edu.proposals", "mrcnn_edu.detection", "mrcnn_edu.ops"),
    },
    "rpn_targets": {"rpn_targets": ("mrcnn_edu.rpn_targets", "mrcnn_edu.model")},
    "bilinear": {"bilinear": ("mrcnn_edu.roi_align",)},
    "roi_align": {"roi_align": ("mrcnn_edu.roi_align", "mrcnn_edu.detection_targets", "mrcnn_edu.ops")},
    "detection_targets": {"detection_targets": ("mrcnn_edu.detection_targets", "mrcnn_edu.model")},
    "paste_mask": {"paste_masks": ("mrcnn_edu.masks", "mrcnn_edu.model")},
}

# Modules (and their submodules) never swapped: this package, whose checks and grader hold the references.
_NOT_SWAPPED = (__package__,)


def _unwrap(obj):
    """The original behind a swap wrapper (so re-importing this module mid-swap keeps the true originals)."""
    return getattr(obj, "_exercise_original", obj)


def _load_originals() -> dict[str, dict[str, Callable]]:
    originals: dict[str, dict[str, Callable]] = {}
    for stage, attrs in SITES.items():
        originals[stage] = {}
        for attr, modules in attrs.items():
            for module in modules:
                importlib.import_module(module)
            originals[stage][attr] = _unwrap(getattr(sys.modules[modules[0]], attr))
    return originals


_ORIGINALS = _load_originals()
#: The references the checks compare with, by exercise name.
_REF = {
    "box_iou": _ORIGINALS["box_iou"]["box_iou"],
    "encode_deltas": _ORIGINALS["encode_deltas"]["encode_deltas"],
    "decode_deltas": _ORIGINALS["decode_deltas"]["decode_deltas"],
    "level_anchors": _ORIGINALS["level_anchors"]["level_anchors"],
    "pyramid_anchors": _ORIGINALS["pyramid_anchors"]["pyramid_anchors"],
    "nms": _ORIGINALS["nms"]["nms"],
    "rpn_targets": _ORIGINALS["rpn_targets"]["rpn_targets"],
    "bilinear": _ORIGINALS["bilinear"]["bilinear"],
    "roi_align": _ORIGINALS["roi_align"]["roi_align"],
    "detection_targets": _ORIGINALS["detection_targets"]["detection_targets"],
    "paste_mask": _unwrap(_masks.paste_mask_loop),
}
# Library helpers the checks and adapters call, saved unswapped for the same reason.
_box_iou = _REF["box_iou"]
_encode = _REF["encode_deltas"]

# stage -> the student's function currently swapped in
_STUDENT: dict[str, Callable] = {}
_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def _student_output(out, stage: str, kind: str = "tensor"):
    """Fail clearly (inside the model) when a swapped-in function returns something unusable."""
    ok = isinstance(out, torch.Tensor) if kind == "tensor" else isinstance(out, dict)
    if not ok:
        raise TypeError(
            f"your {stage} returned {type(out).__name__}, not a {'tensor' if kind == 'tensor' else 'dict'}; "
            f"run mrcnn_edu.exercises.check({stage!r}, {stage}) to see what is wrong"
        )
    return out


def _rounded_base_correction(anchors: torch.Tensor, scale, ratios) -> torch.Tensor:
    """Anchors of one level built with exact base anchors, moved onto torchvision's rounded ones."""
    base = _anchors.base_anchors(scale, ratios, dtype=torch.float64, device=anchors.device)
    per_position = anchors.to(torch.float64).reshape(-1, base.shape[0], 4)
    return (per_position - base + torch.round(base)).reshape(-1, 4)


def _adapters(stage: str, fn: Callable) -> dict[str, Callable]:
    """Functions with the library's signatures that call the student's ``fn`` (one per attribute)."""
    original = _ORIGINALS[stage]
    if stage == "box_iou":

        def box_iou(boxes1, boxes2):
            return _student_output(fn(boxes1, boxes2), stage)

        return {"box_iou": box_iou}

    if stage == "encode_deltas":

        def encode_deltas(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
            b, r = torch.broadcast_tensors(boxes, reference)
            out = _student_output(fn(b.reshape(-1, 4), r.reshape(-1, 4), weights=tuple(weights)), stage)
            return out.reshape(b.shape)

        return {"encode_deltas": encode_deltas}

    if stage == "decode_deltas":

        def decode_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=_boxes.DEFAULT_DELTA_CLAMP):
            d, r = torch.broadcast_tensors(deltas, reference.to(deltas.dtype))
            out = fn(d.reshape(-1, 4), r.reshape(-1, 4), weights=tuple(weights), clamp=clamp)
            return _student_output(out, stage).reshape(d.shape)

        return {"decode_deltas": decode_deltas}

    if stage == "level_anchors":

        def level_anchors(
            scale,
            ratios,
            feature_shape,
            feature_stride,
            anchor_stride=1,
            offset=0.0,
            round_base=False,
            device=None,
            dtype=torch.float32,
        ):
            out = fn(scale, ratios, feature_shape, feature_stride, anchor_stride=anchor_stride, offset=offset)
            out = _student_output(out, stage)
            if round_base:
                out = _rounded_base_correction(out, scale, ratios)
            return out.to(device=device if device is not None else out.device, dtype=dtype)

        return {"level_anchors": level_anchors}

    if stage == "pyramid_anchors":

        def pyramid_anchors(
            scales,
            ratios,
            feature_shapes,
            feature_strides,
            anchor_stride=1,
            offset=0.0,
            round_base=False,
            device=None,
            dtype=torch.float32,
        ):
            out = fn(
                scales, ratios, feature_shapes, feature_strides, anchor_stride=anchor_stride, offset=offset
            )
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(
                    "your pyramid_anchors must return (anchors, num_per_level); run "
                    "mrcnn_edu.exercises.check('pyramid_anchors', pyramid_anchors)"
                )
            anchors, counts = _student_output(out[0], stage), [int(c) for c in out[1]]
            if round_base:
                parts = anchors.split(counts)
                anchors = torch.cat(
                    [_rounded_base_correction(p, s, ratios) for p, s in zip(parts, scales, strict=True)]
                )
            return anchors.to(device=device if device is not None else anchors.device, dtype=dtype), counts

        return {"pyramid_anchors": pyramid_anchors}

    if stage == "nms":

        def nms(boxes, scores, iou_threshold):
            return _student_output(fn(boxes, scores, iou_threshold), stage).long()

        def batched_nms(boxes, scores, idxs, iou_threshold):
            # NMS within each group, then all groups merged by decreasing score (ties: input order).
            keep = [torch.zeros(0, dtype=torch.long, device=boxes.device)]
            for group in torch.unique(idxs):
                members = torch.nonzero(idxs == group).flatten()
                keep.append(members[nms(boxes[members], scores[members], iou_threshold)])
            keep = torch.sort(torch.cat(keep)).values
            return keep[torch.sort(scores[keep], descending=True, stable=True).indices]

        return {"nms": nms, "batched_nms": batched_nms}

    if stage == "rpn_targets":

        def rpn_targets(
            anchors,
            gt_boxes,
            gt_is_crowd=None,
            positive_iou=0.7,
            negative_iou=0.3,
            num_samples=256,
            positive_fraction=0.5,
            weights=(1.0, 1.0, 1.0, 1.0),
            allow_low_quality=True,
            generator=None,
            **options,
        ):
            if not allow_low_quality or options.get("allowed_border") is not None:
                _warn_once(
                    "rpn_targets-options",
                    "rpn_targets: allow_low_quality=False / allowed_border "
                    "are not part of the exercise; the reference runs for these calls",
                )
                return original["rpn_targets"](
                    anchors,
                    gt_boxes,
                    gt_is_crowd,
                    positive_iou,
                    negative_iou,
                    num_samples,
                    positive_fraction,
                    weights,
                    allow_low_quality,
                    generator,
                    **options,
                )
            solid = _non_crowd(gt_boxes, gt_is_crowd, "rpn_targets")
            out = fn(
                anchors,
                gt_boxes[solid],
                positive_iou=positive_iou,
                negative_iou=negative_iou,
                num_samples=num_samples,
                positive_fraction=positive_fraction,
                weights=tuple(weights),
                generator=generator,
            )
            return _student_targets(out, solid, stage)

        return {"rpn_targets": rpn_targets}

    if stage == "bilinear":

        def bilinear(feature, y, x):
            return _student_output(fn(feature, y, x), stage)

        return {"bilinear": bilinear}

    if stage == "roi_align":

        def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
            if isinstance(boxes, (list, tuple)):
                parts = [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
                boxes = torch.cat(parts) if parts else input.new_zeros((0, 5))
            size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
            rois = boxes.detach().to(input.dtype)
            out = fn(
                input, rois, size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned
            )
            return _student_output(out, stage)

        return {"roi_align": roi_align}

    if stage == "detection_targets":

        def detection_targets(
            proposals,
            gt_boxes,
            gt_labels,
            gt_masks,
            num_samples=200,
            positive_fraction=0.33,
            positive_iou=0.5,
            negative_iou=0.5,
            add_gt_boxes=False,
            fill_with_negatives=False,
            mask_size=28,
            weights=(10.0, 10.0, 5.0, 5.0),
            binarize_masks=True,
            gt_is_crowd=None,
            generator=None,
            aligned=False,
        ):
            if fill_with_negatives:
                _warn_once(
                    "detection_targets-fill",
                    "detection_targets: fill_with_negatives=True is not part "
                    "of the exercise; the reference runs for these calls",
                )
                return original["detection_targets"](
                    proposals,
                    gt_boxes,
                    gt_labels,
                    gt_masks,
                    num_samples,
                    positive_fraction,
                    positive_iou,
                    negative_iou,
                    add_gt_boxes,
                    fill_with_negatives,
                    mask_size,
                    weights,
                    binarize_masks,
                    gt_is_crowd,
                    generator,
                    aligned,
                )
            proposals = proposals.detach()
            gt_boxes = gt_boxes.to(device=proposals.device, dtype=proposals.dtype)
            solid = _non_crowd(gt_boxes, gt_is_crowd, "detection_targets")
            if add_gt_boxes:
                proposals = torch.cat((proposals, gt_boxes[solid]))
            out = fn(
                proposals,
                gt_boxes[solid],
                gt_labels[solid],
                gt_masks[solid],
                num_samples=num_samples,
                positive_fraction=positive_fraction,
                positive_iou=positive_iou,
                negative_iou=negative_iou,
                mask_size=mask_size,
                weights=tuple(weights),
                generator=generator,
            )
            out = _student_targets(out, solid, stage)
            masks = out["mask_targets"].to(proposals.dtype)
            out["mask_targets"] = (masks >= 0.5).to(proposals.dtype) if binarize_masks else masks
            return out

        return {"detection_targets": detection_targets}

    if stage == "paste_mask":

        def paste_masks(masks, boxes, image_size, threshold=None):
            h, w = (int(v) for v in image_size)
            dtype = masks.dtype if masks.is_floating_point() else torch.float32
            pasted = [
                _student_output(fn(m.to(dtype), b, (h, w)), stage) for m, b in zip(masks, boxes, strict=True)
            ]
            out = torch.stack(pasted).to(dtype) if pasted else masks.new_zeros((0, h, w), dtype=dtype)
            return out >= threshold if threshold is not None else out

        return {"paste_masks": paste_masks}
    raise AssertionError(stage)


def _student_targets(out, solid: torch.Tensor, stage: str) -> dict:
    """The student's targets, ``matched_gt`` mapped back from the non-crowd GT to all GT (``solid``)."""
    out = dict(_student_output(out, stage, "dict"))
    matched = out["matched_gt"].long()
    out["matched_gt"] = torch.where(matched >= 0, solid[matched.clamp(min=0)], matched)
    out["labels"] = out["labels"].long()
    return out


def _non_crowd(gt_boxes: torch.Tensor, gt_is_crowd, stage: str) -> torch.Tensor:
    """Indices of the non-crowd GT boxes (the student's functions know nothing of crowds)."""
    if gt_is_crowd is None:
        return torch.arange(gt_boxes.shape[0], device=gt_boxes.device)
    crowd = gt_is_crowd.to(gt_boxes.device).bool()
    if bool(crowd.any()):
        _warn_once(f"{stage}-crowd", f"{stage}: crowd GT boxes are dropped before your function sees the GT")
    return torch.nonzero(~crowd).flatten()


def _mrcnn_modules():
    return [
        m
        for name, m in list(sys.modules.items())
        if m is not None
        and (name == "mrcnn_edu" or name.startswith("mrcnn_edu."))
        and not any(name == skip or name.startswith(skip + ".") for skip in _NOT_SWAPPED)
    ]


def _install(stage: str, fn: Callable) -> None:
    wrappers = _adapters(stage, fn)
    for attr, wrapper in wrappers.items():
        original = _ORIGINALS[stage][attr]
        functools.update_wrapper(wrapper, original)
        wrapper.__wrapped__ = fn  # inspect.signature / help() show the student's function
        wrapper._exercise_stage = stage
        wrapper._exercise_original = original
        for module in SITES[stage][attr]:
            setattr(sys.modules[module], attr, wrapper)
        for module in _mrcnn_modules():  # any other holder of the original (or of an older wrapper)
            current = module.__dict__.get(attr)
            if current is original or getattr(current, "_exercise_stage", None) == stage:
                setattr(module, attr, wrapper)


def _restore(stage: str) -> None:
    for module in _mrcnn_modules():
        for attr, original in _ORIGINALS[stage].items():
            if getattr(module.__dict__.get(attr), "_exercise_stage", None) == stage:
                setattr(module, attr, original)


def use_student(stage: str, fn: Callable) -> None:
    """From now on the library and the model call ``fn`` wherever they would call the reference of ``stage``.

    stage: an exercise name (``EXERCISES``); fn: the student's function, with the exercise's signature (it is
    wrapped in an adapter with the library's signature). Calling it again replaces the previous function.
    """
    stage = _exercise_name(stage)
    if not callable(fn):
        raise ValueError(f"fn must be a function with the signature of {stage}, got {type(fn).__name__}")
    _STUDENT[stage] = fn
    _install(stage, fn)


def use_reference(stage: str | None = None) -> None:
    """Put the library's own function back for ``stage`` (an exercise name), or for every stage (None)."""
    stages = list(EXERCISES) if stage is None else [_exercise_name(stage)]
    for s in stages:
        _STUDENT.pop(s, None)
        _restore(s)


def active() -> dict[str, str]:
    """``stage -> "reference" | "student"`` for every exercise."""
    return {s: ("student" if s in _STUDENT else "reference") for s in EXERCISES}


class _references_only:
    """Context: every stage is the reference while a check runs; the student's swaps come back after."""

    def __enter__(self):
        self.saved = dict(_STUDENT)
        for stage in self.saved:
            _restore(stage)
        return self

    def __exit__(self, *exc):
        for stage, fn in self.saved.items():
            _install(stage, fn)
        return False
