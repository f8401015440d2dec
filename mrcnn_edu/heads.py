"""Heads: the small learned networks that read FPN features and predict scores, box deltas and masks.

* :class:`RPNHead` slides over every FPN level and, at each position, scores ``A`` anchors as object /
  not object and predicts 4 deltas per anchor. **One head is shared by every level** (the same weights run
  on ``P2`` and on ``P6``): an object looks the same whatever its size once the pyramid has rescaled it, and
  sharing gives every level's anchors the training signal of all levels.
* :class:`BoxHead` + :class:`BoxPredictor` turn each RoI's pooled ``[C, 7, 7]`` features into class logits
  and per-class box deltas (the second, refining stage).
* :class:`MaskHead` turns each RoI's pooled ``[C, 14, 14]`` features into a ``28 x 28`` mask logit **per
  class**: the class is chosen by the box branch and only that channel is used, so classes never compete
  for a pixel (a per-pixel sigmoid, not a softmax over classes; the key idea of Mask R-CNN).

Shape glossary
    B:     images in the batch
    C:     input feature channels (the FPN's ``out_channels``, 256)
    H, W:  size of one FPN level
    A:     anchors per position (3 aspect ratios in both matterport and torchvision)
    L:     number of FPN levels given to the RPN head
    T:     all anchors of an image over all levels, ``sum_l H_l * W_l * A``
    R:     RoIs (regions of interest) over the whole batch; may be 0
    P:     pooled RoI size (7 for boxes, 14 for masks)
    K:     object classes; ``num_classes = K + 1`` counts the background as class 0 (matterport's
           ``NUM_CLASSES`` and torchvision's ``num_classes`` both include it)
    D:     box head representation size (1024)

Output layouts (what the lead's loss / decoding code relies on)
    RPN deltas ``[B, 4A, H, W]``: channel ``4 * a + j`` is coordinate ``j`` (dx, dy, dw, dh) of anchor ``a``,
    i.e. it reshapes to ``[B, A, 4, H, W]`` (anchor-major); objectness ``[B, A, H, W]`` likewise.
    :func:`mrcnn_edu.anchors.concat_levels` (``values_per_anchor`` 4 or 1) turns the per-level maps into
    ``[B, T, 4]`` / ``[B, T, 1]`` rows ordered level -> row -> column -> anchor, the order of the anchors from
    :mod:`mrcnn_edu.anchors`; torchvision (``permute_and_flatten``) and matterport (reshape of a channels-last
    ``[H, W, 4A]``) use the same layout.
    Box deltas ``[R, (K + 1) * 4]``: column ``4 * k + j`` is coordinate ``j`` for class ``k``; reshape to
    ``[R, K + 1, 4]``.

Matterport vs torchvision
    * Box head: torchvision's ``TwoMLPHead`` (``variant="mlp"``: flatten, two fully connected layers) versus
      matterport's ``fpn_classifier_graph`` (``variant="conv"``: a ``P x P`` "valid" conv, which *is* a fully
      connected layer written as a conv, then a 1x1 conv, each followed by a normalisation). Matterport uses
      BatchNorm there, but with ``TRAIN_BN = False`` it never updates its statistics, so in practice it is a
      learned per-channel scale and shift. Here ``norm="gn"`` (GroupNorm, 32 groups, the default) normalises
      each RoI on its own: RoIs from different images do not influence each other, training and inference
      compute the same thing, and any R (even 0 or 1) works; ``norm="bn"`` gives BatchNorm over the RoIs as
      matterport with ``TRAIN_BN = True``.
    * Mask head: both use 4 x (3x3 conv, 256 channels) then a 2x2 stride-2 transposed conv and a 1x1 conv to
      one logit map per class. Matterport adds BatchNorm after each conv; torchvision (as here) does not.
    * Submodule names follow torchvision (``conv``, ``cls_logits``, ``bbox_pred``, ``fc6``, ``fc7``,
      ``cls_score``, ``mask_fcn1..4``, ``conv5_mask``, ``mask_fcn_logits``) so its checkpoints map by prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from ._checks import check_tensor
from ._conv import Conv2d

__all__ = ["RPNHead", "BoxHead", "BoxPredictor", "MaskHead"]


def _check_rois(name: str, x, channels: int, size: int | None = None) -> torch.Tensor:
    check_tensor(name, x, ndim=4, kind="float")
    if x.shape[1] != channels or (size is not None and tuple(x.shape[-2:]) != (size, size)):
        want = f"[R, {channels}, {size}, {size}]" if size is not None else f"[R, {channels}, P, P]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    return x


class RPNHead(nn.Module):
    """Region Proposal Network head: 3x3 conv + ReLU, then two sibling 1x1 convs.

    in_channels: ``C``; num_anchors: ``A`` anchors per position.
    Init: normal(std 0.01) weights, zero biases (torchvision, from the Faster R-CNN paper).

    forward(features): a list of ``L`` maps ``[B, C, H_l, W_l]`` (e.g. ``list(fpn_out.values())``), all run
    through the *same* layers. Returns ``(objectness, deltas)``: two lists of ``L`` tensors,
    ``objectness[l]: [B, A, H_l, W_l]`` logits (> 0 means "object"; a sigmoid gives the probability) and
    ``deltas[l]: [B, 4 * A, H_l, W_l]`` laid out as ``[B, A, 4, H_l, W_l]`` (see the module docstring).
    Matterport predicts 2 softmax logits per anchor instead of 1 sigmoid logit; the two are equivalent.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        if num_anchors <= 0 or in_channels <= 0:
            raise ValueError(
                f"in_channels and num_anchors must be positive, got {in_channels}, {num_anchors}"
            )
        self.in_channels = in_channels
        self.num_anchors = num_anchors
        self.conv = Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = Conv2d(in_channels, 4 * num_anchors, kernel_size=1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if isinstance(features, torch.Tensor) or not isinstance(features, Sequence):
            raise ValueError(
                f"features must be a list of [B, C, H, W] tensors, got {type(features).__name__}"
            )
        objectness, deltas = [], []
        for i, x in enumerate(features):
            check_tensor(f"features[{i}]", x, ndim=4, kind="float")
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"features[{i}] must have {self.in_channels} channels, got shape {tuple(x.shape)}"
                )
            # relu_ in place on the layer's own new output, here and below: one allocation fewer
            t = torch.relu_(self.conv(x))
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas


class BoxHead(nn.Module):
    """Per-RoI feature vector for the box branch.

    in_channels: ``C``; pool_size: ``P`` (7); representation: ``D`` (1024).
    variant ``"mlp"`` (torchvision ``TwoMLPHead``): flatten ``[R, C*P*P]``, ``fc6`` + ReLU, ``fc7`` + ReLU.
    variant ``"conv"`` (matterport): ``conv1`` (kernel ``P``, no padding -> ``[R, D, 1, 1]``), ``norm1``,
    ReLU, ``conv2`` (1x1), ``norm2``, ReLU; norm ``"gn"`` (default) or ``"bn"``, see the module docstring.
    The convs have no bias (the norm's shift replaces it). Linear layers keep PyTorch's default init, as
    torchvision.

    forward(x): ``[R, C, P, P]`` pooled RoI features -> ``[R, D]``.
    """

    def __init__(
        self,
        in_channels: int,
        pool_size: int = 7,
        representation: int = 1024,
        variant: str = "mlp",
        norm: str = "gn",
    ):
        super().__init__()
        self.in_channels, self.pool_size, self.variant = in_channels, pool_size, variant
        if variant == "mlp":
            self.fc6 = nn.Linear(in_channels * pool_size * pool_size, representation)
            self.fc7 = nn.Linear(representation, representation)
        elif variant == "conv":
            if norm not in ("gn", "bn"):
                raise ValueError(f"norm must be 'gn' or 'bn', got {norm!r}")
            if norm == "gn" and representation % 32:
                raise ValueError(
                    f"representation must be a multiple of 32 for norm='gn', got {representation}"
                )
            # 32 groups: GroupNorm's usual setting (Wu & He, 2018), as detectron2's GN heads.
            norm_layer = partial(nn.GroupNorm, 32) if norm == "gn" else nn.BatchNorm2d
            self.conv1 = Conv2d(in_channels, representation, kernel_size=pool_size, bias=False)
            self.norm1 = norm_layer(representation)
            self.conv2 = Conv2d(representation, representation, kernel_size=1, bias=False)
            self.norm2 = norm_layer(representation)
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        else:
            raise ValueError(f"variant must be 'mlp' or 'conv', got {variant!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rois("x", x, self.in_channels, self.pool_size)
        if self.variant == "mlp":
            x = torch.relu_(self.fc6(x.flatten(start_dim=1)))
            return torch.relu_(self.fc7(x))
        x = torch.relu_(self.norm1(self.conv1(x)))
        x = torch.relu_(self.norm2(self.conv2(x)))
        return x.flatten(start_dim=1)  # [R, D, 1, 1] -> [R, D]


class BoxPredictor(nn.Module):
    """Class logits and class-specific box deltas from the box head's vector.

    representation: ``D``; num_classes: ``K + 1`` (background included).
    Init: normal std 0.01 for ``cls_score``, 0.001 for ``bbox_pred``, zero biases (Detectron / detectron2 /
    maskrcnn-benchmark; torchvision's ``FastRCNNPredictor`` keeps PyTorch's default Linear init): tiny
    initial deltas mean the first iterations refine nothing rather than move boxes at random.

    forward(x): ``[R, D]`` -> ``(class_logits [R, K + 1], box_deltas [R, (K + 1) * 4])``; ``box_deltas``
    reshapes to ``[R, K + 1, 4]`` (one ``(dx, dy, dw, dh)`` per class; the background's is unused).
    """

    def __init__(self, representation: int, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must count the background too (>= 2), got {num_classes}")
        self.representation = representation
        self.num_classes = num_classes
        self.cls_score = nn.Linear(representation, num_classes)
        self.bbox_pred = nn.Linear(representation, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("x", x, ndim=2, kind="float")
        if x.shape[1] != self.representation:
            raise ValueError(f"x must have shape [R, {self.representation}], got {tuple(x.shape)}")
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """Mask branch: 4 x (3x3 conv + ReLU), 2x2 stride-2 transposed conv + ReLU, 1x1 conv to class logits.

    in_channels: ``C``; num_classes: ``K + 1`` (channel 0, the background, is computed but never used, as
    torchvision); conv_channels: width of the convs (256); num_convs: how many 3x3 convs (4).
    Init: Kaiming normal (fan_out, ReLU) weights and zero biases (torchvision; it leaves the two last layers'
    biases at PyTorch's default, a negligible difference).

    forward(x): ``[R, C, P, P]`` pooled RoI features (``P = 14``) -> ``[R, K + 1, 2P, 2P]`` mask logits
    (28 x 28); a sigmoid gives per-pixel probabilities. The transposed conv doubles the resolution: a
    finer mask than the pooled grid at no pooling cost.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_channels: int = 256, num_convs: int = 4):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must count the background too (>= 2), got {num_classes}")
        self.in_channels, self.num_classes, self.num_convs = in_channels, num_classes, num_convs
        ch = in_channels
        for i in range(1, num_convs + 1):
            self.add_module(f"mask_fcn{i}", Conv2d(ch, conv_channels, kernel_size=3, padding=1))
            ch = conv_channels
        self.conv5_mask = nn.ConvTranspose2d(ch, conv_channels, kernel_size=2, stride=2)
        self.mask_fcn_logits = Conv2d(conv_channels, num_classes, kernel_size=1)
        for name, param in self.named_parameters():
            if name.endswith("weight"):
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.zeros_(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rois("x", x, self.in_channels)
        for i in range(1, self.num_convs + 1):
            x = torch.relu_(getattr(self, f"mask_fcn{i}")(x))
        x = torch.relu_(self.conv5_mask(x))
        return self.mask_fcn_logits(x)
