"""Molding: resize, pad and normalise photos into network input, and map detections back to the photo.

A detector is trained on batches, and a batch is one tensor, so images of different sizes are first scaled
to a similar size and then zero-padded to a common one. The size is not free: the backbone halves the
resolution five or six times and the feature pyramid (FPN) adds each coarse level, upsampled, to the next
finer one, so the two must have matching sizes. Matterport's top-down path upsamples by exactly 2, which only
fits when every level is exactly half the one before: sides must be multiples of ``2**6 = 64`` (down to P6).
torchvision's FPN resizes each coarse map to the finer map's size, and pads only to multiples of 32, which
keeps the strides of P2-P5 (4 to 32) exact so anchors line up with feature cells.

Where the photo lies inside the padded input is the **window**; it, the scale and any crop are recorded in an
:class:`ImageMeta`, which the inverse functions use to put boxes and masks predicted on the molded image back
onto the photo: subtract the padding (add back the crop offset), divide by the scale, clip.

Shape glossary
    C: image channels (1 or 3)
    H, W: original image (photo) height and width in pixels
    h, w: the image after scaling, before padding or cropping ("resized size")
    H', W': the molded image, after padding or cropping ("molded size")
    B: images in a batch
    N: boxes or instance masks of one image

Resize modes (``resize_image(mode=...)``)
    ``"square"`` (matterport's default): scale up so the short side is at least ``min_dim`` (never down),
        then, if the long side would exceed ``max_dim``, scale so it equals ``max_dim`` instead; pad to
        ``max_dim x max_dim``. Padding is split top/bottom and left/right, the extra pixel going to the
        bottom/right. Every image gets the same size, so a batch needs no further padding.
    ``"pad64"``: scale up to ``min_dim`` as above (``max_dim`` is ignored), then pad each side to the next
        multiple of 64, split as in ``"square"``.
    ``"crop"``: scale up to ``min_dim`` as above, then take a random ``min_dim x min_dim`` crop (training
        only: part of the photo is lost). ``max_dim`` is ignored.
    ``"none"``: leave the image as it is.
    ``"minmax"`` (torchvision's ``GeneralizedRCNNTransform``): ``scale = min(min_dim / short side,
        max_dim / long side)``, so the short side becomes ``min_dim`` (800) unless the long side would exceed
        ``max_dim`` (1333); this scales down as well as up. No padding here: :func:`batch_images` pads the
        batch at the bottom/right to a multiple of 32.

    Matterport's modes also honour ``min_scale`` (scale by at least this much, e.g. 2 for tiny nuclei images;
    the ``max_dim`` cap of ``"square"`` still wins). Sizes are ``round(h * scale)`` with Python's ``round`` in
    matterport's modes; torchvision computes the scale in float32 and floors, so a 480 x 640 photo becomes
    800 x 1066 (``640 * 5/3 = 1066.7``), and a 300 x 500 one 799 x 1333 (``1333/500`` wins: ``300 * 2.666``).

Interpolation is bilinear without antialiasing (matterport's skimage ``order=1`` and torchvision's
``F.interpolate`` both do this) with ``align_corners=False``: pixels are unit squares, as in
:mod:`mrcnn_edu.boxes`, so a point at ``x`` in the photo lies at exactly ``x * w / W`` in the resized image
and box coordinates scale linearly. ``align_corners=True`` would map the centres of the corner pixels onto
each other instead, a slightly different map for every image size.

Normalisation (:func:`normalize_image`)
    matterport: 0-255 pixels minus ``MEAN_PIXEL = [123.7, 116.8, 103.9]`` (RGB), no division
        (``normalize_image(image, MATTERPORT_MEAN_PIXEL, pixel_scale=255)`` for a 0-1 image).
    torchvision: 0-1 pixels, ``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` (ImageNet statistics).
    The order differs too: matterport pads first and normalises after, so its padding ends up at
    ``-MEAN_PIXEL``; torchvision normalises first and pads after, so its padding is 0, the mean colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_boxes, check_tensor
from .boxes import clip_boxes

__all__ = [
    "MATTERPORT_MEAN_PIXEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "ImageMeta",
    "resize_image",
    "resize_masks",
    "resize_boxes",
    "normalize_image",
    "denormalize_image",
    "batch_images",
    "unmold_boxes",
    "unmold_masks",
]

#: Matterport's ``config.MEAN_PIXEL`` (RGB, for 0-255 pixels); roughly the ImageNet mean times 255.
MATTERPORT_MEAN_PIXEL = (123.7, 116.8, 103.9)
#: torchvision's ``image_mean`` for 0-1 pixels (ImageNet statistics, RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: torchvision's ``image_std`` for 0-1 pixels.
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("square", "pad64", "crop", "none", "minmax")
_PAD64 = 64


@dataclass(frozen=True)
class ImageMeta:
    """Everything needed to map coordinates between a photo and its molded image (plain Python numbers).

    original_size: ``(H, W)`` of the photo.
    resized_size: ``(h, w)`` after scaling, before padding or cropping.
    molded_size: ``(H', W')`` of the molded image.
    scale: the scale factor chosen (matterport's ``scale``); the exact per-axis factors, which differ from it
        by the rounding of the sizes, are :attr:`scale_xy`.
    window: ``(x1, y1, x2, y2)`` pixels of the molded image that hold the photo (matterport's ``window``,
        which is ``(y1, x1, y2, x2)``); the whole molded image in ``"crop"``, ``"none"`` and ``"minmax"``.
    padding: ``(top, bottom, left, right)`` zero pixels added around the resized image.
    crop: ``(x1, y1, x2, y2)`` of the resized image kept by ``"crop"`` mode, else None.
    mode: the resize mode used.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    molded_size: tuple[int, int]
    scale: float
    window: tuple[int, int, int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    crop: tuple[int, int, int, int] | None = None
    mode: str = "none"

    @property
    def scale_xy(self) -> tuple[float, float]:
        """``(w / W, h / H)``: how far apart two photo points end up in the resized image, per axis."""
        return self.resized_size[1] / self.original_size[1], self.resized_size[0] / self.original_size[0]

    @property
    def offset_xy(self) -> tuple[int, int]:
        """``(dx, dy)`` added after scaling: the left/top padding minus the crop's top-left corner."""
        cx, cy = (self.crop[0], self.crop[1]) if self.crop is not None else (0, 0)
        return self.padding[2] - cx, self.padding[0] - cy


def _check_image(name: str, image, ndim: int | Sequence[int] = 3) -> torch.Tensor:
    check_tensor(name, image, ndim=ndim, kind="float")
    if image.shape[-3] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels (dimension -3), got shape {tuple(image.shape)}"
        )
    return image


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, h, w]`` to ``size`` (unit-square pixels, no antialiasing)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _split(total: int) -> tuple[int, int]:
    """Padding split as matterport does: half before, the odd pixel after."""
    return total // 2, total - total // 2


