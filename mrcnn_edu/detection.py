"""Detection layer (inference only): turn the box head's class scores and per-class deltas into detections.

The box head looks at every proposal (ROI) and predicts ``K + 1`` class logits (column 0 is background) and,
for every class, deltas that refine the ROI into that class's box. This stage, which has no weights, decides
which (ROI, class) pairs become detections: it picks candidate classes, decodes their boxes, clips them to
the image, drops weak candidates, removes duplicates with NMS *within each class* (a person and the horse
it rides overlap a lot and must both survive), and keeps the best ``max_detections``. Training never runs it:
the box head is trained against targets built from the proposals, and the mask head in training looks at
the positive ROIs, not at detections.

Shape glossary
    R: ROIs (proposals) of one image
    K: object classes; the head predicts ``K + 1`` columns, column 0 background, labels are ``1..K``
    C: candidates: (ROI, class) pairs that pass the score threshold and the size filter, i.e. enter NMS
    N: detections returned, ``N <= max_detections``

Matterport (``refine_detections_graph``) versus torchvision (``RoIHeads.postprocess_detections``):

- candidates: matterport takes each ROI's single most likely class (argmax of the softmax, background
  included), so an ROI gives at most one detection; torchvision takes *every* foreground class of every ROI,
  so an ROI can give a "cat 0.6" and a "dog 0.3". ``candidates="argmax"`` or ``"all"``.
- deltas: both decode the chosen class's deltas with ``BBOX_STD_DEV = [0.1, 0.1, 0.2, 0.2]``, i.e. weights
  ``(10, 10, 5, 5)`` (torchvision also clamps ``dw, dh``; pass ``clamp=None`` for matterport), then clip to
  the image (matterport: to the window, the image without its padding).
- background: matterport drops ROIs whose argmax is background; torchvision never considers column 0.
- score threshold: matterport ``DETECTION_MIN_CONFIDENCE`` 0.7 (``>=``); torchvision ``box_score_thresh``
  0.05 (``>``; the two differ only for a score exactly at the threshold). Here ``score >= score_threshold``.
- small boxes: matterport keeps them; torchvision removes boxes under ``1e-2`` pixels (``min_size``).
- NMS per class: matterport ``DETECTION_NMS_THRESHOLD`` 0.3; torchvision ``box_nms_thresh`` 0.5.
- kept: ``DETECTION_MAX_INSTANCES`` / ``detections_per_img``, 100 in both, best overall. (Matterport first
  keeps 100 per class, then 100 overall; the per-class cut never removes one of the overall best 100, so
  the result is the same.)

Matterport: ``detect(...)`` with its defaults (and ``clamp=None``). torchvision: ``detect(...,
candidates="all", score_threshold=0.05, nms_threshold=0.5, min_size=1e-2)``.

Inputs are detached: detections are an end result and never carry a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_boxes, check_size, check_tensor
from .boxes import DEFAULT_DELTA_CLAMP, clip_boxes, decode_deltas, remove_small_boxes
from .nms import batched_nms, batched_nms_per_image

__all__ = ["select_candidates", "detect", "detect_batch"]

_CANDIDATES = ("argmax", "all")


def select_candidates(
    class_probs: torch.Tensor, candidates: str = "argmax", score_threshold: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (ROI, class) pairs that may become detections, before any box is decoded.

    class_probs: ``[R, K + 1]`` float class probabilities (softmax of the logits), column 0 background.
    candidates: ``"argmax"`` (matterport): each ROI's most likely class, dropped if it is background;
        ``"all"`` (torchvision): every foreground class of every ROI.
    score_threshold: keep pairs whose probability is ``>= score_threshold``.
    Returns ``(roi_index, labels, scores)``, each ``[C]``: int64 ROI indices, int64 labels in ``1..K``, and
    float probabilities; ordered by ROI, then by label.
    """
    check_tensor("class_probs", class_probs, ndim=2, kind="float")
    if candidates not in _CANDIDATES:
        raise ValueError(f"candidates must be one of {_CANDIDATES}, got {candidates!r}")
    if candidates == "argmax":
        scores, labels = class_probs.max(dim=1)  # ties: the lowest class index, as argmax
        roi_index = torch.nonzero((labels > 0) & (scores >= score_threshold)).flatten()
        return roi_index, labels[roi_index], scores[roi_index]
    roi_index, column = torch.nonzero(class_probs[:, 1:] >= score_threshold, as_tuple=True)
    labels = column + 1
    return roi_index, labels, class_probs[roi_index, labels]


def _check_threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _empty_detections(like: torch.Tensor) -> dict[str, torch.Tensor]:
    index = torch.zeros(0, dtype=torch.long, device=like.device)
    return {"boxes": like.new_zeros((0, 4)), "scores": like.new_zeros(0), "labels": index, "roi_index": index}


