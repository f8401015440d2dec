"""Argument checks shared by every stage: each error names the argument and says what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_tensor", "check_boxes", "check_size", "check_same_device"]


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)} and dtype {t.dtype}"


def check_tensor(
    name: str,
    t,
    *,
    ndim: int | Sequence[int] | None = None,
    last_dim: int | None = None,
    kind: str | None = None,
    length: int | None = None,
) -> torch.Tensor:
    """Raise ValueError unless ``t`` is a tensor of the given rank / last size / dtype kind / length.

    kind: "float" (floating point), "int" (integer, not bool), "bool", "index" (integer or bool), or None.
    length: the size of the first dimension (one entry per box, say).
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got {_describe(t)}")
    if last_dim is not None and (t.dim() == 0 or t.shape[-1] != last_dim):
        raise ValueError(f"{name} must have last dimension {last_dim}, got {_describe(t)}")
    if kind == "float" and not t.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {_describe(t)}")
    if kind == "int" and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got {_describe(t)}")
    if kind == "bool" and t.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got {_describe(t)}")
    if kind == "index" and (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must be an integer or bool tensor, got {_describe(t)}")
    if length is not None and (t.dim() == 0 or t.shape[0] != length):
        raise ValueError(f"{name} must have {length} entries (one per box), got {_describe(t)}")
    return t


def check_boxes(name: str, boxes, *, ndim: int | Sequence[int] = 2) -> torch.Tensor:
    """Boxes are float tensors ``[..., 4]`` holding ``(x1, y1, x2, y2)`` in pixels."""
    return check_tensor(name, boxes, ndim=ndim, last_dim=4, kind="float")


def check_size(name: str, size) -> tuple[int, int]:
    """An image size ``(height, width)`` of two non-negative numbers (ints, or a 2-element tensor)."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (height, width) pair, got {size!r}") from None
    if h < 0 or w < 0:
        raise ValueError(f"{name} must be non-negative (height, width), got {size!r}")
    return h, w


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless every named tensor is on the first one's device (checked before any work, so
    the error names the argument instead of a kernel failing half-way)."""
    (first, ref), *rest = tensors.items()
    for name, t in rest:
        if t.device != ref.device:
            raise ValueError(f"{name} must be on the device of {first} ({ref.device}), got {t.device}")
