"""Tests for mrcnn_edu.molding: hand-computed sizes, an independent bilinear reference, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.boxes import box_iou, masks_to_boxes
from mrcnn_edu.molding import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MATTERPORT_MEAN_PIXEL,
    ImageMeta,
    batch_images,
    denormalize_image,
    normalize_image,
    resize_boxes,
    resize_image,
    resize_masks,
    unmold_boxes,
    unmold_masks,
)

_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=_NO_CUDA)]


def _image(h, w, c=3, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Strictly positive, so zero padding is distinguishable from content.
    image = 0.1 + 0.9 * torch.rand((c, h, w), generator=g, dtype=torch.float64)
    return image.to(device=device, dtype=dtype)


def _bilinear_reference(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Half-pixel bilinear resize written from the formula (pixel centres at i + 0.5, edges clamped)."""

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(img.shape[1], oh)
    x0, x1, lx = axis(img.shape[2], ow)
    top = img[:, y0][:, :, x0] * (1 - lx) + img[:, y0][:, :, x1] * lx
    bottom = img[:, y1][:, :, x0] * (1 - lx) + img[:, y1][:, :, x1] * lx
    return top * (1 - ly)[:, None] + bottom * ly[:, None]


def _content_and_padding(molded, meta):
    x1, y1, x2, y2 = meta.window
    inside = torch.zeros(molded.shape[-2:], dtype=torch.bool, device=molded.device)
    inside[y1:y2, x1:x2] = True
    return molded[:, y1:y2, x1:x2], molded[:, ~inside]


# ---------------------------------------------------------------- sizes, scales, windows by hand


@pytest.mark.parametrize(
    "hw, kwargs, scale, resized, molded, window, padding",
    [
        # 256/300 < 1: matterport never scales down for min_dim; 500 <= 512, so scale 1, pad 212 and 12.
        ((300, 500), dict(min_dim=256, max_dim=512), 1.0, (300, 500), (512, 512), (6, 106, 506, 406),
         (106, 106, 6, 6)),
        # 400/300 would make the long side round(666.7) = 667 > 512, so scale = 512/500; round(307.2) = 307.
        ((300, 500), dict(min_dim=400, max_dim=512), 1.024, (307, 512), (512, 512), (0, 102, 512, 409),
         (102, 103, 0, 0)),
        # Larger than max_dim: scaled down to fit, 200 * 0.32 = 64, 100 * 0.32 = 32.
        ((100, 200), dict(min_dim=50, max_dim=64), 0.32, (32, 64), (64, 64), (0, 16, 64, 48), (16, 16, 0, 0)),
        # min_scale 2 without min_dim: 60 x 80, padded to 128.
        ((30, 40), dict(min_dim=0, max_dim=128, min_scale=2.0), 2.0, (60, 80), (128, 128), (24, 34, 104, 94),
         (34, 34, 24, 24)),
    ],
)
def test_square_mode_by_hand(hw, kwargs, scale, resized, molded, window, padding):
    out, meta = resize_image(_image(*hw), mode="square", **kwargs)
    assert out.shape == (3, *molded)
    assert meta.scale == pytest.approx(scale)
    assert meta.resized_size == resized and meta.molded_size == molded
    assert meta.window == window and meta.padding == padding and meta.crop is None


@pytest.mark.parametrize(
    "hw, min_dim, resized, molded, padding",
    [
        ((300, 500), 0, (300, 500), (320, 512), (10, 10, 6, 6)),
        ((100, 150), 128, (128, 192), (128, 192), (0, 0, 0, 0)),  # 1.28x lands on multiples of 64
        # 100/70 scales 90 to round(128.57) = 129, padded to 192: 63 = 31 left + 32 right.
        ((70, 90), 100, (100, 129), (128, 192), (14, 14, 31, 32)),
    ],
)
def test_pad64_mode_by_hand(hw, min_dim, resized, molded, padding):
    out, meta = resize_image(_image(*hw), mode="pad64", min_dim=min_dim, max_dim=32)  # max_dim ignored
    assert out.shape == (3, *molded)
    assert molded[0] % 64 == 0 and molded[1] % 64 == 0
    assert meta.resized_size == resized and meta.padding == padding
    top, _, left, _ = padding
    assert meta.window == (left, top, left + resized[1], top + resized[0])


