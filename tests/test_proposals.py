"""Tests for mrcnn_edu.proposals: hand-built cases, properties, and torchvision's RPN where its ops load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrcnn_edu.boxes import box_iou
from mrcnn_edu.proposals import (
    anchor_levels,
    clip_and_filter,
    nms_proposals,
    propose,
    propose_loop,
    top_k_anchors,
    two_logit_objectness,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _random_case(seed: int, batch: int = 2, num_anchors: int = 400, size: int = 64):
    """Random anchors (some crossing the image border), logits and small deltas."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(num_anchors, 2, generator=g) * (size + 10) - 10
    wh = torch.rand(num_anchors, 2, generator=g) * 24 + 2
    anchors = torch.cat([corner, corner + wh], dim=1)
    objectness = torch.randn(batch, num_anchors, generator=g) * 3
    deltas = torch.randn(batch, num_anchors, 4, generator=g) * 0.2
    return objectness, deltas, anchors


def _hand_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------------------------------------- pieces


def test_two_logit_objectness_sigmoid_equals_softmax():
    logits = torch.randn(7, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    prob = torch.sigmoid(two_logit_objectness(logits))
    torch.testing.assert_close(prob, torch.softmax(logits, dim=-1)[..., 1])


def test_anchor_levels():
    assert anchor_levels([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    assert anchor_levels([]).tolist() == []


def test_top_k_anchors_joint_and_per_level_by_hand():
    objectness = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.7, 0.2]])
    assert top_k_anchors(objectness, 3).tolist() == [[1, 3, 4]]
    # levels [0..2] and [3..5]: two best of each, level by level
    assert top_k_anchors(objectness, 2, [3, 3]).tolist() == [[1, 2, 3, 4]]
    # a level smaller than k gives all its anchors
    assert top_k_anchors(objectness, 4, [1, 5]).tolist() == [[0, 1, 3, 4, 2]]
    assert top_k_anchors(objectness, 100).shape == (1, 6)


def test_clip_and_filter_by_hand():
    boxes = torch.tensor([[-5.0, -5.0, 10.0, 10.0], [90.0, 0.0, 120.0, 3.0], [200.0, 0.0, 210.0, 10.0]])
    scores = torch.tensor([0.9, 0.2, 0.8])
    clipped, keep = clip_and_filter(boxes, scores, (50, 100), min_size=1e-3)
    torch.testing.assert_close(
        clipped, torch.tensor([[0.0, 0.0, 10.0, 10.0], [90.0, 0.0, 100.0, 3.0], [100.0, 0.0, 100.0, 10.0]])
    )
    assert keep.tolist() == [0, 1]  # box 2 lies outside the image: zero width after clipping
    assert clip_and_filter(boxes, scores, (50, 100), min_size=0.0)[1].tolist() == [0, 1, 2]
    assert clip_and_filter(boxes, scores, (50, 100), min_size=5.0)[1].tolist() == [0]
    assert clip_and_filter(boxes, scores, (50, 100), score_threshold=0.5)[1].tolist() == [0, 2]


def test_nms_proposals_joint_and_per_level_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert _hand_iou(boxes[0].tolist(), boxes[1].tolist()) == pytest.approx(90 / 110)
    assert nms_proposals(boxes, scores, None, 0.7, 10).tolist() == [0, 2]
    assert nms_proposals(boxes, scores, torch.tensor([0, 1, 0]), 0.7, 10).tolist() == [0, 1, 2]
    assert nms_proposals(boxes, scores, torch.tensor([0, 1, 0]), 0.7, 2).tolist() == [0, 1]
    assert nms_proposals(boxes, scores, None, 0.9, 10).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------- propose


