"""Matching reference boxes (anchors, proposals) to ground truth by IoU, and balanced sampling.

Both training-only target layers use these two steps: the RPN targets (anchors vs GT, 0.7 / 0.3) and the
detection targets (proposals vs GT, 0.5). Neither step is learned.

Shape glossary
    G: ground-truth boxes of one image
    N: reference boxes (anchors or proposals) of one image
    B: images of a batch (``match_by_iou`` takes any leading dimensions; :func:`sample_balanced_batch`)

Neither step reads a value back to the host per image: :func:`match_by_iou` is element-wise arithmetic
and reductions (no ``nonzero``), and :func:`sample_balanced_batch` samples a whole batch with one read of
the per-image counts, drawing exactly the random numbers that :func:`sample_balanced` draws image by image.
"""

from __future__ import annotations

import numbers

import torch

from ._checks import check_tensor

__all__ = ["BACKGROUND", "IGNORE", "match_by_iou", "sample_balanced", "sample_balanced_batch"]

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

    iou: ``[G, N]`` IoU of every GT box with every reference box, or ``[..., G, N]`` for a batch (each
        leading index matched on its own; pad missing GT rows with IoU -1, which never matches or claims).
    positive_threshold: best IoU ``>=`` this makes a positive (0.7 for the RPN, 0.5 for the box head).
    negative_threshold: best IoU ``<`` this makes a negative (0.3 for the RPN; equal to the positive
        threshold for the box head, so that nothing is ignored).
    allow_low_quality: also make positive, for each GT box, the reference boxes that reach its highest IoU
        (ties included) even below the threshold, so every object gets at least one anchor (Faster R-CNN).
        A box promoted this way still regresses to its *own* best GT (as torchvision's Matcher and
        matterport's ``build_rpn_targets``), so a GT whose best box overlaps another GT more stays unmatched.
    Returns int64 ``[N]`` (``[..., N]``): the matched GT index ``>= 0``, :data:`BACKGROUND` (-1) or
    :data:`IGNORE` (-2).
    """
    check_tensor("iou", iou, ndim=range(2, 8), kind="float")
    if negative_threshold > positive_threshold:
        raise ValueError(
            f"negative_threshold ({negative_threshold}) must not exceed "
            f"positive_threshold ({positive_threshold})"
        )
    g, n = iou.shape[-2:]
    if g == 0 or n == 0:
        return torch.full(iou.shape[:-2] + (n,), BACKGROUND, dtype=torch.long, device=iou.device)
    best_iou, matched = iou.max(dim=-2)  # over GT, per reference box
    result = torch.where(best_iou < positive_threshold, IGNORE, matched)
    result = torch.where(best_iou < negative_threshold, BACKGROUND, result)
    if allow_low_quality:
        best_per_gt = iou.max(dim=-1, keepdim=True).values  # [..., G, 1]
        # A GT box with no overlap at all has nothing to claim.
        claimed = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=-2)
        result = torch.where(claimed, matched, result)
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
    num_samples = _check_sampling(num_samples, positive_fraction)
    positive = torch.nonzero(labels == 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    num_pos, num_neg = _sample_sizes(
        positive.numel(), negative.numel(), num_samples, positive_fraction, fill_with_negatives
    )

    def pick(idx: torch.Tensor, k: int) -> torch.Tensor:
        perm = torch.randperm(idx.numel(), generator=generator)[:k]
        return idx[perm.to(idx.device)]

    return pick(positive, num_pos), pick(negative, num_neg)


def _check_sampling(num_samples, positive_fraction) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
    if not 0.0 < positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1], got {positive_fraction}")
    return int(num_samples)


def _sample_sizes(positives, negatives, num_samples, positive_fraction, fill_with_negatives):
    """How many positives and negatives :func:`sample_balanced` takes from the ones available."""
    num_pos = min(positives, int(num_samples * positive_fraction))
    if fill_with_negatives:
        num_neg = num_samples - num_pos
    else:
        num_neg = int(num_pos / positive_fraction) - num_pos
    return num_pos, min(negatives, num_neg)


def sample_balanced_batch(
    labels: torch.Tensor,
    num_samples: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
    fill_with_negatives: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """:func:`sample_balanced` for every row of a batch, with one read of the per-row counts.

    labels: ``[B, N]`` (1 positive, 0 negative, anything else not sampled); the other arguments as
    :func:`sample_balanced`. Returns ``(positive [P], negative [Q], positives_per_row, negatives_per_row)``:
    int64 indices into ``labels.flatten()``, row 0's sample first, and the two lists of ``B`` counts. Row
    ``b``'s part is exactly ``b * N + sample_balanced(labels[b], ...)`` (the same order) when the generator
    is in the same state: the random permutations are drawn in the same order (row 0's positives, row 0's
    negatives, row 1's positives, ...).
    """
    check_tensor("labels", labels, ndim=2)
    num_samples = _check_sampling(num_samples, positive_fraction)
    flat = labels.flatten()
    positive = torch.nonzero(flat == 1).flatten()  # row-major: each row's positives together, in order
    negative = torch.nonzero(flat == 0).flatten()
    available = torch.stack(((labels == 1).sum(dim=1), (labels == 0).sum(dim=1))).tolist()
    picks: list[list[torch.Tensor]] = [[], []]
    taken: list[list[int]] = [[], []]
    starts = [0, 0]
    for positives, negatives in zip(*available, strict=True):
        sizes = _sample_sizes(positives, negatives, num_samples, positive_fraction, fill_with_negatives)
        for kind, (count, k) in enumerate(zip((positives, negatives), sizes, strict=True)):
            picks[kind].append(torch.randperm(count, generator=generator)[:k] + starts[kind])
            taken[kind].append(k)
            starts[kind] += count
    pick = [torch.cat(p) if p else torch.zeros(0, dtype=torch.long) for p in picks]
    device = labels.device
    return positive[pick[0].to(device)], negative[pick[1].to(device)], taken[0], taken[1]
