"""Exercises: students re-implement the core stages, the package checks them and can run the model on them.

How a class uses it. A notebook prints the task of a stage (:func:`describe`), the student writes a function
with the same name and signature as the library's, and :func:`check` runs it on hand-made cases (tiny inputs
whose answer can be worked out on paper, shown when they fail) and then on seeded random cases compared with
the reference implementation of ``mrcnn_edu`` within a stated tolerance. A wrong answer gets an explanation:
which input, what was expected, what came back, and, where the result matches a known mistake (the
evaluation runs the usual wrong variants on the failing input and compares), what that mistake was
("looks like you used x2 - x1 + 1"). A student who is stuck continues with the reference; one who
passes can put the function into the model with :func:`use_student` and watch it detect shapes.

Exercises, in order (``EXERCISES``; the name is the student's function name)

=====================  =================================================  ==============================
name                   reference (what it replaces)                       checked by
=====================  =================================================  ==============================
``box_iou``            ``mrcnn_edu.boxes.box_iou``                        values
``encode_deltas``      ``mrcnn_edu.boxes.encode_deltas``                  values
``decode_deltas``      ``mrcnn_edu.boxes.decode_deltas``                  values
``level_anchors``      ``mrcnn_edu.anchors.level_anchors``                values and order
``pyramid_anchors``    ``mrcnn_edu.anchors.pyramid_anchors``              values and order
``nms``                ``mrcnn_edu.nms.nms``                              kept indices, in order
``rpn_targets``        ``mrcnn_edu.rpn_targets.rpn_targets``              properties (random sampling)
``bilinear``           ``mrcnn_edu.roi_align.bilinear``                   values
``roi_align``          ``mrcnn_edu.roi_align.roi_align``                  values
``detection_targets``  ``mrcnn_edu.detection_targets.detection_targets``  properties (random sampling)
``paste_mask``         ``mrcnn_edu.masks.paste_mask_loop``                values (one mask; swapped in
                       (replaces ``paste_masks``)                         for ``paste_masks``)
=====================  =================================================  ==============================

Some student signatures are simpler than the library's (fewer options, one mask instead of a batch, ``[N, 4]``
instead of any ``[..., 4]``); each :class:`Exercise` states its signature, and :func:`use_student` wraps the
student's function in an adapter with the library's signature that supplies the rest (see below).

The API: :func:`describe` (task text), :func:`run_check` (a :class:`CheckResult`, never raises on a wrong or
broken function), :func:`check` (prints the message, returns ``passed``), :func:`use_student`,
:func:`use_reference`, :func:`active`. Unknown names raise ValueError listing the valid ones.

How the checks judge
    Exact stages are compared with the reference (saved when this module is imported, so a swapped-in
    function is never its own reference) on every case. Sampling stages (``rpn_targets``,
    ``detection_targets``) draw at random, so two correct implementations pick different anchors; they are
    checked by what every correct answer satisfies: labels follow the IoU thresholds, exact sample counts
    (``min(candidates, cap)``, computed with :mod:`mrcnn_edu.matching`), positives regress to their
    best-IoU GT, deltas are :func:`mrcnn_edu.boxes.encode_deltas` of it, mask targets are the matched GT mask
    cut out at the ROI, the same ``generator`` seed gives the same sample and another seed another one.
    While a check runs, every stage is temporarily the reference, so a check judges one stage alone.
    Exceptions raised by the student's code are reported with their type, message and the student's line.

How swapping works (``use_student(stage, fn)``)
    The library and the model look functions up as module attributes (``proposals.py`` does ``from .nms
    import nms`` and calls the name ``nms`` in its own namespace). So a swap sets that attribute, at every
    site below, to a wrapper that calls the student's function (through the adapter); ``use_reference`` puts
    the original objects back (``mrcnn_edu.proposals.nms is mrcnn_edu.nms.nms`` again). Besides the
    listed sites, any other ``mrcnn_edu`` module holding the original under that name is swapped too, and
    restoring sweeps every ``mrcnn_edu`` module for wrappers, so a module imported later cannot keep one.
    A model caches its anchors per feature shape: a model that already ran keeps its anchors after an
    anchor swap (build a new one).

Sites (module: attribute), per stage
    - box_iou: boxes, nms (``nms_loop`` only; the fast ``nms`` uses ``matched_box_iou``), rpn_targets,
      detection_targets, evaluate, data.shapes, ops: ``box_iou``
    - encode_deltas: boxes, rpn_targets, detection_targets: ``encode_deltas``
    - decode_deltas: boxes, proposals, detection: ``decode_deltas``
    - level_anchors: anchors: ``level_anchors`` (the reference ``pyramid_anchors``, hence the model, calls it)
    - pyramid_anchors: anchors, model: ``pyramid_anchors``
    - nms: nms, proposals, ops: ``nms``; and ``batched_nms`` (nms, proposals, detection, ops), adapted as
      the student's ``nms`` run on each group
    - rpn_targets: rpn_targets (``rpn_targets_batch`` calls it), model: ``rpn_targets``
    - bilinear: roi_align: ``bilinear``, read by ``roi_align_loop`` only (the model's fast ``roi_align`` does
      not sample point by point)
    - roi_align: roi_align (``pyramid_roi_align`` calls it), detection_targets, ops: ``roi_align``
    - detection_targets: detection_targets, model: ``detection_targets``
    - paste_mask: masks, model: ``paste_masks`` (the student's one-mask function run on each mask)
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import anchors as _anchors
from . import boxes as _boxes
from . import masks as _masks
from . import matching as _matching

__all__ = [
    "Exercise",
    "CheckResult",
    "EXERCISES",
    "SITES",
    "run_check",
    "check",
    "describe",
    "use_student",
    "use_reference",
    "active",
]


# --------------------------------------------------------------------------------------------------------
# the exercises


@dataclass(frozen=True)
class Exercise:
    """One exercise: what the student writes and what it replaces.

    name: the student's function name (and the stage name for :func:`use_student`).
    title: one line. signature: the student's signature, as Python. task: one paragraph.
    shapes: shapes and dtypes of the arguments and the result. hint: where to start.
    reference: the library function the check compares with (qualified name).
    affects: what :func:`use_student` changes (which functions / model steps then run the student's code).
    """

    name: str
    title: str
    signature: str
    task: str
    shapes: str
    hint: str
    reference: str
    affects: str


_EXERCISE_LIST = [
    Exercise(
        name="box_iou",
        title="Intersection over union of every pair of boxes",
        signature="def box_iou(boxes1, boxes2):",
        task=(
            "Return the IoU of every box of boxes1 with every box of boxes2: result[i, j] = area of the "
            "intersection of boxes1[i] and boxes2[j] divided by the area of their union. A box is (x1, y1, "
            "x2, y2) in pixels and covers [x1, x2) x [y1, y2), so its width is x2 - x1 (no + 1). Boxes "
            "that do "
            "not overlap have IoU 0. Use tensor operations (broadcasting), no Python loop over pairs."
        ),
        shapes="boxes1: float [N, 4]; boxes2: float [M, 4]; returns float [N, M] (same dtype as the boxes).",
        hint=(
            "Broadcast boxes1[:, None, :] against boxes2[None, :, :]: the intersection's left edge is "
            "torch.maximum of the x1s, its right edge torch.minimum of the x2s; clamp its width and height "
            "at "
            "0 before multiplying (two negative sizes would give a positive area)."
        ),
        reference="mrcnn_edu.boxes.box_iou",
        affects=(
            "RPN and detection targets (training), evaluation, the shapes data generator, nms_loop "
            "(the fast nms computes IoUs pair by pair with matched_box_iou)"
        ),
    ),
    Exercise(
        name="encode_deltas",
        title="Box deltas: how to move a reference box onto a target box",
        signature="def encode_deltas(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):",
        task=(
            "Return the deltas (dx, dy, dw, dh) that move each reference box (an anchor or a proposal) onto "
            "its target box: with centres (cx, cy) and sizes (w, h), dx = (gx - ax) / aw, dy = (gy - ay) / "
            "ah, dw = log(gw / aw), dh = log(gh / ah), where g is the target and a the reference; then "
            "multiply the four by weights = (wx, wy, ww, wh). Width is x2 - x1, the centre x1 + w / 2."
        ),
        shapes=(
            "boxes: float [N, 4] target boxes (x1, y1, x2, y2); reference: float [N, 4] (row i goes with "
            "row i of boxes); weights: 4 numbers; returns float [N, 4] (dx, dy, dw, dh)."
        ),
        hint="Compute width, height and centre of both sets, then torch.stack the four deltas along dim=1.",
        reference="mrcnn_edu.boxes.encode_deltas",
        affects="the regression targets of rpn_targets and detection_targets (training)",
    ),
    Exercise(
        name="decode_deltas",
        title="Apply deltas to reference boxes (the inverse of encode_deltas)",
        signature=(
            "def decode_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000 / 16)):"
        ),
        task=(
            "Return the boxes obtained by moving each reference box by its deltas: first divide the deltas "
            "by "
            "weights, then, if clamp is not None, cap dw and dh at clamp (so exp cannot overflow); the new "
            "centre is (ax + dx * aw, ay + dy * ah) and the new size (aw * exp(dw), ah * exp(dh)). Return "
            "corners (x1, y1, x2, y2). decode_deltas(encode_deltas(b, r, w), r, w) gives b back."
        ),
        shapes=(
            "deltas: float [N, 4] (dx, dy, dw, dh); reference: float [N, 4]; weights: 4 numbers; clamp: a "
            "float or None; returns float [N, 4] boxes, dtype of deltas."
        ),
        hint="x1 = cx - w / 2 and x2 = cx + w / 2; dw.clamp(max=clamp) caps only from above.",
        reference="mrcnn_edu.boxes.decode_deltas",
        affects=(
            "the proposal layer (decoding the RPN's deltas) and the detection layer (the box head's deltas)"
        ),
    ),
    Exercise(
        name="level_anchors",
        title="The anchors of one pyramid level",
        signature=(
            "def level_anchors(scale, ratios, feature_shape, feature_stride, anchor_stride=1, offset=0.0):"
        ),
        task=(
            "Return every anchor of one feature map of shape (H, W) whose cells are feature_stride pixels "
            "apart. Anchors sit on every anchor_stride-th cell: rows i = 0 .. ceil(H / anchor_stride) - 1 "
            "and "
            "columns j likewise; with s = anchor_stride * feature_stride, the centre is ((j + offset) * s, "
            "(i + offset) * s) in (x, y). At each position there is one anchor per ratio r = width / height, "
            "of area scale**2: w = scale * sqrt(r), h = scale / sqrt(r). Order: row, then column, then ratio "
            "(anchor (i * W' + j) * A + a), the order in which the RPN head's outputs are flattened."
        ),
        shapes=(
            "scale: float; ratios: A floats; feature_shape: (H, W); feature_stride: float; returns float32 "
            "[H' * W' * A, 4] (x1, y1, x2, y2) in image pixels, H' = ceil(H / anchor_stride)."
        ),
        hint=(
            "torch.meshgrid(ys, xs, indexing='ij') gives the centres row-major; add the [A, 4] base anchors "
            "(-w/2, -h/2, w/2, h/2) with broadcasting ([H'*W', 1, 4] + [1, A, 4]) and reshape to [-1, 4]."
        ),
        reference="mrcnn_edu.anchors.level_anchors",
        affects=(
            "pyramid_anchors (the reference calls level_anchors level by level), hence the model's anchors"
        ),
    ),
    Exercise(
        name="pyramid_anchors",
        title="The anchors of all pyramid levels",
        signature=(
            "def pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride=1, "
            "offset=0.0):"
        ),
        task=(
            "Return the anchors of every level, level after level (P2 first), and the number of anchors of "
            "each level. Level l uses scale scales[l] on the map of shape feature_shapes[l] with stride "
            "feature_strides[l]; ratios, anchor_stride and offset are shared. Return a tuple (anchors, "
            "num_per_level)."
        ),
        shapes=(
            "scales, feature_shapes, feature_strides: L entries each; returns (float32 [N, 4], list of L "
            "ints), N = sum of H'_l * W'_l * A."
        ),
        hint="Call your level_anchors (or mrcnn_edu.anchors.level_anchors) for each level and torch.cat.",
        reference="mrcnn_edu.anchors.pyramid_anchors",
        affects="the model's anchors (MaskRCNN.anchors; a model caches them per image size)",
    ),
    Exercise(
        name="nms",
        title="Greedy non-maximum suppression",
        signature="def nms(boxes, scores, iou_threshold):",
        task=(
            "Remove near-duplicate boxes: take the highest-scoring remaining box, keep it, drop every "
            "remaining box whose IoU with it is > iou_threshold (strictly greater), and repeat until no box "
            "remains. Only kept boxes suppress others. Return the indices (into boxes) of the kept boxes, "
            "highest score first; equal scores keep their input order (a stable sort)."
        ),
        shapes="boxes: float [N, 4]; scores: float [N]; returns int64 [K] indices, by decreasing score.",
        hint=(
            "order = torch.sort(scores, descending=True, stable=True).indices; loop while order is not "
            "empty; box_iou of the best box against the rest tells which ones to drop."
        ),
        reference="mrcnn_edu.nms.nms",
        affects=(
            "the proposal layer (nms; batched_nms when rpn_per_level) and the detection layer's per-class "
            "NMS (batched_nms, built from your nms run on each class)"
        ),
    ),
    Exercise(
        name="rpn_targets",
        title="RPN targets: label and sample the anchors, regress the positives",
        signature=(
            "def rpn_targets(anchors, gt_boxes, positive_iou=0.7, negative_iou=0.3, num_samples=256, "
            "positive_fraction=0.5, weights=(1.0, 1.0, 1.0, 1.0), generator=None):"
        ),
        task=(
            "Match every anchor to the GT box it overlaps most. Best IoU >= positive_iou: positive; best IoU "
            "< negative_iou: negative; in between: ignored. Also make positive, for each GT box, the "
            "anchor(s) with the highest IoU with it (ties included; skip a GT that overlaps nothing), even "
            "below positive_iou; such an anchor regresses to its own best GT. Then sample at random (use "
            "generator) at most int(num_samples * positive_fraction) positives and fill up to num_samples "
            "with random negatives. Return a dict: 'labels' (1 positive, 0 negative, -1 not sampled or "
            "ignored), 'matched_gt' (index of the GT box of each sampled positive, -1 elsewhere) and "
            "'deltas' (encode_deltas(gt_boxes[matched_gt], anchors, weights) at the sampled positives, 0 "
            "elsewhere). With no GT box every anchor is a negative."
        ),
        shapes=(
            "anchors: float [N, 4]; gt_boxes: float [G, 4] (G may be 0); returns {'labels': int64 [N], "
            "'matched_gt': int64 [N], 'deltas': float [N, 4]}."
        ),
        hint=(
            "box_iou(gt_boxes, anchors) is [G, N]; .max(dim=0) gives each anchor's best IoU and GT. "
            "mrcnn_edu.matching.match_by_iou and sample_balanced do the matching and the sampling if you "
            "want to concentrate on the composition; torch.randperm(n, generator=generator) samples."
        ),
        reference="mrcnn_edu.rpn_targets.rpn_targets",
        affects=(
            "the model's RPN targets in training (crowd boxes are dropped before your function sees the GT; "
            "allow_low_quality=False or allowed_border fall back to the reference, with a warning)"
        ),
    ),
    Exercise(
        name="bilinear",
        title="One bilinear sample of a feature map (RoIAlign's border rules)",
        signature="def bilinear(feature, y, x):",
        task=(
            "Return the feature vector at the continuous point (y, x): feature cell (r, c) holds its value "
            "at "
            "exactly (r, c). A point more than one cell outside the map (y < -1 or y > H, same for x) "
            "reads 0. "
            "Otherwise clamp y into [0, H - 1] and x into [0, W - 1], take the 4 cells around the point "
            "(y0 = floor(y), y1 = min(y0 + 1, H - 1), same for x) and mix them with the bilinear weights "
            "(1 - ly)(1 - lx), (1 - ly) lx, ly (1 - lx), ly lx, where ly = y - y0 and lx = x - x0."
        ),
        shapes="feature: float [C, H, W]; y, x: 0-d float tensors; returns float [C].",
        hint="int(y) floors a non-negative y; on the last row y1 is y0 itself, with weight ly = 0.",
        reference="mrcnn_edu.roi_align.bilinear",
        affects=(
            "roi_align_loop only (notebook 07's readable RoIAlign); the model's fast roi_align does not call "
            "bilinear: put your sampling into the model with the roi_align exercise"
        ),
    ),
    Exercise(
        name="roi_align",
        title="RoIAlign: a fixed-size grid of features for every box",
        signature=(
            "def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):"
        ),
        task=(
            "For every box, cut an oh x ow grid of features out of input. Scale the box by spatial_scale "
            "(and, if aligned, subtract 0.5 from each coordinate: cell centres sit at c + 0.5 in box "
            "coordinates; if not aligned, make the box at least 1 x 1). Split it into oh x ow equal bins; in "
            "each bin take gh x gw samples at the centres of equal sub-cells (gh = gw = sampling_ratio if "
            "> 0, "
            "else gh = ceil(box_h / oh), gw = ceil(box_w / ow)), read each with bilinear() and average them. "
            "Loops are fine: a readable version is the goal (it will be slow in the model)."
        ),
        shapes=(
            "input: float [B, C, H, W]; boxes: float [K, 5] rows (image index, x1, y1, x2, y2) in image "
            "pixels; output_size: (oh, ow); returns [K, C, oh, ow] in the dtype of input."
        ),
        hint=(
            "Sample iy of bin ph sits at y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh (the same along x). "
            "mrcnn_edu.roi_align.bilinear (or your own) reads one point."
        ),
        reference="mrcnn_edu.roi_align.roi_align",
        affects=(
            "pyramid_roi_align (the model's box and mask pooling when roi_method='roi_align') and the mask "
            "targets of detection_targets"
        ),
    ),
    Exercise(
        name="detection_targets",
        title="Detection targets: sample ROIs and build their class, box and mask targets",
        signature=(
            "def detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=200, "
            "positive_fraction=0.33, positive_iou=0.5, negative_iou=0.5, mask_size=28, "
            "weights=(10.0, 10.0, 5.0, 5.0), generator=None):"
        ),
        task=(
            "Match each proposal to the GT box it overlaps most (no low-quality matches): best IoU >= "
            "positive_iou is a positive, < negative_iou a negative. Sample at random (use generator) P = at "
            "most int(num_samples * positive_fraction) positives, then int(P / positive_fraction) - P "
            "negatives (matterport keeps the ratio; fewer if there are fewer). Return a dict with, positives "
            "first: 'rois' (the sampled proposals), 'labels' (GT class of positives, 0 for negatives), "
            "'matched_gt' (GT index, -1 for negatives), 'box_targets' (encode_deltas(matched GT box, roi, "
            "weights), 0 for negatives) and 'mask_targets': for each positive, its GT mask cut out at the "
            "ROI and resized to mask_size x mask_size, thresholded at 0.5."
        ),
        shapes=(
            "proposals: float [P, 4]; gt_boxes: float [G, 4]; gt_labels: int64 [G] in 1..K; gt_masks: [G, H, "
            "W] 0/1; returns rois [R, 4], labels int64 [R], matched_gt int64 [R], box_targets [R, 4], "
            "mask_targets float [R_pos, M, M]."
        ),
        hint=(
            "mrcnn_edu.matching.match_by_iou(iou, positive_iou, negative_iou, allow_low_quality=False) and "
            "sample_balanced(..., fill_with_negatives=False) do the matching and sampling; "
            "mrcnn_edu.roi_align.roi_align(mask[None, None].float(), roi_with_index, mask_size, "
            "aligned=True) "
            "cuts out one mask target."
        ),
        reference="mrcnn_edu.detection_targets.detection_targets",
        affects=(
            "the model's ROI sampling in training (add_gt_boxes is applied before your function, crowd "
            "boxes are dropped; fill_with_negatives=True falls back to the reference, with a warning)"
        ),
    ),
    Exercise(
        name="paste_mask",
        title="Paste a small box-relative mask into the full image",
        signature="def paste_mask(mask, box, image_size):",
        task=(
            "The mask head predicts an M x M mask laid out inside its box. Put it into an image of size "
            "image_size = (H, W): round the box edges to whole pixels (halves round down: "
            "math.ceil(v - 0.5)), resize the mask to the rounded box's height x width with bilinear "
            "interpolation (F.interpolate, align_corners=False) and copy the part inside the image into a "
            "zero image. Boxes may extend past the image. (Sampling the mask exactly at each pixel centre "
            "of a fractional box, as mrcnn_edu.masks.paste_masks does, is accepted too.)"
        ),
        shapes=(
            "mask: float [M, M] probabilities; box: float [4] (x1, y1, x2, y2) in image pixels; image_size: "
            "(H, W); returns float [H, W] (values, not thresholded)."
        ),
        hint=(
            "F.interpolate wants [1, 1, M, M] and size=(box_h, box_w); clip the paste region to the image "
            "and take the matching part of the resized mask."
        ),
        reference="mrcnn_edu.masks.paste_mask_loop",
        affects="paste_masks, hence the model's output masks (your function runs on each detection)",
    ),
]

#: The exercises by name, in teaching order.
EXERCISES: dict[str, Exercise] = {e.name: e for e in _EXERCISE_LIST}

#: Other names accepted for an exercise (the library function a student exercise stands for).
_ALIASES = {"paste_masks": "paste_mask"}


def _exercise_name(name) -> str:
    if isinstance(name, str) and name in _ALIASES:
        return _ALIASES[name]
    if not isinstance(name, str) or name not in EXERCISES:
        raise ValueError(f"name must be one of {list(EXERCISES)}, got {name!r}")
    return name


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`run_check`: ``message`` starts with ``"PASS"`` or explains what is wrong."""

    name: str
    passed: bool
    message: str


def describe(name: str) -> str:
    """The exercise's title, signature, task, shapes, hint and what swapping it in changes, as text."""
    ex = EXERCISES[_exercise_name(name)]

    def wrap(label: str, text: str) -> str:
        return textwrap.fill(f"{label}{text}", width=100, subsequent_indent="  " if label else "")

    return "\n\n".join(
        [
            ex.title,
            "    " + ex.signature,
            wrap("", ex.task),
            wrap("Shapes: ", ex.shapes),
            wrap("Hint: ", ex.hint),
            wrap("Checked against: ", ex.reference),
            wrap(f"use_student({ex.name!r}, {ex.name}) affects: ", ex.affects),
        ]
    )


# --------------------------------------------------------------------------------------------------------
# swapping: sites, originals, adapters


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

# Modules never swapped: this one, and the grader (which keeps references of its own).
_NOT_SWAPPED = (__name__, "mrcnn_edu.grade")


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
            out = dict(_student_output(out, stage, "dict"))
            matched = out["matched_gt"].long()
            out["matched_gt"] = torch.where(matched >= 0, solid[matched.clamp(min=0)], matched)
            out["labels"] = out["labels"].long()
            return out

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
            out = dict(_student_output(out, stage, "dict"))
            matched = out["matched_gt"].long()
            out["matched_gt"] = torch.where(matched >= 0, solid[matched.clamp(min=0)], matched)
            out["labels"] = out["labels"].long()
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
        and name not in _NOT_SWAPPED
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


# --------------------------------------------------------------------------------------------------------
# check machinery


class _Fail(Exception):
    """A wrong answer: ``message`` is the explanation shown to the student."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class _Case:
    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    names: tuple[str, ...] = ()
    note: str = ""


def _fmt(x, limit: int = 96) -> str:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.numel() > limit:
            return f"<tensor of shape {list(t.shape)}, dtype {t.dtype}>"
        try:
            with torch._tensor_str.printoptions(precision=4, sci_mode=False, linewidth=100):
                return repr(t)
        except Exception:  # private printing API changed: the default repr is fine
            return repr(t)
    if isinstance(x, torch.Generator):
        return "torch.Generator(...)"
    if isinstance(x, float):
        return repr(x) if len(repr(x)) <= 10 else f"{x:.6g}"
    if isinstance(x, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in x):
        inner = ", ".join(_fmt(v, limit) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    text = repr(x)
    return text if len(text) <= 300 else text[:300] + " ..."


def _indent(text: str, spaces: int = 4) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in text.splitlines())


def _inputs_text(case: _Case) -> str:
    names = case.names or tuple(f"arg{i}" for i in range(len(case.args)))
    pairs = list(zip(names, case.args, strict=False)) + list(case.kwargs.items())
    return "\n".join(_indent(f"{k} = {_fmt(v)}") for k, v in pairs)


def _library_file(filename: str) -> bool:
    """Frames of torch, Python, this package: not the student's code."""
    path = os.path.abspath(filename)
    roots = [
        os.path.dirname(os.path.abspath(__file__)),
        os.path.dirname(os.path.abspath(torch.__file__)),
        os.path.dirname(os.path.abspath(os.__file__)),
    ]
    return any(path.startswith(root + os.sep) for root in roots)


def _exception_text(name: str, exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    student = [f for f in frames if not _library_file(f.filename)]
    text = f"your {name} raised {type(exc).__name__}: {exc}"
    if student:
        lines = [f"  line {f.lineno} in {f.name}: {(f.line or '').strip()}" for f in student[-3:]]
        text += "\n  where (most recent call last):\n" + "\n".join(_indent(line, 2) for line in lines)
        if frames and frames[-1] is not student[-1]:
            text += f"\n    (raised inside {os.path.basename(frames[-1].filename)}, called from that line)"
    return text


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_clone(v) for v in value)
    return value


def _call(fn: Callable, name: str, case: _Case, where: str):
    """Call the student's function on copies of the case's inputs; a raise or an in-place change fails."""
    args = tuple(_clone(a) for a in case.args)
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:  # the stub of the student notebook, not yet replaced
        signature = EXERCISES[name].signature if name in EXERCISES else name
        raise _Fail(f"FAIL {name}: not implemented yet. Write `{signature}` and check it again.") from None
    except Exception as exc:  # the student's bug: report it, never propagate it
        raise _Fail(
            f"FAIL {name}, {where}: {_exception_text(name, exc)}\n  Inputs:\n{_inputs_text(case)}"
        ) from None
    names = case.names or tuple(f"arg{i}" for i in range(len(case.args)))
    passed = list(zip(names, args, case.args, strict=False)) + [
        (k, kwargs[k], v) for k, v in case.kwargs.items()
    ]
    for label, given, kept in passed:
        if isinstance(kept, torch.Tensor) and not torch.equal(given, kept):
            raise _Fail(
                f"FAIL {name}, {where}: your function changed its input `{label}` in place (an in-place "
                f"operation such as `{label}[:, 2] -= ...`, `+=` or `.clamp_()` on the input or on a view of "
                f"it). Callers reuse their tensors: work on new tensors (or on `{label}.clone()`)."
            )
    return out


def _type_problem(got, expected: torch.Tensor, shape_hint: str = "") -> str | None:
    """What is wrong with the result's type, shape or dtype, or None."""
    if got is None:
        return "it returned None: did you forget the `return` statement?"
    if isinstance(got, (list, tuple)):
        return (
            f"it returned a Python {type(got).__name__} of {len(got)} items, not a tensor: build the result "
            "with torch operations, or convert at the end (torch.stack(...) for a list of tensors, "
            "torch.tensor(...) for a list of numbers)."
        )
    if type(got).__module__.startswith("numpy"):
        return "it returned a numpy array, not a torch tensor: use torch operations (or torch.from_numpy)."
    if not isinstance(got, torch.Tensor):
        return f"it returned {type(got).__name__}, not a torch.Tensor."
    if tuple(got.shape) != tuple(expected.shape):
        text = f"the result has shape {list(got.shape)}, expected {list(expected.shape)}."
        if got.dim() == 2 and tuple(got.shape) == tuple(expected.shape)[::-1]:
            text += " It looks transposed (rows and columns swapped)."
        elif got.numel() == expected.numel():
            text += f" Same number of elements: reshape to {list(expected.shape)} (in the right order)."
        return text + (" " + shape_hint if shape_hint else "")
    if got.dtype != expected.dtype:
        text = f"the result has dtype {got.dtype}, expected {expected.dtype}."
        if not expected.is_floating_point() and got.is_floating_point():
            text += " Indices and labels are integers: torch.long (int64)."
        elif expected.dtype == torch.int64 and got.dtype != torch.bool:
            text += " Use .long() (torch.int64, PyTorch's index type)."
        elif got.dtype == torch.bool:
            text += " Return numbers, not a True/False mask."
        elif expected.dtype == torch.float32 and got.dtype == torch.float64:
            text += (
                " Some tensor was created as float64 (e.g. from numpy or with dtype=torch.double); "
                "keep the input's dtype."
            )
        return text
    if got.device != expected.device:
        return (
            f"the result is on {got.device}, expected {expected.device} "
            "(create tensors on the input's device)."
        )
    return None


def _close(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> bool:
    if tuple(got.shape) != tuple(expected.shape):
        return False
    if not expected.is_floating_point():
        return torch.equal(got.cpu().long(), expected.cpu().long())
    return torch.allclose(
        got.detach().cpu().double(), expected.cpu().double(), atol=atol, rtol=rtol, equal_nan=True
    )


def _diagnose(got: torch.Tensor, expected: torch.Tensor, variants, atol: float, rtol: float) -> list[str]:
    """The explanations of the known-wrong variants whose output on this input equals the student's."""
    found = []
    for explanation, make in variants:
        try:
            wrong = make()
        except Exception:  # a variant that cannot run on this input simply does not apply
            continue
        if not isinstance(wrong, torch.Tensor) or tuple(wrong.shape) != tuple(got.shape):
            continue
        wrong = wrong.to(got.dtype) if got.is_floating_point() == wrong.is_floating_point() else wrong
        if _close(got, wrong, atol, rtol) and not _close(wrong, expected, atol, rtol):
            found.append(explanation)
    return found


def _difference_text(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    if not expected.is_floating_point():
        wrong = (got.cpu().long() != expected.cpu().long()).nonzero()
        return f"{len(wrong)} of {expected.numel()} entries differ (they must be equal)."
    diff = (got.detach().cpu().double() - expected.cpu().double()).abs()
    diff = torch.nan_to_num(diff, nan=math.inf)
    worst = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
    return (
        f"largest difference {diff.flatten()[worst].item():.4g} at index {index} "
        f"(allowed: atol {atol:g} + rtol {rtol:g} * |expected|)."
    )


def _compare(
    name, case, where, got, expected, *, atol, rtol, variants=(), shape_hint="", show_expected=True
) -> None:
    """Fail with a full explanation unless ``got`` matches ``expected``."""
    head = f"FAIL {name}, {where}"
    problem = _type_problem(got, expected, shape_hint)
    if problem is None and _close(got, expected, atol, rtol):
        return
    text = f"{head}: " + (problem or "wrong values.") + f"\n  Inputs:\n{_inputs_text(case)}"
    if show_expected:
        text += "\n  Expected" + (f" ({case.note})" if case.note else "") + f":\n{_indent(_fmt(expected))}"
        if isinstance(got, torch.Tensor):
            text += f"\n  Got:\n{_indent(_fmt(got))}"
    diagnoses = _diagnose(got, expected, variants, atol, rtol) if isinstance(got, torch.Tensor) else []
    if problem is None:
        text += "\n  " + _difference_text(got, expected, atol, rtol)
    if diagnoses:
        text += "\n  Diagnosis: " + "\n  Diagnosis: ".join(diagnoses)
    elif problem is None:
        text += (
            "\n  (No common mistake gives exactly your result; compare it with the expected one entry "
            "by entry.)"
        )
    raise _Fail(text)


def _run_exact(name, fn, ref, fixed, random, *, atol, rtol, variants, shape_hint="", call=None) -> str:
    """Hand-made cases, then random cases, each compared with the reference; returns the PASS summary."""
    call = call or _call
    for kind, cases in (("hand-made case", fixed), ("random case", random)):
        for i, case in enumerate(cases):
            where = f"{kind} {i + 1} of {len(cases)}" + (f" ({case.label})" if case.label else "")
            expected = ref(*case.args, **case.kwargs)
            got = call(fn, name, case, where)
            _compare(
                name,
                case,
                where,
                got,
                expected,
                atol=atol,
                rtol=rtol,
                variants=variants(case, expected),
                shape_hint=shape_hint,
                show_expected=(kind == "hand-made case" or expected.numel() <= 96),
            )
    return (
        f"PASS {name}: {len(fixed)} hand-made and {len(random)} random cases agree with "
        f"{EXERCISES[name].reference} (atol {atol:g}, rtol {rtol:g})."
    )


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_boxes(n: int, g: torch.Generator, extent: float = 20.0, min_size: float = 0.5) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent / 2 + min_size
    return torch.cat((xy, xy + wh), dim=1)


def _plus_one(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes whose width and height are one more: what ``x2 - x1 + 1`` computes."""
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


_PLUS_ONE = (
    "looks like you used widths x2 - x1 + 1 (the '+ 1' of old VOC / Detectron code). Here a box covers "
    "[x1, x2) x [y1, y2): width = x2 - x1, height = y2 - y1."
)


# --------------------------------------------------------------------------------------------------------
# 1. box_iou


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


# --------------------------------------------------------------------------------------------------------
# 2, 3. encode_deltas, decode_deltas


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


# --------------------------------------------------------------------------------------------------------
# 4, 5. anchors


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


# --------------------------------------------------------------------------------------------------------
# 6. nms


def _greedy(boxes, scores, threshold, *, strict=True, only_kept=True, iou=None):
    """Greedy NMS with a mistake switched on (used to recognise the student's mistake)."""
    iou = _box_iou(boxes, boxes) if iou is None else iou
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
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


# --------------------------------------------------------------------------------------------------------
# 7, 9. sampling stages: properties


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


def _check_sampling_randomness(name: str, fn, case: _Case, key: str, validate) -> None:
    """Same generator seed: same sample; other seed: another sample (and not simply the first ones)."""
    outs = []
    for seed in (1, 1, 2):
        c = _Case(case.label, case.args, {**case.kwargs, "generator": _gen(seed)}, case.names, case.note)
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


def _check_rpn_targets(fn) -> str:
    tiny = _rpn_case_tiny()
    where = "hand-made case 1 of 1 (" + tiny.label + ")"
    _rpn_validate("rpn_targets", tiny, where, _call(fn, "rpn_targets", tiny, where), True)
    cases = _rpn_random_cases()
    for i, case in enumerate(cases):
        c = _Case(case.label, case.args, {**case.kwargs, "generator": _gen(10 + i)}, case.names, case.note)
        where = f"random case {i + 1} of {len(cases)} ({case.label})"
        _rpn_validate("rpn_targets", c, where, _call(fn, "rpn_targets", c, where), False)
    _check_sampling_randomness("rpn_targets", fn, cases[0], "labels", _rpn_validate)
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
    where = "hand-made case 1 of 1 (" + tiny.label + ")"
    _detection_validate("detection_targets", tiny, where, _call(fn, "detection_targets", tiny, where), True)
    for i, case in enumerate(random):
        c = _Case(case.label, case.args, {**case.kwargs, "generator": _gen(20 + i)}, case.names, case.note)
        where = f"random case {i + 1} of {len(random)} ({case.label})"
        _detection_validate("detection_targets", c, where, _call(fn, "detection_targets", c, where), False)
    _check_sampling_randomness("detection_targets", fn, random[1], "rois", _detection_validate)
    return (
        f"PASS detection_targets: on the hand-made and {len(random)} random cases the sampled ROIs follow "
        "the "
        "IoU threshold, positives come first, counts keep the positive fraction, labels, matched_gt and "
        "box_targets (atol 1e-4) are right, mask targets match the matched GT mask cut out at the ROI (mean "
        "difference <= 0.1), and sampling is random and reproducible with a generator."
    )


# --------------------------------------------------------------------------------------------------------
# 8. bilinear, roi_align


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
            (bumpy, torch.tensor([[0.0, 0.5, 1.0, 5.5, 4.0]]), (2, 3)),
            {"spatial_scale": 1.0, "sampling_ratio": -1, "aligned": False},
            names,
            "sampling_ratio -1: ceil(3 / 2) = 2 samples per bin along y, ceil(5 / 3) = 2 along x",
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
                "cell's value "
                "sits at its centre, c + 0.5); with aligned=False do not.",
                lambda: ref(x, boxes, size, s, sr, not al),
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
                lambda: ref(x, boxes, size, s, 2 if sr <= 0 else -1, al),
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


# --------------------------------------------------------------------------------------------------------
# 10. paste_mask


def _paste_other(mask, box, size, mode="bilinear", align_corners=False, rounding=None, transpose=False):
    """Pasting with a mistake: another interpolation, another rounding of the box."""
    h, w = size
    out = torch.zeros((h, w))
    rounding = rounding or (lambda v: math.ceil(v - 0.5))
    x1, y1, x2, y2 = (rounding(float(v)) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        return out
    src = mask.T if transpose else mask
    kwargs = {"align_corners": align_corners} if mode == "bilinear" else {}
    resized = F.interpolate(src.float()[None, None], size=(bh, bw), mode=mode, **kwargs)[0, 0]
    left, top, right, bottom = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if left < right and top < bottom:
        out[top:bottom, left:right] = resized[top - y1 : bottom - y1, left - x1 : right - x1]
    return out


def _check_paste_mask(fn) -> str:
    ref = _REF["paste_mask"]
    exact = _unwrap(_masks.paste_masks)
    names = ("mask", "box", "image_size")
    corner = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    fixed = [
        _Case(
            "a 2 x 2 mask on a 4 x 2 box",
            (corner, torch.tensor([1.0, 2, 5, 4]), (6, 7)),
            names=names,
            note="box 4 wide, 2 high at column 1, row 2; the mask's top-right cell is 1, resized bilinearly",
        ),
        _Case(
            "a box partly outside the image",
            (torch.rand(3, 3, generator=_gen(11)), torch.tensor([-2.0, -1, 4, 3]), (4, 5)),
            names=names,
            note="only the part inside is pasted",
        ),
        _Case(
            "a box outside the image",
            (corner, torch.tensor([10.0, 10, 14, 14]), (4, 4)),
            names=names,
            note="nothing to paste: all zeros",
        ),
    ]
    g = _gen(12)
    random = []
    for _ in range(4):
        xy = torch.randint(-2, 8, (2,), generator=g).float()
        wh = torch.randint(2, 9, (2,), generator=g).float()
        random.append(
            _Case("", (torch.rand(5, 5, generator=g), torch.cat((xy, xy + wh)), (10, 12)), names=names)
        )
    fractional = []
    for _ in range(3):
        xy = torch.rand(2, generator=g) * 6
        wh = torch.rand(2, generator=g) * 6 + 2
        fractional.append(
            _Case(
                "fractional box",
                (torch.rand(4, 4, generator=g), torch.cat((xy, xy + wh)), (10, 12)),
                names=names,
            )
        )

    def variants(case, expected):
        mask, box, size = case.args
        yx = box[[1, 0, 3, 2]]
        return [
            (_PLUS_ONE, lambda: ref(mask, _plus_one(box), size)),
            (
                "x and y are swapped: box is (x1, y1, x2, y2); rows of the image are y, columns x.",
                lambda: ref(mask, yx, size),
            ),
            (
                "the mask is transposed: mask[i, j] is row i (y), column j (x) inside the box.",
                lambda: ref(mask.T, box, size),
            ),
            (
                "use align_corners=False: mask cells are squares covering the box, not points on its "
                "corners.",
                lambda: _paste_other(mask, box, size, align_corners=True),
            ),
            (
                "use bilinear interpolation (mode='bilinear'), not nearest.",
                lambda: _paste_other(mask, box, size, mode="nearest"),
            ),
            (
                "round the box edges to the nearest pixel (math.ceil(v - 0.5)), not down with int().",
                lambda: _paste_other(mask, box, size, rounding=math.floor),
            ),
            (
                "return the pasted values (floats), not a thresholded mask: thresholding comes later.",
                lambda: (ref(mask, box, size) >= 0.5).float(),
            ),
        ]

    summary = _run_exact(
        "paste_mask",
        fn,
        ref,
        fixed,
        random,
        atol=1e-5,
        rtol=1e-5,
        variants=variants,
        shape_hint="The result is the whole image: [H, W].",
    )
    for i, case in enumerate(fractional):
        where = f"fractional case {i + 1} of {len(fractional)}"
        got = _call(fn, "paste_mask", case, where)
        mask, box, size = case.args
        sampled = exact(mask[None], box[None], size)[0]
        rounded = ref(*case.args)
        if _type_problem(got, rounded) is None and (
            _close(got, rounded, 1e-5, 1e-5) or _close(got, sampled, 1e-5, 1e-5)
        ):
            continue
        _compare(
            "paste_mask", case, where, got, rounded, atol=1e-5, rtol=1e-5, variants=variants(case, rounded)
        )
    return summary.replace(" cases agree", f" cases (and {len(fractional)} fractional boxes) agree")


# --------------------------------------------------------------------------------------------------------
# public check API

_CHECKS: dict[str, Callable[[Callable], str]] = {
    "box_iou": _check_box_iou,
    "encode_deltas": _check_encode_deltas,
    "decode_deltas": _check_decode_deltas,
    "level_anchors": _check_level_anchors,
    "pyramid_anchors": _check_pyramid_anchors,
    "nms": _check_nms,
    "rpn_targets": _check_rpn_targets,
    "bilinear": _check_bilinear,
    "roi_align": _check_roi_align,
    "detection_targets": _check_detection_targets,
    "paste_mask": _check_paste_mask,
}


def run_check(name: str, fn) -> CheckResult:
    """Check the student's ``fn`` for exercise ``name``; never raises because ``fn`` is wrong or broken.

    fn: the student's function, or None (not written yet). Returns a :class:`CheckResult` whose message starts
    with ``"PASS"`` or explains the first problem found (inputs, expected and actual result, diagnosis).
    Raises ValueError only for an unknown ``name``.
    """
    name = _exercise_name(name)
    signature = EXERCISES[name].signature
    if fn is None:
        return CheckResult(
            name, False, f"{name}: not implemented yet. Write `{signature}` and check it again."
        )
    if not callable(fn):
        return CheckResult(
            name, False, f"{name}: expected a function ({signature}), got {type(fn).__name__}."
        )
    try:
        with _references_only(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            message = _CHECKS[name](fn)
        return CheckResult(name, True, message)
    except _Fail as failure:
        return CheckResult(name, False, failure.message)
    except Exception as exc:  # an output too odd for the comparisons above; still the student's problem
        return CheckResult(
            name,
            False,
            f"FAIL {name}: could not check your result ({type(exc).__name__}: {exc}). "
            "Compare its type and shape with the task (describe(name)).",
        )


def check(name: str, fn) -> bool:
    """Run :func:`run_check`, print its message and return whether ``fn`` passed."""
    result = run_check(name, fn)
    print(result.message)
    return result.passed
