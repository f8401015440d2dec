"""RPN targets: which anchors the RPN should call "object" or "background", and where objects really are.

Training only. The RPN predicts an objectness score and four deltas for every anchor (see
:mod:`mrcnn_edu.anchors`); this layer gives it the answers to learn from. Each anchor is matched to the
ground-truth (GT) box it overlaps most: IoU ``>= 0.7`` makes it positive, IoU ``< 0.3`` negative, anything
in between is ignored. Every GT box also claims the anchor(s) it overlaps most, even below 0.7, so no object
is left without a positive anchor. Of the roughly 260k anchors of a 1024x1024 image only a random 256 are
used per image, at most half of them positive, because almost all anchors are easy background and would
otherwise swamp the loss. Positive anchors also get regression targets: the deltas that move the anchor
onto its matched GT box (:func:`mrcnn_edu.boxes.encode_deltas`). Nothing here is learned: IoU, matching and
sampling come from :mod:`mrcnn_edu.boxes` and :mod:`mrcnn_edu.matching`.

Shape glossary
    N: anchors of one image (all pyramid levels, in the order of :func:`mrcnn_edu.anchors.pyramid_anchors`)
    G: ground-truth boxes of one image, crowd boxes included
    B: images in a batch

matterport (``build_rpn_targets``) and torchvision (``RegionProposalNetwork.assign_targets_to_anchors`` with
its ``Matcher`` and ``BalancedPositiveNegativeSampler``) agree on the recipe above: 0.7 / 0.3, 256 anchors,
at most 50% positive, the rest filled with negatives. They differ in the details:

- Low-quality matches. Both add, for each GT box, the anchors of highest IoU with it even if below 0.7.
  torchvision and current matterport take *all* anchors tied at that highest IoU (earlier matterport took a
  single ``argmax``). Such an anchor regresses towards the GT *it* overlaps most, which may be a different
  GT from the one that claimed it; matterport, torchvision and :func:`mrcnn_edu.matching.match_by_iou`
  all do this. A GT box overlapping no anchor at all (IoU 0 everywhere, e.g. a zero-area box) would, in
  both libraries, make every anchor it does not touch its "best" one; ``match_by_iou`` skips such a GT.
  ``allow_low_quality=False`` turns the low-quality matches off (pure thresholds).
- Crowd boxes (COCO ``iscrowd``: one box around a group of objects). matterport removes them from the
  GT before matching and never uses an anchor as a negative if its IoU with any crowd box is ``>= 0.001``
  (it may still be positive for a non-crowd GT). torchvision's RPN has no notion of crowds: its COCO
  reference scripts drop crowd annotations when loading, so anchors on a crowd can become negatives. Pass
  ``gt_is_crowd`` for matterport's behaviour, leave it None for torchvision's.
- Anchors crossing the image border. The original Faster R-CNN ignored them during training (they were
  neither positive nor negative). matterport and torchvision keep every anchor (detectron2's
  ``BOUNDARY_THRESH = -1`` does too); that is the default here. ``image_size`` with ``allowed_border``
  restores the original: anchors reaching more than ``allowed_border`` pixels outside the image are
  removed before matching and labelled -1.
- No GT box. torchvision labels every anchor negative (256 negatives are sampled); matterport's data
  generator skips such images. Here: torchvision's behaviour.
- Regression targets. matterport encodes ``(dy, dx, log dh, log dw) / RPN_BBOX_STD_DEV`` with
  ``RPN_BBOX_STD_DEV = (0.1, 0.1, 0.2, 0.2)``, i.e. ``weights=(10, 10, 5, 5)``, and packs the positives'
  deltas into a ``[256, 4]`` array in positive-anchor order. torchvision uses ``weights=(1, 1, 1, 1)`` (the
  default here) and a dense ``[N, 4]`` target. Here the target is dense ``[N, 4]`` in ``(dx, dy, dw, dh)``
  order, zero except at sampled positives, so it lines up index by index with the RPN head's deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from ._checks import check_boxes, check_size, check_tensor
from .boxes import box_dtype, box_iou, encode_deltas
from .matching import BACKGROUND, IGNORE, match_by_iou, sample_balanced, sample_balanced_batch

__all__ = ["MATTERPORT_CROWD_IOU", "rpn_targets", "rpn_targets_batch"]

#: An anchor with at least this IoU with a crowd box is never a negative (matterport's ``0.001``).
MATTERPORT_CROWD_IOU = 0.001


def _anchors_inside(anchors: torch.Tensor, image_size, allowed_border: float) -> torch.Tensor:
    """Bool ``[N]``: the anchor lies within the image grown by ``allowed_border`` pixels on every side."""
    h, w = check_size("image_size", image_size)
    b = float(allowed_border)
    return (
        (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] <= w + b) & (anchors[:, 3] <= h + b)
    )


def _check_image(anchors, gt_boxes, gt_is_crowd, name: str = "") -> torch.Tensor:
    """Check one image's GT against the anchors; return its crowd flags (all False when None)."""
    check_boxes("anchors", anchors)
    check_boxes(f"gt_boxes{name}", gt_boxes)
    if gt_boxes.device != anchors.device:
        raise ValueError(
            f"gt_boxes{name} must be on the anchors' device {anchors.device}, got {gt_boxes.device}"
        )
    num_gt = gt_boxes.shape[0]
    if gt_is_crowd is None:
        return torch.zeros(num_gt, dtype=torch.bool, device=anchors.device)
    check_tensor(f"gt_is_crowd{name}", gt_is_crowd, ndim=1, kind="bool")
    if gt_is_crowd.shape[0] != num_gt:
        raise ValueError(
            f"gt_is_crowd{name} must have one entry per GT box ({num_gt}), got {gt_is_crowd.shape[0]}"
        )
    return gt_is_crowd


