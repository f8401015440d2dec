"""Tests for mrcnn_edu.roi_align: hand-computed cases, onnxruntime's compiled RoiAlign / MaxRoiPool,
grid_sample (for crop_and_resize), gradcheck, and torchvision where its ops load."""

from __future__ import annotations

import functools

import pytest
import torch

import mrcnn_edu.roi_align as ra
from mrcnn_edu import references
from mrcnn_edu._tv import torchvision_ops
from mrcnn_edu.boxes import to_matterport_normalized
from mrcnn_edu.references import onnx_roi_align
from mrcnn_edu.roi_align import (
    assign_fpn_levels,
    bilinear,
    crop_and_resize,
    pyramid_roi_align,
    roi_align,
    roi_align_loop,
    roi_pool,
)

IMPLS = [roi_align, roi_align_loop]


def grid5() -> torch.Tensor:
    """``[1, 1, 5, 5]`` map with value ``5 * row + col``: bilinear reads give ``5 * y + x`` inside it."""
    return torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)


def rois_of(*boxes, image: int = 0) -> torch.Tensor:
    return torch.tensor([[float(image), *b] for b in boxes], dtype=torch.float32)


def random_rois(gen, k, batch, extent, max_size, outside=10.0, dtype=torch.float32) -> torch.Tensor:
    """``[K, 5]`` rois in image pixels: a few tiny, some partly or wholly outside ``[0, extent]``."""
    corner = torch.rand(k, 2, generator=gen, dtype=dtype) * (torch.tensor(extent, dtype=dtype) + 2 * outside)
    corner -= outside
    size = torch.rand(k, 2, generator=gen, dtype=dtype) ** 2 * max_size
    size[: k // 8] *= 0.02  # smaller than one cell
    index = torch.randint(0, batch, (k, 1), generator=gen).to(dtype)
    return torch.cat((index, corner, corner + size), dim=1)


# ------------------------------------------------------------------ onnxruntime references


requires_onnxruntime = pytest.mark.skipif(
    not references.available(),
    reason="onnx / onnxruntime (compiled RoiAlign / MaxRoiPool references, in the test extra) do not import",
)


def ort_max_roi_pool(x, rois, output_size, spatial_scale) -> torch.Tensor:
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NoKernel

    try:
        return references.onnx_max_roi_pool(x, rois, output_size, spatial_scale)
    except NoKernel as err:  # pragma: no cover - depends on the onnxruntime build
        pytest.skip(f"onnxruntime has no MaxRoiPool kernel: {err}")


# ------------------------------------------------------------------ roi_align: hand-computed


@pytest.mark.parametrize("impl", IMPLS)
def test_whole_pixel_box_aligned_false_and_true(impl):
    # Box (0,0)-(4,4), 2x2 bins of 2 cells, one sample per bin at the bin centre.
    # aligned=False: samples at y, x in {1, 3} -> 5y + x.
    out = impl(grid5(), rois_of((0, 0, 4, 4)), 2, sampling_ratio=1, aligned=False)
    torch.testing.assert_close(out[0, 0], torch.tensor([[6.0, 8.0], [16.0, 18.0]]))
    # aligned=True shifts the box by half a cell: samples at {0.5, 2.5}, i.e. 0.5 * 5 + 0.5 = 3 less.
    out = impl(grid5(), rois_of((0, 0, 4, 4)), 2, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(out[0, 0], torch.tensor([[3.0, 5.0], [13.0, 15.0]]))


@pytest.mark.parametrize("impl", IMPLS)
def test_box_partly_outside_counts_outside_samples_as_zero(impl):
    # Box (3,3)-(7,7), one bin, 2x2 samples at y, x in {4, 6}: (4, 4) reads 24; the three samples with a
    # coordinate 6 > H = 5 read 0 but still count: 24 / 4.
    out = impl(grid5(), rois_of((3, 3, 7, 7)), 1, sampling_ratio=2)
    assert out.item() == pytest.approx(6.0)
    # Samples within one cell outside are clamped onto the border: box (-1,-1)-(1,1), samples at -0.5, 0.5
    # -> clamped 0, 0.5 -> values 0, 0.5, 2.5, 3.
    out = impl(grid5(), rois_of((-1, -1, 1, 1)), 1, sampling_ratio=2)
    assert out.item() == pytest.approx(1.5)
    # y in (H-1, H] reads the last row: box (0, 4)-(1, 5), one sample at (4.5, 0.5) -> row 4, x 0.5.
    out = impl(grid5(), rois_of((0, 4, 1, 5)), 1, sampling_ratio=1)
    assert out.item() == pytest.approx(20.5)
    # Exactly on the limits y = H and y = -1 still reads (clamped): samples at (5, 0.5) and (-1, 0.5).
    out = impl(grid5(), rois_of((0, 4, 1, 6), (0, -2, 1, 0)), 1, sampling_ratio=1)
    torch.testing.assert_close(out.flatten(), torch.tensor([20.5, 0.5]))


@pytest.mark.parametrize("impl", IMPLS)
def test_box_entirely_outside_gives_zero(impl):
    rois = rois_of((10, 10, 20, 20), (-30, -30, -10, -10), (0, 7, 5, 9))
    out = impl(grid5(), rois, (2, 3), sampling_ratio=-1)
    assert out.shape == (3, 1, 2, 3)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("impl", IMPLS)
def test_adaptive_and_fixed_sampling(impl):
    # Box (0,0)-(5,5), one bin. Adaptive: ceil(5 / 1) = 5 samples per side at 0.5 .. 4.5 (4.5 clamps to 4):
    # mean coordinate (0.5 + 1.5 + 2.5 + 3.5 + 4) / 5 = 2.4 -> 5 * 2.4 + 2.4 = 14.4.
    out = impl(grid5(), rois_of((0, 0, 5, 5)), 1, sampling_ratio=-1)
    assert out.item() == pytest.approx(14.4)
    # sampling_ratio=0 is adaptive too.
    assert impl(grid5(), rois_of((0, 0, 5, 5)), 1, sampling_ratio=0).item() == pytest.approx(14.4)
    # Fixed 1 sample: the centre (2.5, 2.5) -> 15.
    assert impl(grid5(), rois_of((0, 0, 5, 5)), 1, sampling_ratio=1).item() == pytest.approx(15.0)
    # Adaptive grids differ per box and per axis: at output (2, 1), a 4-wide 1-high box has a 1 x 4 grid.
    out = impl(grid5(), rois_of((0, 0, 4, 1), (0, 0, 1, 4)), (2, 1), sampling_ratio=-1)
    # box 1: bins of height 0.5, 1 sample in y (0.25, 0.75), 4 in x (0.5 .. 3.5, mean 2): 5y + 2
    # box 2: bins of height 2, 2 samples in y (0.5, 1.5 | 2.5, 3.5), 1 in x (0.5): 5 * mean + 0.5
    torch.testing.assert_close(out[:, 0, :, 0], torch.tensor([[3.25, 5.75], [5.5, 15.5]]))


@pytest.mark.parametrize("impl", IMPLS)
def test_degenerate_box_is_one_cell_unless_aligned(impl):
    # aligned=False: a 0.5-cell box becomes 1x1, its single sample at (1.5, 1.5) -> 9.
    assert impl(grid5(), rois_of((1, 1, 1.5, 1.5)), 1, sampling_ratio=1).item() == pytest.approx(9.0)
    # aligned=True keeps the 0.5 size: start 0.5, sample at 0.75 -> 4.5.
    out = impl(grid5(), rois_of((1, 1, 1.5, 1.5)), 1, sampling_ratio=1, aligned=True)
    assert out.item() == pytest.approx(4.5)
    # aligned=True with a zero-size box and adaptive sampling: an empty grid gives 0.
    out = impl(grid5(), rois_of((2, 2, 2, 2)), 1, sampling_ratio=-1, aligned=True)
    assert out.item() == 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_spatial_scale_and_list_boxes(impl):
    x = torch.stack([grid5()[0], 100 + grid5()[0]])
    torch.testing.assert_close(
        impl(x, rois_of((0, 0, 8, 8)), 2, spatial_scale=0.5, sampling_ratio=1),
        impl(x, rois_of((0, 0, 4, 4)), 2, sampling_ratio=1),
    )
    # List form: image 1's boxes read image 1 (100 + ...), in list order.
    as_list = [
        torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
        torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0]]),
    ]
    out = impl(x, as_list, 2, sampling_ratio=1)
    assert out.shape == (3, 1, 2, 2)
    torch.testing.assert_close(out[1, 0], torch.tensor([[106.0, 108.0], [116.0, 118.0]]))
    as_rois = torch.cat((rois_of((0, 0, 4, 4)), rois_of((0, 0, 4, 4), (1, 1, 3, 3), image=1)))
    torch.testing.assert_close(out, impl(x, as_rois, 2, sampling_ratio=1))


