"""Tests for mrcnn_edu.evaluate: hand-computed APs, and pycocotools' own COCOeval / RLE code as references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mrcnn_edu.evaluate import (
    average_precision,
    coco_evaluate,
    compute_voc_ap,
    format_table,
    mean_voc_ap,
    plot_precision_recall,
    precision_recall,
    to_coco_gt,
    to_coco_results,
)

coco_mask = pytest.importorskip("pycocotools.mask", reason="pycocotools is the COCO reference")
from pycocotools.cocoeval import COCOeval  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

H = W = 48


def rect_mask(x1: int, y1: int, x2: int, y2: int, h: int = H, w: int = W) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def target(rects, labels, crowd=None, image_id=None, h: int = H, w: int = W) -> dict:
    """GT of one image from integer rectangles (x1, y1, x2, y2); box = rectangle = mask's extent."""
    t = {
        "boxes": torch.tensor(rects, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack([rect_mask(*r, h=h, w=w) for r in rects])
        if rects
        else torch.zeros(0, h, w, dtype=torch.uint8),
    }
    if crowd is not None:
        t["iscrowd"] = torch.tensor(crowd, dtype=torch.bool)
    if image_id is not None:
        t["image_id"] = image_id
    return t


def prediction(rects, labels, scores, h: int = H, w: int = W) -> dict:
    """Detections from integer rectangles; masks as [N, 1, H, W] probabilities (0.9 inside, 0.2 outside)."""
    t = target(rects, labels, h=h, w=w)
    return {
        "boxes": t["boxes"],
        "labels": t["labels"],
        "scores": torch.tensor(scores, dtype=torch.float32),
        "masks": (0.2 + 0.7 * t["masks"].float())[:, None],
    }


def voc(t: dict, p: dict, **kwargs):
    return compute_voc_ap(
        t["boxes"], t["labels"], t["masks"], p["boxes"], p["labels"], p["scores"], p["masks"],
        gt_crowd=t.get("iscrowd"), **kwargs,
    )  # fmt: skip


# Two objects, three detections ranked: hit, miss (no overlap), hit.
# Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: VOC all-point AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
# COCO reads the envelope (1 up to recall 0.5, 2/3 beyond) at 101 points: 51 at 1 (0.00..0.50), 50 at 2/3.
HAND_GT = target([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 1])
HAND_PRED = prediction([(2, 2, 14, 14), (30, 2, 44, 12), (24, 20, 40, 40)], [1, 1, 1], [0.9, 0.8, 0.7])
HAND_VOC_AP = 0.5 * 1 + 0.5 * (2 / 3)
HAND_COCO_AP = (51 * 1 + 50 * (2 / 3)) / 101


# ----------------------------------------------------------------------------------- matterport's VOC AP


def test_voc_ap_hand_case_two_gt_three_predictions():
    for use_masks in (True, False):
        ap, precisions, recalls, overlaps = voc(HAND_GT, HAND_PRED, use_masks=use_masks)
        assert ap == pytest.approx(HAND_VOC_AP)
        # matterport's padded return values: envelope [0, 1, 1/2 -> 2/3, 2/3, 0], recall [0, r..., 1].
        f64 = torch.float64
        torch.testing.assert_close(precisions, torch.tensor([1.0, 1.0, 2 / 3, 2 / 3, 0.0], dtype=f64))
        torch.testing.assert_close(recalls, torch.tensor([0.0, 0.5, 0.5, 1.0, 1.0], dtype=f64))
        torch.testing.assert_close(overlaps, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))


def test_voc_ap_second_hand_case_sorts_by_score():
    # Three objects; ranked detections: miss, hit, hit, miss, hit (given out of order; sorting must fix it).
    gt = target([(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30)], [1, 1, 1])
    ranked = [(36, 36, 46, 46), (0, 0, 10, 10), (20, 0, 30, 10), (36, 20, 46, 30), (0, 20, 10, 30)]
    scores = [0.95, 0.9, 0.8, 0.7, 0.6]
    perm = [3, 0, 4, 2, 1]
    pred = prediction([ranked[i] for i in perm], [1] * 5, [scores[i] for i in perm])
    # precision 0, 1/2, 2/3, 1/2, 3/5 at recall 0, 1/3, 2/3, 2/3, 1 -> envelope 2/3, 2/3, 3/5 over the steps.
    expected = (1 / 3) * (2 / 3) + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert voc(gt, pred)[0] == pytest.approx(expected)
    assert mean_voc_ap([pred], [gt]) == pytest.approx(expected)


