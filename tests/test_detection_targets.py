"""Tests for mrcnn_edu.detection_targets: sampling counts, IoU rules, box/mask targets, crowd, seeding.

References: IoU recomputed with box_iou, deltas inverted with decode_deltas, hand-built masks whose targets
are known exactly (all ones, half ones), and the matterport/torchvision counting rules written out.
"""

from __future__ import annotations

import pytest
import torch

from mrcnn_edu.boxes import box_iou, decode_deltas
from mrcnn_edu.detection_targets import detection_targets, detection_targets_batch, mask_targets

H, W = 120, 160
WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _scene(seed: int = 0, num_random: int = 300):
    """Three rectangular objects (masks fill their boxes); proposals: jittered GT boxes plus random boxes."""
    g = torch.Generator().manual_seed(seed)
    gt_boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 20.0, 130.0, 70.0], [30.0, 75.0, 90.0, 115.0]])
    gt_labels = torch.tensor([3, 1, 2])
    gt_masks = torch.zeros(3, H, W, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(gt_boxes.long().tolist()):
        gt_masks[i, y1:y2, x1:x2] = 1
    size = torch.cat((gt_boxes[:, 2:] - gt_boxes[:, :2],) * 2, dim=1)
    jittered = gt_boxes.repeat(40, 1) + 0.15 * size.repeat(40, 1) * torch.randn(120, 4, generator=g)
    xy = torch.rand(num_random, 2, generator=g) * torch.tensor([W - 20.0, H - 20.0])
    wh = 8 + torch.rand(num_random, 2, generator=g) * 60
    proposals = torch.cat((jittered, torch.cat((xy, xy + wh), dim=1)))
    proposals = proposals[(proposals[:, 2:] - proposals[:, :2]).min(dim=1).values > 2]
    return proposals, gt_boxes, gt_labels, gt_masks


def _num_pos(out) -> int:
    return int((out["labels"] > 0).sum())


def test_counts_follow_matterport_rule():
    proposals, gt_boxes, gt_labels, gt_masks = _scene()
    for num_samples in (200, 30):
        out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=num_samples,
                                generator=torch.Generator().manual_seed(0))
        r, p = out["rois"].shape[0], _num_pos(out)
        assert 0 < p <= int(num_samples * 0.33)
        assert r - p == int(p / 0.33) - p  # matterport keeps the positive ratio
        assert r <= num_samples
        assert torch.all(out["labels"][:p] > 0) and torch.all(out["labels"][p:] == 0)  # positives first
        for key, shape in (("box_targets", (r, 4)), ("matched_gt", (r,)), ("mask_targets", (p, 28, 28))):
            assert out[key].shape == shape
        assert out["labels"].dtype == torch.long and out["matched_gt"].dtype == torch.long


def test_counts_follow_torchvision_rule():
    proposals, gt_boxes, gt_labels, gt_masks = _scene()
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=128, positive_fraction=0.25,
                            fill_with_negatives=True, add_gt_boxes=True, binarize_masks=False)
    assert out["rois"].shape[0] == 128 and _num_pos(out) == 32


def test_between_thresholds_is_not_sampled():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(6)
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, negative_iou=0.3, num_samples=2000,
                            positive_fraction=1.0, fill_with_negatives=True)
    best = box_iou(out["rois"], gt_boxes).max(dim=1).values
    p = _num_pos(out)
    assert torch.all(best[:p] >= 0.5) and torch.all(best[p:] < 0.3)
    all_best = box_iou(proposals, gt_boxes).max(dim=1).values
    assert out["rois"].shape[0] == int(((all_best >= 0.5) | (all_best < 0.3)).sum())


def test_positive_and_negative_iou_rules():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(1)
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks)
    p = _num_pos(out)
    iou = box_iou(out["rois"], gt_boxes)  # [R, G]
    pos_iou = iou[:p].gather(1, out["matched_gt"][:p, None])[:, 0]
    assert torch.all(pos_iou >= 0.5)
    assert torch.equal(out["matched_gt"][:p], iou[:p].argmax(dim=1))  # matched to the best GT
    assert torch.equal(out["labels"][:p], gt_labels[out["matched_gt"][:p]])
    assert torch.all(iou[p:].max(dim=1).values < 0.5)
    assert torch.all(out["matched_gt"][p:] == -1)
    # Every sampled roi is one of the proposals.
    assert torch.all((out["rois"][:, None] == proposals[None]).all(-1).any(1))


