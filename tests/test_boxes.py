"""Tests for mrcnn_edu.boxes against pycocotools, numpy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.boxes import (
    DEFAULT_DELTA_CLAMP,
    box_area,
    box_convert,
    box_dtype,
    box_iou,
    clip_boxes,
    decode_deltas,
    encode_deltas,
    from_matterport_normalized,
    masks_to_boxes,
    matched_box_iou,
    remove_small_boxes,
    to_matterport_normalized,
)

coco_mask = pytest.importorskip("pycocotools.mask", reason="pycocotools is the independent IoU reference")

FORMATS = ("xyxy", "xywh", "cxcywh", "yxyx")
FAST = settings(max_examples=40, deadline=None)


def random_boxes(gen: torch.Generator, n: int, size: float = 50.0, max_wh: float = 30.0) -> torch.Tensor:
    """Float64 xyxy boxes with non-negative width and height (some of them zero-sized)."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * max_wh
    wh[torch.rand(n, generator=gen) < 0.1] = 0.0  # a few degenerate boxes
    return torch.cat((xy, xy + wh), dim=1)


def coco_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> np.ndarray:
    """IoU from pycocotools' compiled bbIou, on COCO xywh boxes."""
    dt = box_convert(boxes1, "xyxy", "xywh").double().numpy()
    gt = box_convert(boxes2, "xyxy", "xywh").double().numpy()
    return np.asarray(coco_mask.iou(dt, gt, [0] * len(gt)), dtype=np.float64).reshape(len(dt), len(gt))


# ---------------------------------------------------------------- box_area


def test_box_area_hand_values_and_inverted_boxes():
    boxes = torch.tensor(
        [[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], [5.0, 5.0, 2.0, 9.0], [-1.0, -2.0, 1.5, 0.0]]
    )
    torch.testing.assert_close(box_area(boxes), torch.tensor([6.0, 0.0, 0.0, 5.0]))


def test_box_area_leading_dims_and_empty():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 4.0]]).expand(3, 2, 4)
    area = box_area(boxes)
    assert area.shape == (3, 2)
    torch.testing.assert_close(area, torch.tensor([[4.0, 4.0]] * 3))
    assert box_area(torch.zeros(0, 4)).shape == (0,)


# ---------------------------------------------------------------- box_iou


def test_box_iou_matches_pycocotools_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    b1, b2 = random_boxes(gen, 60), random_boxes(gen, 45)
    # Make sure the special configurations are present: identical, nested, disjoint, touching edges.
    b2[0] = b1[0]
    b2[1] = torch.tensor([b1[1, 0] + 0.1, b1[1, 1] + 0.1, b1[1, 0] + 0.2, b1[1, 1] + 0.2])
    b1[2] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    b2[2] = torch.tensor([10.0, 0.0, 20.0, 10.0])  # shares the edge x = 10 with b1[2]
    b2[3] = torch.tensor([500.0, 500.0, 510.0, 520.0])  # far from everything
    iou = box_iou(b1, b2)
    assert iou.shape == (60, 45)
    assert iou.dtype == torch.float64
    assert torch.isfinite(iou).all()
    np.testing.assert_allclose(iou.numpy(), coco_iou(b1, b2), rtol=1e-12, atol=1e-12)
    assert iou[0, 0] == 1.0 or box_area(b1[:1]).item() == 0.0
    assert iou[2, 2] == 0.0
    assert (iou[:, 3] == 0).all()
    # the whole matrix is not trivially zero
    assert (iou > 0.1).sum() > 10