def test_bilinear_helper_hand_values():
    f = grid5()[0]
    torch.testing.assert_close(bilinear(f, torch.tensor(1.25), torch.tensor(2.5)), torch.tensor([8.75]))
    torch.testing.assert_close(bilinear(f, torch.tensor(4.7), torch.tensor(-0.9)), torch.tensor([20.0]))
    assert bilinear(f, torch.tensor(-1.1), torch.tensor(2.0)).item() == 0.0
    assert bilinear(f, torch.tensor(float("nan")), torch.tensor(2.0)).item() == 0.0


# ------------------------------------------------------------------ roi_align: compiled reference


@requires_onnxruntime
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_roi_align_matches_onnxruntime(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(10 + sampling_ratio + 7 * aligned)
    x = torch.randn(3, 4, 13, 17, generator=gen)
    rois = random_rois(gen, 60, 3, (34.0, 26.0), 40.0)  # image size 2x the map
    for output_size in [(7, 7), (2, 5)]:
        expected = onnx_roi_align(x, rois, output_size, 0.5, sampling_ratio, aligned)
        got = roi_align(x, rois, output_size, 0.5, sampling_ratio, aligned)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@requires_onnxruntime
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_loop_matches_onnxruntime(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(20 + sampling_ratio + 7 * aligned)
    x = torch.randn(2, 3, 9, 11, generator=gen)
    rois = random_rois(gen, 10, 2, (44.0, 36.0), 30.0)
    expected = onnx_roi_align(x, rois, (2, 3), 0.25, sampling_ratio, aligned)
    got = roi_align_loop(x, rois, (2, 3), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_roi_align_equals_loop_in_float64_and_chunked(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 10, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 12, 2, (10.0, 8.0), 12.0, outside=3.0, dtype=torch.float64)
    for sampling_ratio, aligned in [(-1, False), (2, True)]:
        expected = roi_align_loop(x, rois, (3, 2), 1.0, sampling_ratio, aligned)
        torch.testing.assert_close(roi_align(x, rois, (3, 2), 1.0, sampling_ratio, aligned), expected)
        # Tiny chunks: every box in its own embedding_bag call, same result.
        monkeypatch.setattr(ra, "_MAX_SAMPLES_PER_CHUNK", 5)
        torch.testing.assert_close(roi_align(x, rois, (3, 2), 1.0, sampling_ratio, aligned), expected)
        monkeypatch.undo()


def test_roi_align_output_is_contiguous_and_keeps_dtype():
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = roi_align(x, rois_of((0, 0, 4, 4)), 2)  # float32 boxes on float64 features
    assert out.dtype == torch.float64 and out.is_contiguous()


def test_half_precision_keeps_float32_coordinates():
    # float16 cannot represent x = 271.3 (its step there is 0.25): coordinates must stay float32.
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(2, 2, 40, 300, generator=gen)
    rois = random_rois(gen, 20, 2, (160.0, 160.0), 60.0, outside=0.0)
    rois[:, [1, 3]] += 1000.0  # x from 250 cells on, at scale 1/4
    for impl in (roi_align, roi_pool):
        out = impl(x.half(), rois, 3, 0.25)
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.float(), impl(x, rois, 3, 0.25), rtol=0, atol=1e-2)
    boxes = torch.rand(10, 4, generator=gen) * 0.2 + 0.8
    index = torch.randint(0, 2, (10,), generator=gen)
    out = crop_and_resize(x.half(), boxes, index, 4)
    torch.testing.assert_close(out.float(), crop_and_resize(x, boxes, index, 4), rtol=0, atol=1e-2)


# ------------------------------------------------------------------ gradients


def test_roi_align_gradcheck_wrt_input():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(gen, 5, 2, (6.0, 5.0), 6.0, outside=2.0, dtype=torch.float64)
    for sampling_ratio, aligned in [(-1, False), (2, True)]:
        assert torch.autograd.gradcheck(
            functools.partial(
                roi_align, boxes=rois, output_size=(2, 3), sampling_ratio=sampling_ratio, aligned=aligned
            ),
            (x,),
        )


def test_roi_align_loop_gradcheck_and_same_gradient_as_fast():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 0.3, 0.6, 3.9, 3.1], [0.0, -1.5, 1.0, 2.0, 4.8]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align_loop(t, rois, 2, 1.0, 1), (x,))
    upstream = torch.randn(2, 2, 2, 2, generator=gen, dtype=torch.float64)
    (g_loop,) = torch.autograd.grad((roi_align_loop(x, rois, 2, 1.0, 2) * upstream).sum(), x)
    (g_fast,) = torch.autograd.grad((roi_align(x, rois, 2, 1.0, 2) * upstream).sum(), x)
    torch.testing.assert_close(g_fast, g_loop)


