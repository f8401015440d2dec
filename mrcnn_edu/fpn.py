"""Feature Pyramid Network: give every backbone level both fine resolution and strong semantics.

The backbone's ``C2`` is sharp but "dumb", ``C5`` is smart but coarse. The FPN walks *top-down*: it brings
``C5`` to 256 channels with a 1x1 "lateral" conv, upsamples it 2x (nearest neighbour) and **adds** it to
``C4``'s lateral, then repeats down to ``C2``. Each sum then goes through a 3x3 conv (smoothing the
upsampling's blockiness) to give ``P2..P5``, all with the same channel count, so that one RPN head and one
RoI head can read any level. ``P6`` is ``P5`` subsampled by 2, used only by the RPN for the largest anchors.

FPN adds, U-Net concatenates: U-Net's decoder concatenates the skip connection and the upsampled map, so the
channel count grows and a conv must shrink it again; FPN's lateral 1x1 convs bring every level to the same
width first, so an element-wise add suffices and the channel count never changes.

Shape glossary
    B:      images in the batch
    H, W:   padded image height and width
    c_k:    channels of backbone level ``Ck`` (``ResNet.out_channels``)
    F:      FPN channels, ``out_channels`` (256: matterport's ``TOP_DOWN_PYRAMID_SIZE``, torchvision)
    Ck, Pk: level k, stride ``2**k``: ``[B, c_k or F, ceil(H / 2**k), ceil(W / 2**k)]``

Matterport vs torchvision
    * Upsampling: matterport's ``UpSampling2D(2)`` needs sizes that halve exactly (it pads images to a
      multiple of 64); here, as in torchvision, the coarse map is resized to the lateral's *exact* size, so
      odd sizes (``ceil`` halving, e.g. 25 -> 13) work too; for sizes divisible by 32 the two are the same.
    * ``P6``: both pass ``P5`` through a max-pool of kernel 1, stride 2 (subsampling: every other pixel).
    * Init: torchvision's ``kaiming_uniform_(a=1)`` with zero bias (matterport uses Keras' Glorot uniform).

Submodule names mirror torchvision's ``FeaturePyramidNetwork``: ``inner_blocks.i`` (lateral 1x1 convs) and
``layer_blocks.i`` (output 3x3 convs), ``i = 0`` being the finest level (``C2``), each a plain ``nn.Conv2d``
(``mrcnn_edu._conv.Conv2d``, which only picks a faster CPU kernel).
torchvision's published COCO checkpoints store ``backbone.fpn.inner_blocks.i.weight`` (newer torchvision code
wraps each conv as ``inner_blocks.i.0`` and renames old keys when loading), so mapping those files here is
just removing the ``backbone.fpn.`` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_tensor
from ._conv import Conv2d

__all__ = ["FPN"]


class FPN(nn.Module):
    """Top-down pathway with lateral connections over backbone levels ``C2..C5`` (or any ``Ck..Cm``).

    in_channels: ``[c_2, ..., c_5]``, the channels of the input levels, finest first (e.g.
    ``backbone.out_channels``). out_channels: ``F``, the channels of every output level.

    forward(features): a dict ``{"C2": [B, c_2, H2, W2], ..., "C5": [B, c_5, H5, W5]}``, finest first, each
    level about half the size of the previous one. Returns a dict ordered
    ``{"P2": [B, F, H2, W2], ..., "P5": [B, F, H5, W5], "P6": [B, F, ceil(H5 / 2), ceil(W5 / 2)]}``:
    one output per input with the same spatial size, plus one extra coarser level.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels or not all(isinstance(c, int) and c > 0 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {in_channels!r}")
        if not isinstance(out_channels, int) or out_channels <= 0:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.inner_blocks = nn.ModuleList(Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels
        )
        for conv in [*self.inner_blocks, *self.layer_blocks]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def _check(self, features) -> list[tuple[int, torch.Tensor]]:
        if not isinstance(features, Mapping):
            raise ValueError(f"features must be a dict {{'C2': tensor, ...}}, got {type(features).__name__}")
        if len(features) != len(self.in_channels):
            raise ValueError(
                f"features must have {len(self.in_channels)} levels, got {len(features)}: {list(features)}"
            )
        levels = []
        for (name, c), want in zip(features.items(), self.in_channels, strict=True):
            if not (isinstance(name, str) and name[:1] == "C" and name[1:].isdigit()):
                raise ValueError(f"features keys must be 'C<level>' like 'C2', got {name!r}")
            check_tensor(f"features[{name!r}]", c, ndim=4, kind="float")
            if c.shape[1] != want:
                raise ValueError(
                    f"features[{name!r}] must have {want} channels (in_channels), got shape {tuple(c.shape)}"
                )
            levels.append((int(name[1:]), c))
        if [lv for lv, _ in levels] != list(range(levels[0][0], levels[0][0] + len(levels))):
            raise ValueError(f"features keys must be consecutive levels, finest first, got {list(features)}")
        return levels

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = self._check(features)
        # Top-down: start from the coarsest level, add each finer lateral on the way down.
        top_down = self.inner_blocks[-1](levels[-1][1])
        outputs = [self.layer_blocks[-1](top_down)]
        for i in range(len(levels) - 2, -1, -1):
            lateral = self.inner_blocks[i](levels[i][1])
            # Resize to the lateral's exact size (not "x2"): with odd sizes, 13 -> 25 is not a doubling.
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.layer_blocks[i](top_down))
        # Extra level: every other pixel of the coarsest output (a max-pool with kernel 1 picks, not pools).
        outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        first = levels[0][0]
        return {f"P{first + i}": p for i, p in enumerate(outputs)}
