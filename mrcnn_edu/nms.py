"""Non-maximum suppression (NMS): keep the best-scored box of each cluster of overlapping boxes.

A detector proposes many boxes around each object (thousands of RPN proposals, several class-specific
detections). NMS walks the boxes from the highest score down and keeps a box only if it does not overlap a
box already kept by more than ``iou_threshold``: the survivors are one box per object, best first. The RPN
runs it on its proposals (threshold 0.7) and the detection head once per class (threshold 0.3 in matterport,
0.5 in torchvision).

Shape glossary
    N: input boxes (proposals or detections of one image)
    K: kept boxes, ``K <= N``
    E: candidate pairs of boxes that the fast path examines

Semantics (the same in every function here, and the same as ``torchvision.ops.nms``):

- Boxes are sorted by score, best first, with a *stable* sort: equal scores keep their input order. A NaN
  score ranks last, as ``-inf`` (torch's sort would put it first, and a NaN would suppress a box of 0.9).
- A box is suppressed when its IoU (:func:`mrcnn_edu.boxes.box_iou`) with a higher-scored *kept* box is
  **strictly greater** than ``iou_threshold``; a suppressed box suppresses nothing.
- The result is the kept indices into the input, int64, in decreasing score order. Boxes of zero area
  overlap nothing, so they are never suppressed (and never suppress).

Matterport calls ``tf.image.non_max_suppression``, which suppresses at IoU ``>`` threshold as well but takes
``(y1, x1, y2, x2)`` boxes and a ``max_output_size``: its RPN keeps at most ``POST_NMS_ROIS_*`` boxes (padding
with zeros) and its detection layer ``DETECTION_MAX_INSTANCES``. Here NMS never truncates: slice the result
(``keep[:max_output]``) to cap it, as torchvision's detection code does. The ONNX operator
``NonMaxSuppression`` follows the same rule and is this module's test reference. TensorFlow and ONNX sort each
box's corners first (a box given as ``(x2, y2, x1, y1)`` is an ordinary box there); here, as in
:func:`mrcnn_edu.boxes.box_area`, ``x2 < x1`` is an empty box.

Two implementations, tested to return identical indices:

- :func:`nms_loop`, the one to read: take the best remaining box, drop everything that overlaps it, repeat.
  It costs one IoU row per kept box, about ``N * K`` IoUs.
- :func:`nms`, the one to run: on CUDA with working torchvision kernels it calls ``torchvision.ops.nms``;
  otherwise (any device) it avoids almost all of those IoUs. Two boxes can only have IoU ``> t`` if they
  overlap by more than a fraction ``t`` of the larger box's width *and* height, so a sort along one axis
  lists the few candidate pairs; their IoUs (the same float operations as ``box_iou``, so bit-identical
  values) give the "who suppresses whom" pairs, and one sweep in score order resolves them.

:func:`batched_nms` runs NMS independently within each group (class or FPN level), as
``torchvision.ops.batched_nms``, but exactly: boxes of different groups never interact, whatever their
coordinates (torchvision's offset trick assumes non-negative coordinates).
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import check_boxes, check_tensor
from ._tv import torchvision_ops
from .boxes import box_iou, matched_box_iou

__all__ = ["nms_steps", "nms_loop", "nms", "batched_nms"]


def _check_args(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold, idxs: torch.Tensor | None = None
) -> float:
    """Validate the NMS arguments (ValueError naming the bad one); return the threshold as a float."""
    check_boxes("boxes", boxes)
    n = boxes.shape[0]
    check_tensor("scores", scores, ndim=1, kind="float", length=n)
    if scores.device != boxes.device:
        raise ValueError(f"scores must be on the boxes' device {boxes.device}, got {scores.device}")
    if idxs is not None:
        check_tensor("idxs", idxs, ndim=1, kind="int", length=n)
        if idxs.device != boxes.device:
            raise ValueError(f"idxs must be on the boxes' device {boxes.device}, got {idxs.device}")
    if not isinstance(iou_threshold, numbers.Real) or isinstance(iou_threshold, bool):
        raise ValueError(f"iou_threshold must be a number, got {type(iou_threshold).__name__}")
    if math.isnan(iou_threshold):
        raise ValueError("iou_threshold must be a number, got nan")
    return float(iou_threshold)


def _nan_last(scores: torch.Tensor) -> torch.Tensor:
    """NaN scores as -inf, so that every sort ranks them last (no host sync: no check, a replacement)."""
    return torch.where(torch.isnan(scores), float("-inf"), scores)


def _empty(device: torch.device) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long, device=device)


def nms_steps(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float):
    """Greedy NMS one decision at a time: yields ``(kept, suppressed)`` for each kept box, best first.

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``; scores: ``[N]`` float, higher is better.
    iou_threshold: a box whose IoU with a kept, higher-scored box is ``> iou_threshold`` is dropped.
    Yields ``kept`` (an int index into ``boxes``) and ``suppressed`` (int64 ``[S]``: the indices that box
    removes, among those still in play), so a notebook can show every step of :func:`nms_loop`.
    """
    iou_threshold = _check_args(boxes, scores, iou_threshold)
    scores = _nan_last(scores)
    order = torch.sort(scores, descending=True, stable=True).indices  # candidates, best first
    while order.numel() > 0:
        best, rest = order[0], order[1:]  # the best remaining box always survives...
        iou = box_iou(boxes[best][None], boxes[rest])[0]  # [len(rest)]
        suppressed = iou > iou_threshold  # ...and removes every box it overlaps too much
        yield int(best), rest[suppressed]
        order = rest[~suppressed]


def nms_loop(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, one kept box at a time (:func:`nms_steps`): the readable reference for :func:`nms`.

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``.
    scores: ``[N]`` float, higher is better.
    iou_threshold: a box whose IoU with a kept, higher-scored box is ``> iou_threshold`` is dropped.
    Returns int64 ``[K]``: indices of the kept boxes into ``boxes``, in decreasing score order (equal scores
    in input order).
    """
    keep = [kept for kept, _ in nms_steps(boxes, scores, iou_threshold)]
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _prefilter_is_safe(boxes: torch.Tensor, iou_threshold: float) -> bool:
    """Whether the candidate filter of :func:`_nms_sparse` provably keeps every pair with IoU > threshold.

    Its slack covers float rounding only while the IoU arithmetic stays finite and away from the underflow
    range; outside that (inf/nan coordinates, boxes thinner than ~1e-10 px in float32, a negative or
    vanishing threshold) the caller takes the loop.
    """
    finfo = torch.finfo(boxes.dtype)
    smallest = finfo.tiny**0.25  # sizes, areas and IoUs above this stay far from subnormal numbers
    if iou_threshold < 0 or 0 < iou_threshold < smallest:
        return False
    sizes = boxes[:, 2:] - boxes[:, :2]
    return bool(torch.isfinite(boxes).all() and ((sizes <= 0) | (sizes >= smallest)).all())