def test_box_targets_decode_to_matched_gt():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(2)
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, weights=WEIGHTS)
    p = _num_pos(out)
    decoded = decode_deltas(out["box_targets"][:p], out["rois"][:p], WEIGHTS)
    assert torch.allclose(decoded, gt_boxes[out["matched_gt"][:p]], atol=1e-3)
    assert torch.all(out["box_targets"][p:] == 0)
    # Other weights scale the targets coordinate-wise.
    same = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, weights=(1.0, 1.0, 1.0, 1.0),
                             generator=torch.Generator().manual_seed(5))
    ref = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, weights=WEIGHTS,
                            generator=torch.Generator().manual_seed(5))
    assert torch.allclose(same["box_targets"] * torch.tensor(WEIGHTS), ref["box_targets"], atol=1e-5)


def test_add_gt_boxes_makes_gt_boxes_positives():
    _, gt_boxes, gt_labels, gt_masks = _scene()
    far = torch.tensor([[0.0, 0.0, 5.0, 5.0], [150.0, 110.0, 158.0, 118.0], [0.0, 100.0, 9.0, 119.0]])
    assert detection_targets(far, gt_boxes, gt_labels, gt_masks)["rois"].shape[0] == 0  # no positive at all
    out = detection_targets(far, gt_boxes, gt_labels, gt_masks, add_gt_boxes=True, fill_with_negatives=True,
                            aligned=True)
    p = _num_pos(out)
    assert p == 3 and out["rois"].shape[0] == 6
    order = out["matched_gt"][:p]
    assert torch.equal(torch.sort(order).values, torch.arange(3))
    assert torch.equal(out["rois"][:p], gt_boxes[order])  # each GT box is its own positive
    assert torch.allclose(out["box_targets"][:p], torch.zeros(p, 4), atol=1e-6)
    assert torch.all(out["mask_targets"] == 1)  # rectangular masks (>= 28 px) cut at their own boxes


@pytest.mark.parametrize("side", [10, 28, 45, 64])
def test_square_mask_cut_at_its_own_box(side):
    box = torch.tensor([[20.0, 30.0, 20.0 + side, 30.0 + side]])
    mask = torch.zeros(1, 100, 100, dtype=torch.bool)
    mask[0, 30 : 30 + side, 20 : 20 + side] = True

    def target(aligned: bool) -> torch.Tensor:
        out = detection_targets(torch.zeros(0, 4), box, torch.tensor([1]), mask, add_gt_boxes=True,
                                aligned=aligned)
        assert out["mask_targets"].shape == (1, 28, 28)
        return out["mask_targets"][0]

    good = target(aligned=True)
    if side >= 28:
        assert torch.all(good == 1)
    else:
        # A box smaller than the grid: the corner cells sample within half a pixel of two object edges, and
        # bilinear interpolation blends in the background twice (0.68 x 0.68 < 0.5).
        corners = torch.zeros(28, 28, dtype=torch.bool)
        corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True
        assert torch.all(good[~corners] == 1) and torch.all(good[corners] == 0)
    # torchvision's aligned=False samples half a pixel right of and below the right place: the first row and
    # column stay inside the object, the last ones drift out of it.
    legacy = target(aligned=False)
    assert torch.all(legacy[:-3, :-3] == 1)
    if side >= 28:
        assert torch.all(legacy[:-1, :-1] == 1)
    else:
        assert torch.all(legacy[-1] == 0) and torch.all(legacy[:, -1] == 0)
        assert legacy.sum() < good.sum()


