"""Backbone: a ResNet that turns an image into four feature maps C2..C5 of decreasing resolution.

Mask R-CNN does not look at pixels directly: a classification network (here a ResNet) trained on ImageNet is
cut before its classifier, and the outputs of its four stages are kept. Stage ``k`` halves the resolution
again, so ``C2`` sees the image at 1/4 of its size with few channels (fine detail, little meaning) and ``C5``
at 1/32 with many channels (coarse, but "knows" what objects are). The FPN (:mod:`mrcnn_edu.fpn`) mixes them.

Why the parameter names equal torchvision's ``resnet*`` names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ...): so an ImageNet state dict downloaded for ``torchvision.models.resnet50``
loads unchanged with :func:`load_imagenet_state_dict` (only its classifier ``fc.*`` is dropped).

Shape glossary
    B:    images in the batch
    H, W: padded image height and width in pixels
    C:    channels
    Ck:   output of stage k, stride ``2**k``: ``[B, c_k, ceil(H / 2**k), ceil(W / 2**k)]``

Sizes of the outputs: every stride-2 layer (7x7 conv with padding 3, 3x3 max-pool with padding 1, 3x3 or 1x1
conv with stride 2) maps a size ``n`` to ``ceil(n / 2)``, so ``C2..C5`` have sizes ``ceil(H / 4)``, ...,
``ceil(H / 32)`` for any ``H``; pad images to a multiple of 32 (matterport pads to a multiple of 64,
torchvision to ``size_divisible=32``) so that every level is exactly ``H / stride``.

Architectures (``build_backbone(name)``)
    ==============  ============  ===============  ======================  ===========================
    name            block         blocks/stage     c2, c3, c4, c5          parameters (no ``fc``)
    ==============  ============  ===============  ======================  ===========================
    resnet18        BasicBlock    2, 2, 2, 2       64, 128, 256, 512       11,176,512
    resnet34        BasicBlock    3, 4, 6, 3       64, 128, 256, 512       21,284,672
    resnet50        Bottleneck    3, 4, 6, 3       256, 512, 1024, 2048    23,508,032
    resnet101       Bottleneck    3, 4, 23, 3      256, 512, 1024, 2048    42,500,160
    resnet_tiny     BasicBlock    1, 1, 1, 1       16, 32, 64, 128         309,456 (for CPU training)
    ==============  ============  ===============  ======================  ===========================

Parameter counts are torchvision's totals minus its ``fc`` layer (with ``norm="frozen_bn"`` the BatchNorm
scales and shifts are buffers, not parameters, but the state dict holds the same numbers).

The Bottleneck puts its stride on the 3x3 conv ("ResNet v1.5", as torchvision); matterport's Keras ResNet
puts it on the first 1x1 conv, as the original paper and its Caffe weights did. The v1.5 placement is
slightly more accurate and is what torchvision's ImageNet weights expect.

Normalisation (``norm``)
    ``"frozen_bn"`` (default): :class:`FrozenBatchNorm2d`, a fixed per-channel affine map built from the
    pretrained BatchNorm statistics. Detection trains with 1-2 large images per GPU; batch statistics over so
    few images are noise, so both matterport (``TRAIN_BN = False``) and torchvision (pretrained backbones)
    freeze them. ``"bn"``: ordinary :class:`torch.nn.BatchNorm2d`, for training from scratch with batches
    big enough (e.g. the tiny backbone on small images).

    ``eps``: torchvision's ``FrozenBatchNorm2d`` had no eps (0) up to version 0.8 and uses BatchNorm's
    ``1e-5`` since 0.9 (pytorch/vision#2933). Its detection builders still call ``overwrite_eps(model, 0.0)``
    when they load the original COCO checkpoints (``maskrcnn_resnet50_fpn`` ``COCO_V1``, pytorch/vision#2940),
    because those were trained with eps 0; ImageNet classification weights were trained with BatchNorm's
    1e-5. So: ``bn_eps=1e-5`` (default) for ImageNet weights, ``bn_eps=0.0`` to reproduce torchvision's
    COCO_V1 detector numerics. (A non-zero eps also keeps float16 from dividing by an underflowed variance.)

Freezing (``trainable_stages``, 0..5): the five stages are the stem (``conv1``, ``bn1``) and ``layer1..4``;
the *last* ``trainable_stages`` of them get gradients, the others are frozen. This is torchvision's
``trainable_backbone_layers`` (default 3 with pretrained weights, 5 without) and matterport's ``layers``
argument of ``train()``: ``"heads"`` = 0, ``"5+"`` = 1, ``"4+"`` = 2, ``"3+"`` = 3, ``"all"`` = 5 (matterport
calls the stem stage 1 and ``layer1`` "res2", hence the shift by one). Early stages learn generic edges and
textures, which ImageNet already taught well; freezing them saves memory and time and avoids overfitting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from ._checks import check_tensor
from ._conv import Conv2d

__all__ = [
    "FrozenBatchNorm2d",
    "conv_norm",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "BACKBONE_SPECS",
    "build_backbone",
    "load_imagenet_state_dict",
]

#: name -> (block type, blocks per stage, stem width, bottleneck widths of the four stages)
BACKBONE_SPECS: dict[str, tuple[str, tuple[int, ...], int, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 64, (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), 64, (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 64, (64, 128, 256, 512)),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 64, (64, 128, 256, 512)),
    "resnet_tiny": ("basic", (1, 1, 1, 1), 16, (16, 32, 64, 128)),
}

_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and fixed affine parameters (torchvision's semantics).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel, i.e. one multiply and
    one add. All four are *buffers*, not parameters: they are saved and loaded with the state dict under the
    same names as BatchNorm2d's (so pretrained BN weights load), but no optimizer ever sees them.
    BatchNorm2d's ``num_batches_tracked`` counter is accepted and ignored when loading.

    x: ``[B, C, H, W]`` float. Returns the same shape, in ``x``'s dtype.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # a BatchNorm2d counter, meaningless here
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel ``(scale, shift)`` of ``y = x * scale + shift``, each ``[C]`` float32."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        # Cast so that half-precision activations stay half precision (the buffers are float32); addcmul
        # is one pass over x where "x * scale + shift" is two.
        scale, shift = scale.to(x.dtype)[None, :, None, None], shift.to(x.dtype)[None, :, None, None]
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, with a :class:`FrozenBatchNorm2d` folded into the convolution.

    A frozen normalisation is a fixed per-channel ``y = c * scale + shift``, and a convolution is linear in
    its weights, so ``conv(x, W) * scale + shift = conv(x, W * scale) + shift``: scaling the weights (a few
    thousand numbers per layer) replaces a pass over the whole output map (millions), and the shift becomes
    the convolution's bias. Same values up to float rounding, gradients included (they reach ``W`` through
    the product). Any other normalisation (BatchNorm2d, which learns from its batch) runs after the conv.

    x: ``[B, C_in, H, W]``. Returns ``[B, C_out, H', W']``.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale, shift = norm.scale_shift()
    weight = conv.weight * scale.to(conv.weight.dtype)[:, None, None, None]
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, weight, bias.to(weight.dtype))


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the normalisation right after has its own shift.
    return Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (ResNet-18/34). Output channels ``planes`` (``expansion = 1``).

    x: ``[B, in_ch, H, W]`` -> ``[B, planes, ceil(H / stride), ceil(W / stride)]``. ``downsample`` (a 1x1
    conv + norm) reshapes the shortcut when the stride or the channel count changes.
    """

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, norm_layer):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else conv_norm(*self.downsample, x)
        y = self.relu(conv_norm(self.conv1, self.bn1, x))
        y = conv_norm(self.conv2, self.bn2, y)
        y += shortcut  # in place: y is this block's own new tensor, and one allocation less per block
        return self.relu(y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride: "v1.5"), 1x1 expand to ``4 * planes``, plus a shortcut.

    x: ``[B, in_ch, H, W]`` -> ``[B, 4 * planes, ceil(H / stride), ceil(W / stride)]``. The narrow 3x3
    in the middle is what lets ResNet-50 be deeper than ResNet-34 at a similar cost.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, norm_layer):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else conv_norm(*self.downsample, x)
        y = self.relu(conv_norm(self.conv1, self.bn1, x))
        y = self.relu(conv_norm(self.conv2, self.bn2, y))
        y = conv_norm(self.conv3, self.bn3, y)
        y += shortcut  # in place: y is this block's own new tensor, and one allocation less per block
        return self.relu(y)


