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
``config.override("field=value", ...)`` parses command-line style overrides (each value read as its field's
type and checked, errors naming the field); ``config.validate()`` checks every field (:func:`field_rule` says
what each accepts; ``mrcnn-edu config`` lists them with their values). A model trained on COCO-format data
takes ``num_classes``, ``class_names`` and ``category_ids`` from its training set.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import warnings
from dataclasses import dataclass, fields

from .backbone import BACKBONE_SPECS
from .data.coco_names import COCO_CATEGORY_NAMES
from .data.shapes import CLASS_NAMES
from .molding import IMAGENET_MEAN, IMAGENET_STD, MATTERPORT_MEAN_PIXEL, RESIZE_MODES

__all__ = ["Config", "ConfigError", "PRESETS", "CHOICES", "field_rule"]


class ConfigError(ValueError):
    """A config field with a value it does not accept, or one that does not exist (the message names it)."""


@dataclass(frozen=True)
class Config:
    name: str = "shapes"
    num_classes: int = 4  # including the background class 0 (matterport NUM_CLASSES, torchvision num_classes)
    class_names: tuple[str, ...] = CLASS_NAMES  # index = label; empty when unknown
    # the COCO category id of each label 1..K (the training json's); empty when unknown. Shapes: ids 1, 2, 3
    category_ids: tuple[int, ...] = (1, 2, 3)

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

        Fields missing from ``values`` (a checkpoint from an older version) take their defaults, except
        ``category_ids``, which such a checkpoint does not know (empty); fields unknown to this version are
        dropped with a warning that names them.
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
        values = {"category_ids": [], **values}  # unknown in checkpoints from before the field existed
        return Config(**{k: tuple(v) if k in tuples else v for k, v in values.items() if k in known})

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` (not checked: call :meth:`validate`); an unknown field is a ConfigError."""
        names = [f.name for f in fields(self)]
        for key in changes:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown config field {key!r}{hint}; `mrcnn-edu config` lists the fields"
                )
        return dataclasses.replace(self, **changes)

    def override(self, *assignments: str) -> Config:
        """Apply command-line ``"field=value"`` strings and :meth:`validate` the result.

        Each value is read for its field's type: numbers and tuples as Python literals (``(1, 2)``), a
        string field takes the text as it is (``resize_mode=minmax``), a bool field ``True``/``False`` (or
        ``true``/``false``), an int where a float is expected becomes that float. Anything else raises
        ConfigError (a ValueError) naming the field and what it accepts (``lr=abc``: "config.lr must be a
        number").
        """
        changes = {}
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {item!r} must look like field=value")
            self.replace(**{key: None})  # the field exists (else: the error naming it)
            changes[key] = _parse_value(_FIELD_TYPES[key], text.strip())
        return self.replace(**changes).validate()

    def validate(self) -> Config:
        """Check every field's type and value (:func:`field_rule`) and that ``class_names`` and
        ``category_ids`` fit ``num_classes``; return ``self``, or raise ConfigError naming the field."""
        for f in fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"config.{f.name} must be {problem}, got {getattr(self, f.name)!r}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"config.class_names must have num_classes={self.num_classes} names (background first) or "
                f"none, got {len(self.class_names)}"
            )
        if self.category_ids and len(self.category_ids) != self.num_classes - 1:
            raise ConfigError(
                f"config.category_ids must have num_classes - 1 = {self.num_classes - 1} ids (one per label "
                f"1..K) or none, got {len(self.category_ids)}"
            )
        return self

    @staticmethod
    def preset(name: str, **overrides) -> Config:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)


# ------------------------------------------------------------------------------------------ field rules

#: The allowed values of the fields that name a choice.
CHOICES: dict[str, tuple[str, ...]] = {
    "resize_mode": RESIZE_MODES,
    "backbone": tuple(BACKBONE_SPECS),
    "backbone_norm": ("bn", "frozen_bn"),
    "level_rounding": ("round", "floor"),
    "roi_method": ("roi_align", "crop_and_resize"),
    "box_head": ("mlp", "conv"),
    "detection_candidates": ("argmax", "all"),
    "mask_paste": ("exact", "torchvision"),
    "schedule": ("cosine", "step"),
    "optimizer": ("adamw", "sgd"),
    "amp": ("none", "bf16", "fp16"),
}
_FIELD_TYPES = {f.name: str(f.type) for f in fields(Config)}
_POSITIVE_INTS = {
    "max_dim", "size_divisible", "fpn_channels", "anchor_stride", "rpn_batch_size", "rpn_pre_nms_train",
    "rpn_pre_nms_test", "rpn_post_nms_train", "rpn_post_nms_test", "rois_per_image", "pool_size",
    "mask_pool_size", "box_representation", "mask_conv_channels", "detection_max_instances", "batch_size",
    "steps",
}  # fmt: skip
_FRACTIONS = {
    "rpn_positive_iou", "rpn_negative_iou", "rpn_positive_fraction", "rpn_nms_threshold",
    "roi_positive_fraction", "roi_positive_iou", "roi_negative_iou", "detection_min_confidence",
    "detection_nms_threshold",
}  # fmt: skip
_NON_NEGATIVE = {"backbone_bn_eps", "rpn_min_size", "rpn_box_beta", "box_beta", "detection_min_size",
                 "momentum", "weight_decay", "grad_clip", "min_dim", "warmup_steps"}  # fmt: skip
_TUPLES = {  # field -> (required length or None, element rule)
    "pixel_mean": (3, "number"), "pixel_std": (3, "positive"), "anchor_scales": (5, "positive"),
    "anchor_ratios": (None, "positive"), "backbone_strides": (5, "positive int"),
    "rpn_weights": (4, "positive"), "box_weights": (4, "positive"), "class_names": (None, "string"),
    "category_ids": (None, "int"),
}  # fmt: skip


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def field_rule(name: str) -> str:
    """What field ``name`` accepts, in words (``"a number in [0, 1]"``, ``"one of cosine, step"``)."""
    kind = _FIELD_TYPES[name]
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    if name in _TUPLES:
        length, element = _TUPLES[name]
        count = f"{length} " if length else ""
        plural = {"number": "numbers", "positive": "positive numbers", "positive int": "positive integers",
                  "string": "strings", "int": "integers"}[element]  # fmt: skip
        extra = {"class_names": " (num_classes of them, background first, or none)",
                 "category_ids": " (unique, one per label 1..K, or none)"}.get(name, "")  # fmt: skip
        return f"a tuple of {count}{plural}{extra}"
    if name == "num_classes":
        return "an integer >= 2 (background included)"
    if name == "trainable_stages":
        return "None or an integer in 0..5"
    if kind == "bool":
        return "True or False"
    if kind == "str":
        return "a non-empty string"
    number = "an integer" if kind == "int" else "a number"
    if name in _POSITIVE_INTS:
        return f"{number} >= 1"
    if name in _FRACTIONS:
        return f"{number} in [0, 1]"
    if name in _NON_NEGATIVE:
        return f"{number} >= 0"
    if name in ("lr", "canonical_size"):
        return f"{number} > 0"
    if name == "anchor_offset":
        return "a number in [0, 1)"
    return number  # seed, sampling_ratio (<= 0: adaptive)


def _field_problem(name: str, v) -> str | None:
    """None if ``v`` is a valid value of field ``name``, else :func:`field_rule`'s description."""
    rule, kind = field_rule(name), _FIELD_TYPES[name]
    if name in CHOICES:
        ok = v in CHOICES[name]
    elif name in _TUPLES:
        length, element = _TUPLES[name]
        check = {"number": _is_number, "positive": lambda x: _is_number(x) and x > 0,
                 "positive int": lambda x: _is_int(x) and x > 0, "string": lambda x: isinstance(x, str),
                 "int": _is_int}[element]  # fmt: skip
        ok = isinstance(v, tuple) and (length is None or len(v) == length) and all(check(x) for x in v)
        ok = ok and not (name == "category_ids" and len(set(v)) != len(v))
        ok = ok and not (name == "anchor_ratios" and not v)
    elif name == "trainable_stages":
        ok = v is None or (_is_int(v) and 0 <= v <= 5)
    elif kind == "bool":
        ok = isinstance(v, bool)
    elif kind == "str":
        ok = isinstance(v, str) and v != ""
    else:
        ok = _is_int(v) if kind == "int" else _is_number(v)
        if ok and name == "num_classes":
            ok = v >= 2
        elif ok and name in _POSITIVE_INTS:
            ok = v >= 1
        elif ok and name in _FRACTIONS:
            ok = 0 <= v <= 1
        elif ok and name in _NON_NEGATIVE:
            ok = v >= 0
        elif ok and name in ("lr", "canonical_size"):
            ok = v > 0
        elif ok and name == "anchor_offset":
            ok = 0 <= v < 1
    return None if ok else rule


def _parse_value(kind: str, text: str):
    """A command-line value for a field of type ``kind`` (see :meth:`Config.override`)."""
    if kind == "str" and not (text[:1] in "'\"" and text[-1:] == text[:1] and len(text) > 1):
        return text
    if kind == "bool" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # validate() names the field and what it accepts
    if kind.startswith("tuple") and isinstance(value, list):
        return tuple(value)
    if kind == "float" and _is_int(value):
        return float(value)
    return value


PRESETS: dict[str, Config] = {
    "shapes": Config(),
    "matterport": Config(
        name="matterport",
        num_classes=81,
        class_names=(),
        category_ids=(),
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
        category_ids=(),
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
