"""Tests for mrcnn_edu.backbone (ResNet bodies, FrozenBatchNorm2d, ImageNet loading) and mrcnn_edu.fpn."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_edu._conv import Conv2d
from mrcnn_edu.backbone import (
    BACKBONE_SPECS,
    FrozenBatchNorm2d,
    build_backbone,
    conv_norm,
    load_imagenet_state_dict,
)
from mrcnn_edu.fpn import FPN

# torchvision's published totals (with the 1000-class fc layer).
TORCHVISION_TOTALS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
}
FC_PARAMS = {"resnet18": 512 * 1000 + 1000, "resnet34": 512 * 1000 + 1000}
FC_PARAMS.update(resnet50=2048 * 1000 + 1000, resnet101=2048 * 1000 + 1000)


def _on_meta(name, **kw):
    """Build a big backbone without allocating or initialising its weights (shapes only)."""
    with torch.device("meta"):
        return build_backbone(name, **kw)


def _expected_torchvision_keys(blocks, bottleneck: bool) -> dict[str, tuple[int, ...]]:
    """torchvision's resnet state dict names and shapes, written out from the paper's structure."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{n}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    in_ch = 64
    for stage, n in enumerate(blocks):
        planes = 64 * 2**stage
        out = planes * (4 if bottleneck else 1)
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            if bottleneck:
                convs = [(planes, in_ch, 1), (planes, planes, 3), (out, planes, 1)]
            else:
                convs = [(planes, in_ch, 3), (planes, planes, 3)]
            for i, (o, c, k) in enumerate(convs, start=1):
                keys[f"{p}.conv{i}.weight"] = (o, c, k, k)
                bn(f"{p}.bn{i}", o)
            if b == 0 and (stage > 0 or in_ch != out):
                keys[f"{p}.downsample.0.weight"] = (out, in_ch, 1, 1)
                bn(f"{p}.downsample.1", out)
            in_ch = out
    keys["fc.weight"] = (1000, in_ch)
    keys["fc.bias"] = (1000,)
    return keys


# --------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_parameter_counts_match_torchvision(name):
    model = _on_meta(name, norm="bn")
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == TORCHVISION_TOTALS[name] - FC_PARAMS[name]
    # With FrozenBN the BN affine values are buffers: same numbers in the state dict, none trainable.
    frozen = _on_meta(name, norm="frozen_bn")
    weights = sum(
        v.numel() for k, v in frozen.state_dict().items() if not k.endswith(("running_mean", "running_var"))
    )
    assert weights == n_params


@pytest.mark.parametrize(
    "name,blocks,bottleneck", [("resnet50", (3, 4, 6, 3), True), ("resnet18", (2, 2, 2, 2), False)]
)
def test_state_dict_names_and_shapes_equal_torchvision(name, blocks, bottleneck):
    expected = _expected_torchvision_keys(blocks, bottleneck)
    without_fc = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    bn_model = _on_meta(name, norm="bn")
    assert {k: tuple(v.shape) for k, v in bn_model.state_dict().items()} == without_fc
    frozen = _on_meta(name, norm="frozen_bn")
    assert {k: tuple(v.shape) for k, v in frozen.state_dict().items()} == {
        k: v for k, v in without_fc.items() if not k.endswith("num_batches_tracked")
    }
    # Same order too (load_state_dict does not care, but printed key maps read better).
    assert list(bn_model.state_dict()) == list(without_fc)


def test_state_dict_equals_torchvision_where_available(torchvision_reference):
    tv = torchvision_reference.models.resnet50(weights=None).state_dict()
    ours = _on_meta("resnet50", norm="bn").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in tv.items() if not k.startswith("fc.")
    }


def test_bottleneck_stride_is_on_the_3x3_conv():
    model = _on_meta("resnet50")
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv3.stride == (1, 1)
    assert block.downsample[0].stride == (2, 2)


def test_tiny_spec_has_four_stages_and_few_parameters():
    model = build_backbone("resnet_tiny", norm="bn")
    assert model.out_channels == [16, 32, 64, 128]
    assert sum(p.numel() for p in model.parameters()) < 400_000
    assert set(BACKBONE_SPECS) >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnet_tiny"}


@pytest.mark.parametrize("size", [(128, 128), (100, 150), (33, 65)])
def test_backbone_and_fpn_strides(size):
    torch.manual_seed(0)
    h, w = size
    backbone = build_backbone("resnet_tiny", norm="bn")
    fpn = FPN(backbone.out_channels, out_channels=32)
    x = torch.randn(2, 3, h, w)
    feats = backbone(x)
    assert list(feats) == ["C2", "C3", "C4", "C5"]
    for (name, c), ch, stride in zip(feats.items(), backbone.out_channels, backbone.strides, strict=True):
        assert tuple(c.shape) == (2, ch, math.ceil(h / stride), math.ceil(w / stride)), name
    pyramid = fpn(feats)
    assert list(pyramid) == ["P2", "P3", "P4", "P5", "P6"]
    for (name, p), stride in zip(pyramid.items(), (4, 8, 16, 32, 64), strict=True):
        assert tuple(p.shape) == (2, 32, math.ceil(h / stride), math.ceil(w / stride)), name