def _check_options(positive_iou, negative_iou, image_size, allowed_border) -> None:
    if not negative_iou <= positive_iou:
        raise ValueError(f"negative_iou ({negative_iou}) must not exceed positive_iou ({positive_iou})")
    if allowed_border is not None and image_size is None:
        raise ValueError("image_size must be given with allowed_border, got None")


def rpn_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_is_crowd: torch.Tensor | None = None,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    allow_low_quality: bool = True,
    generator: torch.Generator | None = None,
    *,
    crowd_iou: float = MATTERPORT_CROWD_IOU,
    image_size: Sequence[int] | None = None,
    allowed_border: float | None = None,
) -> dict[str, torch.Tensor]:
    """Objectness labels and regression targets of every anchor of one image.

    anchors: ``[N, 4]`` float ``(x1, y1, x2, y2)`` pixels, all levels
        (:func:`mrcnn_edu.anchors.image_anchors`).
    gt_boxes: ``[G, 4]`` float ground-truth boxes of the image, same device as ``anchors``.
    gt_is_crowd: ``[G]`` bool, True for crowd boxes (never matched; anchors with IoU ``>= crowd_iou`` with
        one are never negatives), or None (no crowds, torchvision).
    positive_iou, negative_iou: an anchor whose best IoU is ``>= positive_iou`` is positive,
        ``< negative_iou`` negative, in between ignored (matterport's and torchvision's 0.7 / 0.3).
    num_samples, positive_fraction: anchors sampled per image and the largest positive share
        (``RPN_TRAIN_ANCHORS_PER_IMAGE = 256``, 0.5); the rest are filled with negatives.
    weights: ``(wx, wy, ww, wh)`` of the delta encoding: ``(1, 1, 1, 1)`` torchvision, ``(10, 10, 5, 5)``
        matterport (``1 / RPN_BBOX_STD_DEV``).
    allow_low_quality: also make positive each GT box's highest-IoU anchors (ties included), even below
        ``positive_iou``.
    generator: CPU ``torch.Generator`` for reproducible sampling.
    crowd_iou: IoU with a crowd box from which an anchor can no longer be negative.
    image_size, allowed_border: if ``allowed_border`` is given, anchors reaching more than that many pixels
        outside the image ``(height, width)`` are left out of matching and labelled -1 (original Faster
        R-CNN uses 0); None keeps all anchors (matterport, torchvision).

    Returns a dict of tensors on the anchors' device:

    - ``labels``: int64 ``[N]``, after sampling: 1 positive, 0 negative, -1 not sampled or ignored.
      At most ``num_samples`` anchors are 0 or 1, at most ``int(num_samples * positive_fraction)`` are 1.
    - ``matched_gt``: int64 ``[N]``, index into ``gt_boxes`` of the GT box each positive (``labels == 1``)
      regresses to; -1 elsewhere.
    - ``deltas``: ``[N, 4]`` in the anchors' :func:`~mrcnn_edu.boxes.box_dtype` (at least float32),
      :func:`mrcnn_edu.boxes.encode_deltas` of the matched GT
      box w.r.t. the anchor where ``labels == 1``; 0 elsewhere.
    - ``labels_before_sampling``: int64 ``[N]``, the same 1 / 0 / -1 before sampling (every candidate).
    """
    gt_is_crowd = _check_image(anchors, gt_boxes, gt_is_crowd)
    _check_options(positive_iou, negative_iou, image_size, allowed_border)

    num_anchors = anchors.shape[0]
    device = anchors.device
    gt_boxes = gt_boxes.to(anchors.dtype)
    gt_is_crowd = gt_is_crowd.to(device)
    object_idx = torch.nonzero(~gt_is_crowd).flatten()  # original indices of the non-crowd GT boxes

    # 1. Match anchors to the non-crowd GT boxes (anchors outside the allowed border take no part).
    matches = torch.full((num_anchors,), IGNORE, dtype=torch.long, device=device)
    if allowed_border is None:
        candidates = torch.arange(num_anchors, device=device)
    else:
        candidates = torch.nonzero(_anchors_inside(anchors, image_size, allowed_border)).flatten()
    iou = box_iou(gt_boxes[object_idx], anchors[candidates])  # [G_objects, candidates]
    matches[candidates] = match_by_iou(iou, positive_iou, negative_iou, allow_low_quality)

    # 2. A crowd box hides objects: an anchor on it must not be taught "background".
    if bool(gt_is_crowd.any()):
        crowd_overlap = box_iou(gt_boxes[gt_is_crowd], anchors).amax(dim=0)  # [N]
        matches[(matches == BACKGROUND) & (crowd_overlap >= crowd_iou)] = IGNORE

    labels_before = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    labels_before[matches >= 0] = 1
    labels_before[matches == BACKGROUND] = 0

    # 3. Sample at most num_samples anchors, at most positive_fraction of them positive.
    positive, negative = sample_balanced(labels_before, num_samples, positive_fraction, generator)
    labels = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    labels[positive] = 1
    labels[negative] = 0

    # 4. Regression targets of the sampled positives, towards the GT box each one matched.
    matched_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    matched_gt[positive] = object_idx[matches[positive]]
    deltas = torch.zeros((num_anchors, 4), dtype=box_dtype(anchors.dtype), device=device)
    deltas[positive] = encode_deltas(gt_boxes[matched_gt[positive]], anchors[positive], weights)
    return {
        "labels": labels,
        "matched_gt": matched_gt,
        "deltas": deltas,
        "labels_before_sampling": labels_before,
    }