def test_mask_target_of_roi_twice_as_wide_as_object():
    # The ROI covers the 28x28 object and as much background to its right (IoU 0.5: positive). With
    # aligned=True each target column covers 2 pixels exactly: the left 14 columns are 1, the right 14 are 0.
    gt = torch.tensor([[20.0, 30.0, 48.0, 58.0]])
    mask = torch.zeros(1, 100, 100)
    mask[0, 30:58, 20:48] = 1
    roi = torch.tensor([[20.0, 30.0, 76.0, 58.0]])
    out = detection_targets(roi, gt, torch.tensor([2]), mask, aligned=True, binarize_masks=False)
    assert out["labels"].tolist() == [2]
    target = out["mask_targets"][0]
    assert torch.allclose(target[:, :14], torch.ones(28, 14))
    assert torch.allclose(target[:, 14:], torch.zeros(28, 14))


def test_mask_targets_each_roi_reads_its_own_gt_mask():
    # Two objects; each ROI is its object's box, so its target is all ones; read from the other GT: zeros.
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 0:8, 0:8] = 1
    masks[1, 8:16, 8:16] = 1
    rois = torch.tensor([[0.0, 0, 8, 8], [8.0, 8, 16, 16]])
    out = mask_targets(masks, rois, torch.tensor([0, 1]), mask_size=4, aligned=True)
    assert out.shape == (2, 4, 4) and out.dtype == torch.float32 and bool((out == 1).all())
    swapped = mask_targets(masks, rois, torch.tensor([1, 0]), mask_size=4, aligned=True)
    assert bool((swapped == 0).all())
    assert mask_targets(masks, rois[:0], torch.zeros(0, dtype=torch.long), 5).shape == (0, 5, 5)


def test_soft_and_binarized_mask_targets():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(3)
    gen = dict(generator=torch.Generator().manual_seed(1))
    soft = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, binarize_masks=False, **gen)
    gen = dict(generator=torch.Generator().manual_seed(1))
    hard = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, **gen)
    assert torch.equal(soft["rois"], hard["rois"])
    s = soft["mask_targets"]
    assert s.min() >= 0 and s.max() <= 1 and torch.any((s > 0.01) & (s < 0.99))  # jittered rois: soft edges
    assert torch.equal(hard["mask_targets"], (s >= 0.5).float())
    assert s.dtype == torch.float32 and hard["mask_targets"].dtype == torch.float32


def test_no_gt_gives_only_negatives():
    proposals, _, _, _ = _scene()
    none = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, H, W, dtype=torch.bool))
    out = detection_targets(proposals, *none, num_samples=64, fill_with_negatives=True)
    assert out["rois"].shape == (64, 4)
    assert torch.all(out["labels"] == 0) and torch.all(out["matched_gt"] == -1)
    assert torch.all(out["box_targets"] == 0) and out["mask_targets"].shape == (0, 28, 28)
    # matterport's ratio rule takes no negatives when there is no positive.
    assert detection_targets(proposals, *none)["rois"].shape == (0, 4)


def test_empty_proposals_give_empty_outputs():
    _, gt_boxes, gt_labels, gt_masks = _scene()
    out = detection_targets(torch.zeros(0, 4), gt_boxes, gt_labels, gt_masks, mask_size=14)
    assert out["rois"].shape == (0, 4) and out["labels"].shape == (0,) and out["box_targets"].shape == (0, 4)
    assert out["matched_gt"].shape == (0,) and out["mask_targets"].shape == (0, 14, 14)


def test_crowd_boxes_are_never_matched_nor_negatives():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(4)
    crowd = torch.tensor([False, True, False])
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd=crowd, add_gt_boxes=True,
                            fill_with_negatives=True, num_samples=1000, positive_fraction=1.0)
    p = _num_pos(out)
    assert p > 0 and not torch.any(out["matched_gt"] == 1)
    assert not torch.any((out["rois"] == gt_boxes[1]).all(dim=1))  # the crowd box was not added
    crowd_iou = box_iou(out["rois"], gt_boxes[1:2])[:, 0]
    assert torch.all(crowd_iou[p:] < 0.001)  # negatives stay clear of the crowd region
    # Without the crowd flag the proposals on object 1 are positives for it.
    plain = detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=1000,
                              positive_fraction=1.0)
    assert torch.any(plain["matched_gt"] == 1)
    # All proposals were sampled (num_samples is large), so every one is accounted for.
    iou = box_iou(proposals, gt_boxes)
    solid_best = iou[:, [0, 2]].max(dim=1).values
    expected_pos = int((solid_best >= 0.5).sum()) + 2  # + the two added GT boxes
    expected_neg = int(((solid_best < 0.5) & (iou[:, 1] < 0.001)).sum())
    assert (p, out["rois"].shape[0] - p) == (expected_pos, expected_neg)


