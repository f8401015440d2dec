"""Tests of mrcnn_edu.pretrained: torchvision Mask R-CNN and ImageNet ResNet weights into our modules.

The independent source of state dicts is torchvision's own pure-Python model (``maskrcnn_resnet50_fpn`` and
``resnet50``/``resnet101`` with random weights): its key names, its old-layout upgrade rule, and its
submodules' outputs, against which ours are compared after loading.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from mrcnn_edu import Config, MaskRCNN
from mrcnn_edu.checkpoint import FORMAT
from mrcnn_edu.data.coco_names import COCO_CATEGORY_NAMES
from mrcnn_edu.pretrained import (
    MASKRCNN_COCO_URL,
    convert_torchvision_state_dict,
    init_backbone_from_imagenet,
    load_torchvision_maskrcnn,
    parse_weights_spec,
)

COUNTER = "num_batches_tracked"


@pytest.fixture(scope="module")
def tv(torchvision_reference):
    """torchvision's Python models: the source of the reference state dicts."""
    return torchvision_reference


def _tv_maskrcnn(tv, num_classes=91, seed=0):
    """torchvision's model with random weights, every BatchNorm statistic and bias made non-trivial."""
    torch.manual_seed(seed)
    model = tv.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                # the "torchvision" preset's FrozenBatchNorm eps is 0 (COCO_V1 was trained with 0); some torch
                # releases (2.11) refuse eps 0 in batch_norm, and 1e-30 added to variances of 0.5-1.5 is 0
                # in float32, so the arithmetic is the same
                m.eps = 1e-30
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif getattr(m, "bias", None) is not None:
                m.bias.normal_(0, 0.05)  # torchvision zero-initialises most biases: catch swapped ones
    return model.eval()


@pytest.fixture(scope="module")
def tv_model(tv):
    return _tv_maskrcnn(tv)


@pytest.fixture(scope="module")
def tv_state(tv_model):
    """Current layout (torchvision >= 0.13 module names), BatchNorm counters included."""
    return tv_model.state_dict()


# The original (2019 checkpoint) names, written out by hand from torchvision's upgrade code (the reverse of
# its _load_from_state_dict renames); test_old_layout checks that torchvision itself accepts them.
_TO_OLD = (
    (r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.0\.", r"backbone.fpn.\1.\2."),
    (r"rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"roi_heads\.mask_head\.(\d)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}."),
)


def _old_layout(state):
    old = {}
    for key, value in state.items():
        if key.endswith(COUNTER):
            continue  # the published file comes from FrozenBatchNorm2d: no counters
        for pattern, repl in _TO_OLD:
            key = re.sub(pattern, repl, key)
        old[key] = value
    return old  # a plain dict: no _metadata, so torchvision treats it as version-less (old)


@pytest.fixture(scope="module")
def ours(tv_state):
    return load_torchvision_maskrcnn(tv_state)


def _close(actual, expected):
    # Same arithmetic in another order (FrozenBatchNorm's scale/shift vs BatchNorm): relative tolerance.
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()) + 1e-6)


# -------------------------------------------------------------------------------------------- key mapping
def test_current_layout_every_key_consumed_and_filled(tv_state, ours):
    converted = convert_torchvision_state_dict(tv_state, ours)
    own = ours.state_dict()
    assert set(converted) == set(own)
    assert len(converted) == len([k for k in tv_state if not k.endswith(COUNTER)]) == 307
    assert sum(k.endswith(COUNTER) for k in tv_state) == 53  # present in torchvision's BatchNorm2d, dropped
    # A few pairs written out by hand (both sides' names come from the modules, not from the code under test).
    pairs = {
        "backbone.conv1.weight": "backbone.body.conv1.weight",
        "backbone.layer4.2.bn3.running_var": "backbone.body.layer4.2.bn3.running_var",
        "fpn.inner_blocks.3.weight": "backbone.fpn.inner_blocks.3.0.weight",
        "fpn.layer_blocks.0.bias": "backbone.fpn.layer_blocks.0.0.bias",
        "rpn_head.conv.weight": "rpn.head.conv.0.0.weight",
        "rpn_head.bbox_pred.bias": "rpn.head.bbox_pred.bias",
        "box_head.fc6.weight": "roi_heads.box_head.fc6.weight",
        "box_predictor.cls_score.bias": "roi_heads.box_predictor.cls_score.bias",
        "mask_head.mask_fcn1.weight": "roi_heads.mask_head.0.0.weight",
        "mask_head.mask_fcn4.bias": "roi_heads.mask_head.3.0.bias",
        "mask_head.conv5_mask.weight": "roi_heads.mask_predictor.conv5_mask.weight",
        "mask_head.mask_fcn_logits.bias": "roi_heads.mask_predictor.mask_fcn_logits.bias",
    }
    for mine, theirs in pairs.items():
        assert torch.equal(own[mine], tv_state[theirs]), mine
    # and every loaded tensor equals the one it came from
    for key, value in converted.items():
        assert torch.equal(own[key], value), key