_READABLE = rpn_targets


def rpn_targets_batch(
    anchors: torch.Tensor,
    gt_boxes: Sequence[torch.Tensor],
    gt_is_crowd: Sequence[torch.Tensor | None] | None = None,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    allow_low_quality: bool = True,
    generator: torch.Generator | None = None,
    *,
    crowd_iou: float = MATTERPORT_CROWD_IOU,
    image_size: Sequence[int] | None = None,
    allowed_border: float | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`rpn_targets` for every image of a batch that shares one set of anchors, all at once.

    anchors: ``[N, 4]`` (the same for every image: images are padded to one size).
    gt_boxes: ``B`` tensors ``[G_b, 4]``. gt_is_crowd: None, or ``B`` entries ``[G_b]`` bool or None.
    The other arguments as :func:`rpn_targets` (``image_size`` and ``allowed_border`` apply to every image).
    Returns the same keys with a leading batch dimension: ``[B, N]`` int64 and ``deltas`` ``[B, N, 4]``,
    identical to stacking :func:`rpn_targets` of each image (the generator is drawn from image by image, in
    the same order).

    The GT boxes are padded to ``[B, G_max, 4]`` and matched against the anchors in one batched IoU; padding
    and crowd rows get IoU -1, which never matches. Sampling reads the per-image counts once
    (:func:`mrcnn_edu.matching.sample_balanced_batch`), so the host synchronisations do not grow with B.
    """
    check_boxes("anchors", anchors)
    if isinstance(gt_boxes, torch.Tensor) and gt_boxes.dim() != 3:
        raise ValueError(f"gt_boxes must be a sequence of [G, 4] tensors, got shape {tuple(gt_boxes.shape)}")
    crowd = [None] * len(gt_boxes) if gt_is_crowd is None else list(gt_is_crowd)
    if len(crowd) != len(gt_boxes):
        raise ValueError(f"gt_is_crowd must have one entry per image ({len(gt_boxes)}), got {len(crowd)}")
    pairs = enumerate(zip(gt_boxes, crowd, strict=True))
    crowd = [_check_image(anchors, g, c, f"[{i}]") for i, (g, c) in pairs]
    _check_options(positive_iou, negative_iou, image_size, allowed_border)
    num_images, num_anchors, device = len(gt_boxes), anchors.shape[0], anchors.device
    labels_before = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=device)
    if num_images == 0:
        return {
            "labels": labels_before,
            "matched_gt": labels_before.clone(),
            "deltas": torch.zeros((0, num_anchors, 4), dtype=box_dtype(anchors.dtype), device=device),
            "labels_before_sampling": labels_before.clone(),
        }
    if rpn_targets is not _READABLE:  # an exercise swapped a student's rpn_targets in: run it per image
        per_image = [
            rpn_targets(anchors, g, c, positive_iou, negative_iou, num_samples, positive_fraction, weights,
                        allow_low_quality, generator, crowd_iou=crowd_iou, image_size=image_size,
                        allowed_border=allowed_border)
            for g, c in zip(gt_boxes, gt_is_crowd or crowd, strict=True)
        ]  # fmt: skip
        return {key: torch.stack([t[key] for t in per_image]) for key in per_image[0]}
    gt_boxes = [g.to(anchors.dtype) for g in gt_boxes]
    gts = pad_sequence(gt_boxes, batch_first=True)  # [B, G, 4]
    is_crowd = pad_sequence(crowd, batch_first=True)  # [B, G]
    real = pad_sequence([torch.ones_like(c) for c in crowd], batch_first=True)  # False: padding
    num_gt = gts.shape[1]

    # 1. Match (anchors outside the allowed border take no part: IoU -1 with everything, then IGNORE).
    # One box_iou per image (no host sync in it), padded with -1 rows: [B, G, N].
    iou = pad_sequence([box_iou(g, anchors) for g in gt_boxes], batch_first=True, padding_value=-1.0)
    candidate = None if allowed_border is None else _anchors_inside(anchors, image_size, allowed_border)
    objects = iou.masked_fill(~(real & ~is_crowd)[:, :, None], -1.0)
    if candidate is not None:
        objects = objects.masked_fill(~candidate, -1.0)
    matches = match_by_iou(objects, positive_iou, negative_iou, allow_low_quality)  # [B, N]
    if candidate is not None:
        matches = torch.where(candidate, matches, IGNORE)

    # 2. Crowd boxes: no negatives on them.
    if any(c is not None for c in (gt_is_crowd or [])) and num_gt > 0:
        crowd_overlap = iou.masked_fill(~(real & is_crowd)[:, :, None], -1.0).amax(dim=1)  # [B, N]
        matches = torch.where((matches == BACKGROUND) & (crowd_overlap >= crowd_iou), IGNORE, matches)

    labels_before = torch.where(matches >= 0, 1, torch.where(matches == BACKGROUND, 0, -1))

    # 3. Sample every image at once; 4. regression targets of the sampled positives.
    positive, negative, _, _ = sample_balanced_batch(labels_before, num_samples, positive_fraction, generator)
    labels = torch.full((num_images * num_anchors,), -1, dtype=torch.long, device=device)
    labels[positive] = 1
    labels[negative] = 0
    matched = matches.flatten().index_select(0, positive)  # GT index within its image
    image, anchor = torch.div(positive, num_anchors, rounding_mode="floor"), positive % num_anchors
    matched_gt = torch.full_like(labels, -1)
    matched_gt[positive] = matched
    deltas = torch.zeros((num_images * num_anchors, 4), dtype=box_dtype(anchors.dtype), device=device)
    targets = gts.reshape(-1, 4).index_select(0, image * num_gt + matched)
    deltas[positive] = encode_deltas(targets, anchors.index_select(0, anchor), weights)
    return {
        "labels": labels.view(num_images, num_anchors),
        "matched_gt": matched_gt.view(num_images, num_anchors),
        "deltas": deltas.view(num_images, num_anchors, 4),
        "labels_before_sampling": labels_before,
    }
