"""Tests for mrcnn_edu.anchors: hand-computed anchors, counts, the flattening order, torchvision rounding."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.anchors import (
    MATTERPORT_ANCHOR_RATIOS,
    MATTERPORT_ANCHOR_SCALES,
    MATTERPORT_BACKBONE_STRIDES,
    base_anchors,
    concat_levels,
    feature_shapes_for,
    flatten_head_output,
    image_anchors,
    level_anchors,
    level_anchors_loop,
    pyramid_anchors,
)

R2 = 1.4142135623730951  # sqrt(2), for hand-computed sizes: 32 * sqrt(2) / 2 = 16 * R2


def _centres(a):
    return (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2


def _sizes(a):
    return a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]


# --- counts --------------------------------------------------------------------------------------------


def test_matterport_1024_config_has_261888_anchors():
    anchors, per_level = image_anchors((1024, 1024))
    # 1024 / (4, 8, 16, 32, 64) = 256, 128, 64, 32, 16 cells a side, 3 ratios each
    assert per_level == [256 * 256 * 3, 128 * 128 * 3, 64 * 64 * 3, 32 * 32 * 3, 16 * 16 * 3]
    assert anchors.shape == (261_888, 4)
    assert anchors.dtype == torch.float32


def test_torchvision_default_sizes_give_the_same_count():
    # torchvision: sizes ((32,), (64,), (128,), (256,), (512,)), aspect_ratios (0.5, 1, 2) per level, rounded
    shapes = [(256, 256), (128, 128), (64, 64), (32, 32), (16, 16)]
    anchors, per_level = pyramid_anchors((32, 64, 128, 256, 512), (2.0, 1.0, 0.5), shapes, (4, 8, 16, 32, 64),
                                         round_base=True)
    assert anchors.shape[0] == 261_888 and sum(per_level) == 261_888


def test_128x128_map_of_a_512_image_has_stride_4_and_32px_anchors():
    shapes = feature_shapes_for((512, 512), MATTERPORT_BACKBONE_STRIDES)
    assert shapes[0] == (128, 128)
    anchors, per_level = image_anchors((512, 512))
    p2 = anchors[: per_level[0]]
    assert per_level[0] == 128 * 128 * 3
    cx, cy = (c.round(decimals=3) for c in _centres(p2))  # float32 corners: centres exact to ~1e-5
    # centres 4 px apart: 0, 4, ..., 508 in both directions
    assert torch.equal(torch.unique(cx), torch.arange(0, 512, 4, dtype=torch.float32))
    assert torch.equal(torch.unique(cy), torch.arange(0, 512, 4, dtype=torch.float32))
    w, h = _sizes(p2)
    square = (w - h).abs() < 1e-4
    assert torch.allclose(w[square], torch.tensor(32.0))
    # 32 px at 4 px per cell: each anchor spans 8x8 cells of the 128x128 map
    assert torch.allclose(w[square] / 4, torch.tensor(8.0))
    # and every level keeps that 8-cell span in matterport's config
    for scale, stride in zip(MATTERPORT_ANCHOR_SCALES, MATTERPORT_BACKBONE_STRIDES, strict=True):
        assert scale / stride == 8


def test_feature_shapes_use_ceil_division():
    assert feature_shapes_for((800, 1216), (4, 8, 16, 32, 64)) == [
        (200, 304), (100, 152), (50, 76), (25, 38), (13, 19)
    ]
    assert feature_shapes_for((1, 3), (4,)) == [(1, 1)]
    assert feature_shapes_for((0, 8), (4,)) == [(0, 2)]


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300))
def test_feature_shapes_match_resnet_style_downsampling(h, w):
    # Independent reference: run the actual strided layers of a ResNet + FPN on an empty image.
    x = torch.zeros(1, 1, h, w)
    x = F.conv2d(x, torch.zeros(1, 1, 7, 7), stride=2, padding=3)  # conv1, stride 2
    c2 = F.max_pool2d(x, 3, stride=2, padding=1)  # stride 4
    c3 = F.conv2d(c2, torch.zeros(1, 1, 1, 1), stride=2)  # bottleneck downsample, stride 8
    c4 = F.conv2d(c3, torch.zeros(1, 1, 3, 3), stride=2, padding=1)  # 3x3 stride-2 conv, stride 16
    c5 = F.conv2d(c4, torch.zeros(1, 1, 1, 1), stride=2)  # stride 32
    p6 = F.max_pool2d(c5, 1, stride=2)  # FPN's extra level, stride 64
    expected = [tuple(t.shape[-2:]) for t in (c2, c3, c4, c5, p6)]
    assert feature_shapes_for((h, w), (4, 8, 16, 32, 64)) == expected


# --- hand-computed anchors ------------------------------------------------------------------------------


def test_first_anchors_offset_0_hand_computed():
    a = level_anchors(32, (0.5, 1.0, 2.0), (2, 3), 4)
    assert a.shape == (2 * 3 * 3, 4)
    # ratio = width / height: 0.5 is tall (22.63 x 45.25), 2 is wide (45.25 x 22.63); centre (0, 0)
    expected_first = torch.tensor([
        [-8 * R2, -16 * R2, 8 * R2, 16 * R2],
        [-16.0, -16.0, 16.0, 16.0],
        [-16 * R2, -8 * R2, 16 * R2, 8 * R2],
    ])
    torch.testing.assert_close(a[:3], expected_first)
    # next column: centre x = 4
    torch.testing.assert_close(a[3:6], expected_first + torch.tensor([4.0, 0.0, 4.0, 0.0]))
    # second row starts after 3 columns x 3 ratios: centre (0, 4)
    torch.testing.assert_close(a[9:12], expected_first + torch.tensor([0.0, 4.0, 0.0, 4.0]))
    # last anchor: row 1, column 2, ratio 2 -> centre (8, 4)
    torch.testing.assert_close(a[-1], torch.tensor([8 - 16 * R2, 4 - 8 * R2, 8 + 16 * R2, 4 + 8 * R2]))


def test_first_anchors_offset_half_hand_computed():
    a = level_anchors(32, (0.5, 1.0, 2.0), (2, 3), 4, offset=0.5)
    # centre of the pixel block [0, 4) x [0, 4) is (2, 2)
    torch.testing.assert_close(a[1], torch.tensor([-14.0, -14.0, 18.0, 18.0]))
    torch.testing.assert_close(a[0], torch.tensor([2 - 8 * R2, 2 - 16 * R2, 2 + 8 * R2, 2 + 16 * R2]))
    # row 1, column 2, ratio 1: centre (10, 6)
    torch.testing.assert_close(a[(1 * 3 + 2) * 3 + 1], torch.tensor([-6.0, -10.0, 26.0, 22.0]))


def test_widths_heights_follow_ratio_and_area_is_scale_squared():
    anchors, per_level = image_anchors((256, 320), dtype=torch.float64)
    w, h = _sizes(anchors)
    ratios = torch.tensor(MATTERPORT_ANCHOR_RATIOS, dtype=torch.float64).repeat(anchors.shape[0] // 3)
    torch.testing.assert_close(w / h, ratios, rtol=1e-12, atol=0)
    scales = torch.cat([torch.full((n,), float(s), dtype=torch.float64)
                        for s, n in zip(MATTERPORT_ANCHOR_SCALES, per_level, strict=True)])
    torch.testing.assert_close(w * h, scales**2, rtol=1e-12, atol=0)


def test_anchor_stride_2_halves_the_grid():
    a1 = level_anchors(32, (1.0,), (6, 8), 4, anchor_stride=1)
    a2 = level_anchors(32, (1.0,), (6, 8), 4, anchor_stride=2)
    assert a1.shape[0] == 48 and a2.shape[0] == 12
    cx, cy = _centres(a2)
    assert torch.equal(torch.unique(cx), torch.tensor([0.0, 8.0, 16.0, 24.0]))
    assert torch.equal(torch.unique(cy), torch.tensor([0.0, 8.0, 16.0]))
    # odd sizes: ceil(5 / 2) x ceil(7 / 2) positions, like a stride-2 'same' convolution
    assert level_anchors(32, (0.5, 1, 2), (5, 7), 4, anchor_stride=2).shape[0] == 3 * 4 * 3
    # offset 0.5 is half of the anchor grid step (8 px), i.e. the centre of a 2x2 cell block
    cx, _ = _centres(level_anchors(32, (1.0,), (6, 8), 4, anchor_stride=2, offset=0.5))
    assert torch.equal(torch.unique(cx), torch.tensor([4.0, 12.0, 20.0, 28.0]))


def test_round_base_matches_hand_computed_torchvision_base_anchors():
    # torchvision, size 32, aspect_ratios (0.5, 1, 2) = height / width:
    # ws = 32 / sqrt(ar) = 45.25, 32, 22.63; hs = 32 * sqrt(ar); base = round((-ws, -hs, ws, hs) / 2)
    expected = torch.tensor(
        [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]
    )
    # the same three shapes in width / height terms: 2, 1, 0.5
    assert torch.equal(base_anchors(32, (2.0, 1.0, 0.5), round_base=True), expected)
    # size 64: halves 45.25 and 22.63 round to 45 and 23
    assert torch.equal(base_anchors(64, (2.0,), round_base=True), torch.tensor([[-45.0, -23.0, 45.0, 23.0]]))
    # on a grid: torchvision's first P2 anchors of a cell at (x, y) = (4, 0)
    a = level_anchors(32, (2.0, 1.0, 0.5), (1, 2), 4, round_base=True)
    assert torch.equal(a[3:], expected + torch.tensor([4.0, 0.0, 4.0, 0.0]))
    # without rounding the same anchor is not a whole number of pixels
    assert not torch.equal(base_anchors(32, (2.0,)), expected[:1])


def test_loop_and_vectorised_agree_exactly():
    for kwargs in (
        dict(scale=32, ratios=(0.5, 1, 2), feature_shape=(7, 5), feature_stride=4),
        dict(scale=128, ratios=(0.5, 1, 2), feature_shape=(4, 9), feature_stride=16, offset=0.5),
        dict(scale=64, ratios=(1 / 3, 1, 3), feature_shape=(5, 5), feature_stride=8, anchor_stride=2),
        dict(scale=32, ratios=(2, 1, 0.5), feature_shape=(3, 4), feature_stride=4, round_base=True),
    ):
        assert torch.equal(level_anchors_loop(**kwargs), level_anchors(**kwargs)), kwargs


def test_dtype_and_device():
    a = level_anchors(32, (0.5, 1, 2), (3, 3), 4, dtype=torch.float64, device="cpu")
    assert a.dtype == torch.float64 and a.device.type == "cpu"
    assert a[1].tolist() == [-16.0, -16.0, 16.0, 16.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    cpu, n_cpu = image_anchors((512, 640))
    gpu, n_gpu = image_anchors((512, 640), device="cuda")
    assert gpu.device.type == "cuda" and n_cpu == n_gpu
    assert torch.equal(gpu.cpu(), cpu)


# --- ordering: anchors line up with the flattened head outputs ----------------------------------------


def test_flattened_head_output_lines_up_with_anchors():
    ratios = (0.5, 1.0, 2.0)
    scales, strides = (32, 64, 128), (4, 8, 16)
    shapes = feature_shapes_for((40, 72), strides)  # (10, 18), (5, 9), (3, 5): non-square, odd sizes
    anchors, per_level = pyramid_anchors(scales, ratios, shapes, strides, offset=0.5)
    num_a, d, batch = len(ratios), 5, 2
    # A fake head whose channel a * D + k holds value k of anchor a: (level, ratio index, row, col, image)
    outputs = []
    for level, (h, w) in enumerate(shapes):
        x = torch.zeros(batch, num_a * d, h, w)
        for a in range(num_a):
            x[:, a * d + 0] = level
            x[:, a * d + 1] = a
            x[:, a * d + 2] = torch.arange(h, dtype=torch.float32)[:, None]
            x[:, a * d + 3] = torch.arange(w, dtype=torch.float32)[None, :]
            x[:, a * d + 4] = torch.arange(batch, dtype=torch.float32)[:, None, None]
        outputs.append(x)
    flat = concat_levels(outputs, d)
    assert flat.shape == (batch, anchors.shape[0], d)
    assert torch.equal(flat[1, :, 4], torch.ones(anchors.shape[0]))  # images stay apart
    level, ratio_idx, row, col = (flat[0, :, k].long() for k in range(4))
    stride = torch.tensor(strides)[level].float()
    cx, cy = _centres(anchors)
    # every flattened prediction sits on the anchor of the same index: same position ...
    torch.testing.assert_close(cx, (col.float() + 0.5) * stride)
    torch.testing.assert_close(cy, (row.float() + 0.5) * stride)
    # ... same shape (ratio) ...
    w, h = _sizes(anchors)
    torch.testing.assert_close(w / h, torch.tensor(ratios)[ratio_idx], rtol=1e-5, atol=0)
    # ... and same level (scale)
    expected_scale = torch.tensor(scales, dtype=torch.float32)[level]
    torch.testing.assert_close((w * h).sqrt(), expected_scale, rtol=1e-5, atol=0)
    # levels in order, with the announced counts
    assert torch.equal(torch.bincount(level), torch.tensor(per_level))
    # one level alone: flatten_head_output is what concat_levels does per level
    assert torch.equal(flatten_head_output(outputs[1], d), flat[:, per_level[0]: per_level[0] + per_level[1]])


def test_flatten_head_output_matches_channels_last_reshape():
    # matterport's Keras head: a channels-last [B, H, W, A*D] map reshaped to [B, -1, D]
    x = torch.randn(2, 3 * 4, 5, 6)
    keras_style = x.permute(0, 2, 3, 1).reshape(2, -1, 4)
    assert torch.equal(flatten_head_output(x, 4), keras_style)


# --- empty inputs and errors -------------------------------------------------------------------------------


def test_empty_inputs_give_empty_outputs():
    assert level_anchors(32, (0.5, 1, 2), (0, 5), 4).shape == (0, 4)
    anchors, per_level = pyramid_anchors([], (1.0,), [], [])
    assert anchors.shape == (0, 4) and per_level == []
    assert flatten_head_output(torch.zeros(2, 6, 0, 3), 2).shape == (2, 0, 2)
    assert flatten_head_output(torch.zeros(0, 6, 4, 3), 2).shape == (0, 36, 2)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: level_anchors(0, (1.0,), (2, 2), 4), "scale"),
        (lambda: level_anchors(32, (), (2, 2), 4), "ratios"),
        (lambda: level_anchors(32, (1.0, -2.0), (2, 2), 4), "ratios"),
        (lambda: level_anchors(32, (1.0,), (-1, 2), 4), "feature_shape"),
        (lambda: level_anchors(32, (1.0,), 7, 4), "feature_shape"),
        (lambda: level_anchors(32, (1.0,), (2, 2), 0), "feature_stride"),
        (lambda: level_anchors(32, (1.0,), (2, 2), 4, anchor_stride=0), "anchor_stride"),
        (lambda: pyramid_anchors((32, 64), (1.0,), [(2, 2)], (4, 8)), "feature_shapes"),
        (lambda: feature_shapes_for((64, 64), (4, 0)), "strides"),
        (lambda: feature_shapes_for((64,), (4,)), "image_size"),
        (lambda: flatten_head_output(torch.zeros(1, 7, 2, 2), 2), "head_output"),
        (lambda: flatten_head_output(torch.zeros(7, 2, 2), 1), "head_output"),
        (lambda: flatten_head_output(torch.zeros(1, 4, 2, 2), 0), "values_per_anchor"),
        (lambda: concat_levels([], 4), "head_outputs"),
        (lambda: concat_levels([torch.zeros(1, 4, 2, 2), torch.zeros(2, 4, 1, 1)], 4), "head_outputs"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --- torchvision (where it imports) -------------------------------------------------------------------------


def test_matches_torchvision_anchor_generator(torchvision_reference):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    image_size = (320, 448)
    strides = MATTERPORT_BACKBONE_STRIDES
    shapes = feature_shapes_for(image_size, strides)
    gen = AnchorGenerator(tuple((s,) for s in MATTERPORT_ANCHOR_SCALES), ((0.5, 1.0, 2.0),) * 5)
    images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    features = [torch.zeros(1, 1, h, w) for h, w in shapes]
    expected = gen(images, features)[0]
    # torchvision's aspect ratio is height / width: its (0.5, 1, 2) is our (2, 1, 0.5)
    ours, _ = pyramid_anchors(MATTERPORT_ANCHOR_SCALES, (2.0, 1.0, 0.5), shapes, strides, round_base=True)
    assert torch.equal(ours, expected)
    assert math.isclose(float((ours[0, 2] - ours[0, 0]) / (ours[0, 3] - ours[0, 1])), 46 / 22, rel_tol=1e-6)


def test_per_axis_strides_match_torchvision_on_an_odd_p6(torchvision_reference):
    # An 800 x 1088 canvas: P6 has ceil(25 / 2) = 13 rows, and torchvision steps its anchors 800 // 13 = 61
    # pixels down (1088 // 17 = 64 across). The model's torchvision preset asks for exactly that.
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    canvas = (800, 1088)
    shapes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    strides = [(canvas[0] // h, canvas[1] // w) for h, w in shapes]
    assert strides[-1] == (61, 64)
    gen = AnchorGenerator(tuple((s,) for s in MATTERPORT_ANCHOR_SCALES), ((0.5, 1.0, 2.0),) * 5)
    features = [torch.zeros(1, 1, *s) for s in shapes]
    expected = gen(ImageList(torch.zeros(1, 3, *canvas), [canvas]), features)[0]
    ours, _ = pyramid_anchors(MATTERPORT_ANCHOR_SCALES, (2.0, 1.0, 0.5), shapes, strides, round_base=True)
    assert torch.equal(ours, expected)
    loop = level_anchors_loop(512, (2.0, 1.0, 0.5), shapes[-1], strides[-1], round_base=True)
    assert torch.equal(loop, ours[-len(loop):])


def test_stride_pair_must_have_two_entries():
    with pytest.raises(ValueError, match="feature_stride"):
        level_anchors(32, (1.0,), (4, 4), (4, 4, 4))
