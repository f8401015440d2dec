"""Exercises: students re-implement the core stages, the package checks them and can run the model on them.

How a class uses it. A notebook prints the task of a stage (:func:`describe`), the student writes a function
with the same name and signature as the library's, and :func:`check` runs it on hand-made cases (tiny inputs
whose answer can be worked out on paper, shown when they fail) and then on seeded random cases compared with
the reference implementation of ``mrcnn_edu`` within a stated tolerance. A wrong answer gets an explanation:
which input, what was expected, what came back, and, where the result matches a known mistake (the
evaluation runs the usual wrong variants on the failing input and compares), what that mistake was
("looks like you used x2 - x1 + 1"; when several mistakes fit that input, only those the function also makes
on the other cases). A student who is stuck continues with the reference; one who passes can put the function
into the model with :func:`use_student` and watch it detect shapes.

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
``proposal_layer``     ``mrcnn_edu.proposals.propose`` (one image)        boxes and scores, in order
``detection_layer``    ``mrcnn_edu.detection.detect`` (argmax classes)    boxes, scores, labels, in order
``roi_pool``           ``mrcnn_edu.roi_align.roi_pool``                   values
``crop_and_resize``    ``mrcnn_edu.roi_align.crop_and_resize``            values
``assign_fpn_levels``  ``mrcnn_edu.roi_align.assign_fpn_levels``          levels
``mask_target``        ``mrcnn_edu.detection_targets.mask_targets``       values (one ROI)
``rpn_loss``           ``mrcnn_edu.losses.rpn_objectness_loss`` and       both values, and a gradient
                       ``rpn_box_loss``
``mask_loss``          ``mrcnn_edu.losses.mask_loss``                     value, and a gradient
=====================  =================================================  ==============================

Each exercise's ``forbidden`` functions (the library's own implementation of the stage) fail with a message
saying so while it is checked, called under any name (:mod:`.forbid`). :data:`ASSIGNMENTS` maps each exercise
notebook to the exercises it is graded on. Grading a class (``mrcnn-edu grade``) runs every submission in
sandboxed worker processes and keeps the checks in the grader (:mod:`.grading`); ``mrcnn-edu exercises
export`` writes the exercises as an nbgrader or otter-grader course (:mod:`.export`).

Some student signatures are simpler than the library's (fewer options, one mask instead of a batch, ``[N, 4]``
instead of any ``[..., 4]``); each :class:`Exercise` states its signature, and :func:`use_student` wraps the
student's function in an adapter with the library's signature that supplies the rest (see below).

The API: :func:`describe` (task text), :func:`run_check` (a :class:`CheckResult`, never raises on a wrong or
broken function; ``seed=`` draws other random cases), :func:`check` (prints the message, returns ``passed``),
:func:`use_student`, :func:`use_student_if_passed` (for demo cells: says which function the demo runs),
:func:`use_reference`, :func:`active`. Unknown names raise ValueError listing the valid ones.

How the checks judge
    Exact stages are compared with the reference (saved when this package is imported, so a swapped-in
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
    - proposal_layer: proposals, model: ``propose`` (run per image)
    - detection_layer: detection (``detect_batch`` calls it), model: ``detect``
    - roi_pool: roi_align, ops: ``roi_pool`` (not used by the model)
    - crop_and_resize: roi_align: ``crop_and_resize`` (``pyramid_roi_align``, ``method="crop_and_resize"``)
    - assign_fpn_levels: roi_align: ``assign_fpn_levels`` (``pyramid_roi_align`` calls it)
    - mask_target: detection_targets: ``mask_targets`` (the student's one-ROI function run on each ROI)
    - rpn_loss: losses: ``rpn_objectness_loss`` and ``rpn_box_loss`` (each from the student's pair)
    - mask_loss: losses: ``mask_loss``
"""

import importlib

# The public names, each loaded from its module on first use (PEP 562), so that importing one part of this
# package (the grader's worker, the notebook generator) does not load the others.
_PUBLIC = {
    "Exercise": "catalog",
    "EXERCISES": "catalog",
    "ASSIGNMENTS": "catalog",
    "describe": "catalog",
    "CheckResult": "harness",
    "run_check": "harness",
    "check": "harness",
    "SITES": "swap",
    "use_student": "swap",
    "use_reference": "swap",
    "use_student_if_passed": "swap",
    "active": "swap",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