def _matterport_scale(h: int, w: int, mode: str, min_dim: int, max_dim: int, min_scale: float) -> float:
    scale = 1.0
    if min_dim:
        scale = max(1.0, min_dim / min(h, w))  # up, never down
    if min_scale and scale < min_scale:
        scale = float(min_scale)
    if mode == "square" and round(max(h, w) * scale) > max_dim:
        scale = max_dim / max(h, w)
    return scale


def _torchvision_scale(h: int, w: int, min_dim: int, max_dim: int) -> float:
    # In Python floats, as torchvision's eager path: its float32 path (TorchScript, tracing) can round
    # 800 / 427 so that 427 rows become 799, not 800.
    return min(min_dim / min(h, w), max_dim / max(h, w))


def resize_image(
    image: torch.Tensor,
    mode: str = "square",
    min_dim: int | None = 800,
    max_dim: int | None = 1024,
    min_scale: float | None = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ImageMeta]:
    """Scale and pad (or crop) one image as matterport's ``utils.resize_image`` or torchvision's transform.

    image: ``[C, H, W]`` float, C = 1 or 3, any value range (0-1 expected); H, W > 0.
    mode: one of :data:`RESIZE_MODES`, described in the module docstring.
    min_dim: the short side to reach (matterport ``IMAGE_MIN_DIM`` 800, torchvision ``min_size`` 800);
        0 or None disables upscaling in matterport's modes; the crop size in ``"crop"``.
    max_dim: the long-side limit (matterport ``IMAGE_MAX_DIM`` 1024, the padded square's side; torchvision
        ``max_size`` 1333). Used by ``"square"`` and ``"minmax"`` only.
    min_scale: smallest scale factor (matterport ``IMAGE_MIN_SCALE``); ignored by ``"minmax"`` and ``"none"``.
    generator: a CPU ``torch.Generator`` for the random crop of ``"crop"`` mode.
    Returns ``(molded [C, H', W'], meta)``: the image in the input's dtype and device with zeros as padding,
    and its :class:`ImageMeta`. ``"none"`` returns the input tensor itself, and ``"crop"`` at scale 1 a view
    of it (as matterport's slicing does): clone before writing into them in place.
    """
    _check_image("image", image)
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    # Matterport's config uses None (or 0) for "not set".
    min_dim, max_dim, min_scale = int(min_dim or 0), int(max_dim or 0), float(min_scale or 0.0)
    if min_dim < 0 or max_dim < 0 or min_scale < 0:
        raise ValueError(
            f"min_dim, max_dim and min_scale must be >= 0, got min_dim={min_dim}, max_dim={max_dim}, "
            f"min_scale={min_scale}"
        )
    if mode in ("square", "minmax") and max_dim <= 0:
        raise ValueError(f"max_dim must be positive in mode {mode!r}, got {max_dim}")
    if mode in ("crop", "minmax") and min_dim <= 0:
        raise ValueError(f"min_dim must be positive in mode {mode!r}, got {min_dim}")
    h, w = image.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"image must have a positive height and width, got shape {tuple(image.shape)}")

    if mode == "none":
        return image, ImageMeta((h, w), (h, w), (h, w), 1.0, (0, 0, w, h), mode=mode)

    if mode == "minmax":
        scale = _torchvision_scale(h, w, min_dim, max_dim)
        rh, rw = math.floor(h * scale), math.floor(w * scale)
    else:
        scale = _matterport_scale(h, w, mode, min_dim, max_dim, min_scale)
        rh, rw = round(h * scale), round(w * scale)
    # A very elongated image could round a side to 0 pixels; keep at least one.
    rh, rw = max(rh, 1), max(rw, 1)
    resized = _resize(image[None], (rh, rw))[0]

    if mode == "minmax":
        return resized, ImageMeta((h, w), (rh, rw), (rh, rw), scale, (0, 0, rw, rh), mode=mode)

    if mode == "crop":
        # Inclusive upper bounds, as matterport's random.randint(0, h - min_dim).
        y = int(torch.randint(0, max(rh - min_dim, 0) + 1, (1,), generator=generator))
        x = int(torch.randint(0, max(rw - min_dim, 0) + 1, (1,), generator=generator))
        crop = (x, y, min(x + min_dim, rw), min(y + min_dim, rh))
        molded = resized[:, crop[1] : crop[3], crop[0] : crop[2]]
        mh, mw = molded.shape[-2:]
        return molded, ImageMeta((h, w), (rh, rw), (mh, mw), scale, (0, 0, mw, mh), crop=crop, mode=mode)

    if mode == "square":
        mh, mw = max_dim, max_dim
    else:  # pad64
        mh, mw = -(-rh // _PAD64) * _PAD64, -(-rw // _PAD64) * _PAD64
    top, bottom = _split(mh - rh)
    left, right = _split(mw - rw)
    molded = F.pad(resized, (left, right, top, bottom))  # zeros
    window = (left, top, left + rw, top + rh)
    return molded, ImageMeta((h, w), (rh, rw), (mh, mw), scale, window, (top, bottom, left, right), mode=mode)


def _place(x: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """Pad or crop a resized ``[..., h, w]`` tensor as ``meta`` says, giving ``[..., H', W']``."""
    if meta.crop is not None:
        x1, y1, x2, y2 = meta.crop
        return x[..., y1:y2, x1:x2]
    top, bottom, left, right = meta.padding
    return F.pad(x, (left, right, top, bottom))


def resize_masks(masks: torch.Tensor, meta: ImageMeta, method: str = "bilinear") -> torch.Tensor:
    """Apply an image's molding to its instance masks, so they stay aligned with the molded image.

    masks: ``[N, H, W]`` bool, integer or float 0/1 masks of the photo (``meta.original_size``); values
        ``>= 0.5`` count as inside.
    meta: the :class:`ImageMeta` returned by :func:`resize_image` for the photo.
    method: ``"bilinear"`` (default) resizes bilinearly and keeps pixels ``>= 0.5``: the outline follows the
        image's own resize. ``"nearest"`` is torchvision's ``F.interpolate(mode="nearest")``, which copies
        source pixel ``floor(i * H / h)``, the top-left rather than the centre of each output pixel, so the
        mask drifts up-left by up to half an output pixel (matterport's scipy order-0 zoom is nearest too).
        Shrinking a 300 x 500 photo 2.3x and back, a radius-40 disk keeps IoU 0.96 with bilinear, 0.93 with
        nearest.
    Returns ``[N, H', W']`` binary masks in the dtype of ``masks``, padded with zeros or cropped as the image.
    """
    check_tensor("masks", masks, ndim=3)
    if tuple(masks.shape[-2:]) != tuple(meta.original_size):
        raise ValueError(
            f"masks must be the size of the original image {meta.original_size}, "
            f"got shape {tuple(masks.shape)}"
        )
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *meta.molded_size))
    x = masks[:, None].float() if not masks.is_floating_point() else masks[:, None]
    if method == "bilinear":
        x = _resize(x, meta.resized_size)
    elif tuple(x.shape[-2:]) != tuple(meta.resized_size):
        x = F.interpolate(x, size=meta.resized_size, mode="nearest")
    # Pad as bool: padding a float tensor costs several times more than the resize itself.
    return _place(x[:, 0] >= 0.5, meta).to(masks.dtype)