def test_boxes_get_no_gradient():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    rois = rois_of((0.5, 0.5, 4.2, 5.1)).requires_grad_()
    boxes = torch.tensor([[0.1, 0.1, 0.8, 0.9]], requires_grad=True)
    outs = [
        roi_align(x, rois, 2),
        roi_align(x, [rois[:, 1:]], 2),
        roi_align_loop(x, rois, 2),
        roi_pool(x, rois, 2),
        crop_and_resize(x, boxes, torch.tensor([0]), 3),
    ]
    sum(o.sum() for o in outs).backward()
    assert rois.grad is None and boxes.grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Boxes alone requiring grad: the output is not part of any graph.
    assert not roi_align(x.detach(), rois, 2).requires_grad


def test_crop_and_resize_and_roi_pool_gradcheck():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 1, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(
        [[0.1, 0.2, 0.7, 0.9], [-0.2, 0.5, 0.4, 1.3], [0.9, 0.8, 0.2, 0.1]], dtype=torch.float64
    )
    index = torch.tensor([0, 1, 1])
    assert torch.autograd.gradcheck(lambda t: crop_and_resize(t, boxes, index, (3, 4), 0.5), (x,))
    rois = torch.tensor([[0.0, 0.2, 0.4, 4.6, 3.7], [1.0, 2.0, -1.0, 7.0, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (2, 3)), (x,))


# ------------------------------------------------------------------ crop_and_resize


def test_crop_and_resize_hand_values():
    img = grid5()
    one = torch.tensor([0])
    # Full-image box, crop = image size: every cell samples exactly one pixel centre.
    full = crop_and_resize(img, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), one, 5)
    torch.testing.assert_close(full, img)
    # 2x2 crop of the same box: the four corner pixels.
    corners = crop_and_resize(img, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), one, 2)
    torch.testing.assert_close(corners[0, 0], torch.tensor([[0.0, 4.0], [20.0, 24.0]]))
    # 1x1 crop: the box centre, 0.5 * (0 + 1) * 4 = 2 -> 12.
    assert crop_and_resize(img, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), one, 1).item() == 12.0
    # Fractional box (y1, x1, y2, x2) = (0.125, 0, 0.375, 0.5), crop (2, 3): rows 0.5, 1.5; cols 0, 1, 2.
    out = crop_and_resize(img, torch.tensor([[0.125, 0.0, 0.375, 0.5]]), one, (2, 3))
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 3.5, 4.5], [7.5, 8.5, 9.5]]))
    # A flipped box flips the crop.
    flipped = crop_and_resize(img, torch.tensor([[1.0, 1.0, 0.0, 0.0]]), one, 5)
    torch.testing.assert_close(flipped, img.flip(-1, -2))
    # Rows sampled outside [0, H-1] give the extrapolation value: y = -2, 0, 2 (box -0.5 .. 0.5).
    out = crop_and_resize(img, torch.tensor([[-0.5, 0.0, 0.5, 1.0]]), one, (3, 2), extrapolation_value=-7.0)
    torch.testing.assert_close(out[0, 0], torch.tensor([[-7.0, -7.0], [0.0, 4.0], [10.0, 14.0]]))


