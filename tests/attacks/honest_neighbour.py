"""An honest submission: box_iou and nms written with torch (graded before and after the attacks)."""

import torch


def box_iou(boxes1, boxes2):
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def nms(boxes, scores, iou_threshold):
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while len(order):
        keep.append(int(order[0]))
        order = order[1:][box_iou(boxes[order[:1]], boxes[order[1:]])[0] <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)