def _sliding_windows(
    lo: torch.Tensor, reach: torch.Tensor, group: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort boxes by ``lo`` and count, for each, the later boxes whose ``lo`` is within its window.

    lo, reach: ``[M]`` start of each box along one axis and its window length. group: ``[M]`` int64 group
    ranks ``0..G-1`` or None; with groups, windows stay inside a group (boxes sort by group, then ``lo``).
    Returns ``perm`` (the sort order) and int64 ``counts`` ``[M]``: sorted box ``p`` pairs with sorted boxes
    ``p+1 .. p+counts[p]``.
    """
    if group is not None and lo.numel():
        # Lay the groups one after another along the axis, each past the previous one's reach. Only the
        # windows use these shifted starts (the padding below covers their float64 round-off, so a window
        # can grow by a hair but never shrink); the geometry tests use the boxes' own coordinates.
        lo, reach = lo.double(), reach.double()
        span = float(lo.max() - lo.min() + reach.max()) + 1.0
        lo = lo - lo.min() + group.double() * span
    sorted_lo, perm = torch.sort(lo, stable=True)
    reach = reach.index_select(0, perm)
    # Round-off in lo + reach must not shrink a window: pad it by a few ulps of the numbers involved.
    end = sorted_lo + reach + 4 * torch.finfo(lo.dtype).eps * (sorted_lo.abs() + reach.abs())
    stop = torch.searchsorted(sorted_lo, end, side="left")  # first position past each window
    first = torch.arange(1, lo.shape[0] + 1, device=lo.device)  # only later positions: each pair once
    return perm, (stop - first).clamp(min=0)


def _window_pairs(counts: torch.Tensor, chunk: int = 16384):
    """Yield the pairs ``(p, q)``, ``p < q <= p + counts[p]``, as int64 ``[E_i]`` tensors, about ``chunk``
    pairs at a time: the arrays stay in cache and each torch op stays single-threaded (the work per op is
    too small to share across threads, and on a busy CPU waiting for threads costs more than it saves)."""
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if counts.numel() else 0
    cuts = torch.searchsorted(
        ends, torch.arange(chunk, max(total, chunk), chunk, device=counts.device)
    ).tolist()
    for start, stop in zip([0, *cuts], [*cuts, counts.numel()], strict=True):
        if start == stop:
            continue
        run = counts[start:stop]
        run_start = torch.cumsum(run, 0) - run  # where each box's pairs begin in this chunk's flat list
        e = int(run_start[-1] + run[-1])
        # a: the box whose run holds flat index i (repeat_interleave, which threads badly on a busy CPU).
        local = torch.cumsum(torch.bincount(run_start, minlength=e + 1)[:e], 0) - 1
        a = local + start
        b = torch.arange(e, device=counts.device) - run_start.index_select(0, local) + a + 1
        yield a, b


def _select(mask: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    where = torch.nonzero(mask).flatten()
    return [t.index_select(0, where) for t in tensors]


def _nms_sparse(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """The fast path of :func:`nms` / :func:`batched_nms` (exact; see the module docstring).

    boxes ``[N, 4]``, scores ``[N]``, groups ``[N]`` int or None (one group). Returns int64 ``[K]``.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes.index_select(0, order)  # from here on a box is named by its rank: 0 is the best score
    # The filter works in float32 at least; its slack covers the rounding of the IoU in the input dtype.
    geo = ranked if ranked.dtype in (torch.float32, torch.float64) else ranked.float()
    # The filter uses a slightly lower threshold t, so that float rounding can never make it skip a pair
    # whose IoU (as box_iou rounds it) exceeds iou_threshold; the exact test comes after it.
    t = iou_threshold * (1 - max(1e-3, 64 * torch.finfo(boxes.dtype).eps))
    # A zero-area box has IoU 0 with everything: it can neither suppress nor be suppressed.
    sizes = geo[:, 2:] - geo[:, :2]
    ranks = torch.nonzero((sizes > 0).all(dim=1)).flatten()
    geo, sizes = geo.index_select(0, ranks), sizes.index_select(0, ranks)

    # IoU > t needs intersection > t * union >= t * (either area); the intersection is at most as tall as
    # either box, so the boxes overlap along x by more than t * max(w_a, w_b), and likewise along y.
    # Hence if x1_a <= x1_b then x1_b < x1_a + (1 - t) * w_a: a sliding window along x (or y, whichever
    # lists fewer pairs) finds every candidate pair, and two overlap tests discard most of them.
    g = None
    if groups is not None:
        g = torch.unique(groups.index_select(0, order).index_select(0, ranks), return_inverse=True)[1]
    windows = [_sliding_windows(geo[:, axis], (1 - t) * sizes[:, axis], g) for axis in (0, 1)]
    axis = 0 if windows[0][1].sum() <= windows[1][1].sum() else 1
    perm, counts = windows[axis]
    geo = geo.index_select(0, perm)  # rows in window order: box p pairs with p+1 .. p+counts[p]
    # Only the window axis is known to overlap enough: test the other axis first, it rejects more.
    lo_hi = [(geo[:, k].contiguous(), geo[:, k + 2].contiguous()) for k in (1 - axis, axis)]
    found = [torch.zeros(2, 0, dtype=torch.long, device=geo.device)]
    for a, b in _window_pairs(counts):
        for lo, hi in lo_hi:
            lo_a, lo_b, hi_a, hi_b = (v.index_select(0, p) for v in (lo, hi) for p in (a, b))
            overlap = torch.minimum(hi_a, hi_b) - torch.maximum(lo_a, lo_b)
            a, b = _select(overlap > t * torch.maximum(hi_a - lo_a, hi_b - lo_b), a, b)
        found.append(torch.stack((a, b)))
    a, b = torch.cat(found, dim=1)
    a, b = perm.index_select(0, a), perm.index_select(0, b)
    if g is not None:  # pairs that the windows' padding let across a group boundary
        a, b = _select(g.index_select(0, a) == g.index_select(0, b), a, b)
    a, b = ranks.index_select(0, a), ranks.index_select(0, b)
    iou = matched_box_iou(ranked.index_select(0, a), ranked.index_select(0, b))
    a, b = _select(iou > iou_threshold, a, b)
    winner, loser = torch.minimum(a, b), torch.maximum(a, b)

    # Resolve "winner suppresses loser" in score order: a winner only counts if nothing removed it first.
    by_winner = torch.argsort(winner, stable=True)
    removed = [False] * boxes.shape[0]
    for i, j in zip(winner[by_winner].tolist(), loser[by_winner].tolist(), strict=True):
        if not removed[i]:
            removed[j] = True
    kept_ranks = torch.tensor([i for i, r in enumerate(removed) if not r], device=boxes.device)
    return order.index_select(0, kept_ranks)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, fast and exact: the same indices as :func:`nms_loop` (same signature as torchvision's).

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``.
    scores: ``[N]`` float, higher is better.
    iou_threshold: a box whose IoU with a kept, higher-scored box is ``> iou_threshold`` is dropped.
    Returns int64 ``[K]``: indices of the kept boxes into ``boxes``, in decreasing score order (equal scores
    in input order), on the boxes' device.

    On CUDA, where torchvision's compiled kernels load, this is ``torchvision.ops.nms``: same rule, but its
    sort is not stable (equal scores may come out in another order) and boxes with ``x2 < x1`` get a
    negative area there.
    """
    iou_threshold = _check_args(boxes, scores, iou_threshold)
    scores = _nan_last(scores)
    if boxes.shape[0] == 0:
        return _empty(boxes.device)
    tv = torchvision_ops()
    if tv is not None and boxes.is_cuda and scores.dtype == boxes.dtype:
        return tv.nms(boxes, scores, iou_threshold)
    if not _prefilter_is_safe(boxes, iou_threshold):
        return nms_loop(boxes, scores, iou_threshold)
    return _nms_sparse(boxes, scores, iou_threshold)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each group of boxes sharing an ``idxs`` value, as ``torchvision.ops.batched_nms``.

    boxes: ``[N, 4]`` float; scores: ``[N]`` float.
    idxs: ``[N]`` integer group of each box (class id, or FPN level): boxes of different groups never
        suppress each other.
    iou_threshold: as in :func:`nms`.
    Returns int64 ``[K]``: the kept indices of all groups together, in decreasing score order (equal scores in
    input order); the same set as running :func:`nms` on each group.

    On CUDA, where torchvision's kernels load, the groups are moved apart along x (by more than the boxes'
    whole extent, so no box of one group can touch another's) and ``torchvision.ops.nms`` runs once; the
    shift can change IoUs in the last bit.
    """
    iou_threshold = _check_args(boxes, scores, iou_threshold, idxs)
    scores = _nan_last(scores)
    if boxes.shape[0] == 0:
        return _empty(boxes.device)
    tv = torchvision_ops()
    usable = tv is not None and boxes.is_cuda and scores.dtype == boxes.dtype and iou_threshold >= 0
    if usable and torch.isfinite(boxes).all():  # (a negative threshold suppresses across any gap)
        group = torch.unique(idxs, return_inverse=True)[1]  # 0..G-1, small enough to be exact as float
        low, high = boxes.min(), boxes.max()
        stride = 2 * (high - low) + 1  # a gap wider than any box, with room for round-off
        shifted = boxes - low
        shifted[:, 0::2] += (group.to(boxes.dtype) * stride)[:, None]
        return tv.nms(shifted, scores, iou_threshold)
    if not _prefilter_is_safe(boxes, iou_threshold):
        return _batched_nms_loop(boxes, scores, idxs, iou_threshold)
    return _nms_sparse(boxes, scores, iou_threshold, groups=idxs)


def _batched_nms_loop(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """:func:`nms_loop` on each group, merged in decreasing score order (equal scores in input order)."""
    keep = [
        members[nms_loop(boxes[members], scores[members], iou_threshold)]
        for members in (torch.nonzero(idxs == g).flatten() for g in torch.unique(idxs))
    ]
    keep = torch.sort(torch.cat(keep)).values  # input order, so the stable sort below breaks ties by it
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
