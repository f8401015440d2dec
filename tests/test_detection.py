"""Tests for mrcnn_edu.detection: a hand-computed case, properties, a per-class numpy transcription of
matterport's ``refine_detections``, and torchvision's ``postprocess_detections`` where its ops load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrcnn_edu.boxes import box_iou
from mrcnn_edu.detection import detect, detect_batch, select_candidates

# ------------------------------------------------------------------------------------ hand-built case
# 3 ROIs, 2 classes (columns: background, class 1, class 2), image 100 x 100, weights (10, 10, 5, 5).
HAND_PROPOSALS = torch.tensor(
    [[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 90.0, 90.0], [0.0, 0.0, 20.0, 20.0]], dtype=torch.float64
)
HAND_PROBS = torch.tensor([[0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.6, 0.25, 0.15]], dtype=torch.float64)


def _hand_deltas() -> torch.Tensor:
    deltas = torch.zeros(3, 3, 4, dtype=torch.float64)
    deltas[:, 0] = 7.0  # background deltas: never used
    # ROI 0, class 1: dx = 1 / 10 of the width 20 -> shifted 2 px right: (12, 10, 32, 30)
    deltas[0, 1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # ROI 1, class 2: width x2 (dw = 5 log 2) around centre x 70: (30, 50, 110, 90), clipped (30, 50, 100, 90)
    deltas[1, 2] = torch.tensor([0.0, 0.0, 5 * math.log(2.0), 0.0])
    # ROI 1, class 1: moved far away; only "all" candidates with a low threshold would look at it
    deltas[1, 1] = torch.tensor([3.0, 3.0, 0.0, 0.0])
    # everything else zero: ROI 0 class 2 -> (10, 10, 30, 30); ROI 2 classes 1, 2 -> (0, 0, 20, 20)
    return deltas


def _hand_detect(**kwargs):
    return detect(HAND_PROBS.log(), _hand_deltas(), HAND_PROPOSALS, (100, 100), **kwargs)


def test_hand_case_argmax():
    r = _hand_detect()  # matterport: argmax, >= 0.7, NMS 0.3
    torch.testing.assert_close(
        r["boxes"], torch.tensor([[30.0, 50.0, 100.0, 90.0], [12.0, 10.0, 32.0, 30.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(r["scores"], torch.tensor([0.9, 0.8], dtype=torch.float64))
    assert r["labels"].tolist() == [2, 1]
    assert r["roi_index"].tolist() == [1, 0]
    assert r["labels"].dtype == r["roi_index"].dtype == torch.int64
    # ROI 2's argmax is background (0.6): never a detection, however low the threshold
    low = _hand_detect(score_threshold=0.0)
    assert low["roi_index"].tolist() == [1, 0]


def test_hand_case_all_candidates():
    # torchvision-style: every foreground class of every ROI above the threshold (0.07 excludes ROI 1 class 1)
    r = _hand_detect(candidates="all", score_threshold=0.07, nms_threshold=0.5)
    # class 1: (12,10,32,30) vs (0,0,20,20): IoU 80 / 720; class 2: (10,10,30,30) vs (0,0,20,20): 100 / 700
    expected = torch.tensor(
        [
            [30.0, 50.0, 100.0, 90.0],  # ROI 1, class 2, 0.9
            [12.0, 10.0, 32.0, 30.0],  # ROI 0, class 1, 0.8
            [0.0, 0.0, 20.0, 20.0],  # ROI 2, class 1, 0.25
            [0.0, 0.0, 20.0, 20.0],  # ROI 2, class 2, 0.15
            [10.0, 10.0, 30.0, 30.0],  # ROI 0, class 2, 0.1
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(r["boxes"], expected)
    torch.testing.assert_close(r["scores"], torch.tensor([0.9, 0.8, 0.25, 0.15, 0.1], dtype=torch.float64))
    assert r["labels"].tolist() == [2, 1, 1, 2, 2]
    assert r["roi_index"].tolist() == [1, 0, 2, 2, 0]
    # at NMS 0.1 the class-2 pair (IoU 1/7) loses its lower box, the class-1 pair (IoU 1/9) keeps both
    r = _hand_detect(candidates="all", score_threshold=0.07, nms_threshold=0.13)
    assert r["roi_index"].tolist() == [1, 0, 2, 2]
    assert r["labels"].tolist() == [2, 1, 1, 2]


def test_score_threshold():
    assert _hand_detect(score_threshold=0.85)["roi_index"].tolist() == [1]
    assert _hand_detect(score_threshold=0.95)["boxes"].shape == (0, 4)
    r = _hand_detect(candidates="all", score_threshold=0.2, nms_threshold=0.5)
    assert r["scores"].tolist() == pytest.approx([0.9, 0.8, 0.25])


def test_flat_deltas_same_as_per_class():
    flat = detect(HAND_PROBS.log(), _hand_deltas().reshape(3, 12), HAND_PROPOSALS, (100, 100))
    per_class = _hand_detect()
    for key in ("boxes", "scores", "labels", "roi_index"):
        torch.testing.assert_close(flat[key], per_class[key])


def _two_boxes(labels: list[int]):
    """Two ROIs overlapping at IoU 0.8 (zero deltas), each confidently of the given class."""
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 1.0, 10.0, 11.0]])
    logits = torch.full((2, 3), -5.0)
    logits[0, labels[0]] = 5.0
    logits[1, labels[1]] = 4.0
    return logits, torch.zeros(2, 3, 4), proposals


@pytest.mark.parametrize("candidates", ["argmax", "all"])
def test_nms_is_per_class(candidates):
    different = detect(*_two_boxes([1, 2]), (20, 20), candidates=candidates, score_threshold=0.5)
    assert different["roi_index"].tolist() == [0, 1]
    assert different["labels"].tolist() == [1, 2]
    same = detect(*_two_boxes([2, 2]), (20, 20), candidates=candidates, score_threshold=0.5)
    assert same["roi_index"].tolist() == [0]
    loose = detect(
        *_two_boxes([2, 2]), (20, 20), candidates=candidates, score_threshold=0.5, nms_threshold=0.85
    )
    assert loose["roi_index"].tolist() == [0, 1]


def test_max_detections():
    n = 10
    proposals = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(n)])
    logits = torch.zeros(n, 2)
    logits[:, 1] = torch.tensor([3.0, 9.0, 1.0, 7.0, 5.0, 8.0, 2.0, 6.0, 4.0, 10.0])
    r = detect(logits, torch.zeros(n, 2, 4), proposals, (20, 200), score_threshold=0.5, max_detections=3)
    assert r["roi_index"].tolist() == [9, 1, 5]
    assert (
        detect(logits, torch.zeros(n, 2, 4), proposals, (20, 200), score_threshold=0.5)["boxes"].shape[0] == n
    )


def _random_case(seed: int, rois: int = 60, classes: int = 4, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(rois, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(rois, 2, generator=g, dtype=torch.float64) * 30 + 4
    proposals = torch.cat([corner, corner + wh], dim=1)
    logits = torch.randn(rois, classes + 1, generator=g, dtype=torch.float64) * 2
    deltas = torch.randn(rois, classes + 1, 4, generator=g, dtype=torch.float64)
    return logits, deltas, proposals


@pytest.mark.parametrize("candidates", ["argmax", "all"])
@pytest.mark.parametrize("seed", [0, 1])
def test_properties(seed, candidates):
    logits, deltas, proposals = _random_case(seed)
    thr, size = 0.4, (50, 70)
    r = detect(
        logits,
        deltas,
        proposals,
        size,
        score_threshold=0.1,
        nms_threshold=thr,
        candidates=candidates,
        return_pre_nms=True,
    )
    boxes, scores, labels, roi = r["boxes"], r["scores"], r["labels"], r["roi_index"]
    assert boxes.shape[0] > 0
    assert (labels >= 1).all() and (labels <= 4).all()  # never background
    assert (scores[1:] <= scores[:-1]).all()
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= size[1]).all()  # clipped
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= size[0]).all()
    torch.testing.assert_close(scores, torch.softmax(logits, dim=1)[roi, labels])
    if candidates == "argmax":
        assert (labels == logits[roi].argmax(dim=1)).all()
        assert len(set(roi.tolist())) == len(roi)  # one detection per ROI at most
    iou = box_iou(boxes, boxes)
    same_class_pair = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    assert (iou[same_class_pair] <= thr).all()
    assert r["pre_nms_boxes"].shape[0] > boxes.shape[0]  # NMS removed something


def test_background_never_returned():
    logits, deltas, proposals = _random_case(3)
    logits[:, 0] = 20.0  # background wins everywhere
    assert detect(logits, deltas, proposals, (64, 64), score_threshold=0.0)["boxes"].shape == (0, 4)
    r = detect(logits, deltas, proposals, (64, 64), 0.0, 1.0, max_detections=1000, candidates="all")
    assert r["boxes"].shape[0] == 60 * 4 and (r["labels"] > 0).all()


def _matterport_reference(logits, deltas, proposals, size, min_conf, nms_thr, max_inst):
    """numpy transcription of matterport's refine_detections: argmax, per-class greedy NMS, per-class cap."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    class_ids = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), class_ids]
    d = deltas[np.arange(len(probs)), class_ids] * np.array([0.1, 0.1, 0.2, 0.2])
    w, h = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    cx, cy = proposals[:, 0] + 0.5 * w + d[:, 0] * w, proposals[:, 1] + 0.5 * h + d[:, 1] * h
    w, h = w * np.exp(d[:, 2]), h * np.exp(d[:, 3])
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[0])
    keep_all = []
    for c in sorted(set(class_ids.tolist()) - {0}):
        ids = [i for i in np.argsort(-scores, kind="stable") if class_ids[i] == c and scores[i] >= min_conf]
        kept = []
        for i in ids:
            ious = []
            for j in kept:
                iw = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
                ih = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
                area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
                area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
                union = area_i + area_j - iw * ih
                ious.append(iw * ih / union if union > 0 else 0.0)  # boxes clipped to nothing overlap nothing
            if all(v <= nms_thr for v in ious):
                kept.append(i)
        keep_all += kept[:max_inst]
    keep_all = sorted(keep_all, key=lambda i: -scores[i])[:max_inst]
    return boxes[keep_all], scores[keep_all], class_ids[keep_all], np.array(keep_all, dtype=np.int64)