def test_box_iou_float32_agrees_with_float64():
    gen = torch.Generator().manual_seed(1)
    b1, b2 = random_boxes(gen, 20), random_boxes(gen, 30)
    torch.testing.assert_close(box_iou(b1.float(), b2.float()), box_iou(b1, b2).float(), atol=1e-6, rtol=1e-5)


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor(
        [
            [1.0, 1.0, 3.0, 3.0],  # overlap 1, union 7
            [0.0, 0.0, 2.0, 2.0],  # identical
            [0.5, 0.5, 1.5, 1.5],  # nested: 1 / 4
            [2.0, 0.0, 4.0, 2.0],  # touching edge
            [0.0, 0.0, 4.0, 1.0],  # overlap 2, union 4 + 4 - 2
            [5.0, 5.0, 6.0, 6.0],  # disjoint
        ]
    )
    expected = torch.tensor([[1 / 7, 1.0, 0.25, 0.0, 2 / 6, 0.0]])
    torch.testing.assert_close(box_iou(a, b), expected)
    torch.testing.assert_close(box_iou(b, a), expected.T)


def test_box_iou_zero_area_gives_zero_not_nan():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 1.0, 3.0, 1.0]])
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    for x, y in ((point, point), (point, box), (line, line), (box, line), (line, point)):
        iou = box_iou(x, y)
        assert not torch.isnan(iou).any()
        assert (iou == 0).all()


@pytest.mark.parametrize(("n", "m"), [(0, 3), (3, 0), (0, 0)])
def test_box_iou_empty(n, m):
    iou = box_iou(torch.zeros(n, 4), torch.zeros(m, 4))
    assert iou.shape == (n, m)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((torch.zeros(3, 5), torch.zeros(2, 4)), "boxes1"),
        ((torch.zeros(3, 4), torch.zeros(2, 3)), "boxes2"),
        ((torch.zeros(3, 4, dtype=torch.long), torch.zeros(2, 4)), "boxes1"),
        ((torch.zeros(3, 4), torch.zeros(1, 2, 4)), "boxes2"),
        (([[0.0, 0.0, 1.0, 1.0]], torch.zeros(2, 4)), "boxes1"),
    ],
)
def test_box_iou_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        box_iou(*args)


# ---------------------------------------------------------------- clip_boxes


def test_clip_boxes_non_square_image():
    # image_size is (height, width) = (20, 50): x is clipped to [0, 50], y to [0, 20].
    boxes = torch.tensor(
        [
            [-5.0, -5.0, 10.0, 10.0],  # partly outside top-left
            [40.0, 15.0, 60.0, 30.0],  # partly outside bottom-right
            [10.0, 5.0, 30.0, 15.0],  # inside: unchanged
            [70.0, 30.0, 80.0, 40.0],  # entirely outside: collapses onto the corner
            [-30.0, -30.0, -10.0, -10.0],  # entirely outside the other way
            [25.0, 10.0, 45.0, 18.0],  # x beyond the height but inside the width: unchanged
        ]
    )
    expected = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [40.0, 15.0, 50.0, 20.0],
            [10.0, 5.0, 30.0, 15.0],
            [50.0, 20.0, 50.0, 20.0],
            [0.0, 0.0, 0.0, 0.0],
            [25.0, 10.0, 45.0, 18.0],
        ]
    )
    original = boxes.clone()
    out = clip_boxes(boxes, (20, 50))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(boxes, original)  # input untouched
    assert out.data_ptr() != boxes.data_ptr()
    torch.testing.assert_close(clip_boxes(boxes, torch.tensor([20, 50])), expected)
    assert box_area(out[3:5]).eq(0).all()


def test_clip_boxes_leading_dims_and_empty():
    boxes = torch.tensor([[-1.0, -1.0, 100.0, 100.0]]).expand(2, 3, 4)
    out = clip_boxes(boxes, (7, 9))
    assert out.shape == (2, 3, 4)
    assert (out == torch.tensor([0.0, 0.0, 9.0, 7.0])).all()
    assert clip_boxes(torch.zeros(0, 4), (5, 5)).shape == (0, 4)


@pytest.mark.parametrize(
    ("boxes", "size", "name"),
    [
        (torch.zeros(2, 3), (5, 5), "boxes"),
        (torch.zeros(2, 4, dtype=torch.int32), (5, 5), "boxes"),
        (torch.zeros(2, 4), (5,), "image_size"),
        (torch.zeros(2, 4), (5, -1), "image_size"),
        (torch.zeros(2, 4), None, "image_size"),
    ],
)
def test_clip_boxes_bad_input(boxes, size, name):
    with pytest.raises(ValueError, match=name):
        clip_boxes(boxes, size)


