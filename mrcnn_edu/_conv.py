"""``Conv2d``: ``torch.nn.Conv2d`` that uses oneDNN's CPU convolution for every shape.

On the CPU PyTorch picks between two float32 convolution kernels by a rule of thumb: a 1x1, stride-1
convolution of fewer than 16 images on one thread goes to its generic "unfold + matrix product" kernel,
everything else to oneDNN's (``torch.mkldnn_convolution``). In a ResNet-50-FPN about half of the
convolutions are such 1x1 layers, and on channels-last feature maps oneDNN computed those shapes 1.1 to 2
times as fast on one thread of the 2-core development machine. Same parameters, state dict keys, arguments
and gradients as ``nn.Conv2d``; only the kernel differs, so results agree to float rounding. Every other
device, dtype (autocast included) and padding mode takes ``nn.Conv2d``'s own path.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2d"]


def _onednn(input: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> bool:
    return (
        input.device.type == "cpu"
        and input.dtype == weight.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch, "mkldnn_convolution")  # (an op of torch's own API, not a documented one)
        and torch.backends.mkldnn.enabled
    )


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments and parameters) whose CPU float32 forward always runs oneDNN's kernel."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if _onednn(input, weight, self):
            return torch.mkldnn_convolution(
                input, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)