def test_crop_and_resize_matches_grid_sample_inside_the_image():
    # grid_sample(align_corners=True) uses the same corner-aligned coordinates: an independent reference.
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 9, 12, generator=gen, dtype=torch.float64)
    k = 20
    y1x1 = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 0.6
    y2x2 = y1x1 + torch.rand(k, 2, generator=gen, dtype=torch.float64) * 0.4
    boxes = torch.cat((y1x1, y2x2), dim=1)
    index = torch.randint(0, 2, (k,), generator=gen)
    got = crop_and_resize(x, boxes, index, (4, 5))
    ty = torch.linspace(0, 1, 4, dtype=torch.float64)
    tx = torch.linspace(0, 1, 5, dtype=torch.float64)
    ys = boxes[:, 0, None] + ty * (boxes[:, 2] - boxes[:, 0])[:, None]  # normalised, [K, 4]
    xs = boxes[:, 1, None] + tx * (boxes[:, 3] - boxes[:, 1])[:, None]
    grid = torch.stack((xs[:, None, :].expand(k, 4, 5), ys[:, :, None].expand(k, 4, 5)), dim=-1) * 2 - 1
    expected = torch.nn.functional.grid_sample(x[index], grid, mode="bilinear", align_corners=True)
    torch.testing.assert_close(got, expected)


def test_crop_and_resize_of_matterport_normalised_pixel_box():
    # Our pixel box covering the whole 5x5 image is matterport's (0, 0, 1, 1): the image itself.
    boxes = to_matterport_normalized(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), (5, 5))
    torch.testing.assert_close(crop_and_resize(grid5(), boxes, torch.tensor([0]), 5), grid5())


# ------------------------------------------------------------------ roi_pool


def test_roi_pool_hand_values():
    img = grid5()
    # Box (0,0)-(4,4) is 5 cells inclusive; bins of 2.5: rows/cols [0, 3) and [2, 5).
    torch.testing.assert_close(
        roi_pool(img, rois_of((0, 0, 4, 4)), 2)[0, 0], torch.tensor([[12.0, 14.0], [22.0, 24.0]])
    )
    # Halves round away from zero: 0.5 -> 1, so the box is cell (1, 1) = 6 (half-to-even would give 0).
    assert roi_pool(img, rois_of((0.5, 0.5, 0.5, 0.5)), 1).item() == 6.0
    # Box (3,3)-(6,6): 4 cells, bins of 2; the second row and column of bins lie off the map -> 0.
    torch.testing.assert_close(
        roi_pool(img, rois_of((3, 3, 6, 6)), 2)[0, 0], torch.tensor([[24.0, 0.0], [0.0, 0.0]])
    )
    # Entirely outside: 0. spatial_scale rounds after scaling: (2.2, 2.2)*0.5 -> cell 1.
    assert roi_pool(img, rois_of((10, 10, 12, 12)), 1).item() == 0.0
    assert roi_pool(img, rois_of((2.2, 2.2, 2.2, 2.2)), 1, spatial_scale=0.5).item() == 6.0


@requires_onnxruntime
def test_roi_pool_matches_onnxruntime_max_roi_pool(monkeypatch):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 10, 14, generator=gen)
    rois = random_rois(gen, 40, 2, (28.0, 20.0), 24.0, outside=4.0)
    for output_size in [(3, 3), (2, 5)]:
        expected = ort_max_roi_pool(x, rois, output_size, 0.5)
        torch.testing.assert_close(roi_pool(x, rois, output_size, 0.5), expected, rtol=0, atol=1e-6)
    monkeypatch.setattr(ra, "_MAX_SAMPLES_PER_CHUNK", 7)
    torch.testing.assert_close(roi_pool(x, rois, (2, 5), 0.5), expected, rtol=0, atol=1e-6)


def test_roi_pool_gradient_goes_to_the_max_cell():
    x = grid5().requires_grad_()
    roi_pool(x, rois_of((0, 0, 4, 4)), 2).sum().backward()
    expected = torch.zeros(5, 5)
    expected[2, 2] = expected[2, 4] = expected[4, 2] = expected[4, 4] = 1.0
    torch.testing.assert_close(x.grad[0, 0], expected)


# ------------------------------------------------------------------ FPN levels


def square(size: float) -> torch.Tensor:
    return torch.tensor([[10.0, 20.0, 10.0 + size, 20.0 + size]])


def test_assign_fpn_levels_hand_values():
    sizes = [224, 112, 448, 4, 2000, 0]
    boxes = torch.cat([square(s) for s in sizes])
    for rounding in ("round", "floor"):
        levels = assign_fpn_levels(boxes, rounding=rounding)
        assert levels.dtype == torch.int64
        assert levels.tolist() == [4, 3, 5, 2, 5, 2]
    # log2(180/224) = -0.32: rounds to level 4, floors to 3; 400 px: +0.84 -> 5 vs 4; 300 px: +0.42 -> 4, 4.
    boxes = torch.cat([square(180), square(400), square(300)])
    assert assign_fpn_levels(boxes, rounding="round").tolist() == [4, 5, 4]
    assert assign_fpn_levels(boxes, rounding="floor").tolist() == [3, 4, 4]
    # Other k0 / canonical size / clamp range.
    assert assign_fpn_levels(square(100), k0=5, canonical_size=50, max_level=7).tolist() == [6]
    assert assign_fpn_levels(square(1), min_level=3).tolist() == [3]
    assert assign_fpn_levels(torch.zeros(0, 4)).shape == (0,)


def test_assign_fpn_levels_matterport_normalised_formula():
    # Matterport measures the normalised box: h_n = (y2 - y1 - 1) / (H - 1), and multiplies by sqrt(H * W).
    # A 159-px box on a 1024x1024 image: pixel rule log2(159/224) = -0.494 -> 4;
    # matterport's 158 * 1024 / 1023 = 158.15 -> log2 = -0.502 -> 3.
    assert assign_fpn_levels(square(159)).tolist() == [4]
    assert assign_fpn_levels(square(159), image_size=(1024, 1024)).tolist() == [3]
    assert assign_fpn_levels(square(224), image_size=(1024, 1024)).tolist() == [4]


# ------------------------------------------------------------------ pyramid