@pytest.mark.parametrize(
    "hw, min_dim, max_dim, resized",
    [
        ((480, 640), 800, 1333, (800, 1066)),  # scale 5/3, floor(1066.67) = 1066 (torchvision floors)
        ((300, 500), 800, 1333, (799, 1333)),  # 1333/500 = 2.666 wins; floor(300 * 2.666) = 799
        ((48, 64), 80, 133, (80, 106)),
        ((64, 48), 80, 133, (106, 80)),
        # Scales down: 133/200 = 0.665 wins (in float32 it would be 0.66499996 and give 132 rows).
        ((200, 100), 80, 133, (133, 66)),
        # 800/427 in float32 is 1.8735362 and gives floor(799.99997) = 799 rows; in Python floats 800.
        ((427, 640), 800, 1333, (800, 1199)),
    ],
)
def test_minmax_mode_by_hand(hw, min_dim, max_dim, resized):
    out, meta = resize_image(_image(*hw, c=1), mode="minmax", min_dim=min_dim, max_dim=max_dim)
    h, w = hw
    assert out.shape == (1, *resized)
    assert meta.scale == pytest.approx(min(min_dim / min(h, w), max_dim / max(h, w)), rel=1e-6)
    assert meta.molded_size == resized and meta.padding == (0, 0, 0, 0)
    assert meta.window == (0, 0, resized[1], resized[0])


@pytest.mark.parametrize(
    "hw", [(480, 640), (300, 500), (333, 500), (2000, 1000), (612, 612), (1000, 1500), (427, 640), (200, 100)]
)
def test_minmax_size_matches_torchvision_resize(hw, torchvision_reference):
    from torchvision.models.detection.transform import _resize_image_and_masks

    image = _image(*hw, seed=5)
    expected, _ = _resize_image_and_masks(image, 800, 1333)
    out, meta = resize_image(image, mode="minmax", min_dim=800, max_dim=1333)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_minmax_pixels_match_torchvision_transform(torchvision_reference):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    image = _image(48, 70)
    tv = GeneralizedRCNNTransform(80, 133, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    images, _ = tv([image])
    ours, meta = resize_image(normalize_image(image, IMAGENET_MEAN, IMAGENET_STD), "minmax", 80, 133)
    batch, sizes = batch_images([ours], 32)
    assert sizes == [tuple(s) for s in images.image_sizes]
    torch.testing.assert_close(batch, images.tensors)


def test_crop_mode_seeded():
    image = _image(300, 500)
    crops = set()
    for seed in range(6):
        out, meta = resize_image(image, "crop", min_dim=256, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (3, 256, 256) and meta.scale == 1.0 and meta.resized_size == (300, 500)
        x1, y1, x2, y2 = meta.crop
        assert 0 <= x1 <= 244 and 0 <= y1 <= 44 and (x2 - x1, y2 - y1) == (256, 256)
        assert meta.window == (0, 0, 256, 256)
        torch.testing.assert_close(out, image[:, y1:y2, x1:x2], rtol=0, atol=0)
        again, meta2 = resize_image(image, "crop", min_dim=256, generator=torch.Generator().manual_seed(seed))
        assert meta2 == meta and torch.equal(again, out)
        crops.add(meta.crop)
    assert len(crops) > 1


def test_crop_mode_scales_up_first():
    g = torch.Generator().manual_seed(1)
    out, meta = resize_image(_image(100, 120), "crop", min_dim=128, generator=g)
    assert meta.scale == pytest.approx(1.28) and meta.resized_size == (128, 154)
    assert out.shape == (3, 128, 128) and meta.crop[1] == 0 and 0 <= meta.crop[0] <= 26


def test_none_mode_is_identity():
    image = _image(37, 41)
    out, meta = resize_image(image, "none")
    assert out is image
    assert meta == ImageMeta((37, 41), (37, 41), (37, 41), 1.0, (0, 0, 41, 37), mode="none")


# ---------------------------------------------------------------- content: window holds the resized image


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("square", dict(min_dim=20, max_dim=32)),
        ("square", dict(min_dim=0, max_dim=16)),  # scaled down
        ("pad64", dict(min_dim=40)),
        ("minmax", dict(min_dim=20, max_dim=40)),
    ],
)
def test_window_holds_bilinear_resize_and_padding_is_zero(device, mode, kwargs):
    image = _image(13, 18, device=device, dtype=torch.float64)
    out, meta = resize_image(image, mode, **kwargs)
    assert out.device == image.device and out.dtype == torch.float64
    content, padding = _content_and_padding(out, meta)
    expected = _bilinear_reference(image.cpu().numpy(), *meta.resized_size)
    np.testing.assert_allclose(content.cpu().numpy(), expected, atol=1e-12)
    assert padding.numel() == 0 or bool((padding == 0).all())
    if mode in ("square", "pad64"):
        assert padding.numel() > 0


