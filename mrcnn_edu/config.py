"""The model configuration: one flat dataclass with named presets.

Every field is a plain value named after the matterport / torchvision setting it mirrors, so a notebook can
print a config and a reader can find each number in the stage function that uses it. Presets:

- ``shapes``: a tiny ResNet + 64-channel FPN on 128x128 synthetic shapes, trained on a laptop CPU in minutes.
- ``matterport``: the defaults of matterport's ``Config`` (ResNet-101, 1024x1024 "square", joint top-6000,
  200 ROIs at 33 % positive, rounding level assignment, detection 0.7 / 0.3).
- ``coco``: torchvision's ``maskrcnn_resnet50_fpn`` recipe (R50-FPN, min 800 / max 1333, per-level top-k,
  GT boxes added, 512 ROIs at 25 %, floor level assignment, detection 0.05 / 0.5, all classes as candidates).
- ``torchvision``: ``coco`` plus the remaining details of torchvision's v1 model that a checkpoint trained by
  torchvision expects, so that :func:`mrcnn_edu.pretrained.load_torchvision_maskrcnn` reproduces its outputs:
  rounded base anchors with strides read off the feature shapes, clipping to each image's own size, and
  torchvision's mask pasting; COCO category names.

``Config.preset(name, **overrides)`` builds one; ``config.replace(**changes)`` copies with changes;
``config.override("field=value", ...)`` parses command-line style overrides.
"""

from __future__ import annotations

import ast
import dataclasses
import warnings
from dataclasses import dataclass, fields

from .data.coco_names import COCO_CATEGORY_NAMES
from .data.shapes import CLASS_NAMES
from .molding import IMAGENET_MEAN, IMAGENET_STD, MATTERPORT_MEAN_PIXEL

__all__ = ["Config", "PRESETS"]


