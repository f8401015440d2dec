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
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ._checks import check_boxes, check_tensor
from .boxes import box_iou, encode_deltas
from .matching import BACKGROUND, match_by_iou, sample_balanced, sample_balanced_batch
from .roi_align import roi_align

__all__ = ["detection_targets", "detection_targets_batch", "mask_targets", "CROWD_IOU_THRESHOLD"]

#: A proposal overlapping a crowd box by at least this IoU is not used as a negative (matterport's 0.001).
CROWD_IOU_THRESHOLD = 0.001


def _check_inputs(
    proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd, num_samples, mask_size, positive_iou, negative_iou,
    check_label_values: bool = True,
) -> None:  # fmt: skip
    check_boxes("proposals", proposals)
    check_boxes("gt_boxes", gt_boxes)
    check_tensor("gt_labels", gt_labels, ndim=1, kind="int")
    check_tensor("gt_masks", gt_masks, ndim=3)
    g = gt_boxes.shape[0]
    for name, t in (("gt_labels", gt_labels), ("gt_masks", gt_masks)):
        if t.shape[0] != g:
            raise ValueError(f"{name} must have one entry per GT box ({g}), got shape {tuple(t.shape)}")
    if check_label_values and g > 0 and int(gt_labels.min()) < 1:
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
    labels[matched == BACKGROUND] = 0
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


_READABLE = detection_targets


