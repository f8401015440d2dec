"""Wrong functions, and every comparison the old grader made in the student's process patched to say yes."""

import torch

import mrcnn_edu.exercises.checking as checking
import mrcnn_edu.exercises.harness as harness
import mrcnn_edu.exercises.registry as registry
import mrcnn_edu.exercises.swap as swap

torch.allclose = torch.equal = lambda *a, **k: True
torch.Tensor.__eq__ = lambda *a, **k: torch.tensor(True)
checking._compare = lambda *a, **k: None
checking._close = lambda *a, **k: True
for _name in list(registry.CHECKS):
    registry.CHECKS[_name] = lambda fn, _name=_name: f"PASS {_name}: trust me"
swap._REF["box_iou"] = swap._REF["nms"] = lambda *a, **k: None
harness.run_check = lambda name, fn, seed=None: harness.CheckResult(name, True, f"PASS {name}")


def box_iou(boxes1, boxes2):
    return torch.zeros(len(boxes1), len(boxes2))


def nms(boxes, scores, iou_threshold):
    return torch.arange(len(scores))
