"""torchvision-compatible operators: same names, signatures and semantics as ``torchvision.ops``.

Use them where code written for torchvision expects ``box_iou``, ``nms``, ``batched_nms``, ``roi_align`` or
``roi_pool``; they need no compiled extension, and hand over to torchvision's kernels on CUDA when those load.
"""

from .boxes import box_iou
from .nms import batched_nms, nms
from .roi_align import roi_align, roi_pool

__all__ = ["box_iou", "nms", "batched_nms", "roi_align", "roi_pool"]
