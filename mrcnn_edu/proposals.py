"""Proposal layer: turn the RPN's score and deltas at every anchor into a few thousand candidate boxes.

The RPN scores every anchor ("is there an object here?") and regresses deltas that move it onto the object.
Most anchors are background, and neighbouring anchors that see the same object all fire together. This
stage, which has no weights, keeps the best-scoring anchors, applies their deltas, clips the boxes to the
image and removes near-duplicates with non-maximum suppression (NMS). Its output, the *proposals* (regions of
interest, ROIs), is what the box and mask heads look at.

Steps, each a function here so a notebook can show it on its own; :func:`propose` composes them:

1. :func:`top_k_anchors`: keep the ``pre_nms_top_n`` highest-scoring anchors. Why so few? With a 512x512
   image the P2 level alone has ``128 * 128 * 3 = 49152`` anchors (all five levels: 65472), most of them
   background and many overlapping the same object. NMS compares boxes pairwise, so running it on all of
   them would be slow, and low-scoring anchors would be suppressed or cut by ``post_nms_top_n`` anyway.
   Ranking is done on the logits, not the probabilities: ``sigmoid`` rounds large logits to exactly 1.0 in
   float32, which would turn a clear order into ties.
2. Decode: apply each kept anchor's deltas (:func:`mrcnn_edu.boxes.decode_deltas`) and turn its logit into a
   probability (``sigmoid``).
3. :func:`clip_and_filter`: clip the boxes to the image (each image of a padded batch to its own size), then
   drop boxes thinner than ``min_size`` and scores below ``score_threshold``.
4. :func:`nms_proposals`: NMS at IoU ``nms_threshold`` (jointly, or within each pyramid level), then keep the
   ``post_nms_top_n`` best.

Softmax or sigmoid? Matterport's RPN predicts two logits per anchor (background, object) and uses the
softmax's object probability; torchvision predicts one logit and uses its sigmoid. They are the same thing:
``softmax([b, f])[1] = e^f / (e^b + e^f) = 1 / (1 + e^(b - f)) = sigmoid(f - b)``. So a two-logit head is fed
here as ``f - b`` (:func:`two_logit_objectness`), and everything below works on one logit per anchor.

No gradient flows through the proposals: :func:`propose` detaches its inputs. Choosing the top-k and NMS are
selections, with no useful gradient; and Faster R-CNN's "approximate joint training" treats the proposals as
fixed boxes for the second stage: the RPN learns from its own loss against anchor targets, not from how the
box head would like the proposal coordinates to move (matterport stops the gradient to the ROIs in its
``PyramidROIAlign``; torchvision decodes from ``pred_bbox_deltas.detach()``). Letting the box head's loss
pull on the proposal coordinates makes early training unstable.

Shape glossary
    B: images in the batch
    A: anchors per image, all pyramid levels together, ordered level -> row -> column -> ratio
       (the RPN head's ``[B, A_l_per_cell * D, H, W]`` output is flattened to ``[B, H * W * A_l_per_cell, D]``
       per level, and the levels concatenated)
    L: pyramid levels; ``num_anchors_per_level`` lists the anchors of each, ``sum == A``
    T: anchors kept by the top-k step (per image)
    M: candidates that survive clipping and filtering, i.e. enter NMS (per image)
    P: proposals returned (per image), ``P <= post_nms_top_n``

Matterport (``ProposalLayer``) versus torchvision (``RegionProposalNetwork.filter_proposals``):

- score: matterport softmax of 2 logits (the object column); torchvision sigmoid of 1 logit (the same, above).
- top-k before NMS: matterport joint over all levels, ``PRE_NMS_LIMIT`` 6000; torchvision per level,
  ``pre_nms_top_n`` 2000 (training) / 1000 (inference) *in each level*.
- deltas: matterport multiplies them by ``RPN_BBOX_STD_DEV = [0.1, 0.1, 0.2, 0.2]``, i.e.
  ``weights=(10, 10, 5, 5)``, and does not clamp; torchvision uses weights ``(1, 1, 1, 1)`` and clamps
  ``dw, dh``.
- small boxes: matterport keeps them; torchvision removes those under ``1e-3`` pixels after clipping.
- NMS: IoU 0.7 in both; matterport over all boxes together, torchvision within each level (``batched_nms``).
- kept after NMS: matterport ``POST_NMS_ROIS_TRAINING`` 2000 / ``POST_NMS_ROIS_INFERENCE`` 1000; torchvision
  ``post_nms_top_n`` 2000 / 1000, the best overall.

Matterport: ``propose(..., pre_nms_top_n=6000, post_nms_top_n=2000 or 1000, weights=(10, 10, 5, 5),
clamp=None)``. torchvision: ``propose(..., num_anchors_per_level=..., per_level=True, pre_nms_top_n=2000 or
1000, post_nms_top_n=2000 or 1000, min_size=1e-3)``. Why per level? The fine P2 level holds three quarters of
the anchors, so a joint top-k can be filled by small boxes alone and never look at the coarse levels where
large objects are found; per-level top-k guarantees every scale its share, and per-level NMS lets a small box
and a large box at the same place both survive. (Matterport also pads the proposals with zero boxes to a
fixed count, as TensorFlow graphs needed static shapes; here each image gets its own ``P``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_boxes, check_size, check_tensor
from .boxes import DEFAULT_DELTA_CLAMP, clip_boxes, decode_deltas, remove_small_boxes
from .nms import batched_nms, batched_nms_per_image, nms

__all__ = [
    "two_logit_objectness",
    "anchor_levels",
    "top_k_anchors",
    "clip_and_filter",
    "nms_proposals",
    "propose",
]


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_levels(num_anchors_per_level, num_anchors: int | None) -> list[int]:
    name = "num_anchors_per_level"
    try:
        counts = [int(n) for n in num_anchors_per_level]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of integers, got {num_anchors_per_level!r}") from None
    if any(n < 0 for n in counts):
        raise ValueError(f"{name} must hold non-negative counts, got {counts}")
    if num_anchors is not None and sum(counts) != num_anchors:
        raise ValueError(f"{name} must sum to the number of anchors ({num_anchors}), got {counts}")
    return counts


def two_logit_objectness(logits: torch.Tensor) -> torch.Tensor:
    """The single objectness logit equivalent to a two-logit (background, object) softmax head.

    logits: ``[..., 2]`` float, column 0 background, column 1 object (matterport's ``rpn_class_logits``).
    Returns ``[...]`` ``object - background``, whose sigmoid equals the softmax's object probability.
    """
    check_tensor("logits", logits, ndim=range(1, 8), last_dim=2, kind="float")
    return logits[..., 1] - logits[..., 0]


def anchor_levels(
    num_anchors_per_level: Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """The pyramid level of each anchor.

    num_anchors_per_level: ``L`` counts, in the anchor order (level first).
    Returns int64 ``[A]``, ``A = sum``, holding ``0`` for the first level's anchors, ``1`` for the next, ...
    """
    counts = _check_levels(num_anchors_per_level, None)
    repeats = torch.tensor(counts, dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), repeats)


def top_k_anchors(
    objectness: torch.Tensor, k: int, num_anchors_per_level: Sequence[int] | None = None
) -> torch.Tensor:
    """Indices of the highest-scoring anchors of each image: jointly (matterport) or per level (torchvision).

    objectness: ``[B, A]`` float logits (or probabilities: only the order matters).
    k: how many to keep; a level (or the whole image) with fewer anchors keeps them all.
    num_anchors_per_level: None ranks all anchors together and keeps ``min(k, A)``; a list of ``L`` counts
        ranks each level on its own and keeps ``min(k, A_l)`` from each.
    Returns int64 ``[B, T]`` indices into the ``A`` anchors. Joint: ``T = min(k, A)``, by decreasing score.
    Per level: ``T = sum_l min(k, A_l)``, level by level, each level by decreasing score.
    """
    check_tensor("objectness", objectness, ndim=2, kind="float")
    _check_count("k", k)
    if num_anchors_per_level is None:
        return objectness.topk(min(k, objectness.shape[1]), dim=1).indices
    counts = _check_levels(num_anchors_per_level, objectness.shape[1])
    chosen, offset = [], 0
    for level_scores in objectness.split(counts, dim=1):
        chosen.append(level_scores.topk(min(k, level_scores.shape[1]), dim=1).indices + offset)
        offset += level_scores.shape[1]
    return torch.cat(chosen, dim=1)


def clip_and_filter(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: Sequence[int],
    min_size: float = 0.0,
    score_threshold: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip boxes to the image, then find those wide and tall enough and scoring high enough.

    boxes: ``[T, 4]`` decoded boxes; scores: ``[T]`` probabilities; image_size: ``(height, width)``.
    min_size: keep boxes at least this wide *and* tall after clipping (torchvision: ``1e-3``, which removes
        boxes lying entirely outside the image; matterport: 0, keeps everything).
    score_threshold: keep scores ``>= score_threshold`` (torchvision's RPN uses ``>=``; default 0 keeps all).
    Returns ``(clipped, keep)``: ``clipped`` ``[T, 4]`` all boxes clipped, ``keep`` int64 ``[M]`` increasing
    indices of the boxes that pass both filters.
    """
    check_boxes("boxes", boxes)
    check_tensor("scores", scores, ndim=1, kind="float", length=boxes.shape[0])
    clipped = clip_boxes(boxes, image_size)
    keep = remove_small_boxes(clipped, min_size)
    keep = keep[scores[keep] >= score_threshold]
    return clipped, keep


def nms_proposals(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    levels: torch.Tensor | None,
    nms_threshold: float,
    post_nms_top_n: int,
) -> torch.Tensor:
    """Non-maximum suppression, then keep the best ``post_nms_top_n``.

    boxes: ``[M, 4]``; scores: ``[M]``.
    levels: None suppresses across all boxes (matterport); int64 ``[M]`` pyramid levels suppresses only within
        each level (torchvision), so two overlapping boxes from different levels can both survive.
    nms_threshold: a box is removed if its IoU with a better-scoring kept box is ``> nms_threshold``.
    Returns int64 ``[P]`` indices into the ``M`` boxes, by decreasing score, ``P <= post_nms_top_n``.
    """
    keep = (
        nms(boxes, scores, nms_threshold)
        if levels is None
        else batched_nms(boxes, scores, levels, nms_threshold)
    )
    return keep[:post_nms_top_n]


def _top_candidates(  # fmt: skip
    objectness, deltas, anchors, image_sizes, num_anchors_per_level, pre_nms_top_n, post_nms_top_n,
    nms_threshold, min_size, per_level, weights, clamp,
):
    """Checks, then steps 1-2 for the whole batch. Returns ``(sizes, counts, nms_threshold, top [B, T],
    top_scores [B, T], top_boxes [B, T, 4], levels_of_anchor [A])``."""
    check_tensor("objectness", objectness, ndim=2, kind="float")
    check_tensor("deltas", deltas, ndim=3, last_dim=4, kind="float")
    check_boxes("anchors", anchors)
    num_images, num_anchors = objectness.shape
    if tuple(deltas.shape[:2]) != (num_images, num_anchors):
        raise ValueError(
            f"deltas must have shape [B, A, 4] = [{num_images}, {num_anchors}, 4] to match objectness, "
            f"got {tuple(deltas.shape)}"
        )
    if anchors.shape[0] != num_anchors:
        raise ValueError(f"anchors must have shape [A, 4] with A = {num_anchors}, got {tuple(anchors.shape)}")
    if isinstance(image_sizes, torch.Tensor) or len(image_sizes) != num_images:
        raise ValueError(
            f"image_sizes must be a list of {num_images} (height, width) pairs, got {image_sizes!r}"
        )
    sizes = [check_size(f"image_sizes[{i}]", s) for i, s in enumerate(image_sizes)]
    if per_level and num_anchors_per_level is None:
        raise ValueError("num_anchors_per_level is required when per_level=True, got None")
    counts = None if num_anchors_per_level is None else _check_levels(num_anchors_per_level, num_anchors)
    _check_count("pre_nms_top_n", pre_nms_top_n)
    _check_count("post_nms_top_n", post_nms_top_n)
    nms_threshold = _check_fraction("nms_threshold", nms_threshold)
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size!r}")
    objectness, deltas = objectness.detach(), deltas.detach()
    anchors = anchors.detach().to(deltas.dtype)
    device = objectness.device
    levels_of_anchor = anchor_levels(counts if counts is not None else [num_anchors], device=device)

    top = top_k_anchors(objectness, pre_nms_top_n, counts if per_level else None)  # [B, T]
    top_scores = torch.sigmoid(objectness.gather(1, top))  # [B, T]
    rows = torch.arange(num_images, device=device)[:, None]
    top_boxes = decode_deltas(deltas[rows, top], anchors[top], weights, clamp)  # [B, T, 4]
    return sizes, counts, nms_threshold, top, top_scores, top_boxes, levels_of_anchor