@pytest.mark.parametrize("max_inst", [8, 100])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_matterport_reference(seed, max_inst):
    logits, deltas, proposals = _random_case(seed, rois=120, classes=3)
    logits[:, 0] -= 2.0  # fewer background ROIs, so that NMS has work to do
    size, min_conf, nms_thr = (60, 64), 0.5, 0.3
    r = detect(
        logits,
        deltas,
        proposals,
        size,
        score_threshold=min_conf,
        nms_threshold=nms_thr,
        max_detections=max_inst,
        clamp=None,
        return_pre_nms=True,
    )
    boxes, scores, labels, roi = _matterport_reference(
        logits.numpy(), deltas.numpy(), proposals.numpy(), size, min_conf, nms_thr, max_inst
    )
    if max_inst == 8:
        assert len(roi) == max_inst  # the cap is reached
    else:
        assert r["pre_nms_scores"].shape[0] > len(roi) > 8  # NMS, not the cap, decides
    np.testing.assert_allclose(r["boxes"].numpy(), boxes, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(r["scores"].numpy(), scores, rtol=1e-12)
    assert r["labels"].tolist() == labels.tolist()
    assert r["roi_index"].tolist() == roi.tolist()


def test_select_candidates_by_hand():
    roi, labels, scores = select_candidates(HAND_PROBS, "argmax", 0.0)
    assert roi.tolist() == [0, 1] and labels.tolist() == [1, 2]
    roi, labels, scores = select_candidates(HAND_PROBS, "all", 0.12)
    assert roi.tolist() == [0, 1, 2, 2] and labels.tolist() == [1, 2, 1, 2]
    assert scores.tolist() == pytest.approx([0.8, 0.9, 0.25, 0.15])


def test_min_size():
    proposals = torch.tensor([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 20.0, 20.0], [50.0, 0.0, 60.0, 10.0]])
    logits = torch.tensor([[0.0, 5.0], [0.0, 4.0], [0.0, 3.0]])
    r = detect(logits, torch.zeros(3, 2, 4), proposals, (40, 40), min_size=3.0)
    assert r["roi_index"].tolist() == [
        1
    ]  # ROI 0 too small, ROI 2 outside the image (zero width once clipped)
    r = detect(logits, torch.zeros(3, 2, 4), proposals, (40, 40))
    assert r["roi_index"].tolist() == [0, 1, 2]


