"""Tests for mrcnn_edu.heads: RPN head, box head and predictor, mask head."""

from __future__ import annotations

import pytest
import torch

from mrcnn_edu.anchors import concat_levels
from mrcnn_edu.heads import BoxHead, BoxPredictor, MaskHead, RPNHead

LEVEL_SIZES = [(16, 12), (8, 6), (4, 3)]


def _levels(b=2, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h, w, generator=g) for h, w in LEVEL_SIZES]


# --------------------------------------------------------------------------- RPN head


def test_rpn_head_shapes_and_init():
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, num_anchors=3)
    objectness, deltas = head(_levels())
    assert [tuple(o.shape) for o in objectness] == [(2, 3, h, w) for h, w in LEVEL_SIZES]
    assert [tuple(d.shape) for d in deltas] == [(2, 12, h, w) for h, w in LEVEL_SIZES]
    big = RPNHead(in_channels=64, num_anchors=3)
    assert abs(big.conv.weight.std().item() - 0.01) < 0.001
    assert all(torch.count_nonzero(m.bias) == 0 for m in (big.conv, big.cls_logits, big.bbox_pred))
    assert sorted(k for k in big.state_dict()) == sorted(
        f"{m}.{p}" for m in ("conv", "cls_logits", "bbox_pred") for p in ("weight", "bias")
    )


def test_rpn_head_is_shared_by_every_level():
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, num_anchors=3)
    levels = _levels()
    together = head(levels)
    for i, x in enumerate(levels):  # the same module, level by level, gives the same outputs
        alone = head([x])
        torch.testing.assert_close(alone[0][0], together[0][i])
        torch.testing.assert_close(alone[1][0], together[1][i])

    def grad_of(level_ids):
        head.zero_grad()
        obj, dl = head(levels)
        sum(obj[i].sum() + dl[i].square().sum() for i in level_ids).backward()
        return head.conv.weight.grad.clone()

    per_level = [grad_of([i]) for i in range(len(levels))]
    assert all(g.abs().sum() > 0 for g in per_level)
    # One weight: the gradients of all levels accumulate into it.
    torch.testing.assert_close(grad_of(range(len(levels))), sum(per_level), rtol=1e-4, atol=1e-7)


def test_rpn_delta_channels_are_anchor_major():
    head = RPNHead(in_channels=4, num_anchors=3)
    with torch.no_grad():
        head.bbox_pred.weight.zero_()
        head.bbox_pred.bias.copy_(torch.tensor([10.0 * a + j for a in range(3) for j in range(4)]))
    _, deltas = head([torch.randn(1, 4, 5, 6)])
    as_a4 = deltas[0].view(1, 3, 4, 5, 6)
    for a in range(3):
        for j in range(4):
            assert torch.all(as_a4[0, a, j] == 10 * a + j)


def test_rpn_outputs_flatten_in_anchor_order():
    """The head's layout fed to anchors.concat_levels gives rows level -> row -> column -> anchor."""
    torch.manual_seed(0)
    a = 3
    head = RPNHead(in_channels=8, num_anchors=a)
    with torch.no_grad():
        objectness, deltas = head(_levels())
    logits = concat_levels(objectness, 1)[..., 0]
    flat = concat_levels(deltas, 4)
    total = sum(h * w * a for h, w in LEVEL_SIZES)
    assert tuple(logits.shape) == (2, total) and tuple(flat.shape) == (2, total, 4)
    row = 0  # the readable order, written as loops
    for lvl, (h, w) in enumerate(LEVEL_SIZES):
        for y in range(h):
            for x in range(w):
                for k in range(a):
                    assert torch.equal(logits[:, row], objectness[lvl][:, k, y, x])
                    assert torch.equal(flat[:, row], deltas[lvl][:, 4 * k : 4 * k + 4, y, x])
                    row += 1


def test_rpn_head_bad_inputs_name_the_argument():
    head = RPNHead(in_channels=8, num_anchors=3)
    with pytest.raises(ValueError, match=r"features\[1\]"):
        head([torch.randn(1, 8, 4, 4), torch.randn(1, 7, 2, 2)])
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(1, 8, 4, 4))


# --------------------------------------------------------------------------- box head and predictor


@pytest.mark.parametrize("variant,norm", [("mlp", "gn"), ("conv", "gn"), ("conv", "bn")])
@pytest.mark.parametrize("r", [0, 1, 5])
def test_box_head_shapes_including_empty(variant, norm, r):
    torch.manual_seed(0)
    head = BoxHead(in_channels=8, pool_size=7, representation=64, variant=variant, norm=norm).eval()
    out = head(torch.randn(r, 8, 7, 7))
    assert tuple(out.shape) == (r, 64)
    assert bool((out >= 0).all())  # ends with a ReLU


def test_box_head_train_mode_with_no_rois():
    for variant, norm in [("mlp", "gn"), ("conv", "gn"), ("conv", "bn")]:
        head = BoxHead(8, 7, 64, variant=variant, norm=norm).train()
        x = torch.randn(0, 8, 7, 7, requires_grad=True)
        out = head(x)
        assert tuple(out.shape) == (0, 64)
        out.sum().backward()