def test_resize_keeps_dtype_float16_and_grayscale():
    out, meta = resize_image(_image(20, 30, c=1, dtype=torch.float16), "square", min_dim=0, max_dim=64)
    assert out.dtype == torch.float16 and out.shape == (1, 64, 64)
    assert meta.window == (17, 22, 47, 42)


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("square", dict(min_dim=400, max_dim=512)),
        ("square", dict(min_dim=50, max_dim=128)),
        ("pad64", dict(min_dim=350)),
        ("minmax", dict(min_dim=800, max_dim=1333)),
        ("none", {}),
    ],
)
def test_whole_image_box_maps_to_window_and_boxes_round_trip(mode, kwargs):
    h, w = 300, 500
    _, meta = resize_image(_image(h, w, c=1), mode, **kwargs)
    whole = torch.tensor([[0.0, 0.0, w, h]])
    torch.testing.assert_close(resize_boxes(whole, meta), torch.tensor([meta.window], dtype=torch.float32))

    g = torch.Generator().manual_seed(3)
    xy = torch.rand((50, 2), generator=g) * torch.tensor([w, h])
    wh = torch.rand((50, 2), generator=g) * (torch.tensor([w, h]) - xy)
    boxes = torch.cat([xy, xy + wh], dim=1)
    molded = resize_boxes(boxes, meta)
    torch.testing.assert_close(unmold_boxes(molded, meta), boxes, atol=1e-3, rtol=0)


def test_resize_boxes_by_hand():
    _, meta = resize_image(_image(300, 500, c=1), "square", min_dim=400, max_dim=512)  # scale 1.024, top 102
    boxes = torch.tensor([[100.0, 50.0, 200.0, 150.0], [-10.0, -10.0, 600.0, 20.0]])
    sy = 307 / 300  # the per-axis factor after rounding 307.2 to 307
    expected = torch.tensor(
        [[102.4, 102 + 50 * sy, 204.8, 102 + 150 * sy], [0.0, 102.0, 512.0, 102 + 20 * sy]]  # 2nd is clipped
    )
    torch.testing.assert_close(resize_boxes(boxes, meta), expected)


def test_crop_mode_boxes():
    image = _image(300, 500, c=1)
    _, meta = resize_image(image, "crop", min_dim=256, generator=torch.Generator().manual_seed(4))
    x1, y1, _, _ = meta.crop
    inside = torch.tensor([[x1 + 10.0, y1 + 20.0, x1 + 100.0, y1 + 200.0]])
    torch.testing.assert_close(resize_boxes(inside, meta), torch.tensor([[10.0, 20.0, 100.0, 200.0]]))
    torch.testing.assert_close(unmold_boxes(resize_boxes(inside, meta), meta), inside)
    # A box entirely left of the crop collapses to zero width at x = 0 (kept, not dropped).
    if x1 > 5:
        out = resize_boxes(torch.tensor([[0.0, y1 + 1.0, x1 - 1.0, y1 + 5.0]]), meta)
        assert out[0, 0] == 0 and out[0, 2] == 0