def test_loaded_model_config(ours):
    assert not ours.training
    assert ours.config.name == "torchvision" and ours.config.num_classes == 91
    assert ours.config.class_names == COCO_CATEGORY_NAMES
    assert ours.config.backbone_bn_eps == 0.0


def test_convert_without_model_keeps_everything(tv_state):
    converted = convert_torchvision_state_dict(tv_state)
    assert len(converted) == len(tv_state)  # counters too (our FrozenBatchNorm2d ignores them on load)
    assert converted["mask_head.mask_fcn2.weight"] is tv_state["roi_heads.mask_head.1.0.weight"]  # not copied
    with pytest.raises(ValueError, match=r"unknown key.*'roi_heads\.box_head\.extra'"):
        convert_torchvision_state_dict({**tv_state, "roi_heads.box_head.extra": torch.zeros(1)})


def test_old_layout(tv, tv_state, ours):
    old = _old_layout(tv_state)
    for name in (
        "backbone.fpn.inner_blocks.0.weight",
        "rpn.head.conv.weight",
        "roi_heads.mask_head.mask_fcn1.weight",
        "roi_heads.mask_predictor.conv5_mask.weight",
    ):
        assert name in old
    # torchvision itself reads these names (through its upgrade code), to the same values
    other = _tv_maskrcnn(tv, seed=1)
    key = "rpn.head.conv.0.0.weight"
    assert not torch.equal(other.state_dict()[key], tv_state[key])
    other.load_state_dict(old)  # strict: every key consumed and every tensor filled
    for key, value in other.state_dict().items():
        if not key.endswith(COUNTER):
            assert torch.equal(value, tv_state[key]), key
    # and we load them to identical tensors
    from_old = load_torchvision_maskrcnn(old)
    for key, value in from_old.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key


def test_mixed_layouts_that_collide_fail(tv_state, ours):
    state = {**tv_state, "rpn.head.conv.weight": tv_state["rpn.head.conv.0.0.weight"]}
    with pytest.raises(ValueError, match=r"'rpn\.head\.conv\.0\.0\.weight' and 'rpn\.head\.conv\.weight' bo"):
        convert_torchvision_state_dict(state, ours)


# ------------------------------------------------------------------------ values land in the right places
@torch.no_grad()
def test_submodule_outputs_match_torchvision(tv_model, ours):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    theirs_c = tv_model.backbone.body(x)
    mine_c = ours.backbone(x)
    assert list(mine_c) == ["C2", "C3", "C4", "C5"]
    for mine, theirs in zip(mine_c.values(), theirs_c.values(), strict=True):
        _close(mine, theirs)

    # FPN on the same input features
    feats = OrderedDict((k, v) for k, v in theirs_c.items())
    theirs_p = tv_model.backbone.fpn(feats)
    mine_p = ours.fpn(dict(zip(["C2", "C3", "C4", "C5"], feats.values(), strict=True)))
    assert list(theirs_p) == ["0", "1", "2", "3", "pool"]
    for mine, theirs in zip(mine_p.values(), theirs_p.values(), strict=True):
        _close(mine, theirs)

    levels = list(theirs_p.values())
    mine_obj, mine_deltas = ours.rpn_head(levels)
    theirs_obj, theirs_deltas = tv_model.rpn.head(levels)
    for a, b in zip(mine_obj + mine_deltas, theirs_obj + theirs_deltas, strict=True):
        _close(a, b)

    rois = torch.randn(5, 256, 7, 7)
    mine_vec, theirs_vec = ours.box_head(rois), tv_model.roi_heads.box_head(rois)
    _close(mine_vec, theirs_vec)
    theirs_pred = tv_model.roi_heads.box_predictor(theirs_vec)
    for a, b in zip(ours.box_predictor(theirs_vec), theirs_pred, strict=True):
        _close(a, b)

    mask_rois = torch.randn(3, 256, 14, 14)
    theirs_masks = tv_model.roi_heads.mask_predictor(tv_model.roi_heads.mask_head(mask_rois))
    assert theirs_masks.shape == (3, 91, 28, 28)
    _close(ours.mask_head(mask_rois), theirs_masks)


