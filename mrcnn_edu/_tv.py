"""Optional torchvision: used only as a fast path on GPU and as a test reference, never required."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def torchvision_ops():
    """``torchvision.ops`` if torchvision imports *and* its own compiled kernels load, else None.

    (Where :func:`mrcnn_edu.references.import_torchvision` has put onnxruntime kernels behind torchvision's
    operators, this still returns None: the fast paths only hand work to torchvision's own kernels.)
    """
    try:
        import torch
        import torchvision.extension
        import torchvision.ops as ops

        if not torchvision.extension._has_ops():
            return None
        ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)  # raises where the compiled ops are missing
        return ops
    except Exception:  # ImportError, or RuntimeError from a build without working kernels
        return None
