"""Image files as users have them, read into the float 0-1 tensors the model takes; the error for bad data.

Cameras, microscopes and remote-sensing tools write more than 8-bit RGB: 16-bit PNGs and TIFFs, float TIFFs,
gray, palette and alpha images. ``PIL``'s ``convert("RGB")`` clips every 16-bit value above 255 to white and
float values to 0 or 255, so the objects vanish without an error. :func:`read_image` scales each kind by its
own range instead and refuses what it cannot scale (NaN pixels, float values outside 0-1, 32-bit integers),
naming the file.

Shape glossary
    H, W: image height and width

What each kind of file becomes (a ``[3, H, W]`` float32 tensor in 0-1):

==========================  ===============================================================================
8-bit RGB, gray, palette    ``value / 255``; gray is repeated into three channels; an alpha channel is ignored
16-bit gray (PNG, TIFF)     ``value / 65535``
16-bit RGB PNG              ``PIL`` reads the high byte of each sample: ``value / 255`` (8-bit precision)
float TIFF (gray or RGB)    as is; values must be finite and in 0-1
16-bit / float RGB TIFF     read with ``tifffile`` (a dependency of scikit-image) when it is installed
==========================  ===============================================================================

:class:`DataError` is the one exception for bad user data (files, annotations, images): a ``ValueError`` whose
message names the file and what was expected, which the command line prints as one line (exit status 2)
instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["DataError", "read_image"]


class DataError(ValueError):
    """Bad user data: the message names the file (and the annotation or image in it) and what was expected."""


_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path) -> torch.Tensor:
    """The image file ``path`` as float32 ``[3, H, W]`` in 0-1 (see the module docstring for each kind).

    Raises :class:`DataError` naming the file if it is missing or unreadable, has NaN pixels, float pixels
    outside 0-1, or a layout with no known range (32-bit integers, 2 or more than 4 channels).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {str(path)!r} not found")
    pixels = None
    if path.suffix.lower() in _TIFF_SUFFIXES:
        pixels = _read_with_tifffile(path)  # None where tifffile is missing or cannot decode the file
    if pixels is None:
        pixels = _read_with_pil(path)
    return _to_tensor(pixels, path)


def _read_with_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # pillow comes with matplotlib

    try:
        with Image.open(path) as img:
            if img.mode in _UINT16_MODES or (img.mode == "I" and img.format == "PNG"):  # PNG tops at 16 bits
                return np.asarray(img).astype(np.float32) / 65535
            if img.mode == "I":
                raise DataError(
                    f"image file {str(path)!r} has 32-bit integer pixels, whose range is unknown: save it "
                    "with 8 or 16 bits per channel, or as float in 0-1"
                )
            if img.mode == "F":
                return np.asarray(img, dtype=np.float32)
            return np.asarray(img.convert("RGB")).astype(np.float32) / 255
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"image file {str(path)!r} could not be read: {err}") from None


def _read_with_tifffile(path: Path) -> np.ndarray | None:
    try:
        import tifffile
    except ImportError:
        return None
    try:
        pixels = tifffile.imread(path)
    except Exception:  # compressed with a codec it lacks, or not a TIFF at all: PIL tries next
        return None
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535
    if pixels.dtype.kind == "f":
        return pixels.astype(np.float32)
    kind = f"{8 * pixels.dtype.itemsize}-bit integer" if pixels.dtype.kind in "iu" else str(pixels.dtype)
    raise DataError(
        f"image file {str(path)!r} has {kind} pixels, whose range is unknown: save it with 8 or 16 bits per "
        "channel, or as float in 0-1"
    )


def _to_tensor(pixels: np.ndarray, path: Path) -> torch.Tensor:
    """``[H, W]`` or ``[H, W, C]`` float32 numbers -> checked ``[3, H, W]`` tensor."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise DataError(
            f"image file {str(path)!r} has shape {pixels.shape}: expected gray, RGB or RGBA channels "
            "(H x W, H x W x 3 or H x W x 4)"
        )
    nan = int(np.isnan(pixels).sum())
    if nan:
        raise DataError(f"image file {str(path)!r} has {nan} NaN pixels")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
        raise DataError(
            f"image file {str(path)!r}: float pixels must be in 0-1, got "
            f"{pixels.min():.4g}..{pixels.max():.4g}"
        )
    image = torch.from_numpy(np.ascontiguousarray(pixels[:, :, :3])).permute(2, 0, 1)
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image.contiguous()
