"""Tests for mrcnn_edu.nms: the fast path against the readable loop, both against onnxruntime's compiled
NonMaxSuppression (and torchvision where its ops load), plus the defining properties of greedy NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu import nms as nms_module
from mrcnn_edu import references
from mrcnn_edu._tv import torchvision_ops
from mrcnn_edu.boxes import box_iou, matched_box_iou
from mrcnn_edu.nms import batched_nms, nms, nms_loop, nms_steps
from mrcnn_edu.references import onnx_nms

THRESHOLDS = (0.3, 0.5, 0.7)


def random_boxes(
    gen: torch.Generator, n: int, *, clusters: int = 0, size: float = 100.0, dtype=torch.float32
):
    """``n`` boxes in a 400 x 600 image; with ``clusters`` > 0 they jitter around that many objects, so
    that many pairs overlap near the usual thresholds."""
    if clusters:
        centres = torch.rand(clusters, 2, generator=gen) * torch.tensor([600.0, 400.0])
        sizes = 20 + torch.rand(clusters, 2, generator=gen) * size
        pick = torch.randint(0, clusters, (n,), generator=gen)
        wh = sizes[pick] * (0.7 + 0.6 * torch.rand(n, 2, generator=gen))
        centre = centres[pick] + (torch.rand(n, 2, generator=gen) - 0.5) * 0.4 * wh
    else:
        wh = 5 + torch.rand(n, 2, generator=gen) * size
        centre = torch.rand(n, 2, generator=gen) * torch.tensor([600.0, 400.0])
    return torch.cat((centre - wh / 2, centre + wh / 2), dim=1).to(dtype)


requires_onnxruntime = pytest.mark.skipif(
    not references.available(),
    reason="onnx / onnxruntime (the compiled NonMaxSuppression reference, in the test extra) do not import",
)


# --- nms == nms_loop -----------------------------------------------------------------------------------


def make_case(seed: int):
    """A random NMS input mixing the awkward parts: ties, duplicates, zero-area boxes, clusters."""
    gen = torch.Generator().manual_seed(seed)
    n = [0, 1, 2, 3, 7, 30, 120, 300][seed % 8]
    boxes = random_boxes(gen, n, clusters=int(torch.randint(0, 6, (1,), generator=gen)))
    scores = torch.rand(n, generator=gen)
    if n and seed % 3 == 0:
        scores = (scores * 4).round() / 4  # many exactly tied scores
    if n > 3 and seed % 4 == 1:
        dup = torch.randint(0, n, (n // 3,), generator=gen)
        boxes[: n // 3] = boxes[dup]  # exact duplicates (IoU 1)
    if n > 3 and seed % 5 == 2:
        flat = torch.randint(0, n, (n // 4,), generator=gen)
        boxes[flat, 2] = boxes[flat, 0]  # zero width
        boxes[flat[:2], 3] = boxes[flat[:2], 1] - 3  # inverted: y2 < y1
    return boxes, scores


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_fast_nms_equals_loop_on_random_cases(threshold):
    for seed in range(24):
        boxes, scores = make_case(seed)
        # The cases must reach the fast path, not its fallback to the loop.
        assert nms_module._prefilter_is_safe(boxes, threshold)
        fast, loop = nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold)
        assert fast.dtype == loop.dtype == torch.int64
        assert torch.equal(fast, loop), f"seed {seed}"


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.9, 1.0, 2.0])
def test_fast_nms_equals_loop_at_extreme_thresholds(threshold):
    gen = torch.Generator().manual_seed(7)
    boxes = random_boxes(gen, 150, clusters=8)
    scores = torch.rand(150, generator=gen)
    assert torch.equal(nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_fast_nms_equals_loop_in_other_dtypes(dtype):
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, 120, clusters=5, dtype=dtype)
    scores = torch.rand(120, generator=gen, dtype=torch.float64).to(dtype)
    for threshold in THRESHOLDS:
        assert torch.equal(nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_the_float32_set(dtype):
    # Boxes of 100-400 px in an 800 x 1333 image: float16 areas overflow 65504 (IoU inf / inf = NaN, which
    # suppresses nothing). IoUs are computed in float32, so the kept set is the one float32 gives on the
    # same values, in every implementation.
    gen = torch.Generator().manual_seed(5)
    boxes = (random_boxes(gen, 300, clusters=12, size=300.0) * 2).to(dtype)
    scores = torch.rand(300, generator=gen).to(dtype)
    levels = torch.randint(0, 3, (300,), generator=gen)
    wide_boxes, wide_scores = boxes.float(), scores.float()
    assert (box_iou(wide_boxes, wide_boxes) > 0.7).sum() > 300  # many pairs to suppress
    for threshold in (0.5, 0.7):
        want = nms_loop(wide_boxes, wide_scores, threshold)
        assert len(want) < 200
        assert torch.equal(nms(boxes, scores, threshold), want)
        assert torch.equal(nms_loop(boxes, scores, threshold), want)
        assert torch.equal(nms(boxes, scores.float(), threshold), want)
        grouped = batched_nms(wide_boxes, wide_scores, levels, threshold)
        assert torch.equal(batched_nms(boxes, scores, levels, threshold), grouped)


def test_fast_nms_equals_loop_with_small_pair_chunks(monkeypatch):
    # The candidate pairs are tested a chunk at a time; cut them into many tiny chunks.
    window_pairs = nms_module._window_pairs
    monkeypatch.setattr(nms_module, "_window_pairs", lambda counts, test: window_pairs(counts, test, chunk=7))
    gen = torch.Generator().manual_seed(9)
    boxes = random_boxes(gen, 400, clusters=10)
    scores = torch.rand(400, generator=gen)
    groups = torch.randint(0, 4, (400,), generator=gen)
    for threshold in THRESHOLDS:
        assert torch.equal(nms(boxes, scores, threshold), nms_loop(boxes, scores, threshold))
        want = nms_module._batched_nms_loop(boxes, scores, groups, threshold)
        assert torch.equal(batched_nms(boxes, scores, groups, threshold), want)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("spread_axis", [0, 1])
def test_fast_nms_exact_for_pairs_at_the_threshold(threshold, spread_axis):
    # The fast path skips pairs by bounds that are tight for a box nested against one side of another box:
    # B = A cut by d on one side has IoU = 1 - d / size(A). Put such pairs right at the threshold (within
    # 1e-5 relative, and at the exact float boundary), each far from the others, in a wide or a tall layout.
    gen = torch.Generator().manual_seed(11)
    boxes, offsets = [], (-1e-3, -1e-5, -1e-7, 0.0, 1e-7, 1e-5, 1e-3)
    for k in range(4 * len(offsets) * 3):
        side, offset = k % 4, offsets[(k // 4) % len(offsets)]
        size = 20 + 80 * float(torch.rand(1, generator=gen))
        a = torch.tensor([0.0, 0.0, size, size])
        a[[spread_axis, spread_axis + 2]] += 300.0 * k  # far apart along one axis
        cut = (1 - threshold) * (1 + offset) * size
        b = a.clone()
        b[side] += cut if side < 2 else -cut
        boxes += [a, b]
    boxes = torch.stack(boxes)
    scores = torch.rand(boxes.shape[0], generator=gen)
    keep = nms(boxes, scores, threshold)
    assert torch.equal(keep, nms_loop(boxes, scores, threshold))
    pair_iou = matched_box_iou(boxes[0::2], boxes[1::2])
    assert (pair_iou > threshold).any() and (pair_iou <= threshold).any()  # both sides are exercised
    assert keep.numel() == boxes.shape[0] - int((pair_iou > threshold).sum())


def test_pairwise_iou_is_bit_identical_to_box_iou():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        a = random_boxes(gen, 200, clusters=3, dtype=dtype)
        b = random_boxes(gen, 200, clusters=3, dtype=dtype)
        b[::7, 2] = b[::7, 0]  # zero area
        b[::11] = a[::11]  # identical pairs
        expected = box_iou(a, b).diagonal()
        assert torch.equal(matched_box_iou(a, b), expected)
        assert torch.equal(matched_box_iou(b, a), expected)


@requires_onnxruntime
def test_benchmark_like_case_matches_loop_and_onnxruntime():
    # RPN-like proposals: many boxes of very different sizes over a whole image.
    gen = torch.Generator().manual_seed(1)
    n = 800
    centre = torch.rand(n, 2, generator=gen) * torch.tensor([1333.0, 800.0])
    size = torch.exp(torch.empty(n).uniform_(np.log(16), np.log(512), generator=gen))
    ratio = torch.sqrt(torch.empty(n).uniform_(0.5, 2.0, generator=gen))
    wh = torch.stack((size * ratio, size / ratio), dim=1)
    boxes = torch.cat((centre - wh / 2, centre + wh / 2), dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 1333)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 800)
    scores = torch.rand(n, generator=gen)
    keep = nms(boxes, scores, 0.7)
    assert torch.equal(keep, nms_loop(boxes, scores, 0.7))
    assert torch.equal(keep, onnx_nms(boxes, scores, 0.7))


# --- hand-computed cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nms, nms_loop])
def test_hand_computed_case(fn):
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A
            [1.0, 0.0, 11.0, 10.0],  # B: IoU(A, B) = 90 / 110 = 0.818
            [20.0, 20.0, 30.0, 30.0],  # C: far away
            [0.0, 0.0, 10.0, 5.0],  # D: IoU(A, D) = 0.5, IoU(B, D) = 45 / 105 = 0.43
        ]
    )
    scores = torch.tensor([0.9, 0.95, 0.1, 0.5])
    # B first; B removes A (0.818 > 0.7); D survives (0.43); C survives.
    assert fn(boxes, scores, 0.7).tolist() == [1, 3, 2]
    # At 0.4 B removes D too (0.43 > 0.4).
    assert fn(boxes, scores, 0.4).tolist() == [1, 2]
    # IoU exactly at the threshold is kept (strictly greater suppresses): A vs D at 0.5, B absent.
    assert fn(boxes[[0, 3]], scores[[0, 3]], 0.5).tolist() == [0, 1]
    assert fn(boxes[[0, 3]], scores[[0, 3]], 0.49).tolist() == [0]


@pytest.mark.parametrize("fn", [nms, nms_loop])
def test_ties_keep_input_order_and_suppressed_boxes_do_not_suppress(fn):
    # Chain A-B-C: A removes B; C overlaps B but not A, so C survives (B was already gone).
    boxes = torch.tensor([[0.0, 0, 10, 10], [3.0, 0, 13, 10], [6.0, 0, 16, 10]])
    assert fn(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]
    # Equal scores: the earlier box wins, so identical boxes keep the first of them.
    same = torch.tensor([[0.0, 0, 10, 10]] * 3 + [[50.0, 50, 60, 60]])
    assert fn(same, torch.tensor([0.5, 0.5, 0.5, 0.5]), 0.5).tolist() == [0, 3]


def test_zero_area_boxes_are_never_suppressed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 5, 9], [5.0, 5, 5, 9], [2.0, 2, 8, 2]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.0).tolist() == [0, 1, 2, 3]
    assert nms(boxes[1:], torch.tensor([0.1, 0.3, 0.2]), 0.5).tolist() == [1, 2, 0]  # nothing to compare


def test_threshold_extremes():
    gen = torch.Generator().manual_seed(5)
    boxes = random_boxes(gen, 40, clusters=3)
    scores = torch.rand(40, generator=gen)
    best = int(scores.argmax())
    # A negative threshold suppresses every box after the best (IoU >= 0 > threshold).
    assert nms(boxes, scores, -0.1).tolist() == [best]
    # No IoU exceeds 1: everything is kept, by decreasing score.
    assert torch.equal(nms(boxes, scores, 1.0), torch.sort(scores, descending=True, stable=True).indices)


def test_non_finite_boxes_take_the_loop():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, float("inf"), 10], [1.0, 0, 11, 10]])
    scores = torch.tensor([0.5, 0.9, 0.4])
    assert not nms_module._prefilter_is_safe(boxes, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), nms_loop(boxes, scores, 0.5))


# --- independent compiled references ------------------------------------------------------------------


@requires_onnxruntime
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_matches_onnxruntime(threshold):
    for seed in range(12):
        gen = torch.Generator().manual_seed(100 + seed)
        n = [0, 1, 5, 40, 200, 400][seed % 6]
        boxes = random_boxes(gen, n, clusters=seed % 4 * 3)
        scores = torch.randperm(n, generator=gen).float() / max(n, 1)  # distinct scores: no tie rules
        expected = onnx_nms(boxes, scores, threshold)
        assert torch.equal(nms(boxes, scores, threshold), expected), f"seed {seed}"
        if n <= 200:
            assert torch.equal(nms_loop(boxes, scores, threshold), expected), f"seed {seed}"


@pytest.mark.skipif(torchvision_ops() is None, reason="torchvision's compiled ops do not load here")
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_matches_torchvision(threshold):
    ops = torchvision_ops()
    for seed in range(10):
        gen = torch.Generator().manual_seed(200 + seed)
        boxes = random_boxes(gen, 300, clusters=seed % 5 * 2)
        scores = torch.randperm(300, generator=gen).float()
        idxs = torch.randint(0, 4, (300,), generator=gen)
        assert torch.equal(nms(boxes, scores, threshold), ops.nms(boxes, scores, threshold))
        assert torch.equal(
            batched_nms(boxes, scores, idxs, threshold), ops.batched_nms(boxes, scores, idxs, threshold)
        )


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def nms_inputs(draw):
    n = draw(st.integers(0, 30))
    coord = st.integers(0, 60).map(float)
    corners = draw(st.lists(st.tuples(coord, coord, coord, coord), min_size=n, max_size=n))
    boxes = torch.tensor(
        [[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in corners], dtype=torch.float32
    ).reshape(n, 4)
    scores = torch.tensor(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=torch.float32)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7]))
    return boxes, scores, threshold


@settings(max_examples=60, deadline=None)
@given(nms_inputs())
def test_greedy_nms_properties(case):
    boxes, scores, threshold = case
    keep = nms(boxes, scores, threshold)
    assert torch.equal(keep, nms_loop(boxes, scores, threshold))
    n = boxes.shape[0]
    assert len(set(keep.tolist())) == keep.numel()
    # Sorted by decreasing score, equal scores in input order.
    pairs = list(zip((-scores[keep]).tolist(), keep.tolist(), strict=True))
    assert pairs == sorted(pairs)
    iou = box_iou(boxes, boxes)
    # Kept boxes do not overlap each other by more than the threshold.
    kept_iou = iou[keep][:, keep] - torch.eye(keep.numel())
    assert not (kept_iou > threshold).any()
    # Every dropped box overlaps a kept box that comes before it in score order by more than the threshold.
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.sort(scores, descending=True, stable=True).indices] = torch.arange(n)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    for j in torch.nonzero(~kept).flatten().tolist():
        earlier = kept & (rank < rank[j])
        assert (iou[j][earlier] > threshold).any(), f"box {j} was dropped without a reason"


# --- batched_nms --------------------------------------------------------------------------------------


def per_group_reference(boxes, scores, idxs, threshold):
    keep = torch.cat(
        [
            torch.nonzero(idxs == g).flatten()[nms_loop(boxes[idxs == g], scores[idxs == g], threshold)]
            for g in torch.unique(idxs)
        ]
        + [torch.zeros(0, dtype=torch.long)]
    )
    keep = torch.sort(keep).values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_batched_nms_equals_nms_per_group(threshold):
    for seed in range(10):
        gen = torch.Generator().manual_seed(300 + seed)
        n = [0, 1, 6, 60, 250][seed % 5]
        boxes = random_boxes(gen, n, clusters=3)
        scores = (torch.rand(n, generator=gen) * 8).round()  # ties across groups too
        idxs = torch.randint(-2, 3, (n,), generator=gen) * 10**12  # any integers, huge ones included
        got = batched_nms(boxes, scores, idxs, threshold)
        assert torch.equal(got, per_group_reference(boxes, scores, idxs, threshold)), f"seed {seed}"


def test_batched_nms_groups_never_suppress_each_other():
    # The same box in three groups, at negative coordinates (where offsetting by idx * (max + 1) would let
    # groups overlap): all three survive, and within a group the duplicate is removed.
    boxes = torch.tensor([[-500.0, -500, -490, -490]] * 4)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 1, 2, 2])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_batched_nms_fallback_matches_per_group():
    # A negative threshold takes the per-group loop: only each group's best box survives.
    boxes = torch.tensor([[0.0, 0, 10, 10], [100.0, 100, 110, 110], [0.0, 0, 10, 10], [5.0, 5, 8, 8]])
    scores = torch.tensor([0.1, 0.4, 0.3, 0.2])
    idxs = torch.tensor([0, 0, 1, 1])
    assert batched_nms(boxes, scores, idxs, -1.0).tolist() == [1, 2]


# --- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nms, nms_loop])
def test_empty_input_gives_empty_int64(fn):
    out = fn(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert out.shape == (0,) and out.dtype == torch.int64 and out.device == torch.device("cpu")
    out = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert out.shape == (0,) and out.dtype == torch.int64


@pytest.mark.parametrize("fn", [nms, nms_loop])
@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "name"),
    [
        (torch.zeros(3, 5), torch.zeros(3), 0.5, "boxes"),
        (torch.zeros(4), torch.zeros(1), 0.5, "boxes"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), 0.5, "boxes"),
        ([[0.0, 0, 1, 1]], torch.zeros(1), 0.5, "boxes"),
        (torch.zeros(3, 4), torch.zeros(2), 0.5, "scores"),
        (torch.zeros(3, 4), torch.zeros(3, 1), 0.5, "scores"),
        (torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 0.5, "scores"),
        (torch.zeros(3, 4), torch.zeros(3), "0.5", "iou_threshold"),
        (torch.zeros(3, 4), torch.zeros(3), None, "iou_threshold"),
        (torch.zeros(3, 4), torch.zeros(3), float("nan"), "iou_threshold"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(fn, boxes, scores, threshold, name):
    with pytest.raises(ValueError, match=name):
        fn(boxes, scores, threshold)


@pytest.mark.parametrize(
    "idxs", [torch.zeros(3), torch.zeros(2, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long), [0, 0, 0]]
)
def test_batched_nms_bad_idxs(idxs):
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), idxs, 0.5)


def test_nms_steps_shows_each_decision_of_the_loop():
    # Three boxes in a chain: A overlaps B, B overlaps C, A does not overlap C. A removes B; C survives.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [9, 0, 19, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    steps = list(nms_steps(boxes, scores, 0.5))
    assert [k for k, _ in steps] == [0, 2]
    assert steps[0][1].tolist() == [1] and steps[1][1].tolist() == []
    assert nms_loop(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms_loop(boxes[:0], scores[:0], 0.5).shape == (0,)


@pytest.mark.parametrize("fn", [nms, nms_loop])
def test_nan_scores_rank_last(fn):
    # A NaN score neither wins nor suppresses a better box: it is ranked after every number.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [30, 0, 40, 10]])
    scores = torch.tensor([float("nan"), 0.9, float("nan")])
    assert fn(boxes, scores, 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long), 0.5).tolist() == [1, 2]
    assert [k for k, _ in nms_steps(boxes, scores, 0.5)] == [1, 2]


def test_cpu_path_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    # The CPU path's ops are small: it runs them on the calling thread only (torch's pool only waits on a
    # busy machine), and gives the caller its thread setting back, also after an error.
    seen = []
    sparse = nms_module._nms_sparse
    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return sparse(*args, **kwargs)

    monkeypatch.setattr(nms_module, "_nms_sparse", spy)
    gen = torch.Generator().manual_seed(2)
    boxes, scores = random_boxes(gen, 50, clusters=3), torch.rand(50, generator=gen)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch.equal(nms(boxes, scores, 0.5), nms_loop(boxes, scores, 0.5))
        batched_nms(boxes, scores, torch.zeros(50, dtype=torch.long), 0.5)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        monkeypatch.setattr(nms_module, "_nms_sparse", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            nms(boxes, scores, 0.5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