# ---------------------------------------------------------------- remove_small_boxes


def test_remove_small_boxes_torchvision_semantics():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],  # exactly min_size both ways: kept (>=)
            [0.0, 0.0, 1.9, 5.0],  # too narrow
            [0.0, 0.0, 5.0, 1.9],  # too short
            [1.0, 1.0, 10.0, 10.0],  # kept
            [5.0, 5.0, 3.0, 9.0],  # inverted (negative width)
            [0.0, 0.0, 2.0, 3.0],  # kept
        ]
    )
    keep = remove_small_boxes(boxes, 2.0)
    assert keep.dtype == torch.int64
    assert keep.tolist() == [0, 3, 5]
    assert remove_small_boxes(boxes, 0.0).tolist() == [0, 1, 2, 3, 5]
    assert remove_small_boxes(torch.zeros(0, 4), 1.0).shape == (0,)


def test_remove_small_boxes_random_against_numpy():
    gen = torch.Generator().manual_seed(2)
    boxes = random_boxes(gen, 200, max_wh=6.0)
    b = boxes.numpy()
    expected = np.flatnonzero((b[:, 2] - b[:, 0] >= 3.0) & (b[:, 3] - b[:, 1] >= 3.0))
    assert 0 < len(expected) < 200
    np.testing.assert_array_equal(remove_small_boxes(boxes, 3.0).numpy(), expected)


def test_remove_small_boxes_bad_input():
    with pytest.raises(ValueError, match="boxes"):
        remove_small_boxes(torch.zeros(2, 2, 4), 1.0)


# ---------------------------------------------------------------- masks_to_boxes


def test_masks_to_boxes_hand_values_both_conventions():
    masks = torch.zeros(3, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:6] = True  # rows 1-2, cols 2-5
    masks[1, 4, 0] = True  # a single pixel in the bottom-left corner
    masks[1, 0, 6] = True  # ... and one in the top-right corner
    # masks[2] stays empty
    exclusive = masks_to_boxes(masks)
    inclusive = masks_to_boxes(masks, exclusive=False)
    expected_inclusive = torch.tensor([[2.0, 1.0, 5.0, 2.0], [0.0, 0.0, 6.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    expected_exclusive = torch.tensor([[2.0, 1.0, 6.0, 3.0], [0.0, 0.0, 7.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    assert exclusive.dtype == torch.float32 and inclusive.dtype == torch.float32
    torch.testing.assert_close(exclusive, expected_exclusive)
    torch.testing.assert_close(inclusive, expected_inclusive)
    # The exclusive box's area is the number of pixels of a filled rectangle.
    assert box_area(exclusive[0]).item() == masks[0].sum().item()


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.float64])
def test_masks_to_boxes_dtypes(dtype):
    masks = torch.zeros(2, 6, 4, dtype=dtype)
    masks[0, 2:5, 1] = 1
    masks[1, 0, 3] = 1
    out = masks_to_boxes(masks)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 2.0, 5.0], [3.0, 0.0, 4.0, 1.0]]))


def test_masks_to_boxes_float_values_nonzero_means_inside():
    masks = torch.zeros(1, 4, 4)
    masks[0, 1, 1] = 0.25
    masks[0, 2, 3] = -1.0
    torch.testing.assert_close(masks_to_boxes(masks), torch.tensor([[1.0, 1.0, 4.0, 3.0]]))