def _check_detect_args(
    class_logits, box_deltas, proposals, image_size, score_threshold, nms_threshold, max_detections,
    candidates, min_size,
) -> torch.Tensor:  # fmt: skip
    """Check :func:`detect`'s arguments (ValueError naming the bad one); return box_deltas ``[R, K+1, 4]``."""
    check_tensor("class_logits", class_logits, ndim=2, kind="float")
    check_tensor("box_deltas", box_deltas, ndim=(2, 3), kind="float")
    check_boxes("proposals", proposals)
    num_rois, num_columns = class_logits.shape
    if box_deltas.dim() == 2:
        if box_deltas.shape != (num_rois, num_columns * 4):
            raise ValueError(
                f"box_deltas must have shape [R, (K+1)*4] = [{num_rois}, {num_columns * 4}] to match "
                f"class_logits, got {tuple(box_deltas.shape)}"
            )
        box_deltas = box_deltas.reshape(num_rois, num_columns, 4)
    elif box_deltas.shape != (num_rois, num_columns, 4):
        raise ValueError(
            f"box_deltas must have shape [R, K+1, 4] = [{num_rois}, {num_columns}, 4] to match class_logits, "
            f"got {tuple(box_deltas.shape)}"
        )
    if proposals.shape[0] != num_rois:
        raise ValueError(
            f"proposals must have shape [R, 4] with R = {num_rois}, got {tuple(proposals.shape)}"
        )
    check_size("image_size", image_size)
    _check_threshold("score_threshold", score_threshold)
    _check_threshold("nms_threshold", nms_threshold)
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"max_detections must be an integer >= 1, got {max_detections!r}")
    if candidates not in _CANDIDATES:
        raise ValueError(f"candidates must be one of {_CANDIDATES}, got {candidates!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size!r}")

    return box_deltas


def detect(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: torch.Tensor,
    image_size: Sequence[int],
    score_threshold: float = 0.7,
    nms_threshold: float = 0.3,
    max_detections: int = 100,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    candidates: str = "argmax",
    min_size: float = 0.0,
    clamp: float | None = DEFAULT_DELTA_CLAMP,
    return_pre_nms: bool = False,
) -> dict[str, torch.Tensor]:
    """Detections of one image: candidates, decode, clip, filter, per-class NMS, best ``max_detections``.

    class_logits: ``[R, K + 1]`` float class logits of the box head, column 0 background.
    box_deltas: ``[R, K + 1, 4]`` or ``[R, (K + 1) * 4]`` float per-class deltas (the background column is
        predicted but never used).
    proposals: ``[R, 4]`` float ROIs the deltas refine, in image pixels.
    image_size: ``(height, width)`` of the image without padding; boxes are clipped to it.
    score_threshold: candidates need a class probability ``>= score_threshold`` (matterport 0.7,
        torchvision 0.05).
    nms_threshold: within one class, a detection whose IoU with a better one is ``> nms_threshold`` is removed
        (matterport 0.3, torchvision 0.5).
    max_detections: at most this many detections are returned (100 in both).
    weights: delta weights ``(wx, wy, ww, wh)``, ``1 / BBOX_STD_DEV`` = ``(10, 10, 5, 5)`` in both.
    candidates: ``"argmax"`` (matterport) or ``"all"`` (torchvision), see :func:`select_candidates`.
    min_size: drop boxes narrower or shorter than this after clipping (torchvision ``1e-2``; 0 keeps all).
    clamp: passed to :func:`mrcnn_edu.boxes.decode_deltas` (None: matterport, no clamp).
    return_pre_nms: also return the ``C`` candidates that entered NMS.

    Returns a dict, detections by decreasing score:
        ``boxes``: ``[N, 4]`` inside the image; ``scores``: ``[N]`` class probabilities;
        ``labels``: int64 ``[N]`` in ``1..K`` (never background); ``roi_index``: int64 ``[N]`` the proposal
        each detection was refined from (to look up its ROI features, e.g. for the mask head);
        with ``return_pre_nms``: ``pre_nms_boxes`` ``[C, 4]``, ``pre_nms_scores`` ``[C]``, ``pre_nms_labels``
        and ``pre_nms_roi_index`` int64 ``[C]``, ordered by ROI then label.
    """
    box_deltas = _check_detect_args(
        class_logits, box_deltas, proposals, image_size, score_threshold, nms_threshold, max_detections,
        candidates, min_size,
    )  # fmt: skip
    class_logits, box_deltas, proposals = class_logits.detach(), box_deltas.detach(), proposals.detach()
    probs = torch.softmax(class_logits, dim=1)
    roi_index, labels, scores = select_candidates(probs, candidates, score_threshold)
    # Only the chosen (ROI, class) deltas are decoded: thresholding first gives the same boxes, cheaper.
    boxes = decode_deltas(box_deltas[roi_index, labels], proposals[roi_index], weights, clamp)
    boxes = clip_boxes(boxes, image_size)
    big = remove_small_boxes(boxes, min_size)
    boxes, scores, labels, roi_index = boxes[big], scores[big], labels[big], roi_index[big]

    keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_detections]
    result = {
        "boxes": boxes[keep],
        "scores": scores[keep],
        "labels": labels[keep],
        "roi_index": roi_index[keep],
    }
    if return_pre_nms:
        result.update(
            pre_nms_boxes=boxes, pre_nms_scores=scores, pre_nms_labels=labels, pre_nms_roi_index=roi_index
        )
    return result