def test_voc_ap_wrong_label_is_a_false_positive():
    gt = target([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 2])
    pred = prediction([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 1], [0.9, 0.8])
    ap, precisions, recalls, _ = voc(gt, pred)
    assert ap == pytest.approx(0.5)  # hit then miss: precision 1 up to recall 1/2, nothing after
    right = prediction([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 2], [0.9, 0.8])
    assert voc(gt, right)[0] == pytest.approx(1.0)


def test_voc_ap_use_masks_false_matches_by_box_iou():
    # Same boxes, but the predicted mask fills the other half of the box: box IoU 1, mask IoU 0.
    gt = target([(4, 4, 24, 24)], [1])
    gt["masks"][0, :, 14:] = 0  # GT mask: left half of its box
    pred = prediction([(4, 4, 24, 24)], [1], [0.9])
    pred["masks"][0, 0, :, :14] = 0.0  # predicted mask: right half
    ap_box, _, _, overlaps_box = voc(gt, pred, use_masks=False)
    ap_mask, _, _, overlaps_mask = voc(gt, pred, use_masks=True)
    assert ap_box == pytest.approx(1.0) and ap_mask == pytest.approx(0.0)
    assert overlaps_box.item() == pytest.approx(1.0) and overlaps_mask.item() == pytest.approx(0.0)
    # Box-only evaluation needs no masks at all.
    ap, *_ = compute_voc_ap(
        gt["boxes"], gt["labels"], None, pred["boxes"], pred["labels"], pred["scores"], None, use_masks=False
    )
    assert ap == pytest.approx(1.0)


def test_voc_overlaps_agree_with_pycocotools_iou():
    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 30, (6, 2), generator=gen)
    wh = torch.randint(2, 18, (6, 2), generator=gen)
    rects = [tuple(int(v) for v in r) for r in torch.cat((xy, xy + wh), 1)]
    gt = target(rects[:3], [1, 1, 1])
    pred = prediction(rects[3:], [1, 1, 1], [0.5, 0.9, 0.7])
    order = [1, 2, 0]  # score order
    for use_masks in (True, False):
        overlaps = voc(gt, pred, use_masks=use_masks)[3]
        if use_masks:
            dt = coco_mask.encode(np.asfortranarray(pred["masks"][order, 0].permute(1, 2, 0).numpy() >= 0.5))
            gts = coco_mask.encode(np.asfortranarray(gt["masks"].permute(1, 2, 0).numpy()))
        else:
            to_xywh = lambda b: torch.cat((b[:, :2], b[:, 2:] - b[:, :2]), 1).double().numpy()  # noqa: E731
            dt, gts = to_xywh(pred["boxes"][order]), to_xywh(gt["boxes"])
        reference = np.asarray(coco_mask.iou(dt, gts, [0, 0, 0]))
        np.testing.assert_allclose(overlaps.numpy(), reference, atol=1e-6)


def test_voc_ap_crowd_gt_is_neither_a_miss_nor_a_false_positive():
    gt = target([(2, 2, 14, 14), (24, 20, 46, 46)], [1, 1], crowd=[False, True])
    only_object = prediction([(2, 2, 14, 14)], [1], [0.9])
    assert voc(gt, only_object)[0] == pytest.approx(1.0)  # the crowd is not a miss
    on_crowd = prediction([(2, 2, 14, 14), (26, 22, 44, 44)], [1, 1], [0.8, 0.95])
    assert voc(gt, on_crowd)[0] == pytest.approx(1.0)  # the better-scored detection on the crowd is ignored
    # Control: the same region as an ordinary object is missed, and then found.
    plain = target([(2, 2, 14, 14), (24, 20, 46, 46)], [1, 1])
    assert voc(plain, only_object)[0] == pytest.approx(0.5)
    assert voc(plain, on_crowd)[0] == pytest.approx(1.0)
    assert mean_voc_ap([only_object], [gt]) == pytest.approx(1.0)


def test_voc_ap_empty_inputs():
    gt = HAND_GT
    none = prediction([], [], [])
    ap, precisions, recalls, overlaps = voc(gt, none)
    assert ap == 0.0 and overlaps.shape == (0, 2)
    assert precisions.tolist() == [0.0, 0.0] and recalls.tolist() == [0.0, 1.0]
    no_gt = target([], [])
    assert math.isnan(voc(no_gt, HAND_PRED)[0])  # recall undefined
    assert voc(no_gt, HAND_PRED)[3].shape == (3, 0)
    # Images without GT are skipped by the mean; a data set without any GT has no mean.
    assert mean_voc_ap([HAND_PRED, HAND_PRED], [HAND_GT, no_gt]) == pytest.approx(HAND_VOC_AP)
    assert math.isnan(mean_voc_ap([none], [no_gt]))
    assert math.isnan(mean_voc_ap([], []))
    assert mean_voc_ap([none, none], [gt, gt]) == 0.0


