"""Data sets: the embedded synthetic shapes (default), and loaders for your own data."""

from .coco import CocoDataset, load_coco_ground_truth
from .export import export_shapes_coco
from .images import DataError, read_image
from .shapes import CLASS_NAMES, ShapesDataset, make_shapes_image
from .transforms import (
    Compose,
    RandomHorizontalFlip,
    collate,
    horizontal_flip,
    validate_target,
    validate_targets,
)

__all__ = [
    "CLASS_NAMES",
    "ShapesDataset",
    "make_shapes_image",
    "CocoDataset",
    "load_coco_ground_truth",
    "export_shapes_coco",
    "DataError",
    "read_image",
    "Compose",
    "RandomHorizontalFlip",
    "collate",
    "horizontal_flip",
    "validate_target",
    "validate_targets",
]
