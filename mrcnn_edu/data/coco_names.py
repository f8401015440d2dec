"""COCO category names indexed by category id, for labelling the detections of COCO-trained weights.

COCO numbers its 80 object categories 1..90 with ten ids unused (12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
torchvision's COCO-trained detectors keep that numbering: their classifier has 91 outputs, output ``k`` is
category id ``k``, output 0 is the background, and the ten unused outputs are never trained. So
:data:`COCO_CATEGORY_NAMES` has 91 entries, "__background__" at 0 and "N/A" at the unused ids, and
``COCO_CATEGORY_NAMES[label]`` names a predicted label directly.
"""

from __future__ import annotations

__all__ = ["COCO_CATEGORY_NAMES", "COCO_UNUSED_IDS"]

COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)

# The 80 categories in increasing id order.
_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)


def _by_id() -> tuple[str, ...]:
    names = iter(_CATEGORIES)
    return ("__background__",) + tuple(
        "N/A" if category_id in COCO_UNUSED_IDS else next(names) for category_id in range(1, 91)
    )


#: 91 names, index = COCO category id = torchvision label; 0 is "__background__", unused ids are "N/A".
COCO_CATEGORY_NAMES: tuple[str, ...] = _by_id()
