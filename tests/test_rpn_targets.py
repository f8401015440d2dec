"""Tests for mrcnn_edu.rpn_targets: a hand-labelled case, properties checked against a numpy IoU, crowds."""

import math

import numpy as np
import pytest
import torch

from mrcnn_edu.anchors import image_anchors
from mrcnn_edu.boxes import decode_deltas
from mrcnn_edu.rpn_targets import rpn_targets, rpn_targets_batch


def np_iou(a, b):
    """Independent IoU reference: [N, 4] x [M, 4] -> [N, M], float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


# --- a tiny case labelled by hand ------------------------------------------------------------------------

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [0.0, 20.0, 10.0, 40.0]])
ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],  # 0: IoU 1 with GT0 -> positive
    [1.0, 0.0, 11.0, 10.0],  # 1: GT0 90/110 = 0.82 -> positive
    [20.0, 0.0, 30.0, 12.0],  # 2: GT1 100/120 = 0.83 -> positive
    [0.0, 20.0, 10.0, 30.0],  # 3: GT2 100/200 = 0.5 -> ignored (GT2 has a better anchor: 4)
    [0.0, 25.0, 10.0, 45.0],  # 4: GT2 150/250 = 0.6 -> positive only as GT2's best anchor
    [50.0, 0.0, 60.0, 10.0],  # 5: no overlap -> negative
    [5.0, 0.0, 15.0, 10.0],  # 6: GT0 50/150 = 0.33 -> ignored
    [12.0, 0.0, 22.0, 10.0],  # 7: GT1 20/180 = 0.11 -> negative
    [0.0, 0.0, 20.0, 20.0],  # 8: GT0 100/400 = 0.25 -> negative
])


def test_hand_labelled_case():
    t = rpn_targets(ANCHORS, GT)
    assert t["labels_before_sampling"].tolist() == [1, 1, 1, -1, 1, 0, -1, 0, 0]
    # fewer candidates than num_samples: everything is sampled
    assert t["labels"].tolist() == [1, 1, 1, -1, 1, 0, -1, 0, 0]
    assert t["matched_gt"].tolist() == [0, 0, 1, -1, 2, -1, -1, -1, -1]
    expected = torch.zeros(9, 4)
    expected[1] = torch.tensor([-0.1, 0.0, 0.0, 0.0])  # centre 6 -> 5, width 10
    expected[2] = torch.tensor([0.0, -1 / 12, 0.0, math.log(10 / 12)])  # centre y 6 -> 5, height 12 -> 10
    expected[4] = torch.tensor([0.0, -0.25, 0.0, 0.0])  # centre y 35 -> 30, height 20
    torch.testing.assert_close(t["deltas"], expected)


def test_hand_labelled_case_without_low_quality_matches():
    t = rpn_targets(ANCHORS, GT, allow_low_quality=False)
    assert t["labels"].tolist() == [1, 1, 1, -1, -1, 0, -1, 0, 0]  # anchor 4 (IoU 0.6) is now ignored


def test_hand_labelled_case_matterport_weights():
    t = rpn_targets(ANCHORS, GT, weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(t["deltas"][2], torch.tensor([0.0, -10 / 12, 0.0, 5 * math.log(10 / 12)]))


def test_hand_labelled_case_with_crowd():
    # GT3 is a crowd around anchor 5 (IoU 100/196): anchor 5 stops being a negative, the others are unchanged
    gt = torch.cat([GT, torch.tensor([[48.0, 0.0, 62.0, 10.0]])])
    crowd = torch.tensor([False, False, False, True])
    t = rpn_targets(ANCHORS, gt, crowd)
    assert t["labels"].tolist() == [1, 1, 1, -1, 1, -1, -1, 0, 0]
    # a crowd at x 21.9..60: anchor 7 (x 12..22) now overlaps it (IoU 1/480 = 0.002) and is ignored
    gt[3] = torch.tensor([21.9, 0.0, 60.0, 10.0])
    t = rpn_targets(ANCHORS, gt, crowd)
    assert t["labels"][7] == -1
    assert (t["matched_gt"] != 3).all()


def test_ties_for_a_gt_best_are_all_positive():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([[2.0, 0.0, 12.0, 10.0], [-2.0, 0.0, 8.0, 10.0], [0.0, 0.0, 10.0, 30.0]])
    # IoU 80/120 = 0.67 for the first two (a tie, both the GT's best), 100/300 = 0.33 for the third
    t = rpn_targets(anchors, gt)
    assert t["labels"].tolist() == [1, 1, -1]
    assert t["matched_gt"].tolist() == [0, 0, -1]


def test_straddling_anchors_ignored_with_allowed_border():
    # image 40 high, 64 wide: anchor 4 (y2 = 45) crosses the border; GT2's best inside anchor is then 3
    t = rpn_targets(ANCHORS, GT, image_size=(40, 64), allowed_border=0.0)
    assert t["labels"].tolist() == [1, 1, 1, 1, -1, 0, -1, 0, 0]
    assert t["matched_gt"].tolist() == [0, 0, 1, 2, -1, -1, -1, -1, -1]
    # a 5-pixel allowance lets it back in
    t = rpn_targets(ANCHORS, GT, image_size=(40, 64), allowed_border=5.0)
    assert t["labels"].tolist() == [1, 1, 1, -1, 1, 0, -1, 0, 0]


# --- properties on a realistic anchor set ----------------------------------------------------------------


def _scene(seed=0, num_gt=6, size=256):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_gt, 2, generator=g) * (size - 80)
    wh = 12 + torch.rand(num_gt, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + wh], dim=1)
    # one thin box: no anchor of ratio 0.5..2 reaches IoU 0.7 with it
    boxes[0] = torch.tensor([30.0, 40.0, 130.0, 52.0])
    return boxes


ANCHORS_256, _ = image_anchors((256, 256))  # 16,368 anchors


def _check_properties(t, anchors, gt, crowd, weights=(1.0, 1.0, 1.0, 1.0)):
    labels, before, matched = t["labels"], t["labels_before_sampling"], t["matched_gt"]
    objects = np.flatnonzero(~crowd.numpy())
    iou = np_iou(gt[objects], anchors)  # [G_objects, N]
    best = iou.max(axis=0) if len(objects) else np.zeros(len(anchors))
    # sampling limits
    assert (labels >= 0).sum() <= 256 and (labels == 1).sum() <= 128
    # sampled labels are a subset of the candidates with the same value
    sampled = labels >= 0
    assert torch.equal(labels[sampled], before[sampled])
    # every non-crowd GT keeps at least one positive among its highest-IoU anchors
    for g in range(len(objects)):
        tops = np.flatnonzero(np.isclose(iou[g], iou[g].max(), rtol=0, atol=1e-6))
        assert (before[tops] == 1).any(), g
    # positives: IoU >= 0.7, or the best anchor of some GT
    pos = torch.nonzero(before == 1).flatten().numpy()
    is_a_best = np.isclose(iou[:, pos], iou.max(axis=1, keepdims=True), rtol=0, atol=1e-6).any(axis=0)
    assert np.all((best[pos] >= 0.7 - 1e-6) | is_a_best)
    # negatives: below 0.3 with every GT, and not on a crowd
    neg = torch.nonzero(before == 0).flatten().numpy()
    assert np.all(best[neg] < 0.3)
    if crowd.any():
        assert np.all(np_iou(gt[crowd], anchors)[:, neg].max(axis=0) < 0.001)
    # matched GT: the anchor's own best non-crowd GT, only at sampled positives
    sp = torch.nonzero(labels == 1).flatten()
    assert torch.equal(matched >= 0, labels == 1)
    rows = np.searchsorted(objects, matched[sp].numpy())  # matched GT index -> row of iou
    assert np.allclose(iou[rows, sp.numpy()], best[sp.numpy()], atol=1e-6)
    # deltas decode back to the matched boxes; zero elsewhere
    decoded = decode_deltas(t["deltas"][sp], anchors[sp], weights)
    torch.testing.assert_close(decoded, gt[matched[sp]], atol=1e-4, rtol=0)
    assert (t["deltas"][labels != 1] == 0).all()


def test_properties_realistic_scene():
    gt = _scene()
    crowd = torch.zeros(len(gt), dtype=torch.bool)
    assert np_iou(gt[:1], ANCHORS_256).max() < 0.7  # the thin box really needs a low-quality match
    t = rpn_targets(ANCHORS_256, gt, generator=torch.Generator().manual_seed(1))
    _check_properties(t, ANCHORS_256, gt, crowd)
    # few positives here, so all are kept and negatives fill up to 256
    assert torch.equal(t["labels"] == 1, t["labels_before_sampling"] == 1)
    assert (t["labels"] >= 0).sum() == 256


def test_properties_many_objects_matterport_weights():
    gt = _scene(seed=3, num_gt=40)
    crowd = torch.zeros(len(gt), dtype=torch.bool)
    weights = (10.0, 10.0, 5.0, 5.0)
    t = rpn_targets(ANCHORS_256, gt, weights=weights, generator=torch.Generator().manual_seed(2))
    _check_properties(t, ANCHORS_256, gt, crowd, weights)
    assert (t["labels_before_sampling"] == 1).sum() > 128  # enough to hit the cap
    assert (t["labels"] == 1).sum() == 128 and (t["labels"] == 0).sum() == 128


def test_properties_with_crowds():
    gt = _scene(seed=5, num_gt=8)
    crowd = torch.zeros(len(gt), dtype=torch.bool)
    crowd[[2, 5]] = True
    t = rpn_targets(ANCHORS_256, gt, crowd, generator=torch.Generator().manual_seed(0))
    _check_properties(t, ANCHORS_256, gt, crowd)
    assert not torch.isin(t["matched_gt"], torch.tensor([2, 5])).any()
    # without the crowd flag the same boxes are ordinary objects with positives of their own
    plain = rpn_targets(ANCHORS_256, gt, num_samples=100_000, positive_fraction=1.0)
    assert torch.isin(plain["matched_gt"], torch.tensor([2, 5])).any()


def test_only_crowds_gives_no_positives():
    gt = _scene(seed=7, num_gt=3)
    t = rpn_targets(ANCHORS_256, gt, torch.ones(3, dtype=torch.bool))
    assert (t["labels"] == 1).sum() == 0 and (t["labels"] == 0).sum() == 256
    assert np.all(np_iou(gt, ANCHORS_256)[:, (t["labels"] == 0).numpy()] < 0.001)


def test_no_gt_gives_only_negatives():
    t = rpn_targets(ANCHORS_256, torch.zeros(0, 4))
    assert (t["labels"] == 1).sum() == 0 and (t["labels"] == 0).sum() == 256
    assert (t["labels_before_sampling"] == 0).all()
    assert (t["matched_gt"] == -1).all() and (t["deltas"] == 0).all()
    assert t["deltas"].shape == (ANCHORS_256.shape[0], 4)


def test_no_anchors_gives_empty_outputs():
    t = rpn_targets(torch.zeros(0, 4), GT)
    assert t["labels"].shape == (0,) and t["matched_gt"].shape == (0,) and t["deltas"].shape == (0, 4)


def test_reproducible_with_a_seeded_generator():
    gt = _scene(seed=11)
    a = rpn_targets(ANCHORS_256, gt, generator=torch.Generator().manual_seed(42))
    b = rpn_targets(ANCHORS_256, gt, generator=torch.Generator().manual_seed(42))
    c = rpn_targets(ANCHORS_256, gt, generator=torch.Generator().manual_seed(43))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["labels"], c["labels"])  # 256 of ~16k negatives: a repeat is impossible


def test_batch_stacks_per_image_results():
    gts = [_scene(seed=1), torch.zeros(0, 4), _scene(seed=2, num_gt=3)]
    crowds = [None, None, torch.tensor([False, True, False])]
    batch = rpn_targets_batch(ANCHORS_256, gts, crowds, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    singles = [rpn_targets(ANCHORS_256, g, c, generator=gen) for g, c in zip(gts, crowds, strict=True)]
    n = ANCHORS_256.shape[0]
    assert batch["labels"].shape == (3, n) and batch["deltas"].shape == (3, n, 4)
    for key in batch:
        assert torch.equal(batch[key], torch.stack([s[key] for s in singles])), key
    empty = rpn_targets_batch(ANCHORS_256, [])
    assert empty["labels"].shape == (0, n) and empty["deltas"].shape == (0, n, 4)


@pytest.mark.parametrize(
    "options",
    [dict(allow_low_quality=False, positive_iou=0.5), dict(image_size=(200, 230), allowed_border=0)],
)
def test_batch_stacks_per_image_results_with_options(options):
    gts = [_scene(seed=3), _scene(seed=4, num_gt=1), torch.zeros(0, 4)]
    crowds = [torch.tensor([True, False, False, False, False, False]), None, None]
    batch = rpn_targets_batch(ANCHORS_256, gts, crowds, generator=torch.Generator().manual_seed(5), **options)
    gen = torch.Generator().manual_seed(5)
    singles = [
        rpn_targets(ANCHORS_256, g, c, generator=gen, **options) for g, c in zip(gts, crowds, strict=True)
    ]
    for key in batch:
        assert torch.equal(batch[key], torch.stack([s[key] for s in singles])), key
    assert (batch["labels"] == 1).any() and (batch["labels"][2] == 0).any()


def test_float64_and_mixed_dtypes():
    t = rpn_targets(ANCHORS.double(), GT)  # float32 GT is cast to the anchors' dtype
    assert t["deltas"].dtype == torch.float64
    assert t["labels"].tolist() == [1, 1, 1, -1, 1, 0, -1, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(anchors=torch.zeros(4, 3)), "anchors"),
        (dict(anchors=torch.zeros(4, 4, dtype=torch.long)), "anchors"),
        (dict(gt_boxes=torch.zeros(3)), "gt_boxes"),
        (dict(gt_is_crowd=torch.zeros(2, dtype=torch.bool)), "gt_is_crowd"),
        (dict(gt_is_crowd=torch.zeros(3)), "gt_is_crowd"),
        (dict(positive_iou=0.3, negative_iou=0.7), "negative_iou"),
        (dict(num_samples=-1), "num_samples"),
        (dict(positive_fraction=0.0), "positive_fraction"),
        (dict(weights=(1.0, 1.0)), "weights"),
        (dict(allowed_border=0.0), "image_size"),
        (dict(allowed_border=0.0, image_size=(10,)), "image_size"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(anchors=ANCHORS, gt_boxes=GT) | kwargs
    with pytest.raises(ValueError, match=name):
        rpn_targets(**args)


def test_batch_bad_input():
    with pytest.raises(ValueError, match="gt_is_crowd"):
        rpn_targets_batch(ANCHORS, [GT, GT], [None])
    with pytest.raises(ValueError, match="gt_boxes"):
        rpn_targets_batch(ANCHORS, GT)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    gt = _scene(seed=4, num_gt=20)
    crowd = torch.zeros(len(gt), dtype=torch.bool)
    crowd[3] = True
    cpu = rpn_targets(ANCHORS_256, gt, crowd, generator=torch.Generator().manual_seed(5))
    gpu = rpn_targets(ANCHORS_256.cuda(), gt.cuda(), crowd.cuda(), generator=torch.Generator().manual_seed(5))
    for key in cpu:
        assert gpu[key].device.type == "cuda"
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="gt_boxes"):
        rpn_targets(ANCHORS_256.cuda(), gt)


def test_matches_torchvision_rpn_assignment(torchvision_reference):
    from torchvision.models.detection.rpn import RegionProposalNetwork

    gt = _scene(seed=6, num_gt=12)
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, dict(training=1, testing=1),
                                dict(training=1, testing=1), 0.7)
    tv_labels, tv_matched_boxes = rpn.assign_targets_to_anchors([ANCHORS_256], [{"boxes": gt}])
    t = rpn_targets(ANCHORS_256, gt)
    # torchvision: 1 positive, 0 negative, -1 between thresholds (before its sampler)
    assert torch.equal(t["labels_before_sampling"], tv_labels[0].long())
    pos = torch.nonzero(t["labels"] == 1).flatten()
    assert torch.equal(gt[t["matched_gt"][pos]], tv_matched_boxes[0][pos])
