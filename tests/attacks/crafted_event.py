"""Correct functions, plus crafted frames injected into every descriptor: an unknown exercise's result, a
reply to a call that was never made, a length prefix of 4 GB and invalid UTF-8."""

import json
import os
import struct

import torch


def _frame(message) -> bytes:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return struct.pack(">I", len(payload)) + payload


_CRAFTED = (
    _frame({"kind": "result", "name": "not_an_exercise", "status": "pass", "message": "PASS"})
    + _frame({"kind": "return", "id": 99, "value": None, "args": [], "kwargs": {"$": "dict", "items": []}})
    + _frame(b"\xff\xfe not utf-8")
    + struct.pack(">I", 0xFFFFFFF0)
)


def _inject():
    for fd in range(3, 256):
        try:
            os.write(fd, _CRAFTED)
        except OSError:
            pass


_inject()


def box_iou(boxes1, boxes2):
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def nms(boxes, scores, iou_threshold):
    _inject()
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while len(order):
        keep.append(int(order[0]))
        order = order[1:][box_iou(boxes[order[:1]], boxes[order[1:]])[0] <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)
