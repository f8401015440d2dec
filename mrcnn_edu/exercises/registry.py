"""The check of every exercise, in one table (:data:`CHECKS`): exercise name -> check function.

A check takes the student's function and returns the PASS summary, or raises ``checking._Fail`` with the
explanation. The stage modules import only :mod:`.checking` (and :mod:`.swap` for the saved references);
this table imports them, and the harness (:mod:`.harness`) imports this table: no circle.
"""

from __future__ import annotations

from collections.abc import Callable

from .catalog import EXERCISES
from .check_anchors import _check_level_anchors, _check_pyramid_anchors
from .check_boxes import _check_box_iou, _check_decode_deltas, _check_encode_deltas
from .check_layers import _check_detection_layer, _check_proposal_layer
from .check_losses import _check_mask_loss, _check_rpn_loss
from .check_masks import _check_mask_target, _check_paste_mask
from .check_nms import _check_nms
from .check_pooling import _check_assign_fpn_levels, _check_crop_and_resize, _check_roi_pool
from .check_roi_align import _check_bilinear, _check_roi_align
from .check_targets import _check_detection_targets, _check_rpn_targets

CHECKS: dict[str, Callable[[Callable], str]] = {
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
    "proposal_layer": _check_proposal_layer,
    "detection_layer": _check_detection_layer,
    "roi_pool": _check_roi_pool,
    "crop_and_resize": _check_crop_and_resize,
    "assign_fpn_levels": _check_assign_fpn_levels,
    "mask_target": _check_mask_target,
    "rpn_loss": _check_rpn_loss,
    "mask_loss": _check_mask_loss,
}

if list(CHECKS) != list(EXERCISES):  # one table each, kept in the same (teaching) order
    raise ImportError(f"CHECKS {list(CHECKS)} and EXERCISES {list(EXERCISES)} list different exercises")
