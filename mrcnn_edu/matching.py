"""Matching reference boxes (anchors, proposals) to ground truth by IoU, and balanced sampling.

Both training-only target layers use these two steps: the RPN targets (anchors vs GT, 0.7 / 0.3) and the
detection targets (proposals vs GT, 0.5). Neither step is learned.

Shape glossary
    G: ground-truth boxes of one image
    N: reference boxes (anchors or proposals) of one image
"""

from __future__ import annotations

import numbers

import torch

from ._checks import check_tensor

__all__ = ["BACKGROUND", "IGNORE", "match_by_iou", "sample_balanced"]

#: ``match_by_iou`` result for a reference box whose best IoU is below the negative threshold.
BACKGROUND = -1
#: ``match_by_iou`` result for a reference box between the thresholds: neither object nor background.
IGNORE = -2


def match_by_iou(
    iou: torch.Tensor,
    positive_threshold: float,
    negative_threshold: float,
    allow_low_quality: bool = True,
) -> torch.Tensor:
    """Assign each reference box the ground-truth box it overlaps most, or a background / ignore code.

    iou: ``[G, N]`` IoU of every GT box with every reference box.
    positive_threshold: best IoU ``>=`` this makes a positive (0.7 for the RPN, 0.5 for the box head).
    negative_threshold: best IoU ``<`` this makes a negative (0.3 for the RPN; equal to the positive
        threshold for the box head, so that nothing is ignored).
    allow_low_quality: also make positive, for each GT box, the reference boxes that reach its highest IoU
        (ties included) even below the threshold, so every object gets at least one anchor (Faster R-CNN).
        A box promoted this way still regresses to its *own* best GT (as torchvision's Matcher and
        matterport's ``build_rpn_targets``), so a GT whose best box overlaps another GT more stays unmatched.
    Returns int64 ``[N]``: the matched GT index ``>= 0``, :data:`BACKGROUND` (-1) or :data:`IGNORE` (-2).
    """
    check_tensor("iou", iou, ndim=2, kind="float")
    if negative_threshold > positive_threshold:
        raise ValueError(
            f"negative_threshold ({negative_threshold}) must not exceed "
            f"positive_threshold ({positive_threshold})"
        )
    g, n = iou.shape
    if g == 0:
        return torch.full((n,), BACKGROUND, dtype=torch.long, device=iou.device)
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=iou.device)
    best_iou, matched = iou.max(dim=0)  # over GT, per reference box
    result = matched.clone()
    result[best_iou < positive_threshold] = IGNORE
    result[best_iou < negative_threshold] = BACKGROUND
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values  # [G, 1]
        # A GT box with no overlap at all has nothing to claim.
        gt_idx, ref_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        result[ref_idx] = matched[ref_idx]
    return result


def sample_balanced(
    labels: torch.Tensor,
    num_samples: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
    fill_with_negatives: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly pick at most ``num_samples`` positives and negatives, at most ``positive_fraction`` positive.

    labels: ``[N]`` with 1 = positive, 0 = negative, anything else (e.g. -1) = not sampled.
    num_samples: total to sample (256 anchors for the RPN, 200 or 512 ROIs for the heads).
    positive_fraction: largest share of positives (0.5 RPN, 0.33 matterport heads, 0.25 torchvision heads).
    fill_with_negatives: True (torchvision, and matterport's RPN) fills the rest of ``num_samples`` with
        negatives; False (matterport's detection-target layer) keeps exactly that ratio, taking
        ``int(num_pos / positive_fraction) - num_pos`` negatives.
    generator: a CPU ``torch.Generator`` for reproducible sampling.
    Returns ``(positive_indices [P], negative_indices [Q])`` into ``labels``, int64, P + Q <= num_samples.
    """
    check_tensor("labels", labels, ndim=1)
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
    num_samples = int(num_samples)
    if not 0.0 < positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1], got {positive_fraction}")
    positive = torch.nonzero(labels == 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    if fill_with_negatives:
        num_neg = num_samples - num_pos
    else:
        num_neg = int(num_pos / positive_fraction) - num_pos
    num_neg = min(negative.numel(), num_neg)

    def pick(idx: torch.Tensor, k: int) -> torch.Tensor:
        perm = torch.randperm(idx.numel(), generator=generator)[:k]
        return idx[perm.to(idx.device)]

    return pick(positive, num_pos), pick(negative, num_neg)
