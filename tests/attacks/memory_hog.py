"""Asks for far more memory than the grader's limit."""

import torch


def box_iou(boxes1, boxes2):
    hog = torch.ones(64, 1 << 30)  # 256 GiB
    return hog[: len(boxes1), : len(boxes2)]


def nms(boxes, scores, iou_threshold):
    chunks = []
    while True:
        chunks.append(bytearray(1 << 28))