def test_conv_box_head_first_conv_is_a_fully_connected_layer():
    """A conv whose kernel is as large as its input ("valid" padding) computes one dot product per filter."""
    torch.manual_seed(0)
    head = BoxHead(in_channels=4, pool_size=7, representation=32, variant="conv")
    x = torch.randn(3, 4, 7, 7)
    as_conv = head.conv1(x).flatten(1)
    as_fc = x.flatten(1) @ head.conv1.weight.flatten(1).T
    torch.testing.assert_close(as_conv, as_fc)


def test_group_norm_box_head_treats_each_roi_alone():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 7, 7)
    gn = BoxHead(8, 7, 64, variant="conv", norm="gn").train()
    torch.testing.assert_close(gn(x)[:1], gn(x[:1]))  # RoI 0's features do not depend on RoIs 1..3
    bn = BoxHead(8, 7, 64, variant="conv", norm="bn").train()
    assert not torch.allclose(bn(x)[:2], bn(x[:2]))  # batch statistics couple the RoIs


def test_mlp_box_head_names_follow_torchvision():
    head = BoxHead(in_channels=256)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "fc6.weight": (1024, 256 * 49),
        "fc6.bias": (1024,),
        "fc7.weight": (1024, 1024),
        "fc7.bias": (1024,),
    }


def test_box_predictor_shapes_and_init():
    torch.manual_seed(0)
    pred = BoxPredictor(representation=1024, num_classes=81)
    for r in (0, 3):
        logits, deltas = pred(torch.randn(r, 1024))
        assert tuple(logits.shape) == (r, 81) and tuple(deltas.shape) == (r, 81 * 4)
    assert abs(pred.cls_score.weight.std().item() - 0.01) < 0.001
    assert abs(pred.bbox_pred.weight.std().item() - 0.001) < 0.0001
    assert torch.count_nonzero(pred.cls_score.bias) == 0 and torch.count_nonzero(pred.bbox_pred.bias) == 0


def test_box_head_bad_inputs_name_the_argument():
    head = BoxHead(in_channels=8, pool_size=7, representation=64)
    with pytest.raises(ValueError, match="x"):
        head(torch.randn(2, 8, 14, 14))
    with pytest.raises(ValueError, match="x"):
        head(torch.randn(2, 9, 7, 7))
    with pytest.raises(ValueError, match="variant"):
        BoxHead(8, variant="fc")
    with pytest.raises(ValueError, match="norm"):
        BoxHead(8, variant="conv", norm="ln")
    with pytest.raises(ValueError, match="num_classes"):
        BoxPredictor(64, 1)
    with pytest.raises(ValueError, match="x"):
        BoxPredictor(64, 3)(torch.randn(2, 63))


# --------------------------------------------------------------------------- mask head


@pytest.mark.parametrize("r", [0, 3])
def test_mask_head_doubles_14_to_28_per_class(r):
    torch.manual_seed(0)
    head = MaskHead(in_channels=8, num_classes=5, conv_channels=16)
    out = head(torch.randn(r, 8, 14, 14))
    assert tuple(out.shape) == (r, 5, 28, 28)


def test_mask_head_default_width_names_and_init():
    torch.manual_seed(0)
    head = MaskHead(in_channels=256, num_classes=91)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    want = {f"mask_fcn{i}.weight": (256, 256, 3, 3) for i in range(1, 5)}
    want.update({f"mask_fcn{i}.bias": (256,) for i in range(1, 5)})
    want.update({"conv5_mask.weight": (256, 256, 2, 2), "conv5_mask.bias": (256,)})
    want.update({"mask_fcn_logits.weight": (91, 256, 1, 1), "mask_fcn_logits.bias": (91,)})
    assert shapes == want
    fan_out = 256 * 3 * 3  # kaiming normal, fan_out mode, ReLU gain: std = sqrt(2 / fan_out)
    assert abs(head.mask_fcn1.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.02
    assert all(torch.count_nonzero(p) == 0 for k, p in head.named_parameters() if k.endswith("bias"))
    with torch.no_grad():
        out = head(torch.randn(1, 256, 14, 14))
    assert tuple(out.shape) == (1, 91, 28, 28)


def test_mask_head_transposed_conv_maps_each_cell_to_a_2x2_block():
    """A 2x2 stride-2 transposed conv: output pixel (2i + di, 2j + dj) depends on input cell (i, j) only."""
    torch.manual_seed(0)
    head = MaskHead(in_channels=4, num_classes=3, conv_channels=4, num_convs=1)
    x = torch.randn(1, 4, 14, 14, requires_grad=True)
    out = head(x)
    out[0, :, 9, 4].sum().backward()
    touched = x.grad[0].abs().sum(0) > 0
    # (9, 4) comes from cell (4, 2) after the deconvolution; the 3x3 conv before it spreads to (3..5, 1..3).
    assert touched.nonzero().tolist() == [[i, j] for i in range(3, 6) for j in range(1, 4)]


def test_mask_head_bad_inputs_name_the_argument():
    head = MaskHead(in_channels=8, num_classes=3, conv_channels=8)
    with pytest.raises(ValueError, match="x"):
        head(torch.randn(2, 7, 14, 14))
    with pytest.raises(ValueError, match="num_classes"):
        MaskHead(8, 1)