def test_masks_to_boxes_random_against_numpy_where():
    gen = torch.Generator().manual_seed(3)
    n, h, w = 25, 17, 23
    density = torch.rand(n, 1, 1, generator=gen) * 0.05
    masks = torch.rand(n, h, w, generator=gen) < density
    masks[0] = False  # at least one empty mask
    exclusive, inclusive = masks_to_boxes(masks), masks_to_boxes(masks, exclusive=False)
    for i, m in enumerate(masks.numpy()):
        ys, xs = np.where(m)
        if len(ys) == 0:
            assert exclusive[i].tolist() == [0.0] * 4 and inclusive[i].tolist() == [0.0] * 4
            continue
        assert inclusive[i].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert exclusive[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert masks.flatten(1).any(1).sum() > 15  # most masks are non-empty


def test_masks_to_boxes_empty_shapes():
    assert masks_to_boxes(torch.zeros(0, 5, 5)).shape == (0, 4)
    out = masks_to_boxes(torch.zeros(2, 0, 5, dtype=torch.bool))
    assert out.shape == (2, 4) and (out == 0).all()


@pytest.mark.parametrize("masks", [torch.zeros(5, 5), torch.zeros(1, 2, 5, 5), np.zeros((1, 5, 5))])
def test_masks_to_boxes_bad_input(masks):
    with pytest.raises(ValueError, match="masks"):
        masks_to_boxes(masks)


# ---------------------------------------------------------------- box_convert


def test_box_convert_hand_values():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    expected = {
        "xyxy": [1.0, 2.0, 5.0, 10.0],
        "xywh": [1.0, 2.0, 4.0, 8.0],
        "cxcywh": [3.0, 6.0, 4.0, 8.0],
        "yxyx": [2.0, 1.0, 10.0, 5.0],
    }
    for fmt, value in expected.items():
        torch.testing.assert_close(box_convert(xyxy, "xyxy", fmt), torch.tensor([value]))
        torch.testing.assert_close(box_convert(torch.tensor([value]), fmt, "xyxy"), xyxy)
    # between two non-xyxy formats directly
    torch.testing.assert_close(
        box_convert(torch.tensor([expected["cxcywh"]]), "cxcywh", "yxyx"), torch.tensor([expected["yxyx"]])
    )
    torch.testing.assert_close(
        box_convert(torch.tensor([expected["yxyx"]]), "yxyx", "xywh"), torch.tensor([expected["xywh"]])
    )


coords = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)
box_lists = st.lists(st.tuples(coords, coords, sizes, sizes), min_size=0, max_size=8)


@FAST
@given(box_lists, st.sampled_from(FORMATS), st.sampled_from(FORMATS))
def test_box_convert_round_trip(raw, in_fmt, out_fmt):
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in raw], dtype=torch.float64).reshape(-1, 4)
    start = box_convert(xyxy, "xyxy", in_fmt)
    there = box_convert(start, in_fmt, out_fmt)
    assert there.shape == start.shape
    torch.testing.assert_close(box_convert(there, out_fmt, in_fmt), start, atol=1e-9, rtol=1e-12)
    torch.testing.assert_close(box_convert(there, out_fmt, "xyxy"), xyxy, atol=1e-9, rtol=1e-12)


def test_box_convert_leading_dims():
    boxes = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    out = box_convert(boxes, "xyxy", "cxcywh")
    assert out.shape == (2, 3, 5, 4)
    torch.testing.assert_close(out[..., 2], boxes[..., 2] - boxes[..., 0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"in_fmt": "xyz", "out_fmt": "xyxy"}, "in_fmt"),
        ({"in_fmt": "xyxy", "out_fmt": "XYXY"}, "out_fmt"),
        ({"in_fmt": "xyxy", "out_fmt": "xywh", "boxes": torch.zeros(2, 5)}, "boxes"),
    ],
)
def test_box_convert_bad_input(kwargs, name):
    kwargs.setdefault("boxes", torch.zeros(2, 4))
    with pytest.raises(ValueError, match=name):
        box_convert(**kwargs)


# ---------------------------------------------------------------- matterport normalised boxes