@pytest.mark.parametrize("per_level", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_propose_properties(seed, per_level):
    objectness, deltas, anchors = _random_case(seed)
    sizes = [(64, 64), (48, 60)]
    post, thr = 40, 0.6
    results = propose(
        objectness,
        deltas,
        anchors,
        sizes,
        [300, 100],
        pre_nms_top_n=150,
        post_nms_top_n=post,
        nms_threshold=thr,
        per_level=per_level,
        return_pre_nms=True,
    )
    assert len(results) == 2
    for i, (r, (h, w)) in enumerate(zip(results, sizes, strict=True)):
        boxes, scores, idx, lvl = r["boxes"], r["scores"], r["anchor_index"], r["levels"]
        assert 0 < boxes.shape[0] <= post
        assert scores.shape == idx.shape == lvl.shape == (boxes.shape[0],)
        assert idx.dtype == lvl.dtype == torch.int64
        # inside the image
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= h).all()
        # sorted by score, scores are the sigmoid of the anchors' logits
        assert (scores[1:] <= scores[:-1]).all()
        torch.testing.assert_close(scores, torch.sigmoid(objectness[i, idx]))
        assert (lvl == (idx >= 300).long()).all()
        # NMS: no two kept boxes (of the same level, for per_level) overlap more than the threshold
        iou = box_iou(boxes, boxes)
        same = (lvl[:, None] == lvl[None, :]) if per_level else torch.ones_like(iou, dtype=torch.bool)
        off_diagonal = ~torch.eye(len(boxes), dtype=torch.bool)
        assert (iou[same & off_diagonal] <= thr).all()
        # NMS did something, and the best candidate always survives
        assert r["pre_nms_boxes"].shape[0] > boxes.shape[0]
        assert idx[0] == r["pre_nms_anchor_index"][r["pre_nms_scores"].argmax()]


@pytest.mark.parametrize("per_level", [False, True])
def test_propose_nms_is_greedy(per_level):
    """Each candidate NMS removed overlaps (> thr) a kept, better box of its group; nothing else is lost."""
    objectness, deltas, anchors = _random_case(5, batch=1)
    thr = 0.5
    r = propose(
        objectness,
        deltas,
        anchors,
        [(64, 64)],
        [200, 200],
        pre_nms_top_n=1000,
        post_nms_top_n=1000,
        nms_threshold=thr,
        per_level=per_level,
        return_pre_nms=True,
    )[0]
    kept = set(r["anchor_index"].tolist())
    kept_boxes = r["boxes"].tolist()
    kept_scores, kept_levels = r["scores"].tolist(), r["levels"].tolist()
    removed = 0
    for box, score, level, a in zip(
        r["pre_nms_boxes"].tolist(),
        r["pre_nms_scores"].tolist(),
        r["pre_nms_levels"].tolist(),
        r["pre_nms_anchor_index"].tolist(),
        strict=True,
    ):
        if a in kept:
            continue
        removed += 1
        assert any(
            _hand_iou(box, kb) > thr and ks >= score and (kl == level or not per_level)
            for kb, ks, kl in zip(kept_boxes, kept_scores, kept_levels, strict=True)
        )
    assert removed > 0


def test_zero_deltas_give_clipped_anchors_in_score_order():
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 30.0, 70.0, 60.0], [0.0, 20.0, 10.0, 30.0]]
    )
    objectness = torch.tensor([[_logit(0.3), _logit(0.9), _logit(0.1), _logit(0.6)]])
    r = propose(objectness, torch.zeros(1, 4, 4), anchors, [(50, 50)], clamp=None)[0]
    # order by score: anchors 1, 3, 0, 2; anchor 2 crosses the right and bottom border
    expected = torch.tensor(
        [[20.0, 0.0, 30.0, 10.0], [0.0, 20.0, 10.0, 30.0], [0.0, 0.0, 10.0, 10.0], [40.0, 30.0, 50.0, 50.0]]
    )
    torch.testing.assert_close(r["boxes"], expected)
    torch.testing.assert_close(r["scores"], torch.tensor([0.9, 0.6, 0.3, 0.1]))
    assert r["anchor_index"].tolist() == [1, 3, 0, 2]