def _clip_to_window(boxes: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    x1, y1, x2, y2 = window
    shift = boxes.new_tensor([x1, y1, x1, y1])
    return clip_boxes(boxes - shift, (y2 - y1, x2 - x1)) + shift


def resize_boxes(boxes: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """Apply an image's molding to boxes on the photo: scale, shift by the padding or crop, clip.

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` in photo pixels.
    meta: the photo's :class:`ImageMeta`.
    Returns ``[N, 4]`` boxes in molded-image pixels, clipped to ``meta.window``. Nothing is dropped: a box
    that falls outside a crop becomes zero-width or zero-height; filter those with ``box_area(b) > 0``.
    """
    check_boxes("boxes", boxes)
    sx, sy = meta.scale_xy
    dx, dy = meta.offset_xy
    moved = boxes * boxes.new_tensor([sx, sy, sx, sy]) + boxes.new_tensor([dx, dy, dx, dy])
    return _clip_to_window(moved, meta.window)


def unmold_boxes(boxes: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """Map boxes predicted on the molded image back onto the photo (matterport's ``unmold_detections``).

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` in molded-image pixels.
    meta: the photo's :class:`ImageMeta`.
    Returns ``[N, 4]`` boxes in photo pixels: the padding removed (crop offset added back), divided by the
    per-axis scale, clipped to the photo ``[0, W] x [0, H]``. Nothing is dropped (matterport drops boxes that
    end up with zero area; do that with ``box_area(b) > 0`` if wanted).
    """
    check_boxes("boxes", boxes)
    sx, sy = meta.scale_xy
    dx, dy = meta.offset_xy
    photo = (boxes - boxes.new_tensor([dx, dy, dx, dy])) / boxes.new_tensor([sx, sy, sx, sy])
    return clip_boxes(photo, meta.original_size)


def unmold_masks(masks: torch.Tensor, meta: ImageMeta, threshold: float | None = None) -> torch.Tensor:
    """Map full-size mask probabilities on the molded image back onto the photo.

    masks: ``[N, H', W']`` float probabilities (or bool/integer masks) over the whole molded image, e.g. the
        small per-ROI masks already pasted at their boxes.
    meta: the photo's :class:`ImageMeta`.
    threshold: None returns probabilities; a number returns bool masks ``prob >= threshold`` (matterport and
        torchvision use 0.5).
    Returns ``[N, H, W]``: the window cut out (placed back at the crop in ``"crop"`` mode, zero elsewhere) and
    resized bilinearly to the photo size; float (the input's dtype if float, else float32) or bool.
    """
    check_tensor("masks", masks, ndim=3)
    if tuple(masks.shape[-2:]) != tuple(meta.molded_size):
        raise ValueError(
            f"masks must be the size of the molded image {meta.molded_size}, got shape {tuple(masks.shape)}"
        )
    x = masks if masks.is_floating_point() else masks.float()
    x1, y1, x2, y2 = meta.window
    x = x[:, y1:y2, x1:x2]
    if meta.crop is not None:
        cx1, cy1, cx2, cy2 = meta.crop
        canvas = x.new_zeros((x.shape[0], *meta.resized_size))
        canvas[:, cy1:cy2, cx1:cx2] = x
        x = canvas
    if x.shape[0] == 0:
        x = x.new_zeros((0, *meta.original_size))
    else:
        x = _resize(x[:, None], meta.original_size)[:, 0]
    return x >= threshold if threshold is not None else x


def _channel_stats(name: str, values, image: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=image.dtype, device=image.device).flatten()
    c = image.shape[-3]
    if t.numel() not in (1, c):
        raise ValueError(f"{name} must have 1 or {c} values (one per channel), got {t.numel()}")
    return t[:, None, None]


def normalize_image(
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float] | None = None,
    pixel_scale: float = 1.0,
) -> torch.Tensor:
    """``(image * pixel_scale - mean) / std``, per channel: the network's input statistics.

    image: ``[C, H, W]`` or ``[B, C, H, W]`` float, C = 1 or 3.
    mean: C values (or one for all channels), e.g. :data:`IMAGENET_MEAN` or :data:`MATTERPORT_MEAN_PIXEL`.
    std: C values, or None to only subtract the mean (matterport).
    pixel_scale: multiply first: 255 turns 0-1 pixels into matterport's 0-255 ones.
    Returns a new tensor of the input's shape, dtype and device.

    torchvision: ``normalize_image(img, IMAGENET_MEAN, IMAGENET_STD)``;
    matterport: ``normalize_image(img, MATTERPORT_MEAN_PIXEL, pixel_scale=255)``.
    """
    _check_image("image", image, ndim=(3, 4))
    out = image * pixel_scale - _channel_stats("mean", mean, image)
    return out / _channel_stats("std", std, image) if std is not None else out


def denormalize_image(
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float] | None = None,
    pixel_scale: float = 1.0,
) -> torch.Tensor:
    """The inverse of :func:`normalize_image` with the same arguments (to display a molded image).

    image: ``[C, H, W]`` or ``[B, C, H, W]`` float, C = 1 or 3.
    Returns ``(image * std + mean) / pixel_scale``, same shape, dtype and device.
    """
    _check_image("image", image, ndim=(3, 4))
    out = image * _channel_stats("std", std, image) if std is not None else image
    return (out + _channel_stats("mean", mean, image)) / pixel_scale


def batch_images(
    images: Sequence[torch.Tensor], size_divisible: int = 32
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Stack images of different sizes into one zero-padded batch (torchvision's ``batch_images``).

    images: B ``[C, H_i, W_i]`` float tensors with the same C, dtype and device.
    size_divisible: the batch's height and width are rounded up to a multiple of this (32 in torchvision;
        64 gives matterport's ``pad64`` sizes).
    Returns ``(batch [B, C, H', W'], image_sizes)``: each image at the top-left of its slot, zeros to its
    bottom and right; ``image_sizes[i] = (H_i, W_i)``, the region of slot i that holds image i.
    """
    if isinstance(images, torch.Tensor) or len(images) == 0:
        raise ValueError("images must be a non-empty list of [C, H, W] tensors")
    if int(size_divisible) < 1:
        raise ValueError(f"size_divisible must be a positive integer, got {size_divisible!r}")
    for i, img in enumerate(images):
        _check_image(f"images[{i}]", img)
    first = images[0]
    for i, img in enumerate(images):
        if img.shape[0] != first.shape[0] or img.dtype != first.dtype or img.device != first.device:
            raise ValueError(
                f"images[{i}] must match images[0]'s channels, dtype and device: got shape "
                f"{tuple(img.shape)}, {img.dtype} on {img.device} vs {tuple(first.shape)}, {first.dtype} on "
                f"{first.device}"
            )
    stride = int(size_divisible)
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
    height = -(-max(h for h, _ in sizes) // stride) * stride
    width = -(-max(w for _, w in sizes) // stride) * stride
    batch = first.new_zeros((len(images), first.shape[0], height, width))
    for i, (img, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        batch[i, :, :h, :w].copy_(img)  # (indexing, not unbind: images that require grad pass their gradient)
    return batch, sizes
