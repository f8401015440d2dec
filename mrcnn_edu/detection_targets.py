"""Detection targets: which proposals the heads train on, and what each should predict (training only).

During training the RPN's proposals are not all fed to the box and mask heads. Each proposal is matched to
the ground-truth box it overlaps most (:func:`mrcnn_edu.matching.match_by_iou`): IoU >= 0.5 makes it a
positive (an example of that object's class), IoU < 0.5 a negative (background). A balanced random sample
is kept (:func:`mrcnn_edu.matching.sample_balanced`), and for each sampled ROI the layer builds the targets
the three heads are trained against: a class label, box deltas from the ROI to its GT box
(:func:`mrcnn_edu.boxes.encode_deltas`), and for positives an ``M x M`` mask: the GT mask cut out at the ROI
and resized (:func:`mask_targets`: ``roi_align`` on the full-image GT mask). Nothing here is learned.

Shape glossary
    P: proposals of one image (``P + G`` with ``add_gt_boxes``)
    G: ground-truth objects of one image
    H, W: image height and width (of the GT masks)
    R: sampled ROIs, positives first; R_pos of them positive
    M: mask target side (28)

Matterport (``DetectionTargetLayer``) vs torchvision (``RoIHeads.select_training_samples``)
    * Sample size: matterport ``TRAIN_ROIS_PER_IMAGE = 200`` at ``ROI_POSITIVE_RATIO = 0.33``, taking
      ``int(positives / 0.33) - positives`` negatives, so the ratio is kept and fewer than 200 ROIs come out
      when positives are scarce (it then pads with zero ROIs, which we do not: R is simply smaller).
      torchvision takes 512 at a positive fraction of 0.25 and fills the rest with negatives.
      Defaults here are matterport's; ``num_samples=512, positive_fraction=0.25, fill_with_negatives=True,
      add_gt_boxes=True, binarize_masks=False`` gives torchvision's.
    * GT boxes as proposals: torchvision appends the GT boxes to the proposals (guaranteeing perfect
      positives early in training, when proposals are poor); matterport does not (``add_gt_boxes``).
    * Thresholds: both use IoU >= 0.5 positive, < 0.5 negative, and no "low-quality" matches.
    * Crowd regions (COCO ``iscrowd``): matterport never matches proposals to crowd boxes and does not use a
      proposal overlapping a crowd box (IoU >= 0.001) as a negative; torchvision's dataset code simply drops
      crowd annotations. ``gt_is_crowd`` gives matterport's handling.
    * Mask targets: matterport crops the GT mask at the ROI with ``tf.image.crop_and_resize`` and rounds it
      to 0/1; torchvision uses ``roi_align`` on the GT masks and keeps the soft values
      (``binarize_masks=False``). Both sample the GT mask bilinearly inside the ROI. torchvision calls
      ``roi_align(aligned=False)``, which samples half a pixel right of and below where our pixel convention
      puts the ROI; for ROIs smaller than ``M`` pixels this drops the last row/column of a binarised target.
      ``aligned=True`` samples at the right place (detectron2's ``ROIAlignV2``; matterport's
      ``crop_and_resize`` also samples from the first to the last pixel centre of the ROI).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_boxes, check_tensor
from .boxes import box_iou, encode_deltas
from .matching import match_by_iou, sample_balanced
from .roi_align import roi_align

__all__ = ["detection_targets", "mask_targets", "CROWD_IOU_THRESHOLD"]

#: A proposal overlapping a crowd box by at least this IoU is not used as a negative (matterport's 0.001).
CROWD_IOU_THRESHOLD = 0.001


def _check_inputs(
    proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd, num_samples, mask_size, positive_iou, negative_iou
) -> None:
    check_boxes("proposals", proposals)
    check_boxes("gt_boxes", gt_boxes)
    check_tensor("gt_labels", gt_labels, ndim=1, kind="int")
    check_tensor("gt_masks", gt_masks, ndim=3)
    g = gt_boxes.shape[0]
    for name, t in (("gt_labels", gt_labels), ("gt_masks", gt_masks)):
        if t.shape[0] != g:
            raise ValueError(f"{name} must have one entry per GT box ({g}), got shape {tuple(t.shape)}")
    if g > 0 and int(gt_labels.min()) < 1:
        raise ValueError(
            f"gt_labels must be object classes >= 1 (0 is background), got min {int(gt_labels.min())}"
        )
    if gt_is_crowd is not None:
        check_tensor("gt_is_crowd", gt_is_crowd, ndim=1, kind="bool")
        if gt_is_crowd.shape[0] != g:
            raise ValueError(
                f"gt_is_crowd must have one entry per GT box ({g}), got shape {tuple(gt_is_crowd.shape)}"
            )
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if not isinstance(mask_size, int) or mask_size < 1:
        raise ValueError(f"mask_size must be a positive int, got {mask_size!r}")
    if negative_iou > positive_iou:
        raise ValueError(f"negative_iou ({negative_iou}) must not exceed positive_iou ({positive_iou})")


def mask_targets(
    gt_masks: torch.Tensor,
    rois: torch.Tensor,
    matched_gt: torch.Tensor,
    mask_size: int = 28,
    aligned: bool = False,
    binarize: bool = True,
) -> torch.Tensor:
    """The mask target of each positive ROI: its GT mask cut out at the ROI and resized, with RoIAlign.

    gt_masks: ``[G, H, W]`` full-image masks (bool, uint8 or float 0/1). rois: ``[R_pos, 4]`` float pixel
    boxes. matched_gt: int64 ``[R_pos]``, the GT index of each ROI. mask_size: ``M``.
    aligned: passed to ``roi_align`` (sampling ratio adaptive, ``ceil(roi size / M)``).
    binarize: threshold at 0.5 (``>= 0.5``; matterport), else the soft values clipped to [0, 1] (torchvision).
    Returns ``[R_pos, M, M]`` in the dtype of ``rois``. Each ROI reads its own GT's mask (the GT index is the
    batch index of ``roi_align``), so no per-ROI copy of a full-image mask is made.
    """
    if rois.shape[0] == 0:
        return rois.new_zeros((0, mask_size, mask_size))
    masks = gt_masks.to(device=rois.device, dtype=rois.dtype)[:, None]  # [G, 1, H, W]
    indexed = torch.cat((matched_gt[:, None].to(rois.dtype), rois), dim=1)  # [R_pos, 5]
    out = roi_align(masks, indexed, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=-1,
                    aligned=aligned)[:, 0]  # fmt: skip
    if binarize:
        return (out >= 0.5).to(rois.dtype)
    return out.clamp(0, 1)  # interpolation rounding can leave 1 + 1e-7


def detection_targets(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_masks: torch.Tensor,
    num_samples: int = 200,
    positive_fraction: float = 0.33,
    positive_iou: float = 0.5,
    negative_iou: float = 0.5,
    add_gt_boxes: bool = False,
    fill_with_negatives: bool = False,
    mask_size: int = 28,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    binarize_masks: bool = True,
    gt_is_crowd: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    aligned: bool = False,
) -> dict[str, torch.Tensor]:
    """Sample ROIs from one image's proposals and build their class, box and mask targets.

    proposals: ``[P, 4]`` float ``(x1, y1, x2, y2)`` pixel boxes from the RPN (for this image).
    gt_boxes: ``[G, 4]`` float GT boxes; gt_labels: int64 ``[G]`` classes in ``1..K``.
    gt_masks: ``[G, H, W]`` full-image GT masks (bool, uint8 or float 0/1), in the same pixels as the boxes.
    num_samples, positive_fraction: at most ``num_samples`` ROIs, at most that share positive (see
        :func:`mrcnn_edu.matching.sample_balanced`; ``fill_with_negatives`` chooses how many negatives).
    positive_iou, negative_iou: best IoU with a (non-crowd) GT ``>= positive_iou`` makes a positive,
        ``< negative_iou`` a negative; in between (if the thresholds differ) a proposal is not sampled.
    add_gt_boxes: append the non-crowd GT boxes to the proposals first (torchvision).
    fill_with_negatives: fill up to ``num_samples`` with negatives (torchvision) instead of keeping the
        positive share (matterport).
    mask_size: ``M``, side of the mask targets.
    weights: delta weights ``(wx, wy, ww, wh)`` (``1 / BBOX_STD_DEV``).
    binarize_masks: threshold the resampled mask targets at 0.5 (matterport rounds them; ``>= 0.5`` here,
        matterport's ``tf.round`` sends exactly 0.5 to 0); False keeps the soft values (torchvision).
    gt_is_crowd: optional bool ``[G]``; crowd boxes are never matched, and proposals overlapping them by
        IoU >= :data:`CROWD_IOU_THRESHOLD` are not used as negatives (matterport).
    generator: CPU ``torch.Generator`` for reproducible sampling.
    aligned: passed to ``roi_align`` for the mask targets (False: torchvision; True: half-pixel correct).
    Returns a dict:
        "rois": ``[R, 4]`` sampled boxes, positives first (each group in random order);
        "labels": int64 ``[R]`` GT class of positives, 0 for negatives;
        "box_targets": ``[R, 4]`` ``encode_deltas(matched GT box, roi, weights)``, zeros for negatives;
        "matched_gt": int64 ``[R]`` index into ``gt_boxes`` of each positive's GT, -1 for negatives;
        "mask_targets": ``[R_pos, M, M]`` float in [0, 1] (0/1 when binarized), positives only, in ROI order.
    Proposals that are neither sampled positive nor negative are dropped (that is the point of sampling).
    Degenerate GT boxes (zero width or height) give infinite box targets, as in both libraries; filter them.
    """
    _check_inputs(proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd, num_samples, mask_size,
                  positive_iou, negative_iou)
    proposals = proposals.detach()  # targets are constants: no gradient flows back into the RPN
    device, dtype = proposals.device, proposals.dtype
    gt_boxes = gt_boxes.to(device=device, dtype=dtype)
    gt_labels = gt_labels.to(device)
    if gt_is_crowd is None:
        crowd = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=device)
    else:
        crowd = gt_is_crowd.to(device)
    solid = torch.nonzero(~crowd).flatten()  # indices of the GT boxes proposals may be matched to
    if add_gt_boxes:
        proposals = torch.cat((proposals, gt_boxes[solid]))

    # Each proposal: the index into `solid` of its best GT, or BACKGROUND / IGNORE.
    matched = match_by_iou(box_iou(gt_boxes[solid], proposals), positive_iou, negative_iou,
                           allow_low_quality=False)
    labels = torch.full_like(matched, -1)  # -1: not sampled
    labels[matched >= 0] = 1
    labels[matched == -1] = 0  # matching.BACKGROUND
    if bool(crowd.any()) and proposals.shape[0] > 0:
        near_crowd = box_iou(gt_boxes[crowd], proposals).amax(dim=0) >= CROWD_IOU_THRESHOLD
        labels[near_crowd & (labels == 0)] = -1
    positive, negative = sample_balanced(labels, num_samples, positive_fraction, generator=generator,
                                         fill_with_negatives=fill_with_negatives)

    pos_gt = solid[matched[positive]]  # index into the caller's gt_boxes
    num_neg = negative.numel()
    rois = torch.cat((proposals[positive], proposals[negative]))
    box_targets = torch.cat((encode_deltas(gt_boxes[pos_gt], proposals[positive], weights),
                             proposals.new_zeros((num_neg, 4))))
    out_labels = torch.cat((gt_labels[pos_gt].long(), torch.zeros(num_neg, dtype=torch.long, device=device)))
    matched_gt = torch.cat((pos_gt, torch.full((num_neg,), -1, dtype=torch.long, device=device)))

    masks = mask_targets(gt_masks, proposals[positive], pos_gt, mask_size, aligned, binarize_masks)
    return {
        "rois": rois,
        "labels": out_labels,
        "box_targets": box_targets,
        "matched_gt": matched_gt,
        "mask_targets": masks,
    }
