"""Tests for mrcnn_edu.references, the onnxruntime kernels the other tests compare against: hand-computed tiny
cases, so that a mistake in translating to the ONNX conventions (corner order, coordinate mode, adaptive
sampling) cannot hide behind agreement with the code under test."""

from __future__ import annotations

import sys

import pytest
import torch

from mrcnn_edu import references
from mrcnn_edu.references import onnx_max_roi_pool, onnx_nms, onnx_roi_align

requires_onnxruntime = pytest.mark.skipif(
    not references.available(), reason="onnx / onnxruntime (in the test extra) do not import"
)


def grid5() -> torch.Tensor:
    """``[1, 1, 5, 5]`` map with value ``5 * row + col``."""
    return torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)


@requires_onnxruntime
def test_nms_of_three_boxes():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A
            [1.0, 0.0, 11.0, 10.0],  # B: IoU(A, B) = 90 / 110 = 0.818
            [20.0, 20.0, 30.0, 30.0],  # C: far from both
        ]
    )
    scores = torch.tensor([0.8, 0.9, 0.7])
    keep = onnx_nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64
    assert keep.tolist() == [1, 2]  # B first, B removes A, C stays
    assert onnx_nms(boxes, scores, 0.9).tolist() == [1, 0, 2]  # 0.818 <= 0.9: all kept, by score
    # IoU exactly at the threshold is kept: A and D = (0, 0, 10, 5) have IoU 50 / 100 = 0.5.
    pair = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert onnx_nms(pair, torch.tensor([0.6, 0.4]), 0.5).tolist() == [0, 1]
    assert onnx_nms(pair, torch.tensor([0.6, 0.4]), 0.49).tolist() == [0]
    # Tall boxes side by side: IoU(E, F) = 10 / 30 = 1/3 whichever way the corners are read.
    tall = torch.tensor([[0.0, 0.0, 2.0, 10.0], [1.0, 0.0, 3.0, 10.0]])
    assert onnx_nms(tall, torch.tensor([0.1, 0.2]), 0.3).tolist() == [1]
    assert onnx_nms(tall, torch.tensor([0.1, 0.2]), 0.34).tolist() == [1, 0]
    assert onnx_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


@requires_onnxruntime
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
def test_roi_align_of_a_constant_map_is_the_constant(aligned, sampling_ratio):
    x = torch.full((2, 3, 6, 8), 3.5)
    # Boxes inside the 12 x 16 image (spatial_scale 0.5): every sample reads the constant.
    rois = torch.tensor([[0.0, 1.0, 1.0, 9.0, 7.0], [1.0, 0.0, 0.0, 16.0, 12.0], [1.0, 4.0, 3.0, 5.5, 3.5]])
    out = onnx_roi_align(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    assert out.shape == (3, 3, 3, 2)
    torch.testing.assert_close(out, torch.full_like(out, 3.5))


@requires_onnxruntime
def test_roi_align_hand_values_pick_the_coordinate_mode():
    # Box (0,0)-(4,4), 2x2 bins of 2 cells, one sample per bin at its centre: y, x in {1, 3} -> 5y + x.
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = onnx_roi_align(grid5(), rois, 2, sampling_ratio=1, aligned=False)
    torch.testing.assert_close(out[0, 0], torch.tensor([[6.0, 8.0], [16.0, 18.0]]))
    # aligned=True (half_pixel) moves the samples half a cell up and left: 3 less.
    out = onnx_roi_align(grid5(), rois, 2, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(out[0, 0], torch.tensor([[3.0, 5.0], [13.0, 15.0]]))
    # Adaptive sampling on one bin over (0,0)-(5,5): 5 samples per side at 0.5 .. 4.5 (4.5 clamps to 4),
    # mean coordinate 2.4 -> 5 * 2.4 + 2.4 = 14.4; a fixed single sample at 2.5 gives 15.
    box = torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0]])
    assert onnx_roi_align(grid5(), box, 1, sampling_ratio=0).item() == pytest.approx(14.4)
    assert onnx_roi_align(grid5(), box, 1, sampling_ratio=1).item() == pytest.approx(15.0)
    assert onnx_roi_align(grid5(), rois[:0], (2, 3)).shape == (0, 1, 2, 3)


@requires_onnxruntime
def test_max_roi_pool_hand_values():
    # Box (0,0)-(4,4) is 5 cells inclusive, bins of 2.5: rows/cols [0, 3) and [2, 5) -> maxima at 2 and 4.
    out = onnx_max_roi_pool(grid5(), torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[12.0, 14.0], [22.0, 24.0]]))
    assert onnx_max_roi_pool(grid5(), torch.zeros(0, 5), (2, 3)).shape == (0, 1, 2, 3)


@requires_onnxruntime
def test_thread_count_does_not_change_results():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 11, generator=gen)
    xy = torch.rand(20, 2, generator=gen) * 30
    rois = torch.cat((torch.randint(0, 2, (20, 1), generator=gen).float(), xy, xy + 8), dim=1)
    one = onnx_roi_align(x, rois, 3, 0.25, 2, intra_op_num_threads=1)
    assert torch.equal(one, onnx_roi_align(x, rois, 3, 0.25, 2, intra_op_num_threads=2))


@requires_onnxruntime
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: onnx_nms(torch.zeros(3, 5), torch.zeros(3), 0.5), "boxes"),
        (lambda: onnx_nms(torch.zeros(3, 4), torch.zeros(2), 0.5), "scores"),
        (lambda: onnx_nms(torch.zeros(3, 4), torch.zeros(3), 0.5, intra_op_num_threads=-1), "intra_op"),
        (lambda: onnx_roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 4), 2), "rois"),
        (lambda: onnx_roi_align(torch.zeros(1, 4, 4), torch.zeros(2, 5), 2), "input"),
        (lambda: onnx_max_roi_pool(torch.zeros(1, 1, 4, 4), torch.zeros(2, 5), (2, 0)), "output_size"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_missing_onnxruntime_gives_a_clear_import_error(monkeypatch):
    # A None entry in sys.modules makes ``import onnxruntime`` raise ImportError; the caches must be
    # cleared so that nothing built earlier in the session answers instead.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    references.available.cache_clear()
    references._session.cache_clear()
    try:
        assert references.available() is False
        with pytest.raises(ImportError, match="'onnxruntime'.*test extra"):
            onnx_nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    finally:
        references.available.cache_clear()
        references._session.cache_clear()