def test_empty_inputs():
    for r in (
        detect(torch.zeros(0, 3), torch.zeros(0, 3, 4), torch.zeros(0, 4), (10, 10), return_pre_nms=True),
        detect(torch.zeros(0, 3), torch.zeros(0, 12), torch.zeros(0, 4), (10, 10), candidates="all"),
        detect(
            torch.zeros(4, 1), torch.zeros(4, 1, 4), torch.rand(4, 4), (10, 10), score_threshold=0.0
        ),  # K = 0
    ):
        assert r["boxes"].shape == (0, 4) and r["scores"].shape == (0,)
        assert r["labels"].shape == r["roi_index"].shape == (0,)
        assert r["labels"].dtype == r["roi_index"].dtype == torch.int64
    assert detect_batch(torch.zeros(0, 3), torch.zeros(0, 3, 4), [], []) == []


def test_no_gradient():
    logits, deltas, proposals = _random_case(0)
    r = detect(logits.requires_grad_(), deltas.requires_grad_(), proposals, (64, 64), score_threshold=0.1)
    assert r["boxes"].shape[0] > 0 and not r["boxes"].requires_grad and not r["scores"].requires_grad


def test_detect_batch_equals_per_image():
    parts = [_random_case(s, rois=r) for s, r in ((0, 30), (1, 0), (2, 45))]
    sizes = [(64, 64), (32, 32), (50, 80)]
    logits = torch.cat([p[0] for p in parts])
    deltas = torch.cat([p[1] for p in parts]).flatten(1)
    results = detect_batch(
        logits, deltas, [p[2] for p in parts], sizes, score_threshold=0.2, candidates="all"
    )
    assert len(results) == 3
    for r, (lg, dl, pr), size in zip(results, parts, sizes, strict=True):
        single = detect(lg, dl, pr, size, score_threshold=0.2, candidates="all")
        for key in ("boxes", "scores", "labels", "roi_index"):
            torch.testing.assert_close(r[key], single[key])
    assert results[0]["boxes"].shape[0] > 0 and results[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "options",
    [
        dict(score_threshold=0.05, candidates="all", nms_threshold=0.5, min_size=2.0, max_detections=7),
        dict(score_threshold=0.3, candidates="argmax", nms_threshold=0.3, clamp=None),
    ],
)
def test_detect_batch_is_identical_to_detect_per_image(options):
    # Every field, the pre-NMS candidates included, bit for bit; the max_detections cut is reached.
    parts = [_random_case(s, rois=r) for s, r in ((3, 60), (4, 0), (5, 80), (6, 25))]
    sizes = [(64, 64), (32, 32), (50, 80), (40, 30)]
    logits, deltas = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    results = detect_batch(logits, deltas, [p[2] for p in parts], sizes, return_pre_nms=True, **options)
    for got, (lg, dl, pr), size in zip(results, parts, sizes, strict=True):
        want = detect(lg, dl, pr, size, return_pre_nms=True, **options)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    assert any(len(r["boxes"]) > 0 for r in results)
    if "max_detections" in options:
        assert len(results[2]["boxes"]) == 7


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(class_logits=torch.zeros(3)), "class_logits"),
        (dict(class_logits=torch.zeros(3, 3, dtype=torch.long)), "class_logits"),
        (dict(box_deltas=torch.zeros(3, 2, 4)), "box_deltas"),
        (dict(box_deltas=torch.zeros(3, 11)), "box_deltas"),
        (dict(box_deltas=torch.zeros(2, 3, 4)), "box_deltas"),
        (dict(proposals=torch.zeros(2, 4)), "proposals"),
        (dict(proposals=torch.zeros(3, 5)), "proposals"),
        (dict(image_size=(10,)), "image_size"),
        (dict(score_threshold=-0.1), "score_threshold"),
        (dict(nms_threshold=2.0), "nms_threshold"),
        (dict(max_detections=0), "max_detections"),
        (dict(candidates="every"), "candidates"),
        (dict(min_size=-1.0), "min_size"),
        (dict(weights=(1.0,)), "weights"),
    ],
)
def test_bad_input(change, match):
    args = dict(
        class_logits=torch.zeros(3, 3),
        box_deltas=torch.zeros(3, 3, 4),
        proposals=torch.zeros(3, 4),
        image_size=(10, 10),
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        detect(**args)


def test_bad_input_batch():
    with pytest.raises(ValueError, match="image_sizes"):
        detect_batch(torch.zeros(3, 3), torch.zeros(3, 3, 4), [torch.zeros(3, 4)], [(8, 8), (8, 8)])
    with pytest.raises(ValueError, match="class_logits"):
        detect_batch(torch.zeros(4, 3), torch.zeros(3, 3, 4), [torch.zeros(3, 4)], [(8, 8)])
    with pytest.raises(ValueError, match="candidates"):
        select_candidates(HAND_PROBS, "top")


def test_matches_torchvision_postprocess_detections(torchvision_reference):
    from torchvision.models.detection.roi_heads import RoIHeads

    parts = [_random_case(s, rois=80, classes=3) for s in (4, 5)]
    sizes = [(64, 64), (50, 70)]
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 20).eval()
    logits = torch.cat([p[0] for p in parts]).float()
    deltas = torch.cat([p[1] for p in parts]).flatten(1).float()
    proposals = [p[2].float() for p in parts]
    tv_boxes, tv_scores, tv_labels = heads.postprocess_detections(logits, deltas, proposals, sizes)
    ours = detect_batch(
        logits,
        deltas,
        proposals,
        sizes,
        candidates="all",
        score_threshold=0.05,
        nms_threshold=0.5,
        max_detections=20,
        min_size=1e-2,
    )
    for r, b, s, lab in zip(ours, tv_boxes, tv_scores, tv_labels, strict=True):
        torch.testing.assert_close(r["boxes"], b)
        torch.testing.assert_close(r["scores"], s)
        assert r["labels"].tolist() == lab.tolist()
