"""Transforms on ``(image, target)`` items, batching, and the ground-truth check the training path runs.

Every transform takes and returns an item in the format used throughout mrcnn_edu (torchvision's), so
transforms chain with :class:`Compose` and plug into a data set's ``transforms`` argument. Geometric
transforms must move the image, the boxes and the masks together; the only one here is the horizontal flip
that matterport and torchvision both use for augmentation.

Shape glossary
    C, H, W: image channels (3), height and width
    N:       objects in one image
    B:       images in a batch

Item format:
    image:  float32 ``[3, H, W]`` in 0-1
    target: ``boxes`` float32 ``[N, 4]`` (``x1, y1, x2, y2`` pixels), ``labels`` int64 ``[N]`` (1..K),
            ``masks`` uint8 ``[N, H, W]``, optional ``iscrowd`` bool ``[N]``, ``area`` ``[N]``,
            ``image_id`` int.

Batches are plain lists (:func:`collate`), as torchvision's detection models take them: images of different
sizes cannot be stacked until the model resizes and pads them (``mrcnn_edu.molding``).
"""

from __future__ import annotations

import warnings

import torch

from .._checks import check_boxes, check_size, check_tensor
from ..boxes import box_area, clip_boxes

__all__ = [
    "horizontal_flip",
    "RandomHorizontalFlip",
    "Compose",
    "collate",
    "degenerate_boxes",
    "validate_target",
    "validate_targets",
    "PER_OBJECT_KEYS",
]

#: Target fields with one entry per object (filtered together when objects are dropped).
PER_OBJECT_KEYS = ("boxes", "labels", "masks", "iscrowd", "area")


def horizontal_flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an item left-right.

    image: ``[C, H, W]``. target: a dict; its ``boxes`` ``[N, 4]`` become ``x1' = W - x2, x2' = W - x1``
        (``y`` unchanged) and its ``masks`` ``[N, H, W]`` are mirrored along the width, so each flipped box is
        still the tight box of its flipped mask. Other fields are passed through unchanged.
    Returns a new ``(image, target)``; the inputs are not modified. Flipping twice gives the item back.
    """
    check_tensor("image", image, ndim=3)
    width = image.shape[-1]
    out = dict(target)
    if "boxes" in target:
        boxes = check_boxes("target['boxes']", target["boxes"])
        # pixel column c covers [c, c+1), which the flip sends to [W-c-1, W-c): edges map as x -> W - x
        x1, y1, x2, y2 = boxes.unbind(1)
        out["boxes"] = torch.stack((width - x2, y1, width - x1, y2), dim=1)
    if "masks" in target:
        out["masks"] = check_tensor("target['masks']", target["masks"], ndim=3).flip(-1)
    return image.flip(-1), out


class RandomHorizontalFlip:
    """Apply :func:`horizontal_flip` with probability ``p``.

    p: probability in ``[0, 1]``. generator: optional CPU ``torch.Generator`` that draws the coin, for
    reproducible augmentation (default: torch's global generator).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        if torch.rand((), generator=self.generator).item() < self.p:
            return horizontal_flip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Chain transforms: each is a callable ``(image, target) -> (image, target)``, applied in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise ValueError(f"transforms[{i}] must be callable on (image, target), got {t}")

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def collate(batch) -> tuple[list[torch.Tensor], list[dict]]:
    """``collate_fn`` for a ``DataLoader``: B items -> (list of B images, list of B targets).

    Images are not stacked (sizes may differ; the model resizes and pads), matching torchvision's detection
    models, which take lists.
    """
    images, targets = [], []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"batch[{i}] must be an (image, target) pair, got {type(item).__name__}")
        images.append(item[0])
        targets.append(item[1])
    return images, targets


def degenerate_boxes(boxes: torch.Tensor, image_size) -> torch.Tensor:
    """Which boxes cover no area of the image.

    boxes: ``[N, 4]`` float ``x1, y1, x2, y2``; image_size: ``(height, width)``.
    Returns bool ``[N]``: True where the box, clipped to ``[0, W] x [0, H]``, has zero area, i.e. it is
    degenerate (``x2 <= x1`` or ``y2 <= y1``) or lies entirely outside the image. Boxes partly outside the
    image are not degenerate (and are not clipped by :func:`validate_target`).
    """
    check_boxes("boxes", boxes)
    check_size("image_size", image_size)
    return box_area(clip_boxes(boxes, image_size)) <= 0


def validate_target(
    image: torch.Tensor,
    target: dict,
    name: str = "target",
    num_classes: int | None = None,
    require_masks: bool = True,
) -> dict:
    """Check one training item and drop ground-truth boxes that cover no area of the image.

    image: float ``[3, H, W]``.
    target: dict with ``boxes`` float ``[N, 4]``, ``labels`` int64 ``[N]`` (values 1..K: 0 is the background),
        ``masks`` uint8 or bool ``[N, H, W]`` (required unless ``require_masks=False``), optional ``iscrowd``
        bool ``[N]``, ``area`` ``[N]``, ``image_id`` int; other keys are passed through.
    name: how errors and warnings refer to the target (e.g. ``"targets[3]"``).
    num_classes: if given (K + 1, background included), labels must be below it.

    Raises ValueError naming the field (``target['labels']``...) for a missing field, a wrong shape, dtype
    or length, non-finite boxes, or out-of-range labels.
    Returns a new dict where the objects flagged by :func:`degenerate_boxes` (zero area, or entirely outside
    the image) are removed from every per-object field (:data:`PER_OBJECT_KEYS`); if any are removed, a
    ``UserWarning`` says how many. The inputs are not modified.
    """
    return validate_targets([image], [target], num_classes, require_masks, names=[name])[0]