# ------------------------------------------------------------------------------------------------- files
def test_file_round_trip(tmp_path, tv_state, ours):
    path = tmp_path / "maskrcnn.pth"
    torch.save(_old_layout(tv_state), path)
    model = load_torchvision_maskrcnn(path)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    # a training checkpoint that plainly wraps the state dict is unwrapped
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"model": tv_state, "epoch": 3, "optimizer": {"state": {}}}, wrapped)
    model = load_torchvision_maskrcnn(str(wrapped))
    assert torch.equal(model.state_dict()["box_head.fc7.weight"], tv_state["roi_heads.box_head.fc7.weight"])


def test_missing_file_explains_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(MASKRCNN_COCO_URL)):
        load_torchvision_maskrcnn(tmp_path / "nope.pth")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (torch.zeros(3), "holds a Tensor, not a state dict"),
        ([torch.zeros(3)], "holds a list, not a state dict"),
        ({"epoch": 3, "weights": {"a": 1}}, r"not a state dict: entries \['epoch', 'weights'\]"),
        ({}, "empty"),
        (nn.Linear(2, 2), r"torch\.nn\.modules\.linear\.Linear.*torch\.save\(model\.state_dict\(\)"),
        ({"format": FORMAT, "model": {"w": torch.zeros(1)}}, "mrcnn_edu training checkpoint"),
    ],
)
def test_files_that_are_not_state_dicts(tmp_path, content, match):
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match) as info:
        load_torchvision_maskrcnn(path)
    assert "path_or_state_dict" in str(info.value) and str(path) in str(info.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"<html>404 Not Found</html>" * 20)
    with pytest.raises(ValueError, match="path_or_state_dict: could not read file .* as a torch .pth file"):
        load_torchvision_maskrcnn(path)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="could not read"):
        load_torchvision_maskrcnn(truncated)


def test_bad_argument_types():
    with pytest.raises(ValueError, match="path_or_state_dict must be a file path or a state dict"):
        load_torchvision_maskrcnn(42)
    with pytest.raises(ValueError, match="state: .* holds a list"):
        convert_torchvision_state_dict([1, 2])


# ------------------------------------------------------------------------------------------ loud failures
def test_unknown_and_missing_keys_all_listed(tv_state, ours):
    state = dict(tv_state)
    del state["rpn.head.cls_logits.bias"], state["roi_heads.mask_head.2.0.weight"]
    state["roi_heads.box_head.fc8.weight"] = torch.zeros(3)
    state["something.else"] = torch.zeros(3)
    with pytest.raises(ValueError) as info:
        convert_torchvision_state_dict(state, ours)
    message = str(info.value)
    for name in ("roi_heads.box_head.fc8.weight", "something.else", "rpn_head.cls_logits.bias",
                 "mask_head.mask_fcn3.weight"):
        assert name in message
    assert "2 unknown key(s)" in message and "2 model key(s) missing" in message