class ResNet(nn.Module):
    """ResNet body without the classifier: image -> ``{"C2", "C3", "C4", "C5"}``.

    block: ``"basic"`` or ``"bottleneck"``; layers: blocks in each of the 4 stages; stem_width: channels of
    the 7x7 stem conv; widths: ``planes`` of each stage (outputs are ``planes * expansion``).
    norm, bn_eps, trainable_stages: see the module docstring.

    Attributes
        out_channels: ``[c2, c3, c4, c5]``, the channel counts of ``C2..C5`` (what :class:`~mrcnn_edu.fpn.FPN`
        takes as ``in_channels``).
        strides: ``(4, 8, 16, 32)``.
        trainable_stages: how many of the 5 stages (from the top) get gradients; change it with
        :meth:`set_trainable_stages` (matterport trains "heads", then "4+", then "all").

    forward(x): x ``[B, 3, H, W]`` float, a normalised image batch. Returns a dict (ordered ``C2..C5``) with
    ``"Ck": [B, c_k, ceil(H / 2**k), ceil(W / 2**k)]``.
    """

    strides = (4, 8, 16, 32)

    def __init__(
        self,
        block: str,
        layers: tuple[int, ...],
        stem_width: int = 64,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        *,
        norm: str = "frozen_bn",
        bn_eps: float = 1e-5,
        trainable_stages: int = 5,
    ):
        super().__init__()
        blocks = {"basic": BasicBlock, "bottleneck": Bottleneck}
        if block not in blocks:
            raise ValueError(f"block must be one of {sorted(blocks)}, got {block!r}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths must have 4 entries (one per stage), got {layers}, {widths}")
        norm_layers = {
            "frozen_bn": partial(FrozenBatchNorm2d, eps=bn_eps),
            "bn": partial(nn.BatchNorm2d, eps=bn_eps),
        }
        if norm not in norm_layers:
            raise ValueError(f"norm must be 'frozen_bn' or 'bn', got {norm!r}")
        norm_layer = norm_layers[norm]
        block_cls = blocks[block]
        self.norm = norm

        # Stem: 7x7 stride 2 then 3x3 max-pool stride 2 -> stride 4 before layer1.
        self.conv1 = Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_ch = stem_width
        out_channels = []
        for i, (n_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2  # layer1 keeps stride 4 (the max-pool already halved)
            out_ch = planes * block_cls.expansion
            downsample = None
            if stride != 1 or in_ch != out_ch:
                downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))
            stage = [block_cls(in_ch, planes, stride, downsample, norm_layer)]
            stage += [block_cls(out_ch, planes, 1, None, norm_layer) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            in_ch = out_ch
            out_channels.append(out_ch)
        self.out_channels = out_channels

        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's ResNet init (He init for ReLU networks)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.set_trainable_stages(trainable_stages)

    def _stage_modules(self, stage: str) -> list[nn.Module]:
        return [self.conv1, self.bn1] if stage == "stem" else [getattr(self, stage)]

    def set_trainable_stages(self, trainable_stages: int) -> None:
        """Let the last ``trainable_stages`` of (stem, layer1, ..., layer4) learn; freeze the others.

        Frozen means ``requires_grad = False`` for their parameters and, with ``norm="bn"``, their
        BatchNorm layers stay in eval mode (running statistics neither used from the batch nor updated)
        even when the model is put in ``train()`` mode.
        """
        if not isinstance(trainable_stages, int) or not 0 <= trainable_stages <= 5:
            raise ValueError(f"trainable_stages must be an int in 0..5, got {trainable_stages!r}")
        self.trainable_stages = trainable_stages
        frozen = _STAGES[: 5 - trainable_stages]
        for stage in _STAGES:
            for module in self._stage_modules(stage):
                for p in module.parameters():
                    p.requires_grad_(stage not in frozen)
        self.train(self.training)

    def frozen_stages(self) -> tuple[str, ...]:
        """Names of the frozen stages, bottom first (``("stem", "layer1")`` for ``trainable_stages=3``)."""
        return _STAGES[: 5 - self.trainable_stages]

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self.frozen_stages():
            for module in self._stage_modules(stage):
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_tensor("x", x, ndim=4, kind="float")
        if x.shape[1] != 3:
            raise ValueError(f"x must be an image batch [B, 3, H, W], got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"C2": c2, "C3": c3, "C4": c4, "C5": c5}


def build_backbone(
    name: str = "resnet50",
    *,
    norm: str = "frozen_bn",
    trainable_stages: int | None = None,
    bn_eps: float = 1e-5,
) -> ResNet:
    """A ResNet body by name: ``"resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet_tiny"``.

    norm: ``"frozen_bn"`` (pretrained fine-tuning) or ``"bn"`` (training from scratch).
    trainable_stages: 0..5; None picks torchvision's default: 3 with ``"frozen_bn"`` (you will load pretrained
    weights), 5 with ``"bn"`` (nothing is pretrained, so everything must learn).
    bn_eps: the normalisation's eps (see the module docstring: 0.0 for torchvision's COCO_V1 detectors).
    Weights are randomly initialised; load ImageNet ones with :func:`load_imagenet_state_dict`.
    """
    if name not in BACKBONE_SPECS:
        raise ValueError(f"name must be one of {sorted(BACKBONE_SPECS)}, got {name!r}")
    if trainable_stages is None:
        trainable_stages = 3 if norm == "frozen_bn" else 5
    block, layers, stem_width, widths = BACKBONE_SPECS[name]
    return ResNet(
        block, layers, stem_width, widths, norm=norm, bn_eps=bn_eps, trainable_stages=trainable_stages
    )


def _read_state_dict(path_or_dict) -> tuple[Mapping, str]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict, "the given state dict"
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise ValueError(
            f"path_or_dict must be a file path or a state dict mapping, got {type(path_or_dict).__name__}"
        )
    path = os.fspath(path_or_dict)
    try:
        # weights_only: a .pth file is a pickle; never run code from a downloaded file.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated, or not a torch file at all
        raise ValueError(f"path_or_dict: could not read a state dict from file {path!r}: {e}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"path_or_dict: file {path!r} holds a {type(state).__name__}, not a state dict")
    return state, f"file {path!r}"


def load_imagenet_state_dict(module: nn.Module, path_or_dict) -> nn.Module:
    """Load torchvision ImageNet ResNet weights (a ``.pth`` file or a dict) into ``module``; return it.

    The classifier ``fc.weight`` / ``fc.bias`` are dropped (a detector has no use for the 1000 ImageNet
    classes). BatchNorm's ``num_batches_tracked`` counters are optional in both directions. Everything else
    must match exactly: otherwise a ValueError lists every missing key, every unexpected key, and every
    tensor whose shape differs, by name, and ``module`` is left unchanged.
    Files are read with ``torch.load(..., weights_only=True)`` on CPU; values are copied to the module's
    device and dtype.
    """
    state, source = _read_state_dict(path_or_dict)
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise ValueError(f"path_or_dict: {source} has non-tensor entries: {bad_values[:10]}")
    own = module.state_dict()
    counter = "num_batches_tracked"
    incoming = {
        k: v
        for k, v in state.items()
        if not k.startswith("fc.") and not (k.endswith(counter) and k not in own)
    }
    missing = [k for k in own if k not in incoming and not k.endswith(counter)]
    unexpected = [k for k in incoming if k not in own]
    mismatched = [
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}"
        for k, v in incoming.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches [{'; '.join(mismatched)}]")
        raise ValueError(f"path_or_dict: {source} does not fit the module: " + ", ".join(problems))
    # strict=False only so that an absent num_batches_tracked is tolerated; every other key was checked.
    module.load_state_dict(incoming, strict=False)
    return module
