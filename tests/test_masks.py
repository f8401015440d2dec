"""Tests for mrcnn_edu.masks: pasting box-relative masks into the image, and mask IoU.

References: pycocotools' mask IoU, hand-computed bilinear values, ``F.interpolate`` (via the loop version),
and a round trip through roi_align.
"""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu import masks as masks_module
from mrcnn_edu.boxes import masks_to_boxes
from mrcnn_edu.masks import mask_iou, pad_masks_and_snap_boxes, paste_mask_loop, paste_masks


def _rle(masks: torch.Tensor):
    """pycocotools RLEs of ``[N, H, W]`` binary masks (it wants Fortran-ordered uint8 ``[H, W, N]``)."""
    array = np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
    return coco_mask.encode(array)


def _smooth_masks(n: int, m: int = 28, seed: int = 0) -> torch.Tensor:
    """Blob-like probability masks (sigmoid of a random ellipse distance), as a trained head predicts."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(m) + 0.5) / m
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    centre = 0.35 + 0.3 * torch.rand(n, 2, generator=g)
    radius = 0.25 + 0.2 * torch.rand(n, 2, generator=g)
    d = ((xx - centre[:, 0, None, None]) / radius[:, 0, None, None]) ** 2 + (
        (yy - centre[:, 1, None, None]) / radius[:, 1, None, None]
    ) ** 2
    return torch.sigmoid(6 * (1 - d))


# ---------------------------------------------------------------- mask_iou


@pytest.mark.parametrize("density", [0.05, 0.5])
def test_mask_iou_matches_pycocotools(density):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(6, 17, 23, generator=g) < density
    b = torch.rand(4, 17, 23, generator=g) < density
    a[0] = False  # an empty mask
    b[1] = False
    b[2] = a[3]  # an identical pair
    expected = coco_mask.iou(_rle(a), _rle(b), [0] * b.shape[0])
    got = mask_iou(a, b)
    assert got.shape == (6, 4) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert got[3, 2] == 1.0
    assert torch.all(got[0] == 0)  # empty vs anything: 0, not NaN


def test_mask_iou_accepts_float_and_uint8_and_empty():
    a = torch.zeros(2, 5, 5)
    a[0, :2] = 1.0
    a[1, :, :2] = 1.0
    iou = mask_iou(a, a.to(torch.uint8))
    assert torch.allclose(iou, torch.tensor([[1.0, 4 / 16], [4 / 16, 1.0]]))
    assert mask_iou(torch.zeros(0, 5, 5), a).shape == (0, 2)


def test_mask_iou_bad_input_names_argument():
    with pytest.raises(ValueError, match="masks1"):
        mask_iou(torch.zeros(5, 5), torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="masks2"):
        mask_iou(torch.zeros(1, 5, 5), torch.zeros(1, 5, 6))


# ---------------------------------------------------------------- paste: hand-computed cases


def test_paste_full_image_box_all_ones():
    ones = torch.ones(1, 28, 28)
    box = torch.tensor([[0.0, 0.0, 37.0, 21.0]])
    assert torch.equal(paste_masks(ones, box, (21, 37)), torch.ones(1, 21, 37))
    assert paste_masks(ones, box, (21, 37), threshold=0.5).all()
    # F.interpolate's weights of 1 are computed as sums of fractions: equal up to rounding.
    assert torch.allclose(paste_mask_loop(ones[0], box[0], (21, 37)), torch.ones(21, 37))


def test_paste_hand_computed_bilinear_values():
    # A 2x2 mask [[0, 1], [0, 1]] over a 4-pixel-wide box: pixel centres 0.5..3.5 sit at mask coordinates
    # -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]: values 0, 0.25, 0.75, 1 in every row.
    mask = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    got = paste_masks(mask, torch.tensor([[1.0, 0.0, 5.0, 2.0]]), (3, 6))[0]
    row = torch.tensor([0.0, 0.0, 0.25, 0.75, 1.0, 0.0])
    assert torch.allclose(got, torch.stack((row, row, torch.zeros(6))))
    assert torch.equal(paste_masks(mask, torch.tensor([[1.0, 0.0, 5.0, 2.0]]), (3, 6), threshold=0.5)[0],
                       torch.stack((row, row, torch.zeros(6))) >= 0.5)


def test_paste_sub_pixel_box_reads_mask_centre():
    # A box holding exactly one pixel centre (5.5, 5.5) samples the mask at its middle: with M = 28 even, the
    # mean of the central 2x2 cells.
    mask = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    got = paste_masks(mask, torch.tensor([[5.2, 5.2, 5.8, 5.8]]), (10, 10))[0]
    assert torch.count_nonzero(got) == 1
    assert torch.isclose(got[5, 5], mask[0, 13:15, 13:15].mean())


def test_paste_empty_and_tiny_boxes_give_zeros():
    ones = torch.ones(4, 28, 28)
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 9.0],  # zero width
            [3.0, 3.0, 8.0, 3.0],  # zero height
            [2.6, 2.6, 3.4, 3.4],  # no pixel centre inside
            [9.0, 9.0, 4.0, 4.0],  # inverted
        ]
    )
    assert torch.count_nonzero(paste_masks(ones, boxes, (12, 12))) == 0
    for mask, box in zip(ones, boxes, strict=True):
        assert torch.count_nonzero(paste_mask_loop(mask, box, (12, 12))) == 0


def test_paste_box_partly_outside_is_cropped_image_of_larger_canvas():
    # Pasting into a bigger canvas (box shifted by the margin) and cropping must give the same image.
    masks = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[-10.0, -5.5, 20.0, 20.0], [15.3, 10.0, 45.0, 33.7], [-3.0, -3.0, 50.0, 50.0]])
    h, w, pad = 30, 40, 16
    direct = paste_masks(masks, boxes, (h, w))
    big = paste_masks(masks, boxes + pad, (h + 2 * pad, w + 2 * pad))
    assert torch.allclose(direct, big[:, pad : pad + h, pad : pad + w], atol=1e-5)
    # Footprint: exactly the in-image pixels whose centres are inside the box.
    footprint = paste_masks(torch.ones(3, 28, 28), boxes, (h, w)) > 0
    assert footprint[0].sum() == 20 * 20 and footprint[0, :20, :20].all()
    assert footprint[1].sum() == (40 - 15) * (30 - 10) and footprint[1, 10:30, 15:40].all()
    assert footprint[2].all()


def test_paste_box_fully_outside_and_empty_inputs():
    outside = paste_masks(torch.ones(1, 28, 28), torch.tensor([[50.0, 50, 60, 60]]), (20, 20))
    assert torch.count_nonzero(outside) == 0
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (20, 30)).shape == (0, 20, 30)
    assert paste_masks(torch.ones(2, 28, 28), torch.ones(2, 4), (0, 30)).shape == (2, 0, 30)


def test_paste_dtypes():
    box = torch.tensor([[1.0, 2.0, 9.0, 7.0]])
    assert paste_masks(torch.ones(1, 28, 28, dtype=torch.float64), box, (10, 10)).dtype == torch.float64
    as_bool = paste_masks(torch.ones(1, 28, 28, dtype=torch.bool), box, (10, 10))
    assert as_bool.dtype == torch.float32 and as_bool.sum() == 8 * 5
    assert paste_masks(torch.ones(1, 28, 28), box, (10, 10), threshold=0.5).dtype == torch.bool


@pytest.mark.parametrize("chunk_masks", [2, 100])
def test_whole_image_path_equals_per_box_path(monkeypatch, chunk_masks):
    # paste_masks runs the per-box path on CPU and the whole-image batched path elsewhere: same formula.
    g = torch.Generator().manual_seed(11)
    masks = torch.rand(7, 28, 28, generator=g)
    xy = torch.rand(7, 2, generator=g) * 60 - 15
    boxes = torch.cat((xy, xy + 0.5 + torch.rand(7, 2, generator=g) * 50), dim=1)
    boxes[3] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # empty
    per_box = paste_masks(masks, boxes, (40, 45))
    monkeypatch.setattr(masks_module, "PASTE_CHUNK_PIXELS", chunk_masks * 40 * 45)
    whole = torch.zeros(7, 40, 45)
    masks_module._paste_full_image(masks, boxes, whole, None)
    assert torch.allclose(whole, per_box, atol=1e-6)
    binary = torch.zeros(7, 40, 45, dtype=torch.bool)
    masks_module._paste_full_image(masks, boxes, binary, 0.5)
    assert torch.equal(binary, whole >= 0.5)


def test_paste_bad_input_names_argument():
    m, b = torch.ones(2, 28, 28), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="masks"):
        paste_masks(torch.ones(28, 28), b, (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(m, torch.zeros(3, 4), (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(m, torch.zeros(2, 4, dtype=torch.long), (10, 10))
    with pytest.raises(ValueError, match="image_size"):
        paste_masks(m, b, (10,))
    with pytest.raises(ValueError, match="threshold"):
        paste_masks(m, b, (10, 10), threshold="0.5")
    with pytest.raises(ValueError, match="box"):
        paste_mask_loop(m[0], [1.0, 2.0, 3.0], (10, 10))


_coord = st.floats(-20, 60, allow_nan=False, width=32)
_side = st.floats(0, 50, width=32)


@settings(max_examples=60, deadline=None)
@given(x1=_coord, y1=_coord, w=_side, h=_side, seed=st.integers(0, 99))
def test_paste_footprint_and_range_property(x1, y1, w, h, seed):
    # Footprint: the pixels whose centres c + 0.5 lie in [x1, x2), counted with integer arithmetic; values
    # inside it are convex combinations of mask cells, so they stay within the mask's range.
    img_h, img_w = 30, 40
    box = torch.tensor([[x1, y1, x1 + w, y1 + h]])
    mask = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(seed))
    pasted = paste_masks(mask, box, (img_h, img_w))[0]
    x1, y1, x2, y2 = box[0].tolist()

    def count(lo: float, hi: float, size: int) -> int:
        return max(0, min(math.ceil(hi - 0.5), size) - max(math.ceil(lo - 0.5), 0))

    footprint = paste_masks(torch.ones(1, 28, 28), box, (img_h, img_w))[0] > 0
    assert int(footprint.sum()) == count(x1, x2, img_w) * count(y1, y2, img_h)
    assert torch.all(pasted[~footprint] == 0)
    inside = pasted[footprint]
    if inside.numel():
        assert inside.min() >= mask.min() - 1e-6 and inside.max() <= mask.max() + 1e-6


# ---------------------------------------------------------------- fast path vs loop


def test_paste_masks_equals_loop_on_integer_boxes():
    # On integer boxes both sample each pixel centre at the same mask coordinate: equal up to float rounding.
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(12, 28, 28, generator=g)
    xy = torch.randint(-20, 60, (12, 2), generator=g)
    wh = torch.randint(1, 70, (12, 2), generator=g)
    boxes = torch.cat((xy, xy + wh), dim=1).float()
    fast = paste_masks(masks, boxes, (64, 80))
    for i in range(12):
        assert torch.allclose(fast[i], paste_mask_loop(masks[i], boxes[i], (64, 80)), atol=1e-5)


def test_paste_masks_close_to_loop_on_fractional_boxes():
    # The loop rounds the box to whole pixels, so it stretches the mask over up to one pixel more or less
    # than the exact box: the same footprint, slightly different values, a few differing border pixels.
    g = torch.Generator().manual_seed(4)
    masks = _smooth_masks(20, seed=5)
    xy = torch.rand(20, 2, generator=g) * 50 - 10
    wh = torch.rand(20, 2, generator=g) * 80 + 20
    boxes = torch.cat((xy, xy + wh), dim=1)
    fast = paste_masks(masks, boxes, (100, 120), threshold=0.5)
    loop = torch.stack([paste_mask_loop(m, b, (100, 120), 0.5) for m, b in zip(masks, boxes, strict=True)])
    ious = mask_iou(fast, loop).diagonal()
    assert fast.flatten(1).any(1).all()
    assert ious.min() > 0.9 and ious.mean() > 0.95
    ones = torch.ones(28, 28)
    footprints = paste_masks(ones.expand(20, 28, 28), boxes, (100, 120)) > 0
    for footprint, b in zip(footprints, boxes, strict=True):  # identical footprints
        assert torch.equal(footprint, paste_mask_loop(ones, b, (100, 120)) > 0)


def test_paste_loop_resize_is_f_interpolate():
    # Independent check of the loop's values on an integer box fully inside the image.
    mask = torch.rand(28, 28, generator=torch.Generator().manual_seed(6))
    got = paste_mask_loop(mask, torch.tensor([4.0, 6.0, 41.0, 19.0]), (25, 50))
    expected = F.interpolate(mask[None, None], size=(13, 37), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(got[6:19, 4:41], expected)
    assert got.sum() == pytest.approx(expected.sum().item(), rel=1e-6)


# ---------------------------------------------------------------- round trip through roi_align


def _shapes(size: int, image: int = 256) -> list[torch.Tensor]:
    """A disc, a rectangle and a triangle of about ``size`` pixels, at a non-integer-aligned position."""
    yy, xx = torch.meshgrid(torch.arange(image) + 0.5, torch.arange(image) + 0.5, indexing="ij")
    cx, cy, r = 100.3, 90.7, size / 2
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    rect = ((xx - cx).abs() <= r) & ((yy - cy).abs() <= 0.6 * r)
    tri = (yy >= cy - r) & (yy <= cy + r) & ((xx - cx).abs() <= (yy - (cy - r)) / 2)
    return [disc, rect, tri]


def _cut_and_paste(shapes: torch.Tensor, aligned: bool) -> torch.Tensor:
    """IoU of each binary mask with itself cut to 28x28 by roi_align (2x2 samples per bin) at its tight box
    and pasted back."""
    from mrcnn_edu.roi_align import roi_align

    boxes = masks_to_boxes(shapes)  # tight, exclusive: the pixels' full extent
    rois = torch.cat((torch.arange(float(shapes.shape[0]))[:, None], boxes), dim=1)
    small = roi_align(shapes[:, None].float(), rois, (28, 28), 1.0, 2, aligned)[:, 0]
    back = paste_masks(small, boxes, shapes.shape[1:], threshold=0.5)
    return mask_iou(back, shapes).diagonal()


@pytest.mark.parametrize("size", [20, 33, 64, 150])
def test_roi_align_cut_then_paste_round_trip(size):
    shapes = torch.stack(_shapes(size))
    ious = _cut_and_paste(shapes, aligned=True)
    assert ious.min() >= 0.98, ious  # objects up to 28 px come back exactly, larger ones nearly
    if size <= 28:
        assert torch.all(ious == 1.0), ious
    # aligned=False (torchvision's legacy convention) samples half a pixel right of and below the box, so
    # cut-and-paste shifts the object by half a pixel: a visible loss on small objects, little on large ones.
    legacy = _cut_and_paste(shapes, aligned=False)
    assert legacy.min() >= {20: 0.8, 33: 0.93, 64: 0.96, 150: 0.98}[size], legacy
    if size <= 33:
        assert torch.all(legacy < ious)


def test_round_trip_resolution_effect():
    # Fine structure on a large object is lost to the 28x28 grid, a smooth shape is not.
    n = 200
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    disc = (xx - 100) ** 2 + (yy - 100) ** 2 <= 90**2
    stripes = disc & (torch.remainder(xx + yy, 12.0) < 3)  # 3-pixel stripes every 12 pixels
    ious = _cut_and_paste(torch.stack((disc, stripes)), aligned=True)
    assert ious[0] > 0.97
    assert ious[1] < 0.5  # one 28-grid cell spans ~6.4 px: stripes 12 px apart along the diagonal blur away


# --- torchvision's pasting geometry ---------------------------------------------------------------------


def test_pad_and_snap_hand_case():
    # A 2x2 mask on box (1.5, 2.2, 5.5, 6.9): scale (2 + 2) / 2 = 2 about the centre (3.5, 4.55) gives
    # (-0.5, 0.1, 7.5, 9.0), truncated toward zero to (0, 0, 7, 9): 8 x 10 pixels from (0, 0).
    padded, snapped = pad_masks_and_snap_boxes(torch.ones(1, 2, 2), torch.tensor([[1.5, 2.2, 5.5, 6.9]]))
    assert padded.shape == (1, 4, 4)
    assert torch.equal(padded[0], F.pad(torch.ones(2, 2), (1, 1, 1, 1)))
    assert snapped.tolist() == [[0.0, 0.0, 8.0, 10.0]]


def test_pad_and_snap_matches_torchvision_paste(torchvision_reference):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    g = torch.Generator().manual_seed(3)
    masks = torch.rand(40, 28, 28, generator=g)
    # Corners may leave the image on any side, but each box overlaps it (torchvision fails on a box wholly
    # outside the image, which its detections never are: they are clipped first).
    xy = torch.rand(40, 2, generator=g) * 60 - 5
    wh = torch.rand(40, 2, generator=g) * 60 + 0.2
    boxes = torch.cat((xy, xy + wh), dim=1)
    expected = paste_masks_in_image(masks[:, None], boxes, (70, 90), padding=1)[:, 0]
    ours = paste_masks(*pad_masks_and_snap_boxes(masks, boxes), (70, 90))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_pad_and_snap_bad_input():
    with pytest.raises(ValueError, match="padding"):
        pad_masks_and_snap_boxes(torch.ones(1, 2, 2), torch.zeros(1, 4), padding=-1)
    with pytest.raises(ValueError, match="one row per mask"):
        pad_masks_and_snap_boxes(torch.ones(2, 2, 2), torch.zeros(1, 4))


def test_paste_rejects_nan_boxes_and_other_devices():
    m = torch.ones(2, 28, 28)
    with pytest.raises(ValueError, match="boxes.*finite"):
        paste_masks(m, torch.tensor([[1.0, 1, 5, 5], [float("nan"), 0, 4, 4]]), (10, 10))
    with pytest.raises(ValueError, match="boxes.*device"):
        paste_masks(m, torch.zeros(2, 4, device="meta"), (10, 10))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_snapped_boxes_of_half_precision_boxes_are_the_float32_ones(dtype):
    # Coordinates near 1000 px step by 0.5 (float16) or 4 (bfloat16): the enlarged corners would be
    # truncated to the wrong pixel. The arithmetic runs in float32 on the same values.
    boxes = torch.tensor([[901.5, 433.0, 1201.0, 811.5], [10.0, 20.0, 17.5, 30.0]]).to(dtype)
    masks = torch.rand(2, 28, 28)
    padded, snapped = pad_masks_and_snap_boxes(masks, boxes)
    want_padded, want = pad_masks_and_snap_boxes(masks, boxes.float())
    assert snapped.dtype == torch.float32 and torch.equal(snapped, want) and torch.equal(padded, want_padded)