def test_deltas_are_applied_by_hand():
    anchors = torch.tensor([[10.0, 10.0, 30.0, 50.0]])  # centre (20, 30), size 20 x 40
    deltas = torch.tensor([[[0.5, -0.25, math.log(2.0), 0.0]]])  # centre (30, 20), size 40 x 40
    r = propose(torch.zeros(1, 1), deltas, anchors, [(100, 100)])[0]
    torch.testing.assert_close(r["boxes"], torch.tensor([[10.0, 0.0, 50.0, 40.0]]))
    # matterport: raw deltas scaled by RPN_BBOX_STD_DEV == weights 1 / std
    std = torch.tensor([0.1, 0.1, 0.2, 0.2])
    mp = propose(torch.zeros(1, 1), deltas / std, anchors, [(100, 100)], weights=(10, 10, 5, 5), clamp=None)[
        0
    ]
    torch.testing.assert_close(mp["boxes"], r["boxes"])


def test_pre_nms_top_n_only_top_anchors_appear():
    objectness, deltas, anchors = _random_case(3, batch=1)
    k = 12
    counts = [250, 150]
    scores = objectness[0].numpy()
    joint_top = set(np.argsort(-scores)[:k].tolist())
    r = propose(objectness, deltas, anchors, [(64, 64)], counts, pre_nms_top_n=k, return_pre_nms=True)[0]
    assert set(r["pre_nms_anchor_index"].tolist()) == joint_top
    assert set(r["anchor_index"].tolist()) <= joint_top
    level_top = set(np.argsort(-scores[:250])[:k].tolist()) | set(
        (250 + np.argsort(-scores[250:])[:k]).tolist()
    )
    r = propose(
        objectness, deltas, anchors, [(64, 64)], counts, pre_nms_top_n=k, per_level=True, return_pre_nms=True
    )[0]
    assert set(r["pre_nms_anchor_index"].tolist()) == level_top
    assert set(r["anchor_index"].tolist()) <= level_top


def test_joint_and_per_level_differ_when_one_level_has_all_top_scores():
    # 8 separate boxes; level 0 (anchors 0-3) scores far above level 1 (anchors 4-7)
    anchors = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(8)])
    objectness = torch.tensor([[5.0, 6.0, 7.0, 8.0, -5.0, -4.0, -3.0, -2.0]])
    kwargs = dict(pre_nms_top_n=2, post_nms_top_n=10)
    joint = propose(objectness, torch.zeros(1, 8, 4), anchors, [(20, 200)], [4, 4], **kwargs)[0]
    per_level = propose(
        objectness, torch.zeros(1, 8, 4), anchors, [(20, 200)], [4, 4], per_level=True, **kwargs
    )[0]
    assert joint["anchor_index"].tolist() == [3, 2]  # only from the level with the top scores
    assert joint["levels"].tolist() == [0, 0]
    assert per_level["anchor_index"].tolist() == [3, 2, 7, 6]  # two from every level, then by score
    assert per_level["levels"].tolist() == [0, 0, 1, 1]


def test_same_box_on_two_levels_survives_only_per_level_nms():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 16.0]])
    objectness = torch.tensor([[2.0, 1.0]])
    joint = propose(objectness, torch.zeros(1, 2, 4), anchors, [(32, 32)], [1, 1])[0]
    per_level = propose(objectness, torch.zeros(1, 2, 4), anchors, [(32, 32)], [1, 1], per_level=True)[0]
    assert joint["anchor_index"].tolist() == [0]
    assert per_level["anchor_index"].tolist() == [0, 1]


def test_post_nms_top_n():
    anchors = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(6)])
    objectness = torch.arange(6.0)[None]
    r = propose(objectness, torch.zeros(1, 6, 4), anchors, [(20, 200)], post_nms_top_n=3)[0]
    assert r["anchor_index"].tolist() == [5, 4, 3]


@pytest.mark.parametrize("per_level", [False, True])
def test_batch_equals_one_by_one(per_level):
    objectness, deltas, anchors = _random_case(7, batch=3)
    sizes = [(64, 64), (40, 64), (64, 30)]
    kwargs = dict(num_anchors_per_level=[100, 300], pre_nms_top_n=80, post_nms_top_n=25, per_level=per_level)
    batch = propose(objectness, deltas, anchors, sizes, **kwargs)
    for i, size in enumerate(sizes):
        single = propose(objectness[i : i + 1], deltas[i : i + 1], anchors, [size], **kwargs)[0]
        for key in ("boxes", "scores", "anchor_index", "levels"):
            torch.testing.assert_close(batch[i][key], single[key])
    assert not torch.equal(batch[0]["anchor_index"], batch[1]["anchor_index"])