def test_to_matterport_normalized_hand_values():
    h, w = 480, 640
    whole = torch.tensor([[0.0, 0.0, float(w), float(h)]])
    torch.testing.assert_close(to_matterport_normalized(whole, (h, w)), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # matterport's norm_boxes on its pixel (y1, x1, y2, x2) = (10, 20, 110, 320):
    # ((10, 20, 110, 320) - (0, 0, 1, 1)) / (h - 1, w - 1, h - 1, w - 1)
    box = torch.tensor([[20.0, 10.0, 320.0, 110.0]])
    expected = torch.tensor([[10 / 479, 20 / 639, 109 / 479, 319 / 639]])
    torch.testing.assert_close(to_matterport_normalized(box, (h, w)), expected)
    torch.testing.assert_close(from_matterport_normalized(expected, (h, w)), box)


@FAST
@given(box_lists, st.integers(2, 2000), st.integers(2, 2000))
def test_matterport_normalized_round_trip(raw, h, w):
    xyxy = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in raw], dtype=torch.float64).reshape(-1, 4)
    norm = to_matterport_normalized(xyxy, (h, w))
    assert norm.shape == xyxy.shape
    torch.testing.assert_close(from_matterport_normalized(norm, (h, w)), xyxy, atol=1e-9, rtol=1e-12)