def test_unmold_boxes_clips_to_photo():
    _, meta = resize_image(_image(300, 500, c=1), "square", min_dim=400, max_dim=512)
    padding_box = torch.tensor([[0.0, 0.0, 512.0, 512.0]])  # covers the padding too
    torch.testing.assert_close(unmold_boxes(padding_box, meta), torch.tensor([[0.0, 0.0, 500.0, 300.0]]))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_targets(device):
    image = _image(30, 40, device=device)
    _, meta = resize_image(image, "square", min_dim=0, max_dim=64)
    assert resize_boxes(torch.zeros((0, 4), device=device), meta).shape == (0, 4)
    assert unmold_boxes(torch.zeros((0, 4), device=device), meta).shape == (0, 4)
    m = resize_masks(torch.zeros((0, 30, 40), dtype=torch.bool, device=device), meta)
    assert m.shape == (0, 64, 64) and m.dtype == torch.bool and m.device == image.device
    assert unmold_masks(torch.zeros((0, 64, 64), device=device), meta).shape == (0, 30, 40)


# ---------------------------------------------------------------- masks


def _disk(h, w, cy, cx, r, device="cpu"):
    ys = torch.arange(h, device=device)[:, None] + 0.5
    xs = torch.arange(w, device=device) + 0.5
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= r**2


def _mask_iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("square", dict(min_dim=400, max_dim=512)),
        ("square", dict(min_dim=0, max_dim=128)),  # 2.3x smaller
        ("pad64", dict(min_dim=350)),
        ("minmax", dict(min_dim=200, max_dim=333)),
        ("crop", dict(min_dim=256)),
    ],
)
def test_mask_round_trip(device, method, mode, kwargs):
    h, w = 300, 500
    masks = torch.stack([_disk(h, w, 150, 250, 90, device), _disk(h, w, 100, 150, 40, device)])
    g = torch.Generator().manual_seed(0)
    _, meta = resize_image(_image(h, w, c=1, device=device), mode, generator=g, **kwargs)
    if mode == "crop":  # keep the disks inside the crop
        x1, y1, x2, y2 = meta.crop
        masks = torch.stack(
            [_disk(h, w, y1 + 128, x1 + 128, 100, device), _disk(h, w, y1 + 60, x1 + 70, 40, device)]
        )
    molded = resize_masks(masks, meta, method=method)
    assert molded.shape == (2, *meta.molded_size) and molded.dtype == torch.bool
    _, outside = _content_and_padding(molded[:, None].float().flatten(0, 1), meta)
    assert not outside.any()
    # The molded mask sits where resize_boxes puts its box (within a pixel).
    torch.testing.assert_close(
        masks_to_boxes(molded), resize_boxes(masks_to_boxes(masks), meta), atol=1.01, rtol=0
    )
    back = unmold_masks(molded, meta, threshold=0.5)
    assert back.shape == (2, h, w) and back.dtype == torch.bool
    ious = [_mask_iou(a, b) for a, b in zip(back, masks, strict=True)]
    if method == "bilinear":
        assert min(ious) >= 0.95
    else:
        # torchvision's legacy nearest samples pixel corners, not centres: a visible drift, never better.
        assert min(ious) >= 0.9
        best = unmold_masks(resize_masks(masks, meta), meta, threshold=0.5)
        assert all(_mask_iou(a, b) >= iou for a, b, iou in zip(best, masks, ious, strict=True))


def test_resize_masks_keeps_dtype_and_binary():
    mask = _disk(30, 40, 15, 20, 9).to(torch.uint8)[None]
    _, meta = resize_image(_image(30, 40, c=1), "square", min_dim=50, max_dim=64)
    out = resize_masks(mask, meta)
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 1}
    outf = resize_masks(mask.float(), meta)
    assert outf.dtype == torch.float32 and torch.equal(outf, out.float())


def test_unmold_masks_probabilities():
    _, meta = resize_image(_image(20, 30, c=1), "square", min_dim=0, max_dim=64)
    probs = torch.zeros((1, 64, 64))
    x1, y1, x2, y2 = meta.window
    probs[:, y1:y2, x1:x2] = 0.75  # constant over the window, zero on the padding
    out = unmold_masks(probs, meta)
    assert out.shape == (1, 20, 30) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 20, 30), 0.75))  # padding never leaks in