_READABLE = detect


def detect_batch(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: Sequence[torch.Tensor],
    image_sizes: Sequence[Sequence[int]],
    score_threshold: float = 0.7,
    nms_threshold: float = 0.3,
    max_detections: int = 100,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    candidates: str = "argmax",
    min_size: float = 0.0,
    clamp: float | None = DEFAULT_DELTA_CLAMP,
    return_pre_nms: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """:func:`detect` for each image of a batch whose ROIs are concatenated (as the box head sees them).

    class_logits: ``[sum R_i, K + 1]``; box_deltas: ``[sum R_i, K + 1, 4]`` or ``[sum R_i, (K + 1) * 4]``;
    rows are image 0's ROIs, then image 1's, ...
    proposals: list of ``B`` tensors ``[R_i, 4]``; image_sizes: ``B`` pairs ``(height, width)``.
    The other arguments as :func:`detect`.
    Returns a list of ``B`` dicts, identical to :func:`detect` of each image; ``roi_index`` counts within
    each image's own proposals.

    The whole batch goes through each step at once (one :func:`mrcnn_edu.nms.batched_nms` whose groups are
    (image, class) pairs, one read of the per-image counts), so the host synchronisations do not grow with
    the batch or with the number of classes.
    """
    if isinstance(proposals, torch.Tensor) or isinstance(image_sizes, torch.Tensor):
        raise ValueError("proposals and image_sizes must be lists (one entry per image), got a tensor")
    if len(proposals) != len(image_sizes):
        raise ValueError(
            f"image_sizes must have one entry per image ({len(proposals)} proposal tensors), "
            f"got {len(image_sizes)}"
        )
    for i, p in enumerate(proposals):
        check_boxes(f"proposals[{i}]", p)
    check_tensor("class_logits", class_logits, ndim=2, kind="float")
    check_tensor("box_deltas", box_deltas, ndim=(2, 3), kind="float")
    counts = [p.shape[0] for p in proposals]
    for name, t in (("class_logits", class_logits), ("box_deltas", box_deltas)):
        if t.shape[0] != sum(counts):
            raise ValueError(f"{name} must have one row per proposal ({sum(counts)}), got {tuple(t.shape)}")
    num_images = len(proposals)
    if num_images == 0:
        return []
    if detect is not _READABLE:  # an exercise swapped a student's detect in (mrcnn_edu.exercises): per image
        options = dict(
            score_threshold=score_threshold, nms_threshold=nms_threshold, max_detections=max_detections,
            weights=weights, candidates=candidates, min_size=min_size, clamp=clamp,
            return_pre_nms=return_pre_nms,
        )  # fmt: skip
        return [
            detect(logits, deltas, rois, size, **options)
            for logits, deltas, rois, size in zip(
                class_logits.split(counts), box_deltas.split(counts), proposals, image_sizes, strict=True
            )
        ]
    rois = torch.cat(proposals)
    box_deltas = _check_detect_args(
        class_logits, box_deltas, rois, image_sizes[0], score_threshold, nms_threshold, max_detections,
        candidates, min_size,
    )  # fmt: skip
    sizes = [check_size(f"image_sizes[{i}]", s) for i, s in enumerate(image_sizes)]

    class_logits, box_deltas, rois = class_logits.detach(), box_deltas.detach(), rois.detach()
    device = rois.device
    count = torch.tensor(counts, device=device)
    image_of_roi = torch.arange(num_images, device=device).repeat_interleave(count, output_size=len(rois))
    roi_start = torch.cumsum(count, 0) - count
    probs = torch.softmax(class_logits, dim=1)
    roi_index, labels, scores = select_candidates(probs, candidates, score_threshold)
    boxes = decode_deltas(box_deltas[roi_index, labels], rois[roi_index], weights, clamp)
    image = image_of_roi[roi_index]
    # clip_boxes and remove_small_boxes with each candidate's own image size, all at once.
    limits = torch.tensor([[w, h, w, h] for h, w in sizes], dtype=boxes.dtype, device=device)
    boxes = torch.minimum(boxes.clamp(min=0), limits[image])
    big = torch.nonzero(
        (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
    ).flatten()
    boxes, scores, labels, roi_index, image = (t[big] for t in (boxes, scores, labels, roi_index, image))
    roi_index = roi_index - roi_start[image]

    # One NMS for every (image, class) group.
    fields = {"boxes": boxes, "scores": scores, "labels": labels, "roi_index": roi_index}
    groups = image * class_logits.shape[1] + labels
    return batched_nms_per_image(
        fields, groups, image, num_images, nms_threshold, max_detections, return_pre_nms
    )