def test_81_classes_into_91(tv, ours):
    state81 = _tv_maskrcnn(tv, num_classes=81).state_dict()
    with pytest.raises(ValueError) as info:
        convert_torchvision_state_dict(state81, ours)
    message = str(info.value)
    for line in (
        "box_predictor.cls_score.weight: checkpoint (81, 1024) vs model (91, 1024)",
        "box_predictor.cls_score.bias: checkpoint (81,) vs model (91,)",
        "box_predictor.bbox_pred.weight: checkpoint (324, 1024) vs model (364, 1024)",
        "mask_head.mask_fcn_logits.weight: checkpoint (81, 256, 1, 1) vs model (91, 256, 1, 1)",
        "6 shape mismatch(es)",
        "pass num_classes=81",
    ):
        assert line in message
    model = load_torchvision_maskrcnn(state81, num_classes=81)
    assert model.config.num_classes == 81 and model.config.class_names == ()
    theirs = state81["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert torch.equal(model.mask_head.mask_fcn_logits.weight, theirs)


def test_config_argument(tv_state):
    config = Config.preset("torchvision", detection_min_confidence=0.5)
    model = load_torchvision_maskrcnn(tv_state, config=config)
    assert model.config is config
    with pytest.raises(ValueError, match="num_classes=81 contradicts config.num_classes=91"):
        load_torchvision_maskrcnn(tv_state, num_classes=81, config=config)
    # a checkpoint whose ResNet depth is not the config's: every stray block listed, and the cause named
    with pytest.raises(ValueError, match=r"backbone is a resnet50 .*config\.backbone is 'resnet101'") as info:
        load_torchvision_maskrcnn(tv_state, config=config.replace(backbone="resnet101"))
    assert "backbone.layer3.22.conv3.weight" in str(info.value)


def test_v2_checkpoint_is_named(tv_state, ours):
    state = {**tv_state, "roi_heads.box_head.0.0.weight": torch.zeros(256, 256, 3, 3)}
    with pytest.raises(ValueError, match="maskrcnn_resnet50_fpn_v2"):
        convert_torchvision_state_dict(state, ours)


# ---------------------------------------------------------------------------------------------- ImageNet
def test_imagenet_resnet50(tv, tmp_path):
    torch.manual_seed(0)
    resnet = tv.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    model = MaskRCNN(Config.preset("coco"))
    fpn_before = model.fpn.inner_blocks[0].weight.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert init_backbone_from_imagenet(model, path) is model
    assert not [w for w in caught if "eps" in str(w.message)]  # the coco preset's eps 1e-5 is ImageNet's
    own = model.backbone.state_dict()
    theirs = resnet.state_dict()
    assert set(own) == {k for k in theirs if not k.startswith("fc.") and not k.endswith(COUNTER)}
    for key, value in own.items():
        assert torch.equal(value, theirs[key]), key
    assert torch.equal(model.fpn.inner_blocks[0].weight, fpn_before)  # only the backbone changes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(
            resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))))))
        _close(model.backbone.eval()(x)["C5"], expected)

    with pytest.raises(ValueError, match="whole torchvision detector"):
        init_backbone_from_imagenet(model, {"backbone.body.conv1.weight": torch.zeros(64, 3, 7, 7)})


def test_imagenet_depth_mismatch(tv):
    state = tv.models.resnet101(weights=None).state_dict()
    model = MaskRCNN(Config.preset("shapes", backbone="resnet50"))
    with pytest.raises(ValueError, match=r"holds resnet101 weights .*config\.backbone is 'resnet50'"):
        init_backbone_from_imagenet(model, state)


def test_imagenet_eps_warning_and_bad_state(tv):
    state = tv.models.resnet18(weights=None).state_dict()
    model = MaskRCNN(Config.preset("shapes", backbone="resnet18", backbone_bn_eps=0.0))
    with pytest.warns(UserWarning, match="eps"):
        init_backbone_from_imagenet(model, state)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    broken = {k: v for k, v in state.items() if k != "layer2.0.bn1.running_mean"}
    with pytest.raises(ValueError, match=r"path_or_state_dict \(the given state dict\).*layer2\.0\.bn1\.run"):
        init_backbone_from_imagenet(MaskRCNN(Config.preset("shapes", backbone="resnet18")), broken)
    with pytest.raises(ValueError, match="model must be a mrcnn_edu MaskRCNN"):
        init_backbone_from_imagenet(nn.Linear(2, 2), state)


# ----------------------------------------------------------------------------------------------- CLI spec
def test_parse_weights_spec(monkeypatch):
    assert parse_weights_spec("torchvision:/w/maskrcnn.pth") == ("torchvision", "/w/maskrcnn.pth")
    assert parse_weights_spec("imagenet:C:/w/resnet50.pth") == ("imagenet", "C:/w/resnet50.pth")
    monkeypatch.setenv("HOME", "/home/student")
    assert parse_weights_spec("torchvision:~/w.pth") == ("torchvision", "/home/student/w.pth")
    for bad in ("/w/maskrcnn.pth", "detectron2:/w.pth", "torchvision:", "torchvision:  "):
        with pytest.raises(ValueError, match="spec"):
            parse_weights_spec(bad)
    with pytest.raises(ValueError, match="spec must be a string"):
        parse_weights_spec(None)