def detection_targets_batch(
    proposals: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    gt_masks: Sequence[torch.Tensor],
    num_samples: int = 200,
    positive_fraction: float = 0.33,
    positive_iou: float = 0.5,
    negative_iou: float = 0.5,
    add_gt_boxes: bool = False,
    fill_with_negatives: bool = False,
    mask_size: int = 28,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    binarize_masks: bool = True,
    gt_is_crowd: Sequence[torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    aligned: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """:func:`detection_targets` for every image of a batch at once (what the model runs).

    proposals, gt_boxes, gt_labels, gt_masks: one entry per image, each as :func:`detection_targets` takes
    it; gt_is_crowd: None or one entry (or None) per image; the other arguments as there.
    Returns one dict per image, identical to :func:`detection_targets` of each image in turn (the random
    permutations are drawn in the same order from ``generator``, or from torch's default generator).

    The images' candidates and GT are padded to ``[B, P_max, 4]`` / ``[B, G_max, 4]``: matching, sampling,
    box targets and mask targets each run once for the batch (one ``roi_align`` per distinct mask size), and
    the per-image counts are read once, so the host synchronisations do not grow with the batch.
    """
    num_images = len(proposals)
    for name, seq in (("gt_boxes", gt_boxes), ("gt_labels", gt_labels), ("gt_masks", gt_masks)):
        if isinstance(seq, torch.Tensor) or len(seq) != num_images:
            raise ValueError(f"{name} must be a list of one tensor per image ({num_images}), got {type(seq)}")
    crowds = [None] * num_images if gt_is_crowd is None else list(gt_is_crowd)
    if len(crowds) != num_images:
        raise ValueError(f"gt_is_crowd must have one entry per image ({num_images}), got {len(crowds)}")
    for i in range(num_images):
        _check_inputs(proposals[i], gt_boxes[i], gt_labels[i], gt_masks[i], crowds[i], num_samples, mask_size,
                      positive_iou, negative_iou, check_label_values=False)  # fmt: skip
    # The label values of all images in one read (the per-image check reads each image's minimum).
    lowest = [lab.min().to(gt_labels[0].device) for lab in gt_labels if len(lab)]
    if lowest and int(torch.stack(lowest).min()) < 1:
        bad = next(i for i, lab in enumerate(gt_labels) if len(lab) and int(lab.min()) < 1)
        raise ValueError(
            f"gt_labels[{bad}] must be object classes >= 1 (0 is background), got min {int(gt_labels[bad].min())}"  # noqa: E501
        )
    if detection_targets is not _READABLE or num_images == 0:
        # An exercise swapped a student's detection_targets in (mrcnn_edu.exercises): run it image by image.
        options = dict(
            num_samples=num_samples, positive_fraction=positive_fraction, positive_iou=positive_iou,
            negative_iou=negative_iou, add_gt_boxes=add_gt_boxes, fill_with_negatives=fill_with_negatives,
            mask_size=mask_size, weights=weights, binarize_masks=binarize_masks, generator=generator,
            aligned=aligned,
        )  # fmt: skip
        return [
            detection_targets(*args, gt_is_crowd=crowd, **options)
            for *args, crowd in zip(proposals, gt_boxes, gt_labels, gt_masks, crowds, strict=True)
        ]

    device, dtype = proposals[0].device, proposals[0].dtype
    gts = [g.to(device=device, dtype=dtype) for g in gt_boxes]
    crowd = [
        torch.zeros(g.shape[0], dtype=torch.bool, device=device) if c is None else c.to(device)
        for g, c in zip(gts, crowds, strict=True)
    ]
    # Candidates of image b: its proposals, then (add_gt_boxes) all its GT boxes; a crowd GT box appended
    # here is never sampled, which leaves the same candidates, in the same order, as appending the others.
    candidates = [p.detach().to(dtype) for p in proposals]
    unsampled = [torch.zeros(len(p), dtype=torch.bool, device=device) for p in candidates]
    if add_gt_boxes:
        unsampled = [torch.cat((u, c)) for u, c in zip(unsampled, crowd, strict=True)]
        candidates = [torch.cat((p, g)) for p, g in zip(candidates, gts, strict=True)]
    num_candidates = [len(p) for p in candidates]
    width = max(num_candidates)  # P_max

    # Matching: one box_iou per image (no host sync in it), padded to [B, G_max, P_max] with IoU -1, which
    # never matches; crowd rows are set to -1 too.
    iou = pad_sequence(
        [F.pad(box_iou(g, p), (0, width - len(p)), value=-1.0) for g, p in zip(gts, candidates, strict=True)],
        batch_first=True,
        padding_value=-1.0,
    )
    is_crowd = pad_sequence(crowd, batch_first=True)  # [B, G_max]
    matched = match_by_iou(iou.masked_fill(is_crowd[:, :, None], -1.0), positive_iou, negative_iou,
                           allow_low_quality=False)  # [B, P_max]: GT index within the image  # fmt: skip
    labels = torch.where(matched >= 0, 1, torch.where(matched == BACKGROUND, 0, -1))
    if any(c is not None for c in crowds) and iou.shape[1] > 0:
        near_crowd = iou.masked_fill(~is_crowd[:, :, None], -1.0).amax(dim=1) >= CROWD_IOU_THRESHOLD
        labels = torch.where(near_crowd & (labels == 0), -1, labels)
    labels = labels.masked_fill(pad_sequence(unsampled, batch_first=True, padding_value=True), -1)
    positive, negative, num_pos, num_neg = sample_balanced_batch(
        labels, num_samples, positive_fraction, generator=generator, fill_with_negatives=fill_with_negatives
    )  # flat indices into [B, P_max], image by image; the per-image counts as lists

    # Targets of the sampled ROIs (positives of all images, then negatives of all images).
    def starts(sizes):  # where each image's rows begin in a concatenation, on the device
        return torch.tensor([sum(sizes[:b]) for b in range(num_images)], dtype=torch.long, device=device)

    boxes = torch.cat(candidates)  # [sum P, 4]
    candidate_start = starts(num_candidates)
    pos_image, neg_image = positive // width, negative // width
    pos_rois = boxes[candidate_start[pos_image] + positive % width]
    neg_rois = boxes[candidate_start[neg_image] + negative % width]
    pos_gt = matched.flatten()[positive]  # index into the image's own gt_boxes
    gt_row = starts([len(g) for g in gts])[pos_image] + pos_gt  # row of torch.cat(gts)
    box_targets = encode_deltas(torch.cat(gts)[gt_row], pos_rois, weights)
    pos_labels = torch.cat([lab.to(device) for lab in gt_labels]).long()[gt_row]
    mask_targets = _mask_targets_batch(gt_masks, pos_image, pos_gt, pos_rois, num_pos, mask_size, aligned)
    if binarize_masks:
        mask_targets = (mask_targets >= 0.5).to(dtype)
    else:
        mask_targets = mask_targets.clamp(0, 1)  # interpolation rounding can leave 1 + 1e-7

    results = []
    parts = zip(
        pos_rois.split(num_pos), neg_rois.split(num_neg), pos_gt.split(num_pos), box_targets.split(num_pos),
        pos_labels.split(num_pos), mask_targets.split(num_pos), num_neg, strict=True,
    )  # fmt: skip
    for p_rois, n_rois, p_gt, p_targets, p_labels, p_masks, n in parts:
        results.append({
            "rois": torch.cat((p_rois, n_rois)),
            "labels": torch.cat((p_labels, torch.zeros(n, dtype=torch.long, device=device))),
            "box_targets": torch.cat((p_targets, p_targets.new_zeros((n, 4)))),
            "matched_gt": torch.cat((p_gt, torch.full((n,), -1, dtype=torch.long, device=device))),
            "mask_targets": p_masks,
        })  # fmt: skip
    return results


def _mask_targets_batch(gt_masks, pos_image, pos_gt, pos_rois, num_pos, mask_size, aligned) -> torch.Tensor:
    """``[R_pos, M, M]`` resampled GT masks of the positives of all images (unthresholded): one
    ``roi_align`` over the stacked masks of each group of images whose masks have the same size."""
    device, dtype = pos_rois.device, pos_rois.dtype
    out = pos_rois.new_zeros((pos_rois.shape[0], mask_size, mask_size))
    sizes = [tuple(m.shape[-2:]) for m in gt_masks]
    first_pos = [sum(num_pos[:b]) for b in range(len(num_pos))]
    for size in dict.fromkeys(sizes):
        group = [b for b, s in enumerate(sizes) if s == size and num_pos[b] > 0]
        if not group:
            continue
        stack = torch.cat([gt_masks[b].to(device=device, dtype=dtype) for b in group])[:, None]  # [G,1,H,W]
        offset = torch.zeros(len(num_pos), dtype=torch.long, device=device)
        offset[group] = torch.tensor([sum(len(gt_masks[c]) for c in group[:i]) for i in range(len(group))],
                                     device=device)  # fmt: skip
        rows = torch.cat([torch.arange(first_pos[b], first_pos[b] + num_pos[b]) for b in group]).to(device)
        index = offset[pos_image[rows]] + pos_gt[rows]  # which mask of the stack each ROI reads
        indexed = torch.cat((index[:, None].to(dtype), pos_rois[rows]), dim=1)  # [R, 5]
        out[rows] = roi_align(stack, indexed, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=-1,
                              aligned=aligned)[:, 0]  # fmt: skip
    return out
