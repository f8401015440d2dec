"""Data sets: the embedded synthetic shapes (default), and loaders for your own data."""

from .coco import CocoDataset, load_coco_ground_truth
from .export import export_shapes_coco
from .shapes import CLASS_NAMES, ShapesDataset, make_shapes_image
from .transforms import Compose, RandomHorizontalFlip, collate, horizontal_flip, validate_target

__all__ = [
    "CLASS_NAMES",
    "ShapesDataset",
    "make_shapes_image",
    "CocoDataset",
    "load_coco_ground_truth",
    "export_shapes_coco",
    "Compose",
    "RandomHorizontalFlip",
    "collate",
    "horizontal_flip",
    "validate_target",
]