def test_reproducible_with_generator():
    proposals, gt_boxes, gt_labels, gt_masks = _scene(5)
    def run(seed: int):
        return detection_targets(proposals, gt_boxes, gt_labels, gt_masks,
                                 generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["rois"], c["rois"])


def _batch_scene():
    """Four images: a plain scene, one with a crowd box, one without GT, and a smaller image (masks of
    another size) with fewer proposals."""
    images = [_scene(seed) for seed in (1, 2, 3, 6)]
    proposals, gt_boxes, gt_labels, gt_masks = (list(t) for t in zip(*images, strict=True))
    gt_boxes[2], gt_labels[2], gt_masks[2] = torch.zeros(0, 4), gt_labels[2][:0], gt_masks[2][:0]
    proposals[3], gt_masks[3] = proposals[3][::3], gt_masks[3][:, : H - 20, : W - 10]
    crowd = [None, torch.tensor([False, True, False]), None, None]
    return proposals, gt_boxes, gt_labels, gt_masks, crowd


@pytest.mark.parametrize(
    "options",
    [
        {},  # matterport
        dict(num_samples=512, positive_fraction=0.25, fill_with_negatives=True, add_gt_boxes=True,
             binarize_masks=False),  # torchvision
        dict(num_samples=60, positive_fraction=0.5, positive_iou=0.6, negative_iou=0.3, aligned=True),
    ],
)  # fmt: skip
def test_batch_is_identical_to_image_by_image(options):
    proposals, gt_boxes, gt_labels, gt_masks, crowd = _batch_scene()
    batch = detection_targets_batch(proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd=crowd,
                                    generator=torch.Generator().manual_seed(3), **options)  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    for i, got in enumerate(batch):
        want = detection_targets(proposals[i], gt_boxes[i], gt_labels[i], gt_masks[i], gt_is_crowd=crowd[i],
                                 generator=gen, **options)  # fmt: skip
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (i, key)
    assert _num_pos(batch[0]) > 0 and _num_pos(batch[3]) > 0 and _num_pos(batch[2]) == 0
    assert detection_targets_batch([], [], [], []) == []


def test_no_gradient_reaches_proposals():
    proposals, gt_boxes, gt_labels, gt_masks = _scene()
    proposals.requires_grad_(True)
    out = detection_targets(proposals, gt_boxes, gt_labels, gt_masks)
    assert not any(t.requires_grad for t in out.values())


def test_bad_input_names_argument():
    proposals, gt_boxes, gt_labels, gt_masks = _scene()
    with pytest.raises(ValueError, match="proposals"):
        detection_targets(proposals.long(), gt_boxes, gt_labels, gt_masks)
    with pytest.raises(ValueError, match="gt_boxes"):
        detection_targets(proposals, gt_boxes[:, :3], gt_labels, gt_masks)
    with pytest.raises(ValueError, match="gt_labels"):
        detection_targets(proposals, gt_boxes, torch.tensor([1, 0, 2]), gt_masks)
    with pytest.raises(ValueError, match="gt_labels"):
        detection_targets(proposals, gt_boxes, gt_labels[:2], gt_masks)
    with pytest.raises(ValueError, match="gt_masks"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks[:2])
    with pytest.raises(ValueError, match="gt_masks"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks[:, 0])
    with pytest.raises(ValueError, match="gt_is_crowd"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks, gt_is_crowd=torch.zeros(3))
    with pytest.raises(ValueError, match="num_samples"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=-1)
    with pytest.raises(ValueError, match="mask_size"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks, mask_size=0)
    with pytest.raises(ValueError, match="negative_iou"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks, negative_iou=0.6)
    with pytest.raises(ValueError, match="positive_fraction"):
        detection_targets(proposals, gt_boxes, gt_labels, gt_masks, positive_fraction=0.0)
