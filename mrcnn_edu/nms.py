"""Non-maximum suppression (placeholder header; completed by the NMS stage work)."""

from __future__ import annotations

import torch

from ._checks import check_boxes, check_tensor
from .boxes import box_iou

__all__ = ["nms_loop", "nms", "batched_nms"]


def nms_loop(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, one box at a time. boxes ``[N, 4]``, scores ``[N]`` -> kept indices ``[K]`` by score."""
    check_boxes("boxes", boxes)
    check_tensor("scores", scores, ndim=1, kind="float")
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        iou = box_iou(boxes[best][None], boxes[rest])[0]
        order = rest[iou <= iou_threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


nms = nms_loop


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS within each group of ``idxs`` (class or level). Returns kept indices sorted by score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
