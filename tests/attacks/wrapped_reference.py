"""'Solutions' that call the library's own implementation, under every name it can be reached by."""

import importlib

import mrcnn_edu.ops
from mrcnn_edu.boxes import box_iou as b
from mrcnn_edu.exercises.swap import _REF


def box_iou(boxes1, boxes2):
    for candidate in (b, _REF["box_iou"], importlib.import_module("mrcnn_edu.boxes").box_iou):
        try:
            return candidate(boxes1, boxes2)
        except Exception:
            pass
    return b(boxes1, boxes2)


def nms(boxes, scores, iou_threshold):
    try:
        import torchvision.ops

        return torchvision.ops.nms(boxes, scores, iou_threshold)
    except ImportError:
        return mrcnn_edu.ops.nms(boxes, scores, iou_threshold)