def validate_targets(
    images,
    targets,
    num_classes: int | None = None,
    require_masks: bool = True,
    names=None,
) -> list[dict]:
    """:func:`validate_target` of every item of a batch (what the model runs on its training batch).

    images: B float ``[3, H, W]`` tensors; targets: B dicts, as :func:`validate_target` takes them.
    names: how errors and warnings refer to each target (default ``targets[i]``).
    Returns B new dicts, each as :func:`validate_target` returns it; the same errors and warnings.

    The shapes and dtypes are checked image by image; the values (finite boxes, labels in range, boxes to
    drop) of the whole batch are read by the host at once, so that a GPU waits once per batch, not four
    times per image.
    """
    names = [f"targets[{i}]" for i in range(len(targets))] if names is None else list(names)
    if not len(images) == len(targets) == len(names):
        raise ValueError(f"images, targets and names must have one entry per item, got "
                         f"{len(images)}, {len(targets)} and {len(names)}")  # fmt: skip
    items = zip(images, targets, names, strict=True)
    checked = [_check_fields(image, target, name, require_masks) for image, target, name in items]
    drops = [degenerate_boxes(boxes, size) for boxes, _, size in checked]
    rows = []
    for (boxes, labels, _), drop in zip(checked, drops, strict=True):
        too_high = (labels >= num_classes).any() if num_classes is not None else labels.new_zeros(())
        flags = ((~torch.isfinite(boxes)).any(), (labels < 1).any(), too_high, drop.sum())
        rows.append(torch.stack([f.to(device=boxes.device, dtype=torch.int64) for f in flags]))
    values = torch.stack(rows).tolist() if rows else []  # the one read of the batch
    out = []
    for (boxes, labels, size), drop, target, name, (bad_box, low, high, dropped) in zip(
        checked, drops, targets, names, values, strict=True
    ):
        if bad_box or low or high:
            _raise_for_values(boxes, labels, name, num_classes)
        out.append(_without_dropped(target, drop, dropped, name, size))
    return out


def _check_fields(image, target, name: str, require_masks: bool):
    """The structure of one item (fields, shapes, dtypes), with no read of tensor values.
    Returns ``(boxes [N, 4], labels [N], (H, W))``."""
    check_tensor("image", image, ndim=3, kind="float")
    if image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    if not isinstance(target, dict):
        raise ValueError(f"{name} must be a dict, got {type(target).__name__}")
    height, width = image.shape[1:]

    def field(key: str) -> str:
        return f"{name}[{key!r}]"

    for key in ("boxes", "labels") + (("masks",) if require_masks else ()):
        if key not in target:
            raise ValueError(f"{field(key)} is missing (a target needs boxes, labels and masks)")
    boxes = check_boxes(field("boxes"), target["boxes"])
    n = boxes.shape[0]

    def check_length(key: str, t: torch.Tensor) -> None:
        if t.shape[0] != n:
            raise ValueError(f"{field(key)} must have one entry per box ({n}), got shape {tuple(t.shape)}")

    labels = check_tensor(field("labels"), target["labels"], ndim=1)
    if labels.dtype != torch.int64:
        raise ValueError(f"{field('labels')} must be int64, got dtype {labels.dtype}")
    check_length("labels", labels)
    if "masks" in target:
        masks = check_tensor(field("masks"), target["masks"], ndim=3)
        if masks.dtype not in (torch.uint8, torch.bool):
            raise ValueError(f"{field('masks')} must be uint8 or bool, got dtype {masks.dtype}")
        if tuple(masks.shape) != (n, height, width):
            raise ValueError(
                f"{field('masks')} must be [N, H, W] = {[n, height, width]} (N boxes, the image's size), "
                f"got shape {tuple(masks.shape)}"
            )
    if "iscrowd" in target:
        check_length("iscrowd", check_tensor(field("iscrowd"), target["iscrowd"], ndim=1, kind="bool"))
    if "area" in target:
        check_length("area", check_tensor(field("area"), target["area"], ndim=1))
    if "image_id" in target:
        image_id = target["image_id"]
        if isinstance(image_id, torch.Tensor):
            ok = image_id.numel() == 1 and not image_id.is_floating_point()
        else:
            ok = isinstance(image_id, int) or hasattr(image_id, "__index__")
        if not ok:
            raise ValueError(f"{field('image_id')} must be an integer, got {image_id!r}")
    return boxes, labels, (height, width)


def _raise_for_values(boxes, labels, name: str, num_classes: int | None) -> None:
    """The error for an item whose values failed (read again, on this path only, to name them)."""
    if not torch.isfinite(boxes).all():
        bad = boxes[~torch.isfinite(boxes).all(1)].tolist()
        raise ValueError(f"{name}['boxes'] must be finite, got {bad}")
    if labels.min() < 1:
        raise ValueError(f"{name}['labels'] must be >= 1 (0 is the background), got {labels.min().item()}")
    raise ValueError(f"{name}['labels'] must be < num_classes={num_classes}, got {labels.max().item()}")


def _without_dropped(target: dict, drop: torch.Tensor, dropped: int, name: str, size) -> dict:
    out = dict(target)
    if dropped:
        height, width = size
        warnings.warn(
            f"{name}: dropped {dropped} of {len(drop)} ground-truth boxes with no area inside the "
            f"{height}x{width} image (degenerate, or entirely outside it)",
            UserWarning,
            stacklevel=3,
        )
        keep = ~drop
        for key in PER_OBJECT_KEYS:
            if key in out:
                out[key] = out[key][keep]
    return out
