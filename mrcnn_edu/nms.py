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
- IoUs are computed in float32 or wider whatever the boxes' dtype (float16 areas overflow at 65504), so
  float16 / bfloat16 boxes keep exactly the boxes that the same values in float32 keep.
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

import contextlib
import math
import numbers

import torch

from ._checks import check_boxes, check_tensor
from ._tv import torchvision_ops
from .boxes import box_dtype, box_iou, matched_box_iou

__all__ = ["nms_steps", "nms_loop", "nms", "batched_nms", "batched_nms_per_image"]


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


@contextlib.contextmanager
def _one_thread(device: torch.device):
    """Run the CPU path on the calling thread only. Its ops are small (thousands of elements), so
    torch's thread pool gains nothing, and on a busy CPU every parallel region waits for a descheduled
    worker: ``benchmarks/ops.py --only nms --threads 2`` measured 2-4x the one-thread time (and the
    readable loop 10x) while other processes ran. ``torch.set_num_threads`` only changes the calling
    thread's OpenMP setting; it is restored afterwards."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _widen(boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes and scores in float32 at least: IoUs of half-precision boxes overflow (see ``mrcnn_edu.boxes``).
    Widening keeps the scores' order and ties, so the kept set is the one float32 gives."""
    return boxes.to(box_dtype(boxes.dtype)), scores.to(box_dtype(scores.dtype))


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
        span = lo.max() - lo.min() + reach.max() + 1.0  # a 0-d tensor: no need to read it on the host
        lo = lo - lo.min() + group.double() * span
    sorted_lo, perm = torch.sort(lo, stable=True)
    reach = reach.index_select(0, perm)
    # Round-off in lo + reach must not shrink a window: pad it by a few ulps of the numbers involved.
    end = sorted_lo + reach + 4 * torch.finfo(lo.dtype).eps * (sorted_lo.abs() + reach.abs())
    stop = torch.searchsorted(sorted_lo, end, side="left")  # first position past each window
    first = torch.arange(1, lo.shape[0] + 1, device=lo.device)  # only later positions: each pair once
    return perm, (stop - first).clamp(min=0)