@pytest.mark.parametrize("name,c2", [("resnet18", 64), ("resnet50", 256), ("resnet101", 256)])
def test_big_backbone_shapes_on_meta_tensors(name, c2):
    """Shapes only: on the meta device the forward pass propagates shapes without computing anything."""
    model = _on_meta(name).eval()
    feats = model(torch.empty(1, 3, 64, 96, device="meta"))
    want = [(1, c2 * 2**i, 64 // s, 96 // s) for i, s in enumerate((4, 8, 16, 32))]
    assert [tuple(v.shape) for v in feats.values()] == want
    assert model.out_channels == [c2, 2 * c2, 4 * c2, 8 * c2]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="name"):
        build_backbone("resnet7")
    with pytest.raises(ValueError, match="norm"):
        build_backbone("resnet_tiny", norm="gn")
    with pytest.raises(ValueError, match="trainable_stages"):
        build_backbone("resnet_tiny", trainable_stages=6)
    model = build_backbone("resnet_tiny")
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(3, 32, 32))


# --------------------------------------------------------------------------- FrozenBatchNorm2d


def _random_bn(c, eps=1e-5):
    bn = nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3.0)
    return bn.eval()


def test_frozen_bn_has_no_parameters_and_matches_bn_in_eval_mode():
    torch.manual_seed(0)
    bn = _random_bn(6)
    frozen = FrozenBatchNorm2d(6)
    assert list(frozen.parameters()) == []
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked accepted and ignored
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(frozen(x), bn(x))
    frozen.train()  # train mode changes nothing: the statistics are fixed
    torch.testing.assert_close(frozen(x), bn(x))


def test_frozen_bn_eps_zero_and_half_precision():
    torch.manual_seed(1)
    bn = _random_bn(4)
    frozen = FrozenBatchNorm2d(4, eps=0.0)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    st = {k: v.double() for k, v in bn.state_dict().items() if v.is_floating_point()}
    by_hand = (x - st["running_mean"][:, None, None]) / st["running_var"][:, None, None].sqrt()
    by_hand = by_hand * st["weight"][:, None, None] + st["bias"][:, None, None]
    torch.testing.assert_close(frozen.double()(x), by_hand)
    assert frozen.float()(x.half()).dtype == torch.float16


# --------------------------------------------------------------------------- trainable stages