# ---------------------------------------------------------------- property: any size, any mode


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 120),
    w=st.integers(1, 120),
    mode=st.sampled_from(["square", "pad64", "minmax", "none", "crop"]),
    min_dim=st.integers(1, 96),
    max_dim=st.integers(64, 160),
    seed=st.integers(0, 2**16),
)
def test_meta_invariants(h, w, mode, min_dim, max_dim, seed):
    image = torch.zeros((1, h, w)) + 1.0
    out, meta = resize_image(image, mode, min_dim, max_dim, generator=torch.Generator().manual_seed(seed))
    assert tuple(out.shape[-2:]) == meta.molded_size
    x1, y1, x2, y2 = meta.window
    assert 0 <= x1 <= x2 <= meta.molded_size[1] and 0 <= y1 <= y2 <= meta.molded_size[0]
    content, padding = _content_and_padding(out, meta)
    # A constant image stays constant (up to float32 rounding of the bilinear weights); padding is zero.
    torch.testing.assert_close(content, torch.ones_like(content))
    assert bool((padding == 0).all())
    if meta.crop is None:
        assert (y2 - y1, x2 - x1) == meta.resized_size
        whole = torch.tensor([[0.0, 0.0, w, h]])
        window = torch.tensor([meta.window], dtype=torch.float32)
        torch.testing.assert_close(resize_boxes(whole, meta), window)
    if mode == "square":
        assert meta.molded_size == (max_dim, max_dim)
    if mode == "pad64":
        assert meta.molded_size[0] % 64 == 0 and meta.molded_size[1] % 64 == 0
        assert max(meta.padding) < 64
    if mode == "crop":
        assert meta.molded_size == (min_dim, min_dim)
        cx1, cy1, cx2, cy2 = meta.crop
        assert 0 <= cx1 and cx2 <= meta.resized_size[1] and 0 <= cy1 and cy2 <= meta.resized_size[0]
    if mode == "minmax":
        assert min(meta.resized_size) <= min_dim and max(meta.resized_size) <= max_dim
        scale = meta.scale
        # torchvision's floor, but never below one pixel (41 * float32(1/41) floors to 0).
        assert meta.resized_size == (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_presets_and_round_trip(device):
    pixel = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None].expand(3, 2, 2)
    zeros = torch.zeros(3, 2, 2, device=device)
    torch.testing.assert_close(normalize_image(pixel, IMAGENET_MEAN, IMAGENET_STD), zeros)
    one = normalize_image(torch.ones(3, 1, 1, device=device), IMAGENET_MEAN, IMAGENET_STD)
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(one.flatten().cpu(), torch.tensor(expected))

    mp = torch.tensor(MATTERPORT_MEAN_PIXEL, device=device)[:, None, None] / 255
    torch.testing.assert_close(
        normalize_image(mp, MATTERPORT_MEAN_PIXEL, pixel_scale=255), torch.zeros(3, 1, 1, device=device)
    )
    image = _image(5, 6, device=device, dtype=torch.float64)[None].repeat(2, 1, 1, 1)  # a batch works too
    for args in [(IMAGENET_MEAN, IMAGENET_STD, 1.0), (MATTERPORT_MEAN_PIXEL, None, 255.0)]:
        norm = normalize_image(image, *args)
        assert norm.shape == image.shape and norm.dtype == torch.float64
        torch.testing.assert_close(denormalize_image(norm, *args), image)


