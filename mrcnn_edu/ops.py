"""torchvision-compatible operators: same names, signatures and semantics as ``torchvision.ops``.

Use them where code written for torchvision expects ``box_iou``, ``nms``, ``batched_nms`` or ``roi_align``.
"""

from .boxes import box_iou
from .nms import batched_nms, nms

__all__ = ["box_iou", "nms", "batched_nms"]