def test_matterport_normalized_non_square_order():
    # Swapping (height, width) would give a different answer on a non-square image.
    box = torch.tensor([[0.0, 0.0, 50.0, 20.0]])  # the whole of a 20 x 50 image
    torch.testing.assert_close(to_matterport_normalized(box, (20, 50)), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert not torch.allclose(to_matterport_normalized(box, (50, 20)), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


@pytest.mark.parametrize(
    ("fn", "boxes", "size", "name"),
    [
        (to_matterport_normalized, torch.zeros(2, 4), (1, 10), "image_size"),
        (to_matterport_normalized, torch.zeros(2, 4), "ab", "image_size"),
        (to_matterport_normalized, torch.zeros(2, 3), (10, 10), "boxes"),
        (to_matterport_normalized, [[0.0, 0.0, 1.0, 1.0]], (10, 10), "boxes"),
        (to_matterport_normalized, torch.zeros(2, 4, dtype=torch.long), (10, 10), "boxes"),
        (from_matterport_normalized, torch.zeros(2, 3), (10, 10), "boxes"),
        (from_matterport_normalized, [[0.0, 0.0, 1.0, 1.0]], (10, 10), "boxes"),
        (from_matterport_normalized, torch.zeros(2, 4), (10,), "image_size"),
    ],
)
def test_matterport_normalized_bad_input(fn, boxes, size, name):
    with pytest.raises(ValueError, match=name):
        fn(boxes, size)


# ---------------------------------------------------------------- encode_deltas / decode_deltas


def test_encode_deltas_hand_values():
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size (20, 20)
    expected = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(encode_deltas(target, reference), expected)
    weighted = encode_deltas(target, reference, weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(weighted, torch.tensor([[7.0, 2.0, 5 * math.log(2.0), 0.0]]))
    torch.testing.assert_close(decode_deltas(expected, reference), target)
    torch.testing.assert_close(decode_deltas(weighted, reference, weights=(10.0, 10.0, 5.0, 5.0)), target)
    # identical boxes: zero deltas
    torch.testing.assert_close(encode_deltas(reference, reference), torch.zeros(1, 4))


box_tuple = st.tuples(st.floats(-500, 500), st.floats(-500, 500), st.floats(0.5, 400), st.floats(0.5, 400))
positive_boxes = st.lists(box_tuple, min_size=1, max_size=6)
weight_values = st.one_of(
    st.just((1.0, 1.0, 1.0, 1.0)),
    st.just((10.0, 10.0, 5.0, 5.0)),
    st.tuples(*[st.floats(0.1, 20.0)] * 4),
)


def _xyxy(raw):
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in raw], dtype=torch.float64)


@FAST
@given(st.data(), positive_boxes, weight_values)
def test_encode_decode_round_trip(data, raw_ref, weights):
    reference = _xyxy(raw_ref)
    target = _xyxy(data.draw(st.lists(box_tuple, min_size=len(raw_ref), max_size=len(raw_ref))))
    deltas = encode_deltas(target, reference, weights)
    assert deltas.shape == target.shape and torch.isfinite(deltas).all()
    # 0.5 -> 400 is an 800x growth, beyond the default clamp, so decode without it
    decoded = decode_deltas(deltas, reference, weights, clamp=None)
    torch.testing.assert_close(decoded, target, atol=1e-8, rtol=1e-10)
    # within the clamp (size ratio below 62.5 both ways) the default gives the same result
    ratio = (target[:, 2:] - target[:, :2]) / (reference[:, 2:] - reference[:, :2])
    if (ratio < 62.0).all():
        torch.testing.assert_close(decode_deltas(deltas, reference, weights), target, atol=1e-8, rtol=1e-10)


def test_decode_per_class_broadcasting():
    gen = torch.Generator().manual_seed(4)
    n, k = 7, 5
    reference = random_boxes(gen, n) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    deltas = torch.randn(n, k, 4, generator=gen, dtype=torch.float64)
    out = decode_deltas(deltas, reference[:, None, :], weights=(10.0, 10.0, 5.0, 5.0))
    assert out.shape == (n, k, 4)
    for c in range(k):
        torch.testing.assert_close(
            out[:, c], decode_deltas(deltas[:, c], reference, weights=(10.0, 10.0, 5.0, 5.0))
        )
    # encode broadcasts the same way
    back = encode_deltas(out, reference[:, None, :], weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(back, deltas)


def test_decode_clamp():
    reference = torch.tensor([[10.0, 20.0, 26.0, 28.0]])  # size (16, 8), centre (18, 24)
    deltas = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    out = decode_deltas(deltas, reference)
    assert torch.isfinite(out).all()
    width, height = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
    torch.testing.assert_close(width, torch.tensor(16.0 * math.exp(math.log(1000 / 16))))
    torch.testing.assert_close(width, torch.tensor(1000.0))
    torch.testing.assert_close(height, torch.tensor(8.0 * 1000 / 16))
    torch.testing.assert_close((out[0, 0] + out[0, 2]) / 2, torch.tensor(18.0))
    # The clamp applies to dw / ww: with ww = 5 the same raw value is also capped at log(1000 / 16).
    out_w = decode_deltas(deltas, reference, weights=(10, 10, 5, 5))
    torch.testing.assert_close(out_w, out)
    # A custom clamp, and no clamp at all (overflows to inf, as matterport would).
    out_c = decode_deltas(torch.tensor([[0.0, 0.0, 5.0, 0.0]]), reference, clamp=1.0)
    torch.testing.assert_close(out_c[0, 2] - out_c[0, 0], torch.tensor(16.0 * math.e))
    assert torch.isinf(decode_deltas(deltas, reference, clamp=None)).any()
    assert DEFAULT_DELTA_CLAMP == pytest.approx(math.log(62.5))


def test_decode_no_clamp_is_exact_exp_and_negative_not_clamped():
    reference = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    for dw in (-5.0, -3.0, -0.5, 0.0, 1.5, 3.0, 5.0):
        deltas = torch.tensor([[0.25, -0.5, dw, -dw]], dtype=torch.float64)
        # the default clamp (log 62.5 ~ 4.14) caps only large positive values, so +-5 is checked without it
        for clamp in (None, DEFAULT_DELTA_CLAMP) if abs(dw) < 4 else (None,):
            out = decode_deltas(deltas, reference, clamp=clamp)
            w, h = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
            assert w.item() == pytest.approx(4.0 * math.exp(dw), rel=1e-12)
            assert h.item() == pytest.approx(2.0 * math.exp(-dw), rel=1e-12)
            assert ((out[0, 0] + out[0, 2]) / 2).item() == pytest.approx(2.0 + 0.25 * 4.0)
            assert ((out[0, 1] + out[0, 3]) / 2).item() == pytest.approx(1.0 - 0.5 * 2.0)


def test_decode_dtype_follows_deltas():
    reference = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    assert decode_deltas(torch.zeros(1, 4), reference).dtype == torch.float32
    assert decode_deltas(torch.zeros(1, 4, dtype=torch.float64), reference.float()).dtype == torch.float64
    for half in (torch.float16, torch.bfloat16):  # box arithmetic is never done in half precision
        assert decode_deltas(torch.zeros(1, 4, dtype=half), reference).dtype == torch.float32


# ---------------------------------------------------------------------------------- half precision
HALF = [torch.float16, torch.bfloat16]


def _big_boxes(dtype, n=60, seed=0):
    """Boxes with coordinates in the hundreds (300-600 px sides: float16 areas overflow 65504), rounded to
    ``dtype``: the reference computes on exactly these values in float64."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 800
    size = 300 + torch.rand(n, 2, generator=g) * 300
    return torch.cat((corner, corner + size), dim=1).to(dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_box_area_and_iou_in_half_precision_are_float32_and_right(dtype):
    boxes = _big_boxes(dtype)
    exact = boxes.double()
    assert box_dtype(dtype) == torch.float32
    area = box_area(boxes)
    assert area.dtype == torch.float32 and bool(torch.isfinite(area).all())
    assert (area.double() * 300 * 300 > 65504).all()  # every one overflows in float16 arithmetic
    torch.testing.assert_close(area.double(), box_area(exact), rtol=1e-6, atol=0)
    iou = box_iou(boxes, boxes[:20])
    assert iou.dtype == torch.float32 and not bool(iou.isnan().any())
    torch.testing.assert_close(iou.double(), box_iou(exact, exact[:20]), rtol=0, atol=1e-6)
    assert bool((iou.diagonal() == 1).all())
    assert torch.equal(matched_box_iou(boxes[:20], boxes[:20]), iou.diagonal())


@pytest.mark.parametrize("dtype", HALF)
def test_box_functions_in_half_precision_equal_float32_on_the_same_values(dtype):
    # Every box function computes in float32: on half-precision input it gives exactly what float32 gives
    # on the same (rounded) values, and returns float32.
    boxes, other = _big_boxes(dtype, seed=1), _big_boxes(dtype, seed=2)
    f32, other32 = boxes.float(), other.float()
    deltas = (torch.randn(60, 4, generator=torch.Generator().manual_seed(3)) * 0.5).to(dtype)
    normalised = (f32 / 2000).to(dtype)
    unit = normalised.float()
    cases = [
        (clip_boxes(boxes, (700, 1000)), clip_boxes(f32, (700, 1000))),
        (box_convert(boxes, "xyxy", "cxcywh"), box_convert(f32, "xyxy", "cxcywh")),
        (to_matterport_normalized(boxes, (900, 1300)), to_matterport_normalized(f32, (900, 1300))),
        (from_matterport_normalized(normalised, (9, 9)), from_matterport_normalized(unit, (9, 9))),
        (encode_deltas(boxes, other), encode_deltas(f32, other32)),
        (decode_deltas(deltas, other), decode_deltas(deltas.float(), other32)),
        (box_iou(boxes, other), box_iou(f32, other32)),
    ]  # fmt: skip
    for got, want in cases:
        assert got.dtype == torch.float32
        assert torch.equal(got, want)
    thin = boxes.clone()
    thin[::3, 2] = thin[::3, 0] + 0.25  # 0.25 px wide: float16 rounding of x2 - x1 near 800 would say 0
    assert torch.equal(remove_small_boxes(thin, 0.2), remove_small_boxes(thin.float(), 0.2))


def _matterport_box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Matterport's refinement targets from its formula: (y1, x1, y2, x2) boxes in, (dy, dx, dh, dw) out."""
    height, width = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cy, cx = box[:, 0] + 0.5 * height, box[:, 1] + 0.5 * width
    gh, gw = gt_box[:, 2] - gt_box[:, 0], gt_box[:, 3] - gt_box[:, 1]
    gcy, gcx = gt_box[:, 0] + 0.5 * gh, gt_box[:, 1] + 0.5 * gw
    dy, dx = (gcy - cy) / height, (gcx - cx) / width
    return np.stack([dy, dx, np.log(gh / height), np.log(gw / width)], axis=1)


def _matterport_apply_deltas(box: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    height, width = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cy = box[:, 0] + 0.5 * height + deltas[:, 0] * height
    cx = box[:, 1] + 0.5 * width + deltas[:, 1] * width
    height, width = height * np.exp(deltas[:, 2]), width * np.exp(deltas[:, 3])
    return np.stack([cy - 0.5 * height, cx - 0.5 * width, cy + 0.5 * height, cx + 0.5 * width], axis=1)


def test_matterport_bbox_std_dev_equivalence():
    gen = torch.Generator().manual_seed(5)
    std = np.array([0.1, 0.1, 0.2, 0.2])
    reference = random_boxes(gen, 30) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    target = random_boxes(gen, 30) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    ours = encode_deltas(target, reference, weights=tuple(1.0 / std))
    ref_yxyx = box_convert(reference, "xyxy", "yxyx").numpy()
    tgt_yxyx = box_convert(target, "xyxy", "yxyx").numpy()
    theirs = _matterport_box_refinement(ref_yxyx, tgt_yxyx) / std  # (dy, dx, dh, dw)
    np.testing.assert_allclose(ours.numpy(), theirs[:, [1, 0, 3, 2]], rtol=1e-10, atol=1e-10)
    # and decoding: matterport multiplies the prediction by std before applying it, and does not clamp
    pred = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    decoded = decode_deltas(pred, reference, weights=(10.0, 10.0, 5.0, 5.0), clamp=None)
    theirs_boxes = _matterport_apply_deltas(ref_yxyx, pred.numpy()[:, [1, 0, 3, 2]] * std)
    ours_boxes = box_convert(decoded, "xyxy", "yxyx").numpy()
    np.testing.assert_allclose(ours_boxes, theirs_boxes, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"boxes": torch.zeros(2, 3)}, "boxes"),
        ({"boxes": torch.zeros(2, 4, dtype=torch.long)}, "boxes"),
        ({"reference": torch.zeros(2, 5)}, "reference"),
        ({"weights": (1.0, 1.0, 1.0)}, "weights"),
        ({"weights": "abcd"}, "weights"),
        ({"weights": None}, "weights"),
    ],
)
def test_encode_deltas_bad_input(kwargs, name):
    args = {"boxes": torch.ones(2, 4), "reference": torch.ones(2, 4)} | kwargs
    with pytest.raises(ValueError, match=name):
        encode_deltas(**args)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"deltas": torch.zeros(2, 3)}, "deltas"),
        ({"deltas": torch.zeros(2, 4, dtype=torch.int64)}, "deltas"),
        ({"deltas": [[0.0] * 4]}, "deltas"),
        ({"reference": torch.zeros(2, 5)}, "reference"),
        ({"weights": (1.0, 1.0)}, "weights"),
    ],
)
def test_decode_deltas_bad_input(kwargs, name):
    args = {"deltas": torch.zeros(2, 4), "reference": torch.ones(2, 4)} | kwargs
    with pytest.raises(ValueError, match=name):
        decode_deltas(**args)


def test_encode_decode_empty():
    assert encode_deltas(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert decode_deltas(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert decode_deltas(torch.zeros(0, 3, 4), torch.zeros(0, 1, 4)).shape == (0, 3, 4)


# ------------------------------------------------------------------ shapes and devices that do not fit


def test_encode_decode_reject_row_counts_that_do_not_match():
    with pytest.raises(ValueError, match="reference"):
        encode_deltas(torch.ones(5, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="reference"):
        decode_deltas(torch.zeros(5, 4), torch.ones(3, 4))
    # reference may broadcast against deltas, but never enlarge them: one box per delta row
    with pytest.raises(ValueError, match="reference"):
        decode_deltas(torch.zeros(1, 4), torch.ones(3, 4))
    assert decode_deltas(torch.zeros(3, 2, 4), torch.ones(3, 1, 4)).shape == (3, 2, 4)


def test_encode_decode_reject_tensors_on_different_devices():
    meta = torch.ones(2, 4, device="meta")
    with pytest.raises(ValueError, match="reference.*device"):
        encode_deltas(torch.ones(2, 4), meta)
    with pytest.raises(ValueError, match="reference.*device"):
        decode_deltas(torch.zeros(2, 4), meta)
