"""Tests for mrcnn_edu.losses: hand-computed values, selection of elements, gradients and empty cases.

References: torch.nn.functional applied to elements selected by hand, and closed-form smooth L1 / BCE values.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrcnn_edu.losses import box_loss, classifier_loss, mask_loss, rpn_box_loss, rpn_objectness_loss


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- RPN objectness


def test_rpn_objectness_hand_computed():
    # Logit 0 costs log 2 whatever the label; logit log(3) on a positive costs -log(3/4).
    logits = torch.tensor([[0.0, math.log(3.0), 5.0]])
    labels = torch.tensor([[0, 1, -1]])
    expected = (math.log(2.0) - math.log(0.75)) / 2
    assert rpn_objectness_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_rpn_objectness_matches_functional_on_selected_anchors():
    logits = torch.randn(2, 10, generator=_gen(0))
    labels = torch.randint(-1, 2, (2, 10), generator=_gen(1))
    sel = labels >= 0
    expected = F.binary_cross_entropy_with_logits(logits[sel], labels[sel].float())
    assert torch.allclose(rpn_objectness_loss(logits, labels), expected)


def test_rpn_objectness_ignored_anchors_do_not_matter():
    logits = torch.randn(2, 10, generator=_gen(2), requires_grad=True)
    labels = torch.tensor([[1, -1, 0, 0, -1, 1, -1, 0, 0, 0], [-1, -1, 0, 1, 0, 0, -1, -1, 0, 1]])
    loss = rpn_objectness_loss(logits, labels)
    loss.backward()
    assert torch.all(logits.grad[labels < 0] == 0) and torch.all(logits.grad[labels >= 0] != 0)
    changed = logits.detach().clone()
    changed[labels < 0] = 1e4  # ignored anchors may hold anything, even extreme values
    assert torch.allclose(rpn_objectness_loss(changed, labels), loss)


def test_rpn_objectness_confident_and_right_is_zero():
    labels = torch.tensor([[1, 0, 1, -1]])
    logits = torch.tensor([[60.0, -60.0, 60.0, 0.0]])
    assert rpn_objectness_loss(logits, labels).item() < 1e-20


def test_rpn_objectness_nothing_sampled_is_zero_with_graph():
    logits = torch.randn(2, 5, requires_grad=True)
    loss = rpn_objectness_loss(logits, torch.full((2, 5), -1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)
    assert rpn_objectness_loss(torch.zeros(0, 7), torch.zeros(0, 7, dtype=torch.long)).item() == 0.0


# ---------------------------------------------------------------- RPN box


def test_rpn_box_loss_hand_computed_and_normalizations():
    # Errors 0.05 (quadratic zone for beta = 1/9: 0.5 * 0.05**2 / (1/9)) and 1.0 (linear: 1 - 0.5 / 9).
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 0] = torch.tensor([0.05, 0.0, 0.0, 1.0])
    deltas[0, 2] = 7.0  # a negative anchor's deltas: never part of the loss
    targets = torch.zeros(1, 3, 4)
    labels = torch.tensor([[1, 0, 0]])
    total = 0.5 * 0.05**2 * 9 + (1 - 0.5 / 9)
    for normalize, count in (("sampled", 3), ("positives", 1), ("elements", 4)):
        loss = rpn_box_loss(deltas, targets, labels, normalize=normalize)
        assert loss.item() == pytest.approx(total / count, rel=1e-6)
    # matterport: beta 1, mean over the positives' 4 coordinates.
    mp = (0.5 * 0.05**2 + 0.5 * 1.0**2) / 4
    loss = rpn_box_loss(deltas, targets, labels, beta=1.0, normalize="elements")
    assert loss.item() == pytest.approx(mp, rel=1e-6)


def test_rpn_box_loss_matches_functional_and_ignores_non_positives():
    deltas = torch.randn(2, 8, 4, generator=_gen(3), requires_grad=True)
    targets = torch.randn(2, 8, 4, generator=_gen(4))
    labels = torch.randint(-1, 2, (2, 8), generator=_gen(5))
    labels[0, 0] = 1
    pos = labels == 1
    expected = F.smooth_l1_loss(deltas[pos], targets[pos], beta=1 / 9, reduction="sum") / (labels >= 0).sum()
    loss = rpn_box_loss(deltas, targets, labels)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.all(deltas.grad[~pos] == 0)
    assert torch.count_nonzero(deltas.grad[pos]) > 0
    moved = targets.clone()
    moved[~pos] += 100.0  # targets of non-positive anchors are ignored
    assert torch.allclose(rpn_box_loss(deltas, moved, labels), loss)


def test_rpn_box_loss_zero_when_equal_and_when_no_positive():
    deltas = torch.randn(2, 6, 4, generator=_gen(6), requires_grad=True)
    labels = torch.tensor([[1, 0, -1, 1, 0, 0], [0, 0, 1, -1, -1, 0]])
    assert rpn_box_loss(deltas, deltas.detach().clone(), labels).item() == 0.0
    empty = rpn_box_loss(deltas, torch.zeros(2, 6, 4), torch.zeros(2, 6, dtype=torch.long))
    assert empty.item() == 0.0 and not torch.isnan(empty)
    empty.backward()
    assert torch.all(deltas.grad == 0)


def test_rpn_box_loss_bad_input_names_argument():
    d = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match="target_deltas"):
        rpn_box_loss(d, torch.zeros(1, 4, 4), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        rpn_box_loss(d, d, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="normalize"):
        rpn_box_loss(d, d, torch.ones(1, 3, dtype=torch.long), normalize="mean")
    with pytest.raises(ValueError, match="labels"):
        rpn_objectness_loss(torch.zeros(1, 3), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        rpn_objectness_loss(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


# ---------------------------------------------------------------- classifier


def test_classifier_loss_hand_computed_and_functional():
    # Uniform logits over 4 classes: log 4 per ROI.
    assert classifier_loss(torch.zeros(3, 4), torch.tensor([0, 2, 3])).item() == pytest.approx(math.log(4))
    logits = torch.randn(7, 5, generator=_gen(7))
    labels = torch.tensor([0, 1, 4, 0, 0, 2, 3])
    assert torch.allclose(classifier_loss(logits, labels), F.cross_entropy(logits, labels))


def test_classifier_loss_confident_and_right_is_zero_and_empty_is_zero():
    labels = torch.tensor([0, 3, 1])
    logits = F.one_hot(labels, 4).float() * 100
    assert classifier_loss(logits, labels).item() < 1e-30
    empty_logits = torch.zeros(0, 4, requires_grad=True)
    loss = classifier_loss(empty_logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="labels"):
        classifier_loss(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------- box head


def _box_case():
    g = _gen(8)
    deltas = torch.randn(6, 4, 4, generator=g, requires_grad=True)  # R = 6, K + 1 = 4
    labels = torch.tensor([2, 0, 1, 0, 3, 0])
    targets = torch.randn(6, 4, generator=g)
    targets[labels == 0] = 0
    return deltas, labels, targets


def test_box_loss_uses_only_gt_class_deltas():
    deltas, labels, targets = _box_case()
    picked = torch.stack([deltas[0, 2], deltas[2, 1], deltas[4, 3]])
    expected = F.smooth_l1_loss(picked, targets[[0, 2, 4]], beta=1 / 9, reduction="sum")
    assert torch.allclose(box_loss(deltas, labels, targets), expected / 6)
    assert torch.allclose(box_loss(deltas, labels, targets, normalize="positives"), expected / 3)
    assert torch.allclose(box_loss(deltas, labels, targets, normalize="elements"), expected / 12)
    loss = box_loss(deltas, labels, targets)
    loss.backward()
    grad_mask = torch.zeros(6, 4, dtype=torch.bool)
    grad_mask[[0, 2, 4], [2, 1, 3]] = True
    assert torch.all(deltas.grad[~grad_mask] == 0)  # other classes and negative ROIs: no gradient
    assert torch.all(deltas.grad[grad_mask].abs().sum(-1) > 0)


def test_box_loss_flat_layout_equals_3d_layout():
    deltas, labels, targets = _box_case()
    flat = deltas.detach().reshape(6, 16)
    assert torch.allclose(box_loss(flat, labels, targets), box_loss(deltas.detach(), labels, targets))


def test_box_loss_zero_when_equal_and_when_no_positive():
    deltas, labels, targets = _box_case()
    perfect = deltas.detach().clone()
    perfect[[0, 2, 4], [2, 1, 3]] = targets[[0, 2, 4]]
    assert box_loss(perfect, labels, targets).item() == 0.0
    loss = box_loss(deltas, torch.zeros(6, dtype=torch.long), targets)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(deltas.grad == 0)
    assert box_loss(torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4)).item() == 0.0


def test_box_loss_bad_input_names_argument():
    deltas, labels, targets = _box_case()
    with pytest.raises(ValueError, match="box_deltas"):
        box_loss(torch.zeros(6, 10), labels, targets)
    with pytest.raises(ValueError, match="box_targets"):
        box_loss(deltas, labels, targets[:5])
    with pytest.raises(ValueError, match="labels"):
        box_loss(deltas, torch.tensor([2, 0, 1, 0, 4, 0]), targets)  # class 4 of 4 (0..3)
    with pytest.raises(ValueError, match="labels"):
        box_loss(deltas, labels.float(), targets)


# ---------------------------------------------------------------- mask head


def _mask_case():
    g = _gen(9)
    logits = torch.randn(5, 3, 4, 4, generator=g, requires_grad=True)  # R = 5, K + 1 = 3, M = 4
    labels = torch.tensor([1, 2, 0, 2, 0])
    targets = (torch.rand(3, 4, 4, generator=g) > 0.5).float()
    return logits, labels, targets


def test_mask_loss_uses_only_gt_class_channel_of_positives():
    logits, labels, targets = _mask_case()
    picked = torch.stack([logits[0, 1], logits[1, 2], logits[3, 2]])
    expected = F.binary_cross_entropy_with_logits(picked, targets)  # mean over 3 * 16 pixels
    loss = mask_loss(logits, labels, targets)
    assert torch.allclose(loss, expected)
    loss.backward()
    grad_mask = torch.zeros(5, 3, dtype=torch.bool)
    grad_mask[[0, 1, 3], [1, 2, 2]] = True
    assert torch.all(logits.grad[~grad_mask] == 0)
    assert torch.all(logits.grad[grad_mask] != 0)


def test_mask_loss_positive_rows_only_and_class_agnostic():
    logits, labels, targets = _mask_case()
    full = mask_loss(logits.detach(), labels, targets)
    rows = torch.tensor([0, 1, 3])
    assert torch.allclose(mask_loss(logits.detach()[rows], labels[rows], targets), full)
    agnostic = logits.detach()[:, 1:2]
    expected = F.binary_cross_entropy_with_logits(agnostic[rows, 0], targets)
    assert torch.allclose(mask_loss(agnostic, labels, targets), expected)


def test_mask_loss_soft_targets_hand_computed_and_confident():
    # Logit 0 against any target costs log 2 per pixel.
    labels = torch.tensor([1])
    soft = torch.rand(1, 4, 4, generator=_gen(10))
    assert mask_loss(torch.zeros(1, 2, 4, 4), labels, soft).item() == pytest.approx(math.log(2.0), rel=1e-6)
    binary = (soft > 0.5).float()
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1] = (binary * 2 - 1) * 60
    assert mask_loss(logits, labels, binary).item() < 1e-20


def test_mask_loss_no_positive_is_zero_with_graph():
    logits = torch.randn(3, 3, 4, 4, requires_grad=True)
    loss = mask_loss(logits, torch.zeros(3, dtype=torch.long), torch.zeros(0, 4, 4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_mask_loss_bad_input_names_argument():
    logits, labels, targets = _mask_case()
    with pytest.raises(ValueError, match="mask_targets"):
        mask_loss(logits, labels, targets[:2])
    with pytest.raises(ValueError, match="mask_targets"):
        mask_loss(logits, labels, torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="labels"):
        mask_loss(logits, labels[:4], targets)
    with pytest.raises(ValueError, match="mask_logits"):
        mask_loss(logits[0], labels, targets)


@pytest.mark.parametrize("layout", ["flat", "per_class"])
def test_box_loss_with_no_sampled_roi_at_all(layout):
    # An image batch can sample zero ROIs (matterport's ratio mode with no positive): R = 0.
    deltas = torch.zeros((0, 4 * 4) if layout == "flat" else (0, 4, 4), requires_grad=True)
    loss = box_loss(deltas, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and deltas.grad is not None


# ---------------------------------------------------------------- labels and targets out of range


def test_classifier_loss_rejects_labels_out_of_range_or_not_int64():
    logits = torch.randn(4, 3)
    for bad in (torch.tensor([0, 1, 3, 0]), torch.tensor([0, -1, 2, 0])):
        with pytest.raises(ValueError, match="labels.*0.*3"):
            classifier_loss(logits, bad)
    with pytest.raises(ValueError, match="labels.*int64"):
        classifier_loss(logits, torch.tensor([0, 1, 2, 0], dtype=torch.int32))
    assert classifier_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)).item() == 0.0


def test_rpn_objectness_loss_rejects_labels_outside_minus_one_zero_one():
    logits = torch.zeros(1, 4)
    for bad in ([[0, 1, 2, -1]], [[0, 1, -2, -1]]):
        with pytest.raises(ValueError, match="labels"):
            rpn_objectness_loss(logits, torch.tensor(bad))


def test_mask_loss_rejects_targets_outside_zero_one():
    logits, labels, targets = _mask_case()
    with pytest.raises(ValueError, match=r"mask_targets.*\[0, 1\]"):
        mask_loss(logits, labels, targets * 255)
    with pytest.raises(ValueError, match="mask_targets"):
        mask_loss(logits, labels, torch.full_like(targets, float("nan")))


@pytest.mark.parametrize(
    ("loss", "args"),
    [
        (rpn_objectness_loss, (torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long, device="meta"))),
        (classifier_loss, (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long, device="meta"))),
        (box_loss, (torch.zeros(2, 3, 4), torch.zeros(2).long(), torch.zeros(2, 4, device="meta"))),
        (rpn_box_loss, (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4, device="meta"), torch.zeros(1, 3).long())),
        (mask_loss, (torch.zeros(1, 2, 3, 3), torch.ones(1).long(), torch.zeros(1, 3, 3, device="meta"))),
    ],
)
def test_losses_reject_tensors_on_different_devices(loss, args):
    with pytest.raises(ValueError, match="device"):
        loss(*args)