# ------------------------------------------------------------------------------------- precision / recall


def test_precision_recall_hand_case_and_pooled_ap():
    precision, recall, scores = precision_recall([HAND_PRED], [HAND_GT])
    torch.testing.assert_close(precision, torch.tensor([1.0, 0.5, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(recall, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64))
    assert average_precision(precision, recall) == pytest.approx(HAND_VOC_AP)


def test_precision_recall_is_monotone_over_images_and_classes():
    gen = torch.Generator().manual_seed(1)
    preds, targets = [], []
    for _ in range(6):
        xy = torch.randint(0, 30, (7, 2), generator=gen)
        rects = [tuple(int(v) for v in r) for r in torch.cat((xy, xy + 14), 1)]
        labels = torch.randint(1, 3, (7,), generator=gen).tolist()
        targets.append(target(rects[:3], labels[:3]))
        jitter = [(x1 + 1, y1, x2 + 1, y2) for x1, y1, x2, y2 in rects[:3]] + rects[3:]
        preds.append(prediction(jitter, labels, torch.rand(7, generator=gen).tolist()))
    precision, recall, scores = precision_recall(preds, targets)
    assert precision.shape == recall.shape == scores.shape == (42,)
    assert bool((recall[1:] >= recall[:-1]).all()) and bool((scores[1:] <= scores[:-1]).all())
    assert bool(((precision >= 0) & (precision <= 1)).all()) and recall[-1] <= 1.0
    # Recall grows exactly where a detection is a hit, i.e. where the number of hits (precision * rank) grows.
    hits = torch.round(precision * torch.arange(1, 43, dtype=torch.float64))
    torch.testing.assert_close(recall, hits / 18)
    # Per class: the class's detections only; the two curves partition the pooled detections.
    per_class = [precision_recall(preds, targets, label=k) for k in (1, 2)]
    assert sum(pr[2].numel() for pr in per_class) == 42
    assert all(bool((pr[1][1:] >= pr[1][:-1]).all()) for pr in per_class)


def test_plot_precision_recall_writes_png(tmp_path):
    path = tmp_path / "pr.png"
    fig = plot_precision_recall([HAND_PRED], [HAND_GT], path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AP=0.833" in fig.axes[0].get_legend().get_texts()[0].get_text()
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    out = plot_precision_recall(
        [HAND_PRED], [HAND_GT], per_class=True, class_names=("BG", "square"), ax=ax, use_masks=False
    )
    assert out is ax.figure
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["square (AP=0.833)"]


# ----------------------------------------------------------------------------------------------- COCO


def test_coco_perfect_predictions_give_ap_one():
    targets = [
        target([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 2]),
        target([(5, 5, 30, 25)], [3]),
        target([(0, 0, 48, 48), (10, 10, 20, 20)], [1, 1]),
    ]
    preds = []
    for t in targets:
        labels = t["labels"].tolist()
        preds.append(prediction(t["boxes"].int().tolist(), labels, [1.0] * len(labels)))
    preds[1]["masks"] = preds[1]["masks"][:, 0]  # [N, H, W] works as [N, 1, H, W]
    results = coco_evaluate(preds, targets, class_names=("BG", "square", "circle", "triangle"))
    for iou_type in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75", "APs", "APm", "AR10", "AR100"):
            assert results[iou_type][key] == pytest.approx(1.0), (iou_type, key)
        assert math.isnan(results[iou_type]["APl"])  # no object above 96**2 pixels: undefined, not 0 or -1
        # AR1 counts one detection per image and category: image 3 has two squares, so squares reach 2/3.
        assert results[iou_type]["AR1"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert mean_voc_ap(preds, targets) == pytest.approx(1.0)


def test_coco_hand_case_is_101_point_interpolated():
    results = coco_evaluate([HAND_PRED], [HAND_GT])
    for iou_type in ("bbox", "segm"):
        # Exact boxes and masks: the same curve at every IoU threshold.
        assert results[iou_type]["AP50"] == pytest.approx(HAND_COCO_AP)
        assert results[iou_type]["AP"] == pytest.approx(HAND_COCO_AP)
        assert results[iou_type]["AR100"] == pytest.approx(1.0)
        assert results[iou_type]["AR1"] == pytest.approx(0.5)
    assert HAND_COCO_AP != pytest.approx(HAND_VOC_AP)


def test_coco_wrong_label_scores_zero_for_that_class():
    gt = target([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 2])
    pred = prediction([(2, 2, 14, 14), (24, 20, 40, 40)], [1, 1], [0.9, 0.8])
    results = coco_evaluate([pred], [gt], class_names=("BG", "a", "b"), per_class=True)
    for iou_type in ("bbox", "segm"):
        assert results[iou_type]["per_class"] == {"a": pytest.approx(1.0), "b": 0.0}
        assert results[iou_type]["AP"] == pytest.approx(0.5)


def test_coco_ap_falls_as_boxes_shift():
    rects = [(4, 4, 24, 24), (26, 20, 46, 40)]
    gt = target(rects, [1, 1])
    aps = []
    for shift in (0, 1, 2, 4, 7):
        moved = [(x1 + shift, y1, min(x2 + shift, W), y2) for x1, y1, x2, y2 in rects]
        results = coco_evaluate([prediction(moved, [1, 1], [0.9, 0.8])], [gt])
        aps.append((results["bbox"]["AP"], results["segm"]["AP"]))
    assert aps[0] == (pytest.approx(1.0), pytest.approx(1.0))
    for iou_type in (0, 1):
        values = [a[iou_type] for a in aps]
        assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_coco_crowd_gt_is_not_a_miss():
    gt = target([(2, 2, 14, 14), (20, 20, 46, 46)], [1, 1], crowd=[False, True])
    only_object = prediction([(2, 2, 14, 14)], [1], [0.9])
    on_crowd = prediction([(2, 2, 14, 14), (22, 22, 40, 40)], [1, 1], [0.8, 0.95])
    for pred in (only_object, on_crowd):
        results = coco_evaluate([pred], [gt])
        assert results["bbox"]["AP"] == pytest.approx(1.0)
        assert results["segm"]["AP"] == pytest.approx(1.0)
    # Control: without the crowd flag the region is an object that one detection misses.
    plain = target([(2, 2, 14, 14), (20, 20, 46, 46)], [1, 1])
    assert coco_evaluate([only_object], [plain])["bbox"]["AR100"] == pytest.approx(0.5)


def test_coco_empty_predictions_and_images():
    none = prediction([], [], [])
    results = coco_evaluate([none, none], [HAND_GT, target([], [])])
    for iou_type in ("bbox", "segm"):
        assert results[iou_type]["AP"] == 0.0 and results[iou_type]["AR100"] == 0.0
    # No GT anywhere: nothing to measure.
    results = coco_evaluate([HAND_PRED], [target([], [])], class_names=("BG", "a"))
    assert all(math.isnan(v) for v in results["bbox"].values())
    assert to_coco_results([none], [7]) == []
    precision, recall, scores = precision_recall([none], [HAND_GT])
    assert precision.shape == recall.shape == scores.shape == (0,)


def test_coco_summary_matches_pycocotools_summarize():
    gen = torch.Generator().manual_seed(2)
    preds, targets = [], []
    for i in range(4):
        xy = torch.randint(0, 24, (4, 2), generator=gen)
        wh = torch.randint(4, 24, (4, 2), generator=gen)
        rects = [tuple(int(v) for v in r) for r in torch.cat((xy, (xy + wh).clamp(max=H)), 1)]
        labels = torch.randint(1, 3, (4,), generator=gen).tolist()
        targets.append(target(rects, labels, image_id=10 + i))
        moved = [(x1 + 1, y1 + 2, x2, y2) for x1, y1, x2, y2 in rects] + [(0, 0, 12, 12)]
        preds.append(prediction(moved, labels + [1], torch.rand(5, generator=gen).tolist()))
    ours = coco_evaluate(preds, targets, iou_types=("segm",))["segm"]
    # Reference: pycocotools end to end, from the COCO objects our converters build.
    coco_gt = to_coco_gt(targets)
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in to_coco_results(preds, [10, 11, 12, 13])]
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    reference = [float("nan") if v < 0 else v for v in evaluator.stats]
    np.testing.assert_allclose([ours[k] for k in keys], reference)
    assert 0.0 < ours["AP"] < 1.0
    # Fewer detections allowed per image can only lower the recall.
    one = coco_evaluate(preds, targets, iou_types=("segm",), max_detections=1)["segm"]
    assert one["AR1"] == pytest.approx(ours["AR1"]) and "AR100" not in one
    assert one["AP"] < ours["AP"] and one["ARs"] < ours["ARs"]


def test_to_coco_gt_fields():
    t = target([(2, 2, 14, 14), (20, 20, 46, 46)], [1, 3], crowd=[False, True], image_id=42)
    t["masks"][0, 2, 2] = 0  # mask area differs from the box area
    coco = to_coco_gt([t], class_names=("BG", "a", "b", "c"), label_to_cat_id={1: 5, 2: 6, 3: 9})
    assert coco.getImgIds() == [42] and coco.imgs[42]["height"] == H
    assert [c["id"] for c in coco.dataset["categories"]] == [5, 6, 9]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[42]))
    assert [a["id"] for a in anns] == [1, 2]  # pycocotools reads an id of 0 as "unmatched"
    assert [a["category_id"] for a in anns] == [5, 9]
    assert [a["iscrowd"] for a in anns] == [0, 1]
    assert anns[0]["bbox"] == [2.0, 2.0, 12.0, 12.0] and anns[0]["area"] == 143.0
    np.testing.assert_array_equal(coco.annToMask(anns[0]), t["masks"][0].numpy())


def test_to_coco_results_round_trip():
    pred = prediction([(2, 3, 14, 15), (20, 20, 46, 40)], [2, 1], [0.9, 0.4])
    pred["masks"][1, 0, 30, 30] = 0.5  # the threshold itself counts as inside (>=)
    pred["masks"][1, 0, 25, 25] = 0.49
    results = to_coco_results([pred], [3], label_to_cat_id=[0, 11, 12])
    json.dumps(results)  # JSON-ready: plain floats, str counts
    assert [r["category_id"] for r in results] == [12, 11]
    assert [r["image_id"] for r in results] == [3, 3]
    assert results[0]["bbox"] == [2.0, 3.0, 12.0, 12.0]
    assert results[1]["score"] == pytest.approx(0.4)
    for r, probs in zip(results, pred["masks"][:, 0], strict=True):
        assert isinstance(r["segmentation"]["counts"], str)
        np.testing.assert_array_equal(coco_mask.decode(r["segmentation"]), (probs >= 0.5).numpy())
    with pytest.raises(ValueError, match="label_to_cat_id"):
        to_coco_results([pred], [3], label_to_cat_id={1: 11})


def test_format_table():
    table = format_table(coco_evaluate([HAND_PRED], [HAND_GT]))
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].split() == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert lines[1].split()[0] == "bbox" and lines[2].split()[0] == "segm"
    assert lines[1].split()[2] == f"{HAND_COCO_AP:.3f}"
    assert lines[1].split()[-1] == "-"  # APl undefined
    assert len({len(line) for line in lines}) == 1


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="predictions and targets"):
        coco_evaluate([HAND_PRED], [HAND_GT, HAND_GT])
    with pytest.raises(ValueError, match=r"predictions\[0\]\['labels'\]"):
        mean_voc_ap([{"boxes": HAND_PRED["boxes"], "scores": HAND_PRED["scores"]}], [HAND_GT])
    bad = dict(HAND_PRED, masks=HAND_PRED["masks"][:, :, :20])
    with pytest.raises(ValueError, match=r"predictions\[0\]\['masks'\]"):
        coco_evaluate([bad], [HAND_GT])
    with pytest.raises(ValueError, match="pred_labels"):
        compute_voc_ap(
            HAND_GT["boxes"], HAND_GT["labels"], HAND_GT["masks"],
            HAND_PRED["boxes"], HAND_PRED["labels"].float(), HAND_PRED["scores"], HAND_PRED["masks"],
        )  # fmt: skip
    with pytest.raises(ValueError, match="gt_masks"):
        compute_voc_ap(
            HAND_GT["boxes"], HAND_GT["labels"], None,
            HAND_PRED["boxes"], HAND_PRED["labels"], HAND_PRED["scores"], HAND_PRED["masks"],
        )  # fmt: skip
    with pytest.raises(ValueError, match="iou_threshold"):
        mean_voc_ap([HAND_PRED], [HAND_GT], iou_threshold=1.5)
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate([HAND_PRED], [HAND_GT], iou_types=("keypoints",))
    with pytest.raises(ValueError, match="image_id"):
        to_coco_gt([dict(HAND_GT, image_id=1), dict(HAND_GT, image_id=1)])
    with pytest.raises(ValueError, match="image_sizes"):
        to_coco_gt([{"boxes": HAND_GT["boxes"], "labels": HAND_GT["labels"]}], image_sizes=[(H, W), (H, W)])