def _window_pairs(counts: torch.Tensor, test, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs ``(p, q)``, ``p < q <= p + counts[p]``, for which ``test(p, q)`` holds: int64 ``[E]`` each.

    ``test`` takes two int64 ``[E_i]`` tensors of positions and returns a bool ``[E_i]``. It sees about
    ``chunk`` pairs at a time: the arrays stay in cache and each torch op stays single-threaded (the work
    per op is too small to share across threads, and on a busy CPU waiting for threads costs more than it
    saves). Only the chunks' bool results are kept; one ``nonzero`` at the end lists the pairs that pass,
    so the number of host synchronisations does not grow with the number of pairs.
    """
    ends = torch.cumsum(counts, 0)
    starts = ends - counts  # where each box's pairs begin in the flat list of all pairs
    total = int(ends[-1]) if counts.numel() else 0
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=counts.device)
        return empty, empty
    # Chunk boundaries (whole boxes) and each chunk's pair count, read in one go.
    cuts = torch.searchsorted(ends, torch.arange(chunk, max(total, chunk), chunk, device=counts.device))
    bounds = torch.cat((cuts.new_zeros(1), cuts, cuts.new_full((1,), counts.numel()))).unique_consecutive()
    sizes = ends.index_select(0, bounds[1:] - 1) - starts.index_select(0, bounds[:-1])
    bounds, sizes = bounds.tolist(), sizes.tolist()
    passed = []
    for start, stop, e in zip(bounds[:-1], bounds[1:], sizes, strict=True):
        run_start = starts[start:stop] - starts[start]
        # a: the box whose run holds flat index i (repeat_interleave, which threads badly on a busy CPU).
        local = torch.cumsum(torch.bincount(run_start, minlength=e + 1)[:e], 0) - 1
        a = local + start
        b = torch.arange(e, device=counts.device) - run_start.index_select(0, local) + a + 1
        passed.append(test(a, b))
    flat = torch.nonzero(torch.cat(passed)).flatten()
    a = torch.searchsorted(ends, flat, right=True)
    return a, flat - starts.index_select(0, a) + a + 1


def _select(mask: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    where = torch.nonzero(mask).flatten()
    return [t.index_select(0, where) for t in tensors]


def _nms_sparse(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """The fast path of :func:`nms` / :func:`batched_nms` (exact; see the module docstring).

    boxes ``[N, 4]`` (float32 or float64), scores ``[N]``, groups ``[N]`` int or None (one group).
    Returns int64 ``[K]``.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes.index_select(0, order)  # from here on a box is named by its rank: 0 is the best score
    # The filter uses a slightly lower threshold t, so that float rounding can never make it skip a pair
    # whose IoU (as box_iou rounds it) exceeds iou_threshold; the exact test comes after it.
    t = iou_threshold * (1 - max(1e-3, 64 * torch.finfo(boxes.dtype).eps))
    # A zero-area box has IoU 0 with everything: it can neither suppress nor be suppressed.
    sizes = ranked[:, 2:] - ranked[:, :2]
    ranks = torch.nonzero((sizes > 0).all(dim=1)).flatten()
    geo, sizes = ranked.index_select(0, ranks), sizes.index_select(0, ranks)

    # IoU > t needs intersection > t * union >= t * (either area); the intersection is at most as tall as
    # either box, so the boxes overlap along x by more than t * max(w_a, w_b), and likewise along y.
    # Hence if x1_a <= x1_b then x1_b < x1_a + (1 - t) * w_a: a sliding window along x (or y, whichever
    # lists fewer pairs) finds every candidate pair, and an overlap test along the other axis discards most.
    g = None
    if groups is not None:
        g = torch.unique(groups.index_select(0, order).index_select(0, ranks), return_inverse=True)[1]
    windows = [_sliding_windows(geo[:, axis], (1 - t) * sizes[:, axis], g) for axis in (0, 1)]
    axis = 0 if windows[0][1].sum() <= windows[1][1].sum() else 1
    perm, counts = windows[axis]
    geo = geo.index_select(0, perm)  # rows in window order: box p pairs with p+1 .. p+counts[p]
    # The window makes the pairs overlap enough along its axis (nearly: the exact IoU test comes later);
    # testing the other axis rejects most of them, and the survivors are few enough for the IoU test.
    lo, hi = geo[:, 1 - axis].contiguous(), geo[:, 3 - axis].contiguous()

    def overlap_enough(a, b):
        lo_a, lo_b, hi_a, hi_b = (v.index_select(0, p) for v in (lo, hi) for p in (a, b))
        overlap = torch.minimum(hi_a, hi_b) - torch.maximum(lo_a, lo_b)
        return overlap > t * torch.maximum(hi_a - lo_a, hi_b - lo_b)

    a, b = _window_pairs(counts, overlap_enough)
    a, b = perm.index_select(0, a), perm.index_select(0, b)
    same_group = None if g is None else g.index_select(0, a) == g.index_select(0, b)
    a, b = ranks.index_select(0, a), ranks.index_select(0, b)
    suppress = matched_box_iou(ranked.index_select(0, a), ranked.index_select(0, b)) > iou_threshold
    if same_group is not None:  # pairs that the windows' padding let across a group boundary
        suppress &= same_group
    a, b = _select(suppress, a, b)
    winner, loser = torch.minimum(a, b), torch.maximum(a, b)

    # Resolve "winner suppresses loser" in score order: a winner only counts if nothing removed it first.
    by_winner = torch.argsort(winner, stable=True)
    removed = [False] * boxes.shape[0]
    pairs = torch.stack((winner[by_winner], loser[by_winner])).tolist()
    for i, j in zip(*pairs, strict=True):
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
    boxes, scores = _widen(boxes, scores)
    tv = torchvision_ops()
    if tv is not None and boxes.is_cuda and scores.dtype == boxes.dtype:
        return tv.nms(boxes, scores, iou_threshold)
    with _one_thread(boxes.device):
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
    boxes, scores = _widen(boxes, scores)
    tv = torchvision_ops()
    usable = tv is not None and boxes.is_cuda and scores.dtype == boxes.dtype and iou_threshold >= 0
    if usable and torch.isfinite(boxes).all():  # (a negative threshold suppresses across any gap)
        group = torch.unique(idxs, return_inverse=True)[1]  # 0..G-1, small enough to be exact as float
        low, high = boxes.min(), boxes.max()
        stride = 2 * (high - low) + 1  # a gap wider than any box, with room for round-off
        shifted = boxes - low
        shifted[:, 0::2] += (group.to(boxes.dtype) * stride)[:, None]
        return tv.nms(shifted, scores, iou_threshold)
    with _one_thread(boxes.device):
        if not _prefilter_is_safe(boxes, iou_threshold):
            return _batched_nms_loop(boxes, scores, idxs, iou_threshold)
        return _nms_sparse(boxes, scores, iou_threshold, groups=idxs)


def _torchvision_runs(boxes: torch.Tensor) -> bool:
    """Whether :func:`batched_nms` hands ``boxes`` to torchvision's kernel (CUDA, where it loads)."""
    return boxes.is_cuda and torchvision_ops() is not None


def _batched_nms_of_each_image(boxes, scores, groups, image, num_images: int, iou_threshold: float):
    """:func:`batched_nms` of a batch's candidates (grouped by image), by decreasing score within each image.

    Where torchvision's kernel runs it, each image gets its own call: that kernel's work grows with the
    square of the boxes of one call, and the 80 000 proposals of a batch of 8 images (2000 per level) took
    120 ms of a 220 ms training step on an H200 (``benchmarks/gpu_check.py --only profile``). Elsewhere the
    whole batch goes at once (the CPU path tests only nearby pairs).
    """
    if num_images == 1 or not _torchvision_runs(boxes):
        return batched_nms(boxes, scores, groups, iou_threshold)
    kept, start = [], 0
    for n in torch.bincount(image, minlength=num_images).tolist():
        part = slice(start, start + n)
        kept.append(batched_nms(boxes[part], scores[part], groups[part], iou_threshold) + start)
        start += n
    return torch.cat(kept)


def batched_nms_per_image(
    fields: dict[str, torch.Tensor],
    groups: torch.Tensor,
    image: torch.Tensor,
    num_images: int,
    iou_threshold: float,
    max_per_image: int,
    return_pre_nms: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """:func:`batched_nms` over the candidates of a whole batch, then each image's best ``max_per_image``.

    fields: ``[C, ...]`` tensors of the candidates of all images, grouped by image in image order, among
        them ``"boxes"`` ``[C, 4]`` and ``"scores"`` ``[C]``.
    groups: int64 ``[C]`` NMS groups, never shared by two images (e.g. ``image * G + class``).
    image: int64 ``[C]`` image of each candidate, ``0 .. num_images - 1``.
    Returns ``num_images`` dicts holding every field of the image's kept candidates, by decreasing score
    (equal scores in input order): what :func:`batched_nms` on that image's candidates alone, cut to
    ``max_per_image``, keeps. With ``return_pre_nms`` each also holds ``"pre_nms_<field>"``: all the image's
    candidates, in input order. The per-image counts are read to the host once, whatever the batch size.
    """
    boxes, scores = fields["boxes"], fields["scores"]
    kept = _batched_nms_of_each_image(boxes, scores, groups, image, num_images, iou_threshold)
    # kept is by decreasing score within each image: a stable sort by image keeps that order.
    kept = kept.index_select(0, torch.sort(image.index_select(0, kept), stable=True).indices)
    num_kept, num_candidates = torch.stack(
        [torch.bincount(i, minlength=num_images) for i in (image.index_select(0, kept), image)]
    ).tolist()
    starts = [sum(num_kept[:i]) for i in range(num_images)]
    take = [min(n, max_per_image) for n in num_kept]
    chosen = torch.cat([kept[s : s + n] for s, n in zip(starts, take, strict=True)])
    results: list[dict[str, torch.Tensor]] = [{} for _ in range(num_images)]
    for key, values in fields.items():
        for result, part in zip(results, values.index_select(0, chosen).split(take), strict=True):
            result[key] = part
    if return_pre_nms:
        for key, values in fields.items():
            for result, part in zip(results, values.split(num_candidates), strict=True):
                result["pre_nms_" + key] = part
    return results


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