def propose(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    image_sizes: Sequence[Sequence[int]],
    num_anchors_per_level: Sequence[int] | None = None,
    pre_nms_top_n: int = 6000,
    post_nms_top_n: int = 2000,
    nms_threshold: float = 0.7,
    min_size: float = 0.0,
    per_level: bool = False,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    score_threshold: float = 0.0,
    clamp: float | None = DEFAULT_DELTA_CLAMP,
    return_pre_nms: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Proposals of each image of a batch: top-k anchors, decode, clip, filter, NMS, best ``post_nms_top_n``.

    objectness: ``[B, A]`` float objectness logits (a two-logit head: pass :func:`two_logit_objectness`).
    deltas: ``[B, A, 4]`` float RPN deltas ``(dx, dy, dw, dh)``.
    anchors: ``[A, 4]`` float anchor boxes, the same for every image of the (padded) batch.
    image_sizes: ``B`` pairs ``(height, width)``, each image's size before padding; its proposals are clipped
        to it.
    num_anchors_per_level: ``L`` counts summing to ``A``; required by ``per_level``, otherwise only used to
        report each proposal's level (without it every anchor is level 0).
    pre_nms_top_n: anchors kept before NMS: over all levels together, or in each level when ``per_level``.
    post_nms_top_n: proposals kept after NMS, per image (2000 for training, 1000 for inference).
    nms_threshold: IoU above which the lower-scoring of two proposals is suppressed.
    min_size, score_threshold: see :func:`clip_and_filter` (both filters keep everything at their default 0).
    per_level: False: matterport's joint top-k and NMS; True: torchvision's per-level top-k and per-level NMS.
    weights: delta weights ``(wx, wy, ww, wh)``: torchvision ``(1, 1, 1, 1)``; matterport ``(10, 10, 5, 5)``,
        i.e. ``1 / RPN_BBOX_STD_DEV``.
    clamp: passed to :func:`mrcnn_edu.boxes.decode_deltas` (torchvision's ``log(1000/16)``; None: matterport).
    return_pre_nms: also return the candidates that entered NMS, to show what NMS removed.

    Inputs are detached: the proposals never carry a gradient (see the module docstring).

    The whole batch goes through each step at once: one filter, one :func:`mrcnn_edu.nms.batched_nms` over
    all images (images, and with ``per_level`` levels, as its groups), one read of the per-image counts; so
    the number of host synchronisations does not grow with the batch. :func:`propose_loop` runs the steps
    image by image and gives identical results.

    Returns a list of ``B`` dicts, one per image:
        ``boxes``: ``[P, 4]`` proposals inside the image, by decreasing score, ``P <= post_nms_top_n``;
        ``scores``: ``[P]`` objectness probabilities (``sigmoid`` of the logits);
        ``anchor_index``: int64 ``[P]`` the anchor each proposal was decoded from (index into ``A``);
        ``levels``: int64 ``[P]`` its pyramid level;
        with ``return_pre_nms``, the ``M`` candidates that entered NMS (after top-k, clipping and filtering),
        in top-k order: ``pre_nms_boxes`` ``[M, 4]``, ``pre_nms_scores`` ``[M]``, ``pre_nms_levels`` int64
        ``[M]``, ``pre_nms_anchor_index`` int64 ``[M]``.
    """
    sizes, counts, nms_threshold, top, top_scores, top_boxes, levels_of_anchor = _top_candidates(
        objectness, deltas, anchors, image_sizes, num_anchors_per_level, pre_nms_top_n, post_nms_top_n,
        nms_threshold, min_size, per_level, weights, clamp,
    )  # fmt: skip
    num_images, t = top.shape
    device = top.device
    if num_images == 0:
        return []
    # clip_and_filter for every image at once: clip to each image's own (width, height), then filter.
    limits = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=top_boxes.dtype, device=device)
    clipped = torch.minimum(top_boxes.clamp(min=0), limits[:, None, :])  # = clip_boxes, image by image
    wide = (clipped[..., 2] - clipped[..., 0] >= min_size) & (clipped[..., 3] - clipped[..., 1] >= min_size)
    candidate = torch.nonzero((wide & (top_scores >= score_threshold)).flatten()).flatten()  # image-major
    image = torch.div(candidate, t, rounding_mode="floor")
    boxes = clipped.reshape(-1, 4).index_select(0, candidate)
    scores = top_scores.flatten().index_select(0, candidate)
    anchor_index = top.flatten().index_select(0, candidate)
    levels = levels_of_anchor.index_select(0, anchor_index)

    # NMS of all images at once, each image (and with per_level each of its levels) its own group.
    fields = {"boxes": boxes, "scores": scores, "anchor_index": anchor_index, "levels": levels}
    groups = image * len(counts) + levels if per_level else image
    return batched_nms_per_image(
        fields, groups, image, num_images, nms_threshold, post_nms_top_n, return_pre_nms
    )


def propose_loop(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    image_sizes: Sequence[Sequence[int]],
    num_anchors_per_level: Sequence[int] | None = None,
    pre_nms_top_n: int = 6000,
    post_nms_top_n: int = 2000,
    nms_threshold: float = 0.7,
    min_size: float = 0.0,
    per_level: bool = False,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    score_threshold: float = 0.0,
    clamp: float | None = DEFAULT_DELTA_CLAMP,
    return_pre_nms: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """:func:`propose` written image by image with the step functions above: the version to read.

    Same arguments and results as :func:`propose` (tested identical).
    """
    sizes, counts, nms_threshold, top, top_scores, top_boxes, levels_of_anchor = _top_candidates(
        objectness, deltas, anchors, image_sizes, num_anchors_per_level, pre_nms_top_n, post_nms_top_n,
        nms_threshold, min_size, per_level, weights, clamp,
    )  # fmt: skip
    results = []
    for i, size in enumerate(sizes):
        clipped, keep = clip_and_filter(top_boxes[i], top_scores[i], size, min_size, score_threshold)
        boxes, scores, anchor_index = clipped[keep], top_scores[i][keep], top[i][keep]
        levels = levels_of_anchor[anchor_index]
        kept = nms_proposals(boxes, scores, levels if per_level else None, nms_threshold, post_nms_top_n)
        result = {
            "boxes": boxes[kept],
            "scores": scores[kept],
            "anchor_index": anchor_index[kept],
            "levels": levels[kept],
        }
        if return_pre_nms:
            result.update(
                pre_nms_boxes=boxes,
                pre_nms_scores=scores,
                pre_nms_levels=levels,
                pre_nms_anchor_index=anchor_index,
            )
        results.append(result)
    return results