@pytest.mark.parametrize("k", range(6))
def test_trainable_stages_freeze_the_bottom_stages(k):
    model = build_backbone("resnet_tiny", norm="bn", trainable_stages=k)
    stage_of = {"conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}
    for name, p in model.named_parameters():
        stage = stage_of[name.split(".")[0]]
        assert p.requires_grad == (stage >= 5 - k), name


def test_trainable_stages_default_follows_torchvision():
    assert build_backbone("resnet_tiny").trainable_stages == 3  # frozen_bn: pretrained fine-tuning
    assert build_backbone("resnet_tiny", norm="bn").trainable_stages == 5  # from scratch


def test_frozen_stages_keep_bn_statistics_and_get_no_gradient():
    torch.manual_seed(0)
    model = build_backbone("resnet_tiny", norm="bn", trainable_stages=2).train()
    frozen_before = model.layer2[0].bn1.running_mean.clone()
    trained_before = model.layer4[0].bn1.running_mean.clone()
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    assert not model.layer2[0].bn1.training and model.layer4[0].bn1.training
    assert torch.equal(model.layer2[0].bn1.running_mean, frozen_before)
    assert not torch.equal(model.layer4[0].bn1.running_mean, trained_before)
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is None
    assert model.layer3[0].conv1.weight.grad is not None
    model.set_trainable_stages(5)  # matterport's staged training: unfreeze everything later
    assert all(p.requires_grad for p in model.parameters()) and model.layer2[0].bn1.training


# --------------------------------------------------------------------------- loading ImageNet weights


def _imagenet_like_state(seed=0):
    """A state dict as torchvision saves it: a BN model's weights plus a classifier fc.*."""
    torch.manual_seed(seed)
    source = build_backbone("resnet_tiny", norm="bn")
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    state = dict(source.state_dict())
    state["fc.weight"] = torch.randn(1000, 128)
    state["fc.bias"] = torch.randn(1000)
    return source.eval(), state


def test_load_round_trip_through_a_file(tmp_path):
    source, state = _imagenet_like_state()
    path = tmp_path / "resnet_tiny-imagenet.pth"
    torch.save(state, path)
    target = build_backbone("resnet_tiny", norm="bn")
    assert load_imagenet_state_dict(target, path) is target
    for k, v in target.state_dict().items():
        assert torch.equal(v, state[k]), k
    # Into FrozenBN: num_batches_tracked is dropped, and the result computes what the BN model does in eval.
    frozen = load_imagenet_state_dict(build_backbone("resnet_tiny"), str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(frozen(x).values(), source(x).values(), strict=True):
            torch.testing.assert_close(a, b)


def test_load_without_batch_counters():
    _, state = _imagenet_like_state()
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    target = load_imagenet_state_dict(build_backbone("resnet_tiny", norm="bn"), old_style)
    torch.testing.assert_close(target.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_load_errors_list_every_problem_by_name():
    _, state = _imagenet_like_state()
    del state["layer3.0.bn2.running_var"]
    state["layer9.0.conv1.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(16, 16, 1, 1)
    target = build_backbone("resnet_tiny", norm="bn")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_imagenet_state_dict(target, state)
    message = str(err.value)
    assert "path_or_dict" in message
    assert "missing keys ['layer3.0.bn2.running_var']" in message
    assert "unexpected keys ['layer9.0.conv1.weight']" in message
    assert "layer1.0.conv1.weight: expected (16, 16, 3, 3), got (16, 16, 1, 1)" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # untouched on error


def test_load_truncated_or_wrong_file_names_the_file(tmp_path):
    _, state = _imagenet_like_state()
    full = tmp_path / "full.pth"
    torch.save(state, full)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    model = build_backbone("resnet_tiny")
    with pytest.raises(ValueError, match="truncated.pth"):
        load_imagenet_state_dict(model, truncated)
    with pytest.raises(ValueError, match="does-not-exist.pth"):
        load_imagenet_state_dict(model, tmp_path / "does-not-exist.pth")
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="list.pth"):
        load_imagenet_state_dict(model, listing)
    with pytest.raises(ValueError, match="path_or_dict"):
        load_imagenet_state_dict(model, 42)


# --------------------------------------------------------------------------- FPN


def _fpn_reference(fpn: FPN, feats: dict) -> list[torch.Tensor]:
    """The FPN written out level by level, with a 2x nearest upsample done by repeating rows and columns
    (valid for sizes that halve exactly), independent of F.interpolate."""
    c = list(feats.values())
    lateral = [conv(x) for conv, x in zip(fpn.inner_blocks, c, strict=True)]
    merged = [None] * len(c)
    merged[-1] = lateral[-1]
    for i in range(len(c) - 2, -1, -1):
        up = merged[i + 1].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        merged[i] = lateral[i] + up
    outs = [conv(m) for conv, m in zip(fpn.layer_blocks, merged, strict=True)]
    return outs + [outs[-1][:, :, ::2, ::2]]


def _fake_features(b, channels, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for level, ch in zip(range(2, 6), channels, strict=True):
        s = 2**level
        feats[f"C{level}"] = torch.randn(b, ch, math.ceil(h / s), math.ceil(w / s), generator=g)
    return feats


def test_fpn_matches_an_explicit_top_down_sum():
    torch.manual_seed(0)
    fpn = FPN([8, 16, 24, 32], out_channels=12)
    feats = _fake_features(2, [8, 16, 24, 32], 64, 96)
    with torch.no_grad():
        got = list(fpn(feats).values())
        want = _fpn_reference(fpn, feats)
    assert all(p.shape[1] == 12 for p in got)  # add, not concat: the width never grows
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_fpn_top_down_is_an_add():
    """With C5's lateral zeroed, nothing comes from above P4: P4 is its own lateral path alone."""
    torch.manual_seed(0)
    fpn = FPN([8, 16, 24, 32], out_channels=12)
    feats = _fake_features(1, [8, 16, 24, 32], 64, 64)
    with torch.no_grad():
        fpn.inner_blocks[3].weight.zero_()
        fpn.inner_blocks[3].bias.zero_()
        out = fpn(feats)
        own = fpn.layer_blocks[2](fpn.inner_blocks[2](feats["C4"]))
        torch.testing.assert_close(out["P4"], own)


def test_fpn_odd_sizes_use_nearest_resize_to_the_lateral_size():
    torch.manual_seed(0)
    fpn = FPN([4, 4], out_channels=4)
    with torch.no_grad():
        for conv in fpn.inner_blocks:  # identity laterals: the merged map is C_fine + resized C_coarse
            conv.weight.copy_(torch.eye(4)[:, :, None, None])
            conv.bias.zero_()
        fine, coarse = torch.randn(1, 4, 5, 7), torch.randn(1, 4, 3, 4)
        merged = {}
        fpn.layer_blocks[0].register_forward_hook(lambda m, inp, out: merged.setdefault("P2", inp[0]))
        fpn({"C2": fine, "C3": coarse})
    rows = [min(int(r * 3 / 5), 2) for r in range(5)]  # nearest: source index floor(i * in / out)
    cols = [min(int(c * 4 / 7), 3) for c in range(7)]
    expected = fine + coarse[:, :, rows][:, :, :, cols]
    torch.testing.assert_close(merged["P2"], expected)


def test_fpn_p6_subsamples_p5():
    fpn = FPN([4, 4, 4, 4], out_channels=4)
    feats = _fake_features(1, [4] * 4, 100, 150)
    with torch.no_grad():
        out = fpn(feats)
    torch.testing.assert_close(out["P6"], out["P5"][:, :, ::2, ::2])


def test_fpn_submodule_names_for_a_torchvision_key_map():
    fpn = FPN([256, 512, 1024, 2048])
    names = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert names["inner_blocks.0.weight"] == (256, 256, 1, 1)
    assert names["inner_blocks.3.weight"] == (256, 2048, 1, 1)
    assert names["layer_blocks.2.weight"] == (256, 256, 3, 3)
    assert len(names) == 16


def test_fpn_bad_inputs_name_the_argument():
    fpn = FPN([4, 8])
    with pytest.raises(ValueError, match="features"):
        fpn({"C2": torch.randn(1, 4, 8, 8)})
    with pytest.raises(ValueError, match=r"features\['C3'\]"):
        fpn({"C2": torch.randn(1, 4, 8, 8), "C3": torch.randn(1, 5, 4, 4)})
    with pytest.raises(ValueError, match="features"):
        fpn([torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)])
    with pytest.raises(ValueError, match="in_channels"):
        FPN([])


# --------------------------------------------------------------------------- end to end


def test_tiny_backbone_and_fpn_forward_backward():
    torch.manual_seed(0)
    backbone = build_backbone("resnet_tiny", norm="bn", trainable_stages=5).train()
    fpn = FPN(backbone.out_channels, out_channels=32)
    pyramid = fpn(backbone(torch.randn(2, 3, 128, 128)))
    loss = sum(F.softplus(p).mean() for p in pyramid.values())
    loss.backward()
    params = [*backbone.named_parameters(), *fpn.named_parameters()]
    for name, p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for name, p in params if name.endswith("weight")), (
        "some weight got no signal"
    )


# ---------------------------------------------------------------- folded normalisation, oneDNN convolution


@pytest.mark.parametrize("stride, kernel", [(1, 1), (2, 1), (1, 3), (2, 3)])
def test_conv_norm_folds_frozen_bn_exactly_gradients_included(stride, kernel):
    # In float64, norm(conv(x)) and the folded convolution agree to rounding, and so do the gradients of
    # the input and of the conv weight (the statistics are buffers: no gradient).
    torch.manual_seed(0)
    conv = Conv2d(6, 5, kernel, stride=stride, padding=kernel // 2, bias=False).double()
    norm = FrozenBatchNorm2d(5, eps=1e-5).double()
    norm.weight.uniform_(0.5, 2)
    norm.bias.normal_()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.1, 3)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64, requires_grad=True)
    want = norm(conv(x))
    got = conv_norm(conv, norm, x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    grads = [torch.autograd.grad(y, (x, conv.weight), g) for y in (got, want)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    bn = torch.nn.BatchNorm2d(5).double().eval()  # any other norm runs after the conv, unchanged
    assert torch.equal(conv_norm(conv, bn, x), bn(conv(x)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_onednn_conv2d_equals_nn_conv2d(threads, memory_format):
    # Conv2d takes oneDNN's kernel for every shape on the CPU (nn.Conv2d takes its im2col kernel for 1x1
    # stride-1 layers on one thread): the same numbers to float rounding, the same gradients.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(1)
        for kernel, stride, bias in [(1, 1, True), (1, 1, False), (3, 1, True), (3, 2, False), (7, 2, False)]:
            ours = Conv2d(16, 8, kernel, stride=stride, padding=kernel // 2, bias=bias)
            plain = torch.nn.Conv2d(16, 8, kernel, stride=stride, padding=kernel // 2, bias=bias)
            plain.load_state_dict(ours.state_dict())
            x = torch.randn(2, 16, 13, 17).contiguous(memory_format=memory_format).requires_grad_(True)
            got, want = ours(x), plain(x)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            g = torch.randn_like(want)
            for a, b in zip(torch.autograd.grad(got, (x, ours.weight), g),
                            torch.autograd.grad(want, (x, plain.weight), g), strict=True):  # fmt: skip
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: nn.Conv2d's own path
                assert ours(x).dtype == torch.bfloat16
            assert ours.double()(x.double().detach()).dtype == torch.float64  # other dtypes too
    finally:
        torch.set_num_threads(previous)
