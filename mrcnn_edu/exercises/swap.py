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
    "proposal_layer": {"propose": ("mrcnn_edu.proposals", "mrcnn_edu.model")},
    "detection_layer": {"detect": ("mrcnn_edu.detection",)},  # detect_batch calls a swapped detect
    "roi_pool": {"roi_pool": ("mrcnn_edu.roi_align", "mrcnn_edu.ops")},
    "crop_and_resize": {"crop_and_resize": ("mrcnn_edu.roi_align",)},
    "assign_fpn_levels": {"assign_fpn_levels": ("mrcnn_edu.roi_align",)},
    "mask_target": {"mask_targets": ("mrcnn_edu.detection_targets",)},
    "rpn_loss": {"rpn_objectness_loss": ("mrcnn_edu.losses",), "rpn_box_loss": ("mrcnn_edu.losses",)},
    "mask_loss": {"mask_loss": ("mrcnn_edu.losses",)},
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
#: The references the checks compare with, by exercise name: the stage's (first) library function, except
#: paste_mask's one-mask loop; rpn_loss's two functions are in ``_ORIGINALS["rpn_loss"]``.
_REF = {stage: next(iter(attrs.values())) for stage, attrs in _ORIGINALS.items() if stage != "rpn_loss"}
_REF["paste_mask"] = _unwrap(_masks.paste_mask_loop)
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

        def paste_masks(masks, boxes, image_size, threshold=None, *, check_finite=True):
            # check_finite: paste_masks's NaN check of the boxes, not part of the exercise
            h, w = (int(v) for v in image_size)
            dtype = masks.dtype if masks.is_floating_point() else torch.float32
            pasted = [
                _student_output(fn(m.to(dtype), b, (h, w)), stage) for m, b in zip(masks, boxes, strict=True)
            ]
            out = torch.stack(pasted).to(dtype) if pasted else masks.new_zeros((0, h, w), dtype=dtype)
            return out >= threshold if threshold is not None else out

        return {"paste_masks": paste_masks}

    if stage == "proposal_layer":
        return {"propose": _proposal_adapter(fn, original["propose"])}
    if stage == "detection_layer":
        return {"detect": _detection_adapter(fn, original["detect"])}

    if stage == "roi_pool":

        def roi_pool(input, boxes, output_size, spatial_scale=1.0):
            if isinstance(boxes, (list, tuple)):
                parts = [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
                boxes = torch.cat(parts) if parts else input.new_zeros((0, 5))
            size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
            return _student_output(fn(input, boxes.detach().to(input.dtype), size, spatial_scale), stage)

        return {"roi_pool": roi_pool}

    if stage == "crop_and_resize":

        def crop_and_resize(input, boxes, box_indices, crop_size, extrapolation_value=0.0):
            size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
            out = fn(input, boxes.detach(), box_indices.long(), size, extrapolation_value=extrapolation_value)
            return _student_output(out, stage)

        return {"crop_and_resize": crop_and_resize}

    if stage == "assign_fpn_levels":

        def assign_fpn_levels(boxes, k0=4, canonical_size=224, min_level=2, max_level=5, rounding="round",
                              eps=1e-6, image_size=None):  # fmt: skip
            if rounding != "round" or image_size is not None:
                _warn_once(
                    "assign_fpn_levels-options",
                    "assign_fpn_levels: rounding='floor' and matterport's normalised boxes (image_size) are "
                    "not part of the exercise; the reference runs for these calls",
                )
                return original["assign_fpn_levels"](
                    boxes, k0, canonical_size, min_level, max_level, rounding, eps, image_size
                )
            out = fn(boxes, k0=k0, canonical_size=canonical_size, min_level=min_level, max_level=max_level)
            return _student_output(out, stage).long()

        return {"assign_fpn_levels": assign_fpn_levels}

    if stage == "mask_target":

        def mask_targets(gt_masks, rois, matched_gt, mask_size=28, aligned=False, binarize=True):
            if aligned or not binarize:
                _warn_once(
                    "mask_target-options",
                    "mask_targets: aligned=True and soft targets are not part of the exercise; the reference "
                    "runs for these calls",
                )
                return original["mask_targets"](gt_masks, rois, matched_gt, mask_size, aligned, binarize)
            out = [
                _student_output(fn(gt_masks[g], roi, mask_size), stage)
                for roi, g in zip(rois, matched_gt.tolist(), strict=True)
            ]
            if not out:
                return rois.new_zeros((0, mask_size, mask_size))
            return torch.stack(out).to(device=rois.device, dtype=rois.dtype)

        return {"mask_targets": mask_targets}

    if stage == "rpn_loss":

        def rpn_objectness_loss(logits, labels):
            zeros = logits.new_zeros((*logits.shape, 4))
            return _student_loss(fn(logits, zeros, labels, zeros), stage, 0)

        def rpn_box_loss(deltas, target_deltas, labels, beta=1.0 / 9, normalize="sampled"):
            if normalize != "sampled":
                _warn_once(
                    "rpn_loss-normalize",
                    "rpn_box_loss: normalize other than 'sampled' is not part of the exercise; the reference "
                    "runs for these calls",
                )
                return original["rpn_box_loss"](deltas, target_deltas, labels, beta, normalize)
            logits = deltas.new_zeros(deltas.shape[:-1])
            return _student_loss(fn(logits, deltas, labels, target_deltas, beta=beta), stage, 1)

        return {"rpn_objectness_loss": rpn_objectness_loss, "rpn_box_loss": rpn_box_loss}

    if stage == "mask_loss":

        def mask_loss(mask_logits, labels, mask_targets):
            if mask_logits.shape[1] == 1:
                _warn_once(
                    "mask_loss-agnostic",
                    "mask_loss: class-agnostic masks (one channel) are not part of the exercise; the "
                    "reference runs for these calls",
                )
                return original["mask_loss"](mask_logits, labels, mask_targets)
            return _student_output(fn(mask_logits, labels, mask_targets), stage)

        return {"mask_loss": mask_loss}
    raise AssertionError(stage)


def _student_loss(out, stage: str, index: int) -> torch.Tensor:
    """Item ``index`` of the student's ``(objectness_loss, box_loss)``."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"your {stage} must return (objectness_loss, box_loss); run "
            f"mrcnn_edu.exercises.check({stage!r}, {stage})"
        )
    return _student_output(out[index], stage)


def _student_tuple(out, stage: str, n: int) -> tuple:
    if not (isinstance(out, (tuple, list)) and len(out) == n):
        raise TypeError(
            f"your {stage} must return a tuple of {n} tensors; run "
            f"mrcnn_edu.exercises.check({stage!r}, {stage})"
        )
    return tuple(_student_output(t, stage) for t in out)


def _proposal_adapter(fn: Callable, original: Callable) -> Callable:
    """The library's ``propose`` (a batch) calling the student's one-image ``proposal_layer``."""

    def propose(objectness, deltas, anchors, image_sizes, num_anchors_per_level=None, pre_nms_top_n=6000,
                post_nms_top_n=2000, nms_threshold=0.7, min_size=0.0, per_level=False,
                weights=(1.0, 1.0, 1.0, 1.0), score_threshold=0.0, clamp=_boxes.DEFAULT_DELTA_CLAMP,
                return_pre_nms=False):  # fmt: skip
        args = (objectness, deltas, anchors, image_sizes, num_anchors_per_level, pre_nms_top_n,
                post_nms_top_n, nms_threshold, min_size, per_level, weights, score_threshold,
                clamp)  # fmt: skip
        if per_level or min_size > 0 or score_threshold > 0 or clamp != _boxes.DEFAULT_DELTA_CLAMP:
            _warn_once(
                "proposal_layer-options",
                "propose: per_level, min_size, score_threshold and clamp settings are not part of the "
                "exercise; the reference runs for these calls",
            )
            return original(*args, return_pre_nms=return_pre_nms)
        # Candidates before NMS (for pictures only) come from the reference; the proposals are the student's.
        results = original(*args, return_pre_nms=True) if return_pre_nms else [{} for _ in image_sizes]
        objectness, deltas, anchors = objectness.detach(), deltas.detach(), anchors.detach().to(deltas.dtype)
        for i, size in enumerate(image_sizes):
            out = fn(objectness[i], deltas[i], anchors, tuple(int(v) for v in size),
                     pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n, nms_threshold=nms_threshold,
                     weights=tuple(weights))  # fmt: skip
            boxes, scores = _student_tuple(out, "proposal_layer", 2)
            unknown = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
            results[i].update(boxes=boxes, scores=scores, anchor_index=unknown, levels=unknown)
        return results

    return propose


def _detection_adapter(fn: Callable, original: Callable) -> Callable:
    """The library's ``detect`` calling the student's ``detection_layer``."""

    def detect(class_logits, box_deltas, proposals, image_size, score_threshold=0.7, nms_threshold=0.3,
               max_detections=100, weights=(10.0, 10.0, 5.0, 5.0), candidates="argmax", min_size=0.0,
               clamp=_boxes.DEFAULT_DELTA_CLAMP, return_pre_nms=False):  # fmt: skip
        args = (class_logits, box_deltas, proposals, image_size, score_threshold, nms_threshold,
                max_detections, weights, candidates, min_size, clamp)  # fmt: skip
        if candidates != "argmax" or min_size > 0 or clamp != _boxes.DEFAULT_DELTA_CLAMP:
            _warn_once(
                "detection_layer-options",
                "detect: candidates='all', min_size and clamp settings are not part of the exercise; the "
                "reference runs for these calls",
            )
            return original(*args, return_pre_nms=return_pre_nms)
        result = original(*args, return_pre_nms=True) if return_pre_nms else {}
        logits = class_logits.detach()
        deltas = box_deltas.detach().reshape(logits.shape[0], logits.shape[1], 4)
        out = fn(logits, deltas, proposals.detach().to(deltas.dtype), tuple(int(v) for v in image_size),
                 score_threshold=score_threshold, nms_threshold=nms_threshold, max_detections=max_detections,
                 weights=tuple(weights))  # fmt: skip
        boxes, scores, labels = _student_tuple(out, "detection_layer", 3)
        unknown = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
        result.update(boxes=boxes, scores=scores, labels=labels.long(), roi_index=unknown)
        return result

    return detect


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


def use_student_if_passed(stage: str, fn: Callable, passed: bool) -> bool:
    """For a demo cell: swap ``fn`` in if its check ``passed``, else put the library's function back, and say
    plainly which one the demo runs. Returns ``passed``."""
    stage = _exercise_name(stage)
    if passed:
        use_student(stage, fn)
        print(f"The demo below runs YOUR {stage}.")
    else:
        use_reference(stage)
        print(
            f"Your {stage} has not passed its check yet, so the demo below runs the LIBRARY's {stage}, not "
            f"yours. Fix it, run check({stage!r}, {stage}) again, then this cell."
        )
    return bool(passed)


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
