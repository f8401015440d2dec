"""The five Mask R-CNN training losses: RPN objectness and box, head classifier, box and mask.

Each loss is a small function of predictions and of the targets built by the (non-learned) target layers
(RPN targets for anchors, :func:`mrcnn_edu.detection_targets.detection_targets` for ROIs). Each returns a
scalar tensor; when there is nothing to learn from (no sampled anchor, no positive ROI) it returns a 0 that is
still connected to the predictions, so ``total.backward()`` works and no NaN appears.

Shape glossary
    B: images in the batch
    A: anchors per image
    R: sampled ROIs (all images together), R_pos of them positive (label > 0)
    K: object classes; class 0 is background, so heads have ``K + 1`` outputs
    M: mask side (28)

Where matterport and torchvision differ
    RPN objectness  matterport: 2-way softmax CE, mean over sampled anchors.
                    torchvision: sigmoid BCE, mean over sampled anchors.
    RPN box         matterport: smooth L1 (beta 1), mean over positive anchors *and* their 4 coordinates.
                    torchvision: smooth L1 (beta 1/9), sum divided by the number of sampled anchors.
    classifier      both: softmax CE, mean over ROIs (matterport counts only classes of the image's dataset).
    box             matterport: smooth L1 (beta 1) on the GT class's deltas, mean over positives' coordinates.
                    torchvision: the same with beta 1/9, sum divided by the number of sampled ROIs.
    mask            both: per-pixel BCE on the GT class's channel, mean over the positives' pixels
                    (torchvision's targets are soft, matterport's binary).

A 2-way softmax over ``(background, object)`` logits equals a sigmoid of their difference, so the single-logit
form here covers both. Box-loss options: ``normalize="sampled"`` (torchvision: sum over positives divided by
the number of sampled anchors/ROIs, so images with few positives weigh little), ``"positives"`` (sum divided
by the number of positives) and ``"elements"`` (matterport's ``K.mean``: divided by 4 x positives); use
``beta=1.0`` for matterport's smooth L1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor

__all__ = ["LOSS_NAMES", "rpn_objectness_loss", "rpn_box_loss", "classifier_loss", "box_loss", "mask_loss"]

#: The names under which ``MaskRCNN`` returns the five losses in train mode.
LOSS_NAMES = ("rpn_objectness", "rpn_box", "classifier", "box_reg", "mask")

_NORMALIZE = ("sampled", "positives", "elements")


def _check_same_leading(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor, dims: int) -> None:
    if t.shape[:dims] != ref.shape[:dims]:
        raise ValueError(
            f"{name} must match {ref_name} in its first {dims} dimension(s) {tuple(ref.shape[:dims])}, "
            f"got shape {tuple(t.shape)}"
        )


def _normalize_sum(total: torch.Tensor, normalize: str, num_sampled: int, num_positive: int) -> torch.Tensor:
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    count = {"sampled": num_sampled, "positives": num_positive, "elements": 4 * num_positive}[normalize]
    # With nothing counted the sum is an empty sum: 0, still attached to the graph.
    return total / max(count, 1)


def rpn_objectness_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the RPN's object/background logit over the sampled anchors.

    logits: ``[B, A]`` float, one objectness logit per anchor (any shape works if ``labels`` matches).
    labels: ``[B, A]`` integer: 1 = object, 0 = background, -1 = not sampled, ignored; on the device of
        ``logits``. Any other value raises ValueError (it would otherwise count silently as background).
    Returns a scalar: the mean BCE over sampled anchors of the whole batch (matterport and torchvision
    agree); 0 when no anchor is sampled.
    """
    check_tensor("logits", logits, kind="float")
    check_tensor("labels", labels, kind="index")
    check_same_device(logits=logits, labels=labels)
    bad = (labels < -1) | (labels > 1)
    if labels.numel() and bool(bad.any()):
        raise ValueError(f"labels must be -1, 0 or 1, got {labels[bad].unique().tolist()}")
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels must have the shape of logits {tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    sampled = labels >= 0
    targets = (labels[sampled] == 1).to(logits.dtype)
    total = F.binary_cross_entropy_with_logits(logits[sampled], targets, reduction="sum")
    return total / max(int(sampled.sum()), 1)


def rpn_box_loss(
    deltas: torch.Tensor,
    target_deltas: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 1.0 / 9,
    normalize: str = "sampled",
) -> torch.Tensor:
    """Smooth L1 between predicted and target anchor deltas, on positive anchors only.

    deltas: ``[B, A, 4]`` predicted ``(dx, dy, dw, dh)`` per anchor.
    target_deltas: ``[B, A, 4]`` encoded GT deltas (values at non-positive anchors are ignored).
    labels: ``[B, A]`` integer, 1 / 0 / -1 as in :func:`rpn_objectness_loss`.
    beta: smooth L1 switch point (torchvision 1/9; matterport 1.0); 0 gives plain L1.
    normalize: "sampled" divides the sum by the number of sampled anchors (labels >= 0, torchvision),
        "positives" by the number of positive anchors, "elements" by 4 x positives (matterport).
    Returns a scalar; 0 (attached to ``deltas``) when there is no positive anchor.
    """
    check_tensor("deltas", deltas, last_dim=4, kind="float")
    check_tensor("target_deltas", target_deltas, last_dim=4, kind="float")
    check_tensor("labels", labels, kind="index")
    check_same_device(deltas=deltas, target_deltas=target_deltas, labels=labels)
    if target_deltas.shape != deltas.shape:
        raise ValueError(
            f"target_deltas must have the shape of deltas {tuple(deltas.shape)}, "
            f"got {tuple(target_deltas.shape)}"
        )
    if labels.shape != deltas.shape[:-1]:
        raise ValueError(f"labels must have shape {tuple(deltas.shape[:-1])}, got {tuple(labels.shape)}")
    positive = labels == 1
    total = F.smooth_l1_loss(deltas[positive], target_deltas[positive].to(deltas.dtype), beta=beta,
                             reduction="sum")
    return _normalize_sum(total, normalize, int((labels >= 0).sum()), int(positive.sum()))


def classifier_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the box head's class scores over the sampled ROIs.

    class_logits: ``[R, K + 1]`` float logits, column 0 = background.
    labels: ``[R]`` int64 class per ROI (0 = background, 1..K objects), on the device of ``class_logits``.
    Returns the mean over ROIs (scalar); 0 when R = 0. (Matterport additionally zeroes the loss of classes
    absent from the image's dataset, and its zero-padded ROIs count as background; neither applies here.)
    """
    check_tensor("class_logits", class_logits, ndim=2, kind="float")
    check_tensor("labels", labels, ndim=1, kind="int")
    check_same_device(class_logits=class_logits, labels=labels)
    _check_same_leading("labels", labels, "class_logits", class_logits, 1)
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 (cross_entropy's class indices), got {labels.dtype}")
    num_classes = class_logits.shape[1]
    if labels.numel() and bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"labels must be in 0..{num_classes - 1} (class_logits has {num_classes} columns), got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    total = F.cross_entropy(class_logits, labels, reduction="sum")
    return total / max(labels.numel(), 1)


def box_loss(
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    beta: float = 1.0 / 9,
    normalize: str = "sampled",
) -> torch.Tensor:
    """Smooth L1 on each positive ROI's deltas for its GT class; other classes' deltas get no gradient.

    box_deltas: ``[R, K + 1, 4]`` or ``[R, (K + 1) * 4]`` per-class deltas from the box head.
    labels: ``[R]`` int64 class per ROI; label > 0 marks a positive.
    box_targets: ``[R, 4]`` encoded GT deltas (ignored for negatives).
    beta: smooth L1 switch point (torchvision 1/9; matterport 1.0).
    normalize: "sampled" divides the sum by R (torchvision), "positives" by R_pos, "elements" by 4 x R_pos
        (matterport).
    Returns a scalar; 0 (attached to ``box_deltas``) when there is no positive ROI.
    """
    check_tensor("box_deltas", box_deltas, ndim=(2, 3), kind="float")
    check_tensor("labels", labels, ndim=1, kind="int")
    check_tensor("box_targets", box_targets, ndim=2, last_dim=4, kind="float")
    check_same_device(box_deltas=box_deltas, labels=labels, box_targets=box_targets)
    r = labels.shape[0]
    if box_deltas.dim() == 2:
        if box_deltas.shape[1] % 4 != 0:
            raise ValueError(f"box_deltas must have (K + 1) * 4 columns, got shape {tuple(box_deltas.shape)}")
        box_deltas = box_deltas.reshape(box_deltas.shape[0], box_deltas.shape[1] // 4, 4)  # R may be 0
    elif box_deltas.shape[2] != 4:
        raise ValueError(f"box_deltas must be [R, K + 1, 4], got shape {tuple(box_deltas.shape)}")
    _check_same_leading("box_deltas", box_deltas, "labels", labels, 1)
    _check_same_leading("box_targets", box_targets, "labels", labels, 1)
    positive = torch.nonzero(labels > 0).flatten()
    if positive.numel() > 0 and int(labels.max()) >= box_deltas.shape[1]:
        raise ValueError(
            f"labels must be < the number of classes {box_deltas.shape[1]}, got {int(labels.max())}"
        )
    predicted = box_deltas[positive, labels[positive]]  # [R_pos, 4]: only the GT class's deltas
    total = F.smooth_l1_loss(predicted, box_targets[positive].to(predicted.dtype), beta=beta, reduction="sum")
    return _normalize_sum(total, normalize, r, positive.numel())


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor, mask_targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy on each positive ROI's GT-class mask channel.

    mask_logits: ``[R, K + 1, M, M]`` (or only the positives' rows ``[R_pos, K + 1, M, M]``) float logits;
        a single channel ``[., 1, M, M]`` is read as a class-agnostic mask.
    labels: int64 class per row of ``mask_logits`` (``[R]`` or ``[R_pos]``); rows with label > 0 are
        positives and are matched, in order, with ``mask_targets``.
    mask_targets: ``[R_pos, M, M]`` float targets in [0, 1] (binary, or soft from ``roi_align``); anything
        else (0-255 masks, NaN) raises ValueError.
    Returns the mean BCE over the positives' pixels (matterport and torchvision agree); other classes'
    channels and negative rows get no gradient. 0 (attached to ``mask_logits``) when R_pos = 0.
    """
    check_tensor("mask_logits", mask_logits, ndim=4, kind="float")
    check_tensor("labels", labels, ndim=1, kind="int")
    check_tensor("mask_targets", mask_targets, ndim=3)
    check_same_device(mask_logits=mask_logits, labels=labels, mask_targets=mask_targets)
    _check_same_leading("labels", labels, "mask_logits", mask_logits, 1)
    if mask_targets.numel() and not bool(((mask_targets >= 0) & (mask_targets <= 1)).all()):  # NaN fails too
        raise ValueError(
            f"mask_targets must be in [0, 1], got values from {mask_targets.min().item()} to "
            f"{mask_targets.max().item()} (divide 0-255 masks by 255)"
        )
    positive = torch.nonzero(labels > 0).flatten()
    if mask_targets.shape[0] != positive.numel() or mask_targets.shape[1:] != mask_logits.shape[2:]:
        raise ValueError(
            f"mask_targets must have shape {(positive.numel(), *mask_logits.shape[2:])} "
            "(one per positive label), "
            f"got {tuple(mask_targets.shape)}"
        )
    num_classes = mask_logits.shape[1]
    channel = labels[positive] if num_classes > 1 else torch.zeros_like(positive)
    if positive.numel() > 0 and int(channel.max()) >= num_classes:
        raise ValueError(f"labels must be < the number of classes {num_classes}, got {int(channel.max())}")
    predicted = mask_logits[positive, channel]  # [R_pos, M, M]
    total = F.binary_cross_entropy_with_logits(predicted, mask_targets.to(predicted.dtype), reduction="sum")
    return total / max(predicted.numel(), 1)