def test_normalize_grayscale_single_value():
    image = torch.full((1, 2, 2), 0.5)
    torch.testing.assert_close(normalize_image(image, [0.25], [0.5]), torch.full((1, 2, 2), 0.5))


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("device", DEVICES)
def test_batch_images(device):
    images = [_image(50, 70, device=device), _image(64, 33, device=device, seed=1)]
    images.append(_image(1, 1, device=device))
    batch, sizes = batch_images(images, size_divisible=32)
    assert batch.shape == (3, 3, 64, 96) and batch.device == images[0].device
    assert sizes == [(50, 70), (64, 33), (1, 1)]
    for slot, img, (h, w) in zip(batch, images, sizes, strict=True):
        assert torch.equal(slot[:, :h, :w], img)
        rest = slot.clone()
        rest[:, :h, :w] = 0
        assert not rest.any()
    batch1, _ = batch_images(images, size_divisible=1)
    assert batch1.shape == (3, 3, 64, 70)
    batch64, _ = batch_images(images, size_divisible=64)
    assert batch64.shape == (3, 3, 64, 128)


def test_batch_of_square_images_needs_no_padding():
    molded = [resize_image(_image(h, w), "square", min_dim=0, max_dim=64)[0] for h, w in [(30, 40), (64, 10)]]
    batch, sizes = batch_images(molded, 64)
    assert batch.shape == (2, 3, 64, 64) and sizes == [(64, 64), (64, 64)]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.zeros(10, 10), "image"),  # rank 2
        (torch.zeros(1, 3, 10, 10), "image"),  # rank 4
        (torch.zeros(3, 10, 10, dtype=torch.uint8), "image"),
        (torch.zeros(4, 10, 10), "image"),
        (torch.zeros(3, 0, 10), "image"),
    ],
)
def test_resize_image_bad_image(image, match):
    with pytest.raises(ValueError, match=match):
        resize_image(image)


def test_bad_arguments_name_themselves():
    image = _image(10, 12)
    with pytest.raises(ValueError, match="mode"):
        resize_image(image, mode="letterbox")
    with pytest.raises(ValueError, match="max_dim"):
        resize_image(image, mode="square", max_dim=0)
    with pytest.raises(ValueError, match="min_dim"):
        resize_image(image, mode="crop", min_dim=None)
    _, meta = resize_image(image, "square", min_dim=0, max_dim=16)
    with pytest.raises(ValueError, match="masks"):
        resize_masks(torch.zeros((1, 12, 10), dtype=torch.bool), meta)
    with pytest.raises(ValueError, match="method"):
        resize_masks(torch.zeros((1, 10, 12), dtype=torch.bool), meta, method="bicubic")
    with pytest.raises(ValueError, match="masks"):
        unmold_masks(torch.zeros((1, 10, 12)), meta)
    with pytest.raises(ValueError, match="boxes"):
        resize_boxes(torch.zeros((2, 5)), meta)
    with pytest.raises(ValueError, match="boxes"):
        unmold_boxes(torch.zeros(4, dtype=torch.int64), meta)
    with pytest.raises(ValueError, match="mean"):
        normalize_image(image, [0.1, 0.2])
    with pytest.raises(ValueError, match="std"):
        normalize_image(image, IMAGENET_MEAN, [1.0, 2.0])
    with pytest.raises(ValueError, match="image"):
        normalize_image(image.to(torch.int32), IMAGENET_MEAN)
    with pytest.raises(ValueError, match="images"):
        batch_images([])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        batch_images([image, _image(10, 12, c=1)])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        batch_images([image, image.double()])
    with pytest.raises(ValueError, match="size_divisible"):
        batch_images([image], size_divisible=0)


def test_box_iou_is_the_package_one():
    # resize_boxes output feeds the package's IoU directly: a box and its molded copy on an unscaled,
    # unpadded image are the same box.
    _, meta = resize_image(_image(10, 12, c=1), "none")
    b = torch.tensor([[1.0, 2.0, 5.0, 7.0]])
    assert box_iou(resize_boxes(b, meta), b).item() == pytest.approx(1.0)


def test_very_elongated_image_keeps_one_row():
    out, meta = resize_image(torch.rand(1, 1, 3000), "minmax", min_dim=800, max_dim=133)
    assert out.shape == (1, 1, 133) and meta.resized_size == (1, 133)
    out, meta = resize_image(torch.rand(1, 1, 3000), "square", min_dim=0, max_dim=133)
    assert out.shape == (1, 133, 133) and meta.window == (0, 66, 133, 67)