def pyramid(gen, batch=2, channels=3, image=(128, 160), strides=(4, 8, 16, 32)):
    return [torch.randn(batch, channels, image[0] // s, image[1] // s, generator=gen) for s in strides]


@pytest.mark.parametrize("rounding", ["round", "floor"])
def test_pyramid_roi_align_equals_per_level_roi_align(rounding):
    gen = torch.Generator().manual_seed(9)
    features = pyramid(gen)
    sizes = torch.tensor([8.0, 20, 40, 60, 90, 100, 120, 150, 30, 12, 75, 110])
    xy = torch.rand(len(sizes), 2, generator=gen) * 40
    rois = torch.cat(
        (torch.randint(0, 2, (len(sizes), 1), generator=gen).float(), xy, xy + sizes[:, None]), 1
    )
    rois[:, 3] = rois[:, 1] + 0.5 * sizes  # non-square too
    out = pyramid_roi_align(features, rois, 3, rounding=rounding, canonical_size=56, sampling_ratio=2)
    levels = assign_fpn_levels(rois[:, 1:], canonical_size=56, rounding=rounding)
    assert len(set(levels.tolist())) >= 3
    for i, level in enumerate(levels.tolist()):
        stride = (4, 8, 16, 32)[level - 2]
        expected = roi_align(features[level - 2], rois[i : i + 1], 3, 1 / stride, 2)
        torch.testing.assert_close(out[i : i + 1], expected)
    # The list form gives the same rows, image 0's boxes first.
    order = torch.argsort(rois[:, 0], stable=True)
    as_list = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    torch.testing.assert_close(
        pyramid_roi_align(features, as_list, 3, rounding=rounding, canonical_size=56), out[order]
    )


def test_pyramid_crop_and_resize_reproduces_matterport():
    gen = torch.Generator().manual_seed(11)
    image = (128, 160)
    features = pyramid(gen, image=image)
    sizes = torch.tensor([10.0, 30, 55, 57, 80, 125])
    rois = torch.cat(
        (
            torch.tensor([[0.0], [1], [0], [1], [0], [1]]),
            torch.full((6, 2), 3.0),
            3 + sizes[:, None].repeat(1, 2),
        ),
        1,
    )
    out = pyramid_roi_align(
        features, rois, (4, 4), method="crop_and_resize", image_size=image, canonical_size=56
    )
    levels = assign_fpn_levels(rois[:, 1:], canonical_size=56, image_size=image)
    assert len(set(levels.tolist())) >= 3
    normalised = to_matterport_normalized(rois[:, 1:], image)
    for i, level in enumerate(levels.tolist()):
        expected = crop_and_resize(features[level - 2], normalised[i : i + 1], rois[i : i + 1, 0].long(), 4)
        torch.testing.assert_close(out[i : i + 1], expected)


def test_pyramid_gradient_reaches_every_used_level():
    gen = torch.Generator().manual_seed(12)
    features = [f.requires_grad_() for f in pyramid(gen)]
    rois = rois_of((0, 0, 10, 10), (0, 0, 30, 30), (0, 0, 120, 120))
    pyramid_roi_align(features, rois, 2, canonical_size=56).sum().backward()
    used = [f.grad is not None and bool(f.grad.abs().sum() > 0) for f in features]
    assert used == [True, True, False, True]  # 10 px -> P2, 30 px -> P3, 120 px -> P5


# ------------------------------------------------------------------ empty inputs and errors


def test_empty_inputs_give_empty_outputs():
    x = torch.randn(2, 3, 6, 6)
    for impl in IMPLS:
        assert impl(x, torch.zeros(0, 5), (2, 4)).shape == (0, 3, 2, 4)
        assert impl(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)
        assert impl(x, [], 2).shape == (0, 3, 2, 2)
    assert roi_pool(x, torch.zeros(0, 5), 2).shape == (0, 3, 2, 2)
    assert crop_and_resize(x, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3).shape == (0, 3, 3, 3)
    assert pyramid_roi_align([x, x[..., :3, :3]], torch.zeros(0, 5), 2, strides=(4, 8)).shape == (0, 3, 2, 2)
    # An empty feature map: every sample is outside.
    for impl in IMPLS:
        assert torch.equal(impl(torch.randn(1, 2, 0, 4), rois_of((0, 0, 1, 1)), 2), torch.zeros(1, 2, 2, 2))
    assert torch.equal(roi_pool(torch.randn(1, 2, 4, 0), rois_of((0, 0, 1, 1)), 2), torch.zeros(1, 2, 2, 2))
    empty_map = crop_and_resize(torch.randn(1, 2, 0, 4), torch.rand(1, 4), torch.tensor([0]), 2, -1.0)
    assert torch.equal(empty_map, torch.full((1, 2, 2, 2), -1.0))


def _pyramid(x, n, **kwargs):
    return pyramid_roi_align([x, x[..., ::2, ::2]], torch.zeros(n, 5), 2, (4, 8), **kwargs)


@pytest.mark.parametrize(
    "name, call",
    [
        ("roi_align", lambda x, n: roi_align(x, torch.zeros(n, 5), (2, 3), 0.5, 2)),
        ("roi_align_loop", lambda x, n: roi_align_loop(x, [torch.zeros(n, 4)], 2)),
        ("roi_pool", lambda x, n: roi_pool(x, torch.zeros(n, 5), 2)),
        ("crop_and_resize", lambda x, n: crop_and_resize(x, torch.zeros(n, 4), torch.zeros(n).long(), 3)),
        ("pyramid_roi_align", _pyramid),
        ("pyramid crop_and_resize", functools.partial(_pyramid, method="crop_and_resize", image_size=(9, 9))),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_no_boxes_gives_an_empty_output_whose_gradient_is_zero(name, call, dtype):
    # As torchvision's kernels: the empty output is part of the graph, so backward() works and the features
    # get a zero gradient (not None, not an error). An inf in the map must not turn it into NaN.
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64).to(dtype)
    x[0, 0, 0, 0] = float("inf")
    x.requires_grad_(True)
    out = call(x, 0)
    assert out.shape[0] == 0 and out.dtype == dtype and out.requires_grad, name
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and not bool(x.grad.any()), name


def test_empty_map_output_is_connected_too():
    # Boxes but an empty map: a constant output (zeros, or crop_and_resize's extrapolation value), in the
    # graph with a zero gradient.
    x = torch.randn(1, 2, 0, 4, requires_grad=True)
    for out in (
        roi_align(x, rois_of((0, 0, 1, 1)), 2),
        roi_align_loop(x, rois_of((0, 0, 1, 1)), 2),
        roi_pool(x, rois_of((0, 0, 1, 1)), 2),
        crop_and_resize(x, torch.rand(1, 4), torch.tensor([0]), 2, -1.0),
    ):
        assert out.shape == (1, 2, 2, 2) and out.requires_grad
        (out * 2).sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape
        x.grad = None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fpn_levels_of_half_precision_boxes(dtype):
    # A 400 px box has area 160000: in float16 that overflows to inf and the level would be the top one.
    boxes = torch.tensor([[0.0, 0.0, 400.0, 400.0], [0.0, 0.0, 56.0, 56.0], [10.0, 10.0, 234.0, 234.0]])
    for rounding in ("round", "floor"):
        want = assign_fpn_levels(boxes, rounding=rounding, max_level=6)
        assert want.tolist() == ([5, 2, 4] if rounding == "round" else [4, 2, 4])  # not 6, the top level
        assert torch.equal(assign_fpn_levels(boxes.to(dtype), rounding=rounding, max_level=6), want)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x, r: roi_align(x[0], r, 2), "input"),
        (lambda x, r: roi_align(x, r[:, 1:], 2), "boxes"),
        (lambda x, r: roi_align(x, r + torch.tensor([2.0, 0, 0, 0, 0]), 2), "boxes"),
        (lambda x, r: roi_align(x, r.long(), 2), "boxes"),
        (lambda x, r: roi_align(x, "boxes", 2), "boxes"),
        (lambda x, r: roi_align(x, [r], 2), r"boxes\[0\]"),
        (lambda x, r: roi_align(x, r, 0), "output_size"),
        (lambda x, r: roi_align(x, r, (2, 2, 2)), "output_size"),
        (lambda x, r: roi_align(x, r, 2, spatial_scale=0), "spatial_scale"),
        (lambda x, r: roi_align(x, r, 2, sampling_ratio=1.5), "sampling_ratio"),
        (lambda x, r: roi_align_loop(x, r, 2, spatial_scale=-1), "spatial_scale"),
        (lambda x, r: roi_pool(x.long(), r, 2), "input"),
        (lambda x, r: crop_and_resize(x, r, torch.tensor([0]), 2), "boxes"),
        (lambda x, r: crop_and_resize(x, r[:, 1:], torch.tensor([0.0]), 2), "box_indices"),
        (lambda x, r: crop_and_resize(x, r[:, 1:], torch.tensor([0, 0]), 2), "box_indices"),
        (lambda x, r: crop_and_resize(x, r[:, 1:], torch.tensor([5]), 2), "box_indices"),
        (lambda x, r: crop_and_resize(x, r[:, 1:], torch.tensor([0]), (0, 2)), "crop_size"),
        (lambda x, r: assign_fpn_levels(r), "boxes"),
        (lambda x, r: assign_fpn_levels(r[:, 1:], rounding="ceil"), "rounding"),
        (lambda x, r: assign_fpn_levels(r[:, 1:], min_level=6), "min_level"),
        (lambda x, r: pyramid_roi_align(x, r, 2), "features"),
        (lambda x, r: pyramid_roi_align([x, x.double()], r, 2, strides=(4, 8)), r"features\[1\]"),
        (lambda x, r: pyramid_roi_align([x], r, 2), "strides"),
        (lambda x, r: pyramid_roi_align([x], r, 2, strides=(4,), method="nearest"), "method"),
        (lambda x, r: pyramid_roi_align([x], r, 2, strides=(4,), method="crop_and_resize"), "image_size"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    x = torch.randn(2, 3, 6, 6)
    r = rois_of((0, 0, 3, 3))
    with pytest.raises(ValueError, match=name):
        call(x, r)


# ------------------------------------------------------------------ torchvision and CUDA


@pytest.mark.skipif(torchvision_ops() is None, reason="torchvision's compiled ops do not load here")
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_torchvision(aligned):
    tv = torchvision_ops()
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(2, 3, 11, 9, generator=gen)
    rois = random_rois(gen, 30, 2, (18.0, 22.0), 20.0)
    for sampling_ratio in (-1, 2):
        torch.testing.assert_close(
            roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned),
            tv.roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned),
            rtol=0,
            atol=1e-5,
        )
    torch.testing.assert_close(roi_pool(x, rois, (3, 4), 0.5), tv.roi_pool(x, rois, (3, 4), 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("use_torchvision", [True, False])
def test_cuda_matches_cpu(monkeypatch, use_torchvision):
    if not use_torchvision:  # the pure-torch path
        monkeypatch.setattr(ra, "torchvision_ops", lambda: None)
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 11, 9, generator=gen)
    rois = random_rois(gen, 30, 2, (18.0, 22.0), 20.0)
    boxes = torch.rand(5, 4, generator=gen)
    index = torch.tensor([0, 1, 0, 1, 1])
    for sampling_ratio in (-1, 2):
        torch.testing.assert_close(
            roi_align(x.cuda(), rois.cuda(), 3, 0.5, sampling_ratio).cpu(),
            roi_align(x, rois, 3, 0.5, sampling_ratio),
        )
    torch.testing.assert_close(roi_pool(x.cuda(), rois.cuda(), 3, 0.5).cpu(), roi_pool(x, rois, 3, 0.5))
    # 200 boxes, many reaching past the map, at 7x7: bin edges at whole cells computed with a reciprocal on
    # CUDA moved by one cell (benchmarks/gpu_check.py on an H200)
    far = random_rois(gen, 200, 2, (40.0, 40.0), 30.0)
    torch.testing.assert_close(roi_pool(x.cuda(), far.cuda(), 7, 0.5).cpu(), roi_pool(x, far, 7, 0.5))
    torch.testing.assert_close(
        crop_and_resize(x.cuda(), boxes.cuda(), index.cuda(), 4).cpu(), crop_and_resize(x, boxes, index, 4)
    )
    xc = x.cuda().requires_grad_()
    roi_align(xc, rois.cuda(), 3, 0.5, 2).sum().backward()
    xr = x.clone().requires_grad_()
    roi_align(xr, rois, 3, 0.5, 2).sum().backward()
    torch.testing.assert_close(xc.grad.cpu(), xr.grad)


# --------------------------------------------------------------------------------------------------------
# geometry helpers: roi_align_sample_points, roi_align_bins, roi_pool_bins, crop_and_resize_sample_points


def coordinate_maps(h: int, w: int) -> torch.Tensor:
    """``[1, 2, h, w]``: channel 0 holds each cell's row, channel 1 its column (bilinear reads give y, x)."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")  # fmt: skip
    return torch.stack((rows, cols))[None]


GEOMETRY_CASES = [  # box, output_size, spatial_scale, sampling_ratio, aligned: all samples inside 12 x 16
    ((1.3, 2.2, 6.1, 5.7), 2, 1.0, 2, True),
    ((1.3, 2.2, 6.1, 5.7), (3, 2), 1.0, -1, False),
    ((4.0, 3.0, 25.0, 17.0), (2, 3), 0.5, -1, True),
    ((2.5, 1.5, 9.0, 7.5), 4, 1.0, 3, False),
    ((3.0, 3.0, 3.4, 3.2), 2, 1.0, -1, False),  # degenerate: at least 1 x 1 cell
]


@pytest.mark.parametrize(("box", "size", "scale", "ratio", "aligned"), GEOMETRY_CASES)
def test_roi_align_sample_points_agree_with_roi_align(box, size, scale, ratio, aligned):
    points = ra.roi_align_sample_points(torch.tensor(box, dtype=torch.float64), size, scale, ratio, aligned)
    oh, ow = (size, size) if isinstance(size, int) else size
    assert points.shape[:2] == (oh, ow) and points.shape[-1] == 2
    assert bool(((points[..., 0] >= 0) & (points[..., 0] <= 11) & (points[..., 1] >= 0)
                 & (points[..., 1] <= 15)).all())  # fmt: skip
    roi = torch.tensor([[0.0, *box]], dtype=torch.float64)
    pooled = roi_align(coordinate_maps(12, 16), roi, size, scale, ratio, aligned)[0]
    means = points.mean(dim=(2, 3)).permute(2, 0, 1)  # [2, oh, ow]
    torch.testing.assert_close(pooled, means, rtol=0, atol=1e-9)


def test_roi_align_sample_points_hand_computed():
    # x: start 1, bin 2, 2 samples per bin -> 1.5, 2.5 | 3.5, 4.5
    # y: start 2, bin 1 -> 2.25, 2.75 | 3.25, 3.75
    points = ra.roi_align_sample_points(torch.tensor([1.0, 2.0, 5.0, 4.0]), 2, 1.0, 2, aligned=False)
    assert points.shape == (2, 2, 2, 2, 2)
    torch.testing.assert_close(points[1, 0, :, 0, 0], torch.tensor([3.25, 3.75]))
    torch.testing.assert_close(points[0, 1, 0, :, 1], torch.tensor([3.5, 4.5]))
    shifted = ra.roi_align_sample_points(torch.tensor([1.0, 2.0, 5.0, 4.0]), 2, 1.0, 2, aligned=True)
    torch.testing.assert_close(shifted, points - 0.5)
    # adaptive: ceil(2 / 2) = 1 row, ceil(4 / 2) = 2 columns per bin
    assert ra.roi_align_sample_points(torch.tensor([1.0, 2.0, 5.0, 4.0]), 2).shape == (2, 2, 1, 2, 2)
    # aligned degenerate box: no samples, as roi_align (which then returns 0)
    point = torch.tensor([3.0, 3.0, 3.0, 3.0])
    assert ra.roi_align_sample_points(point, 2, aligned=True).shape[2:4] == (0, 0)


@pytest.mark.parametrize(("box", "size", "scale", "ratio", "aligned"), GEOMETRY_CASES)
def test_roi_align_bins_hold_their_samples(box, size, scale, ratio, aligned):
    b = torch.tensor(box)
    bins = ra.roi_align_bins(b, size, scale, aligned)
    points = ra.roi_align_sample_points(b, size, scale, ratio, aligned)
    lo, hi = bins[:, :, None, None, :2], bins[:, :, None, None, 2:]
    assert bool(((points > lo) & (points < hi)).all())
    torch.testing.assert_close(points.mean(dim=(2, 3)), (bins[..., :2] + bins[..., 2:]) / 2)
    # hand-computed: aligned, scale 1: the box minus half a cell, split into 2 x 2 equal bins
    bins = ra.roi_align_bins(torch.tensor([1.0, 2.0, 5.0, 4.0]), 2, aligned=True)
    torch.testing.assert_close(bins[1, 0], torch.tensor([2.5, 0.5, 3.5, 2.5]))


@pytest.mark.parametrize(
    ("box", "size", "scale"),
    [((1.3, 2.2, 6.1, 5.7), 2, 1.0), ((0.0, 0.0, 15.0, 11.0), (3, 5), 1.0), ((-6.0, 4.0, 9.0, 30.0), 3, 0.5),
     ((9.0, 9.0, 9.0, 9.0), 2, 1.0), ((10.0, 2.0, 40.0, 7.0), (2, 4), 0.5)],
)  # fmt: skip
def test_roi_pool_bins_agree_with_roi_pool(box, size, scale):
    h, w = 12, 16
    bins = ra.roi_pool_bins(torch.tensor(box), size, (h, w), scale)
    assert bins.dtype == torch.int64
    coords = coordinate_maps(h, w).float() + 1  # + 1: an empty bin (0) is told apart from cell 0
    roi = rois_of(box)
    last = roi_pool(coords, roi, size, scale)[0] - 1  # [2, oh, ow] largest row, column of each bin
    first = -roi_pool(-coords, roi, size, scale)[0] - 1
    empty = (bins[..., 2] <= bins[..., 0]) | (bins[..., 3] <= bins[..., 1])
    assert bool((last[:, empty] == -1).all())
    full = ~empty
    assert bool(full.any())
    torch.testing.assert_close(first[:, full].long(), bins[full][:, :2].T)
    torch.testing.assert_close(last[:, full].long(), bins[full][:, 2:].T - 1)


def test_roi_pool_bins_hand_computed():
    # rounded box: columns 1..6, rows 2..6 (6 x 5 cells); columns split 0..3 | 3..6, rows floor/ceil of 2.5
    bins = ra.roi_pool_bins(torch.tensor([1.3, 2.2, 6.1, 5.7]), 2, (8, 8))
    expected = torch.tensor([[[2, 1, 5, 4], [2, 4, 5, 7]], [[4, 1, 7, 4], [4, 4, 7, 7]]])
    assert torch.equal(bins, expected)
    clipped = ra.roi_pool_bins(torch.tensor([1.3, 2.2, 6.1, 5.7]), 2, (5, 5))  # map ends at row/column 5
    assert torch.equal(clipped[1, 1], torch.tensor([4, 4, 5, 5]))


@pytest.mark.parametrize(
    ("box", "size"),
    [((1.3, 2.2, 6.1, 5.7), 2), ((0.0, 0.0, 11.0, 15.0), (4, 3)), ((2.0, 3.0, 9.5, 14.0), 1),
     ((8.0, 12.0, 2.0, 1.0), (3, 5)), ((-2.0, -3.0, 8.0, 20.0), 4)],
)  # fmt: skip
def test_crop_and_resize_sample_points_agree_with_crop_and_resize(box, size):
    h, w = 12, 16
    normalised = to_matterport_normalized(torch.tensor([box], dtype=torch.float64), (h, w))
    points = ra.crop_and_resize_sample_points(normalised[0], (h, w), size)
    ch, cw = (size, size) if isinstance(size, int) else size
    assert points.shape == (ch, cw, 2)
    out = crop_and_resize(coordinate_maps(h, w), normalised, torch.tensor([0]), size, float("nan"))[0]
    inside = ~out.isnan().any(0)
    expected = ((points[..., 0] >= 0) & (points[..., 0] <= h - 1) & (points[..., 1] >= 0)
                & (points[..., 1] <= w - 1))  # fmt: skip
    assert torch.equal(inside, expected)
    torch.testing.assert_close(out[:, inside], points[inside].T, rtol=0, atol=1e-9)


def test_crop_and_resize_sample_points_hand_computed():
    # normalised (0, 0, 1, 1) on a 5 x 3 map spans the first to the last cell centre
    points = ra.crop_and_resize_sample_points(torch.tensor([0.0, 0.0, 1.0, 1.0]), (5, 3), 3)
    torch.testing.assert_close(points[:, 0, 0], torch.tensor([0.0, 2.0, 4.0]))
    torch.testing.assert_close(points[0, :, 1], torch.tensor([0.0, 1.0, 2.0]))
    centre = ra.crop_and_resize_sample_points(torch.tensor([0.25, 0.0, 0.75, 0.5]), (5, 3), 1)
    torch.testing.assert_close(centre, torch.tensor([[[2.0, 0.5]]]))


def test_geometry_helpers_bad_input_names_the_argument():
    box = torch.tensor([1.0, 2.0, 5.0, 4.0])
    with pytest.raises(ValueError, match="box"):
        ra.roi_align_sample_points(box[:3], 2)
    with pytest.raises(ValueError, match="output_size"):
        ra.roi_align_sample_points(box, 0)
    with pytest.raises(ValueError, match="sampling_ratio"):
        ra.roi_align_sample_points(box, 2, sampling_ratio=1.5)
    with pytest.raises(ValueError, match="spatial_scale"):
        ra.roi_align_bins(box, 2, spatial_scale=-1)
    with pytest.raises(ValueError, match="feature_size"):
        ra.roi_pool_bins(box, 2, (8,))
    with pytest.raises(ValueError, match="box"):
        ra.roi_pool_bins(box.long(), 2, (8, 8))
    with pytest.raises(ValueError, match="crop_size"):
        ra.crop_and_resize_sample_points(box, (8, 8), (2, -1))
    with pytest.raises(ValueError, match="feature_size"):
        ra.crop_and_resize_sample_points(box, None, 2)


def test_bilinear_helper_checks_its_arguments():
    f = grid5()[0]
    with pytest.raises(ValueError, match="feature"):
        bilinear(f[0], torch.tensor(1.0), torch.tensor(1.0))  # [H, W], no channel dimension
    with pytest.raises(ValueError, match="feature"):
        bilinear(f.long(), torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="y"):
        bilinear(f, torch.tensor([1.0, 2.0]), torch.tensor(1.0))
    with pytest.raises(ValueError, match="x"):
        bilinear(f, torch.tensor(1.0), "2")
    # plain numbers are points too
    torch.testing.assert_close(bilinear(f, 1.25, 2.5), torch.tensor([8.75]))