@pytest.mark.parametrize("per_level", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_propose_is_identical_to_the_loop(per_level, seed):
    # propose (the whole batch at once) against propose_loop (image by image, the readable steps): every
    # field, pre-NMS candidates included, bit for bit; the post-NMS cut and both filters take effect.
    objectness, deltas, anchors = _random_case(seed, batch=4, num_anchors=600)
    sizes = [(64, 64), (40, 64), (64, 30), (20, 20)]
    kwargs = dict(
        num_anchors_per_level=[100, 200, 300], pre_nms_top_n=150, post_nms_top_n=40, per_level=per_level,
        min_size=3.0, score_threshold=0.2, nms_threshold=0.6, return_pre_nms=True,
    )  # fmt: skip
    fast = propose(objectness, deltas, anchors, sizes, **kwargs)
    loop = propose_loop(objectness, deltas, anchors, sizes, **kwargs)
    assert len(fast) == len(loop) == 4
    for f, r in zip(fast, loop, strict=True):
        assert f.keys() == r.keys()
        for key in r:
            assert f[key].dtype == r[key].dtype and torch.equal(f[key], r[key]), key
    assert any(len(r["boxes"]) == 40 for r in loop)  # the cut was reached
    top_k = 150 * (3 if per_level else 1)
    assert any(len(r["pre_nms_boxes"]) < top_k for r in loop)  # the filters removed some


@pytest.mark.parametrize("per_level", [False, True])
def test_nms_image_by_image_where_torchvision_runs_it(per_level, monkeypatch):
    # Where torchvision's CUDA kernel does the NMS, each image gets its own call (its cost grows with the
    # square of the boxes of one call): the result is the same. Forced here on the CPU, with our nms behind.
    import mrcnn_edu.nms as nms_module

    objectness, deltas, anchors = _random_case(3, batch=4, num_anchors=600)
    sizes = [(64, 64), (40, 64), (64, 30), (20, 20)]
    kwargs = dict(num_anchors_per_level=[100, 200, 300], pre_nms_top_n=150, post_nms_top_n=40,
                  per_level=per_level, nms_threshold=0.6)  # fmt: skip
    whole = propose(objectness, deltas, anchors, sizes, **kwargs)
    calls = []
    batched = nms_module.batched_nms
    monkeypatch.setattr(nms_module, "_torchvision_runs", lambda boxes: True)
    monkeypatch.setattr(nms_module, "batched_nms", lambda *a: calls.append(len(a[0])) or batched(*a))
    each = propose(objectness, deltas, anchors, sizes, **kwargs)
    assert len(calls) == 4
    for a, b in zip(whole, each, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_min_size_and_score_threshold():
    anchors = torch.tensor([[0.0, 0.0, 2.0, 2.0], [10.0, 0.0, 15.0, 5.0], [20.0, 0.0, 30.0, 10.0]])
    objectness = torch.tensor([[_logit(0.9), _logit(0.4), _logit(0.6)]])
    zeros = torch.zeros(1, 3, 4)
    r = propose(objectness, zeros, anchors, [(40, 40)], min_size=4.0)[0]
    assert r["anchor_index"].tolist() == [2, 1]
    r = propose(objectness, zeros, anchors, [(40, 40)], score_threshold=0.5)[0]
    assert r["anchor_index"].tolist() == [0, 2]


def test_empty_anchors_and_empty_batch():
    for counts, per_level in ((None, False), ([0, 0], True)):
        results = propose(
            torch.zeros(2, 0),
            torch.zeros(2, 0, 4),
            torch.zeros(0, 4),
            [(8, 8), (8, 8)],
            counts,
            per_level=per_level,
            return_pre_nms=True,
        )
        assert len(results) == 2
        for r in results:
            assert r["boxes"].shape == (0, 4) and r["scores"].shape == (0,)
            assert r["anchor_index"].dtype == torch.int64 and r["anchor_index"].shape == (0,)
            assert r["pre_nms_boxes"].shape == (0, 4)
    assert propose(torch.zeros(0, 3), torch.zeros(0, 3, 4), torch.zeros(3, 4), []) == []
    # a level with no anchors next to one with some
    r = propose(
        torch.ones(1, 2),
        torch.zeros(1, 2, 4),
        torch.tensor([[0.0, 0, 4, 4], [8.0, 8, 12, 12]]),
        [(16, 16)],
        [0, 2],
        per_level=True,
    )[0]
    assert r["levels"].tolist() == [1, 1]


def test_no_gradient_and_dtype():
    objectness, deltas, anchors = _random_case(0, batch=1)
    objectness = objectness.double().requires_grad_()
    deltas = deltas.double().requires_grad_()
    r = propose(objectness, deltas, anchors, [(64, 64)])[0]
    assert not r["boxes"].requires_grad and not r["scores"].requires_grad
    assert r["boxes"].dtype == torch.float64


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(objectness=torch.zeros(4)), "objectness"),
        (dict(objectness=torch.zeros(1, 4, dtype=torch.long)), "objectness"),
        (dict(deltas=torch.zeros(1, 3, 4)), "deltas"),
        (dict(deltas=torch.zeros(1, 4, 2)), "deltas"),
        (dict(anchors=torch.zeros(5, 4)), "anchors"),
        (dict(image_sizes=[(8, 8), (8, 8)]), "image_sizes"),
        (dict(image_sizes=[(8,)]), "image_sizes"),
        (dict(per_level=True), "num_anchors_per_level"),
        (dict(num_anchors_per_level=[1, 2]), "num_anchors_per_level"),
        (dict(num_anchors_per_level=[5, -1]), "num_anchors_per_level"),
        (dict(pre_nms_top_n=0), "pre_nms_top_n"),
        (dict(post_nms_top_n=1.5), "post_nms_top_n"),
        (dict(nms_threshold=1.5), "nms_threshold"),
        (dict(min_size=-1.0), "min_size"),
        (dict(weights=(1, 1)), "weights"),
    ],
)
def test_bad_input(change, match):
    args = dict(
        objectness=torch.zeros(1, 4),
        deltas=torch.zeros(1, 4, 4),
        anchors=torch.tensor([[0.0, 0, 4, 4]] * 4),
        image_sizes=[(8, 8)],
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        propose(**args)


def test_bad_input_pieces():
    with pytest.raises(ValueError, match="k"):
        top_k_anchors(torch.zeros(1, 3), 0)
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        top_k_anchors(torch.zeros(1, 3), 2, [1, 1])
    with pytest.raises(ValueError, match="scores"):
        clip_and_filter(torch.zeros(3, 4), torch.zeros(2), (8, 8))
    with pytest.raises(ValueError, match="logits"):
        two_logit_objectness(torch.zeros(3, 3))


def test_matches_torchvision_filter_proposals(torchvision_reference):
    from torchvision.models.detection.rpn import RegionProposalNetwork

    objectness, deltas, anchors = _random_case(11, batch=2, num_anchors=600)
    counts = [400, 150, 50]
    sizes = [(64, 64), (50, 60)]
    rpn = RegionProposalNetwork(
        None, None, 0.7, 0.3, 256, 0.5, dict(training=100, testing=100), dict(training=60, testing=60), 0.7
    ).eval()
    decoded = rpn.box_coder.decode(deltas.reshape(-1, 4), [anchors, anchors]).view(2, -1, 4)
    tv_boxes, tv_scores = rpn.filter_proposals(decoded, objectness, sizes, counts)
    ours = propose(
        objectness,
        deltas,
        anchors,
        sizes,
        counts,
        pre_nms_top_n=100,
        post_nms_top_n=60,
        per_level=True,
        min_size=1e-3,
    )
    for r, b, s in zip(ours, tv_boxes, tv_scores, strict=True):
        torch.testing.assert_close(r["boxes"], b)
        torch.testing.assert_close(r["scores"], s)