@dataclass(frozen=True)
class Config:
    name: str = "shapes"
    num_classes: int = 4  # including the background class 0 (matterport NUM_CLASSES, torchvision num_classes)
    class_names: tuple[str, ...] = CLASS_NAMES  # index = label; empty when unknown

    # image molding (molding.py)
    resize_mode: str = "square"  # square | pad64 | crop | none | minmax
    min_dim: int = 128
    max_dim: int = 128
    size_divisible: int = 64  # batch padding; 64 keeps P6 aligned (matterport), torchvision uses 32
    pixel_mean: tuple[float, ...] = tuple(IMAGENET_MEAN)
    pixel_std: tuple[float, ...] = tuple(IMAGENET_STD)

    # backbone + FPN (backbone.py, fpn.py)
    backbone: str = "resnet_tiny"  # resnet_tiny | resnet18 | resnet34 | resnet50 | resnet101
    backbone_norm: str = "bn"  # bn | frozen_bn
    backbone_bn_eps: float = 1e-5  # torchvision's COCO_V1 detector was trained with 0 (see backbone.py)
    trainable_stages: int | None = None  # None: the backbone's default for its norm
    fpn_channels: int = 64

    # anchors (anchors.py)
    anchor_scales: tuple[float, ...] = (8, 16, 32, 64, 128)  # one per level P2..P6
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # width / height
    backbone_strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    anchor_stride: int = 1
    anchor_offset: float = 0.0  # 0: centres at i * stride (matterport, torchvision); 0.5: detectron2
    round_anchors: bool = False  # torchvision rounds its base anchors
    # False: backbone_strides; True: canvas size // feature size per axis, as torchvision's AnchorGenerator
    # (P6 of an 800-row canvas has 13 rows, so its anchors step 800 // 13 = 61 pixels down, not 64)
    anchor_strides_from_shapes: bool = False

    # RPN targets and loss (rpn_targets.py, losses.py)
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_batch_size: int = 256  # anchors sampled per image (RPN_TRAIN_ANCHORS_PER_IMAGE)
    rpn_positive_fraction: float = 0.5
    rpn_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # matterport: 1 / RPN_BBOX_STD_DEV = (10, 10, 5, 5)
    rpn_box_beta: float = 1.0 / 9

    # proposal layer (proposals.py)
    # 128x128 shapes: 4092 anchors, at most 4 objects (matterport / torchvision values: see the presets)
    rpn_pre_nms_train: int = 1000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_train: int = 300
    rpn_post_nms_test: int = 300
    rpn_nms_threshold: float = 0.7
    rpn_per_level: bool = False  # False: joint top-k (matterport); True: per level (torchvision)
    rpn_min_size: float = 0.0
    # proposals and detections are clipped to the padded canvas (False, matterport's proposal layer) or to
    # each image's own resized size (True, torchvision; for modes that put the image at the top-left corner)
    clip_to_image: bool = False

    # detection targets (detection_targets.py)
    rois_per_image: int = 32  # TRAIN_ROIS_PER_IMAGE (matterport 200, its shapes example 32) / torchvision 512
    roi_positive_fraction: float = 0.33
    roi_positive_iou: float = 0.5
    roi_negative_iou: float = 0.5
    add_gt_boxes: bool = True  # torchvision appends the GT boxes to the proposals; matterport does not
    fill_with_negatives: bool = False  # torchvision fills the ROI batch with negatives
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)  # 1 / BBOX_STD_DEV
    box_beta: float = 1.0 / 9

    # pyramid RoIAlign (roi_align.py)
    pool_size: int = 7
    mask_pool_size: int = 14
    sampling_ratio: int = 2
    aligned: bool = True  # half-pixel correct (detectron2); torchvision keeps False for old weights
    level_rounding: str = "round"  # round (matterport) | floor (torchvision)
    canonical_size: float = 224.0
    roi_method: str = "roi_align"  # roi_align | crop_and_resize (matterport's TF op)

    # heads (heads.py)
    box_head: str = "mlp"  # mlp (torchvision TwoMLPHead) | conv (matterport)
    box_representation: int = 256  # 1024 in both reference implementations
    mask_conv_channels: int = 32  # 256 in both reference implementations

    # detection layer (detection.py)
    detection_min_confidence: float = 0.7
    detection_nms_threshold: float = 0.3
    detection_max_instances: int = 100
    detection_candidates: str = "argmax"  # argmax (matterport) | all (torchvision)
    detection_min_size: float = 0.0
    mask_paste: str = "exact"  # exact (fractional box) | torchvision (mask padded by 1 cell, integer box)

    # training (train.py)
    batch_size: int = 8
    # adamw: the shapes recipe (a tiny model from scratch reaches in 600 steps the mask AP that SGD reached in
    # 1500: docs/benchmarks.md); sgd with momentum: matterport and torchvision (the large presets)
    optimizer: str = "adamw"
    steps: int = 600
    lr: float = 0.002
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | step
    grad_clip: float = 5.0
    amp: str = "none"  # none | bf16 | fp16 (GPU)
    seed: int = 0

    @property
    def mask_size(self) -> int:
        """The mask head doubles its pooled size (transposed conv): 14 -> 28."""
        return 2 * self.mask_pool_size

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.anchor_ratios)

    def to_dict(self) -> dict:
        """Plain values only (tuples as lists), e.g. for a checkpoint or JSON."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @staticmethod
    def from_dict(values: dict) -> Config:
        """Inverse of :meth:`to_dict` (also for a dict read back from JSON or a checkpoint).

        Fields missing from ``values`` (a checkpoint from an older version) take their defaults; fields
        unknown to this version are dropped with a warning that names them.
        """
        if not isinstance(values, dict):
            raise ValueError(f"config must be a dict, got {type(values).__name__}")
        known = {f.name for f in fields(Config)}
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(
                f"config: ignoring fields unknown to this version: {unknown}", UserWarning, stacklevel=2
            )
        tuples = {f.name for f in fields(Config) if str(f.type).startswith("tuple")}
        return Config(**{k: tuple(v) if k in tuples else v for k, v in values.items() if k in known})

    def replace(self, **changes) -> Config:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; see mrcnn_edu.config.Config")
        return dataclasses.replace(self, **changes)

    def override(self, *assignments: str) -> Config:
        """Apply ``"field=value"`` strings (values parsed as Python literals, else kept as strings)."""
        changes = {}
        for item in assignments:
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} must look like field=value")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            changes[key.strip()] = value
        return self.replace(**changes)

    @staticmethod
    def preset(name: str, **overrides) -> Config:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)


PRESETS: dict[str, Config] = {
    "shapes": Config(),
    "matterport": Config(
        name="matterport",
        num_classes=81,
        class_names=(),
        min_dim=800,
        max_dim=1024,
        # matterport subtracts MEAN_PIXEL from 0-255 pixels: on 0-1 images that is mean/255 and std 1/255
        pixel_mean=tuple(v / 255 for v in MATTERPORT_MEAN_PIXEL),
        pixel_std=(1 / 255,) * 3,
        backbone="resnet101",
        backbone_norm="frozen_bn",
        fpn_channels=256,
        anchor_scales=(32, 64, 128, 256, 512),
        rpn_weights=(10.0, 10.0, 5.0, 5.0),
        rpn_box_beta=1.0,
        rpn_pre_nms_train=6000,
        rpn_pre_nms_test=6000,
        rpn_post_nms_train=2000,
        rpn_post_nms_test=1000,
        rois_per_image=200,
        add_gt_boxes=False,
        aligned=False,
        roi_method="crop_and_resize",
        box_head="conv",
        box_representation=1024,
        mask_conv_channels=256,
        box_beta=1.0,
        batch_size=2,
        optimizer="sgd",
        steps=160_000,
        lr=0.001,
        warmup_steps=0,
        schedule="step",
    ),
    "coco": Config(
        name="coco",
        num_classes=91,
        class_names=(),
        resize_mode="minmax",
        min_dim=800,
        max_dim=1333,
        size_divisible=32,
        backbone="resnet50",
        backbone_norm="frozen_bn",
        fpn_channels=256,
        anchor_scales=(32, 64, 128, 256, 512),
        rpn_pre_nms_train=2000,
        rpn_pre_nms_test=1000,
        rpn_post_nms_train=2000,
        rpn_post_nms_test=1000,
        rpn_per_level=True,
        rpn_min_size=1e-3,
        rois_per_image=512,
        roi_positive_fraction=0.25,
        add_gt_boxes=True,
        fill_with_negatives=True,
        level_rounding="floor",
        aligned=False,
        box_representation=1024,
        mask_conv_channels=256,
        detection_min_confidence=0.05,
        detection_nms_threshold=0.5,
        detection_candidates="all",
        detection_min_size=1e-2,
        batch_size=2,
        optimizer="sgd",
        steps=90_000,
        lr=0.02,
        warmup_steps=1000,
        schedule="step",
    ),
}
PRESETS["torchvision"] = PRESETS["coco"].replace(
    name="torchvision",
    class_names=COCO_CATEGORY_NAMES,
    # torchvision's aspect ratios (0.5, 1, 2) are height / width; here ratios are width / height (matterport)
    anchor_ratios=(2.0, 1.0, 0.5),
    round_anchors=True,
    anchor_strides_from_shapes=True,
    clip_to_image=True,
    mask_paste="torchvision",
    backbone_bn_eps=0.0,
)
