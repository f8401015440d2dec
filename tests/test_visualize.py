"""Tests for mrcnn_edu.visualize: headless drawing, PNGs read back pixel by pixel, and text summaries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Rectangle

from mrcnn_edu import visualize as V
from mrcnn_edu.data import CLASS_NAMES

GRAY = 0.5


def gray_image(h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.full((3, h, w), GRAY)


def square_mask(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y1:y2, x1:x2] = 1
    return m


def rectangles(ax: Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def near(pixel: np.ndarray, rgb, tol: float = 3 / 255) -> bool:
    return bool(np.abs(pixel[:3] - np.asarray(rgb)).max() <= tol)


# ---------------------------------------------------------------- colours


def test_instance_colors_deterministic_distinct_and_in_range():
    a, b = V.instance_colors(12), V.instance_colors(12)
    assert a == b
    assert V.instance_colors(5) == a[:5]  # a prefix: instance i keeps its colour whatever N is
    arr = np.asarray(a)
    assert arr.shape == (12, 3) and arr.min() >= 0 and arr.max() <= 1
    dist = np.abs(arr[:, None] - arr[None]).sum(-1) + np.eye(12) * 9
    assert dist.min() > 0.15  # no two of the first 12 colours are near-identical
    assert V.instance_colors(0) == []
    with pytest.raises(ValueError, match="n"):
        V.instance_colors(-1)


# ---------------------------------------------------------------- draw_instances


def test_draw_instances_boxes_captions_and_colours():
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [5.0, 1.0, 7.0, 4.0]])
    labels = torch.tensor([1, 3])
    scores = torch.tensor([0.904, 0.5])
    ax = V.draw_instances(gray_image(), boxes, labels, scores, class_names=CLASS_NAMES, title="t")
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    rects = rectangles(ax)
    assert len(rects) == 2
    # pixel-edge boxes drawn on imshow's pixel-centred grid: shifted by half a pixel
    assert rects[0].get_xy() == pytest.approx((1.5, 2.5))
    assert (rects[0].get_width(), rects[0].get_height()) == pytest.approx((8.0, 9.0))
    assert texts(ax) == ["square 0.90", "triangle 0.50"]
    colours = V.instance_colors(2)
    assert [r.get_edgecolor()[:3] for r in rects] == [pytest.approx(c) for c in colours]
    assert ax.get_title() == "t"
    assert ax.get_xlim() == pytest.approx((-0.5, 15.5)) and ax.get_ylim() == pytest.approx((15.5, -0.5))


def test_draw_instances_same_input_same_picture():
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [5.0, 1.0, 7.0, 4.0], [0.0, 0.0, 16.0, 16.0]])
    a = V.draw_instances(gray_image(), boxes, torch.tensor([1, 2, 3]))
    b = V.draw_instances(gray_image(), boxes, torch.tensor([1, 2, 3]))
    assert [r.get_edgecolor() for r in rectangles(a)] == [r.get_edgecolor() for r in rectangles(b)]
    assert len({r.get_edgecolor() for r in rectangles(a)}) == 3
    assert texts(a) == ["1", "2", "3"]  # no class names: the label numbers


def test_draw_instances_empty():
    ax = V.draw_instances(
        gray_image(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0),
        torch.zeros(0, 1, 16, 16), class_names=CLASS_NAMES,
    )  # fmt: skip
    assert rectangles(ax) == [] and texts(ax) == []
    np.testing.assert_allclose(ax.images[0].get_array(), np.full((16, 16, 3), GRAY))


def test_draw_instances_mask_blend_threshold_and_layouts():
    probs = torch.zeros(2, 1, 16, 16)
    probs[0, 0, 4:8, 4:8] = 0.7  # above the 0.5 threshold
    probs[0, 0, 0, 0] = 0.49  # below: not part of the mask
    probs[1, 0, 10:12, 10:14] = 0.5  # exactly at the threshold: included
    boxes = torch.tensor([[4.0, 4.0, 8.0, 8.0], [10.0, 10.0, 14.0, 12.0]])
    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    ax = V.draw_instances(gray_image(), boxes, masks=probs, colors=[red, "blue"], mask_alpha=0.5)
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown[5, 6], [0.75, 0.25, 0.25])  # half way from gray to red
    np.testing.assert_allclose(shown[11, 13], [0.25, 0.25, 0.75])
    np.testing.assert_allclose(shown[0, 0], [GRAY] * 3)
    np.testing.assert_allclose(shown[8, 6], [GRAY] * 3)  # the row below the mask
    assert (np.abs(shown - GRAY).max(-1) > 1e-6).sum() == 16 + 8
    # [N, H, W] and [N, 1, H, W] masks draw the same picture
    ax2 = V.draw_instances(gray_image(), boxes, masks=probs[:, 0], colors=[red, blue], mask_alpha=0.5)
    np.testing.assert_array_equal(np.asarray(ax2.images[0].get_array()), shown)
    # outlines: one path per mask, made of the pixel edges around it (4x4 square: 16 unit edges on the
    # lines x = 3.5, 7.5 and y = 3.5, 7.5 of imshow's pixel-centred grid)
    outlines = [a for a in ax.get_children() if isinstance(a, PathPatch)]
    assert [o.get_edgecolor()[:3] for o in outlines] == [red, blue]
    square = outlines[0].get_path().vertices.reshape(-1, 2, 2)
    assert len(square) == 16 and len(outlines[1].get_path().vertices) == 2 * 12
    assert np.all(np.abs(square - 0.5) % 1 == 0)  # every end on a pixel corner
    vertical = square[square[:, 0, 0] == square[:, 1, 0]]
    assert sorted(set(vertical[:, 0, 0])) == [3.5, 7.5] and len(vertical) == 8
    assert square[..., 1].min() == 3.5 and square[..., 1].max() == 7.5
    assert np.all(np.abs(square[:, 0] - square[:, 1]).sum(-1) == 1)  # unit edges


def test_mask_outline_touching_the_border_and_with_a_hole():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0:3, 0:3] = True
    mask[1, 1] = False  # a hole: its 4 edges are part of the outline too
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0]])
    ax = V.draw_instances(gray_image(5, 5), box, masks=torch.from_numpy(mask)[None])
    (outline,) = [a for a in ax.get_children() if isinstance(a, PathPatch)]
    assert len(outline.get_path().vertices) == 2 * (12 + 4)
    assert outline.get_path().vertices.min() == -0.5  # closed along the image's top and left border


def test_draw_instances_into_given_axes_and_uint8_image():
    fig = Figure()
    axes = fig.subplots(1, 2)
    image = (torch.arange(3 * 8 * 8) % 256).to(torch.uint8).reshape(3, 8, 8)
    out = V.draw_instances(image, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), ax=axes[1])
    assert out is axes[1] and len(rectangles(axes[1])) == 1 and not rectangles(axes[0])
    np.testing.assert_allclose(out.images[0].get_array(), image.permute(1, 2, 0).numpy() / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image": torch.rand(16, 16, 3)}, "image"),
        ({"image": torch.rand(16, 16)}, "image"),
        ({"image": gray_image() * 255}, "image"),  # a 0-255 float image is out of range
        ({"boxes": torch.zeros(2, 3)}, "boxes"),
        ({"labels": torch.tensor([1])}, "labels"),
        ({"labels": torch.tensor([1.0, 2.0])}, "labels"),
        ({"scores": torch.tensor([0.5, 0.5, 0.5])}, "scores"),
        ({"masks": torch.zeros(2, 8, 8)}, "masks"),
        ({"masks": torch.zeros(2, 2, 16, 16)}, "masks"),
        ({"colors": [(1, 0, 0)]}, "colors"),
        ({"mask_alpha": 1.5}, "mask_alpha"),
    ],
)
def test_draw_instances_bad_input_names_the_argument(kwargs, name):
    args = {"image": gray_image(), "boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2])} | kwargs
    with pytest.raises(ValueError, match=name):
        V.draw_instances(**args)


# ---------------------------------------------------------------- save_detections: the PNG read back


def test_save_detections_png_size_alignment_and_score_filter(tmp_path):
    h, w, scale = 16, 24, 32
    masks = torch.stack([square_mask(h, w, 4, 4, 8, 8), square_mask(h, w, 14, 6, 20, 12)])[:, None] * 0.9
    result = {
        "boxes": torch.tensor([[4.0, 4.0, 8.0, 8.0], [14.0, 6.0, 20.0, 12.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),  # the second is below the threshold: not drawn
        "masks": masks,
    }
    path = V.save_detections(gray_image(h, w), result, CLASS_NAMES, tmp_path / "det.png", scale=scale)
    assert path == tmp_path / "det.png" and path.stat().st_size > 0
    png = mpimg.imread(path)
    assert png.shape[:2] == (h * scale, w * scale)

    def at(r: float, c: float) -> np.ndarray:  # the PNG pixel at the centre of image position (r, c)
        return png[int(r * scale + scale // 2), int(c * scale + scale // 2)]

    colour = np.asarray(V.instance_colors(1)[0])
    blended = (1 - 0.45) * GRAY + 0.45 * colour
    assert near(at(6, 6), blended)  # inside the kept mask
    assert near(at(2, 6), [GRAY] * 3) and near(at(6, 10), [GRAY] * 3)
    assert near(at(9, 17), [GRAY] * 3)  # inside the dropped detection's mask: untouched
    # the box's left edge is the left edge of pixel column 4, i.e. PNG column 4 * scale
    row = png[6 * scale + scale // 2]
    edge = [c for c in range(3 * scale, 5 * scale) if near(row[c], colour, tol=0.08)]
    assert edge and min(edge) >= 4 * scale - 3 and max(edge) <= 4 * scale + 3
    assert near(row[4 * scale - 6], [GRAY] * 3) and near(row[4 * scale + 6], blended)


def test_save_detections_default_scale_and_empty_result(tmp_path):
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "scores": torch.zeros(0), "masks": torch.zeros(0, 1, 20, 100)}  # fmt: skip
    path = V.save_detections(gray_image(20, 100), empty, (), tmp_path / "e.png")
    png = mpimg.imread(path)
    assert png.shape[:2] == (20 * 6, 100 * 6)  # smallest integer scale giving a long side >= 512
    np.testing.assert_allclose(png[..., :3], GRAY, atol=2 / 255)
    with pytest.raises(ValueError, match="result"):
        V.save_detections(gray_image(), {"boxes": torch.zeros(0, 4)}, (), tmp_path / "x.png")


# ---------------------------------------------------------------- compare_figure


def _shapes_batch(n: int):
    from mrcnn_edu.data import ShapesDataset

    ds = ShapesDataset(n, (48, 64), seed=5)
    items = [ds[i] for i in range(n)]
    preds = [{"boxes": t["boxes"] + 1, "labels": t["labels"], "masks": t["masks"][:, None].float() * 0.8,
              "scores": torch.linspace(0.3, 0.95, len(t["labels"]))} for _, t in items]  # fmt: skip
    return [im for im, _ in items], [t for _, t in items], preds


def test_compare_figure_layout_and_png(tmp_path):
    images, targets, preds = _shapes_batch(3)
    fig = V.compare_figure(images, targets, preds, CLASS_NAMES, path=tmp_path / "cmp.png", max_images=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # 2 rows x min(3, max_images) columns
    top, bottom = fig.axes[0], fig.axes[2]  # row-major: [gt 0, gt 1, pred 0, pred 1]
    assert len(rectangles(top)) == len(targets[0]["boxes"])
    kept = int((preds[0]["scores"] >= 0.5).sum())
    assert len(rectangles(bottom)) == kept
    # colours follow the class, so a prediction's colour matches its ground truth's
    palette = V.instance_colors(len(CLASS_NAMES))
    for r, label in zip(rectangles(top), targets[0]["labels"].tolist(), strict=True):
        assert r.get_edgecolor()[:3] == pytest.approx(palette[label])
    png = mpimg.imread(tmp_path / "cmp.png")
    expected = np.round(fig.get_size_inches()[::-1] * fig.dpi).astype(int)
    assert tuple(png.shape[:2]) == tuple(expected)
    assert png[..., :3].std() > 0.05  # not a blank canvas


def test_compare_figure_without_class_names_colours_by_label():
    images, targets, preds = _shapes_batch(4)
    fig = V.compare_figure(images, targets, preds, class_names=())
    labels = [v for t in targets for v in t["labels"].tolist()]
    colours = {}
    for ax, t in zip(fig.axes[:4], targets, strict=True):
        assert texts(ax) == [str(v) for v in t["labels"].tolist()]  # numbers stand in for names
        for r, v in zip(rectangles(ax), t["labels"].tolist(), strict=True):
            colours.setdefault(v, set()).add(r.get_edgecolor())
    assert all(len(c) == 1 for c in colours.values())  # one colour per class...
    assert len({next(iter(c)) for c in colours.values()}) == len(set(labels))  # ...distinct across classes


def test_caption_above_the_box_or_inside_at_the_top_edge():
    ax = V.show_boxes(gray_image(), torch.tensor([[2.0, 0.0, 6.0, 4.0], [2.0, 8.0, 6.0, 12.0]]),
                      labels=torch.tensor([2, 1]), class_names=CLASS_NAMES)  # fmt: skip
    assert texts(ax) == ["circle", "square"]
    assert [t.get_va() for t in ax.texts] == ["top", "bottom"]
    assert [t.get_position() for t in ax.texts] == [(1.5, -0.5), (1.5, 7.5)]


def test_compare_figure_bad_lengths():
    images, targets, preds = _shapes_batch(2)
    with pytest.raises(ValueError, match="targets"):
        V.compare_figure(images, targets[:1], preds, CLASS_NAMES)
    with pytest.raises(ValueError, match="images"):
        V.compare_figure([], [], [], CLASS_NAMES)


# ---------------------------------------------------------------- show_boxes, show_anchors


def test_show_boxes_single_colour_captions():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 30.0, 9.0]])  # the second reaches past the image
    ax = V.show_boxes(gray_image(), boxes, scores=torch.tensor([0.25, 0.75]), color="yellow")
    assert [r.get_edgecolor()[:3] for r in rectangles(ax)] == [pytest.approx((1.0, 1.0, 0.0))] * 2
    assert texts(ax) == ["0.25", "0.75"]
    assert ax.get_xlim() == pytest.approx((-0.5, 15.5))  # the view stays on the image
    assert texts(V.show_boxes(gray_image(), boxes)) == []
    with pytest.raises(ValueError, match="scores"):
        V.show_boxes(gray_image(), boxes, scores=torch.tensor([1.0]))


def test_show_anchors_subset_indices_and_view():
    anchors = torch.tensor([[x, 0.0, x + 8.0, 8.0] for x in range(-4, 96)], dtype=torch.float32)  # A = 100
    ax = V.show_anchors(gray_image(), anchors, max_anchors=10)
    rects = rectangles(ax)
    assert len(rects) == 10 and all(r.get_linestyle() == "--" for r in rects)
    assert rects[0].get_x() == pytest.approx(-4.5) and rects[1].get_x() == pytest.approx(5.5)  # every 10th
    xlo, xhi = ax.get_xlim()
    assert xlo == pytest.approx(-4.5) and xhi >= 90  # widened to show anchors outside the image
    chosen = torch.zeros(100, dtype=torch.bool)
    chosen[[3, 7]] = True
    ax = V.show_anchors(gray_image(), anchors, indices=chosen)
    assert [r.get_x() for r in rectangles(ax)] == pytest.approx([-1.5, 2.5])
    assert len(rectangles(V.show_anchors(gray_image(), anchors, max_anchors=1000))) == 100
    assert rectangles(V.show_anchors(gray_image(), anchors[:0])) == []
    with pytest.raises(ValueError, match="anchors"):
        V.show_anchors(gray_image(), anchors[:, :2])


# ---------------------------------------------------------------- plot_losses


def _metrics_rows():
    rows = [{"step": s, "rpn_box": 1.0 / (s + 1), "mask": 0.5, "total": 2.0 / (s + 1), "lr": 0.01}
            for s in range(0, 50, 10)]  # fmt: skip
    rows.insert(3, {"split": "val", "step": 20, "segm_AP": 0.25, "bbox_AP": 0.5})
    rows.append({"split": "val", "step": 40, "segm_AP": 0.5, "bbox_AP": 0.75})
    return rows


def test_plot_losses_from_jsonl_with_val_ap(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _metrics_rows()) + "\n\n")
    fig = V.plot_losses(path, path=tmp_path / "loss.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # losses + twin AP axis
    ax, twin = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"rpn_box", "mask", "total"}  # "lr" and "step" are not losses
    np.testing.assert_allclose(lines["rpn_box"].get_xdata(), [0, 10, 20, 30, 40])
    np.testing.assert_allclose(lines["rpn_box"].get_ydata(), [1.0, 1 / 11, 1 / 21, 1 / 31, 1 / 41])
    assert ax.get_yscale() == "log"
    ap = {ln.get_label(): ln for ln in twin.get_lines()}
    np.testing.assert_allclose(ap["segm_AP"].get_ydata(), [0.25, 0.5])
    np.testing.assert_allclose(ap["bbox_AP"].get_xdata(), [20, 40])
    assert mpimg.imread(tmp_path / "loss.png").shape[:2] == (450, 700)  # 7 x 4.5 inches at 100 dpi


def test_plot_losses_list_keys_smoothing_and_errors():
    rows = [r for r in _metrics_rows() if "split" not in r]
    fig = V.plot_losses(rows, keys=["mask", "rpn_box"], smoothing=0.5, log_scale=False)
    assert len(fig.axes) == 1  # no validation AP: no twin axis
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    line = {ln.get_label(): ln for ln in ax.get_lines()}["rpn_box"]
    raw = [1.0, 1 / 11, 1 / 21, 1 / 31, 1 / 41]
    ema, run = [], raw[0]
    for v in raw:
        run = 0.5 * run + 0.5 * v
        ema.append(run)
    np.testing.assert_allclose(line.get_ydata(), ema)
    with pytest.raises(ValueError, match="metrics"):
        V.plot_losses(42)
    with pytest.raises(ValueError, match="smoothing"):
        V.plot_losses(rows, smoothing=1.0)


# ---------------------------------------------------------------- feature_grid, heatmap


def test_feature_grid_mosaic_layout_and_per_channel_scaling():
    feature = torch.arange(5 * 4 * 6, dtype=torch.float32).reshape(5, 4, 6)
    feature[2] *= 1000  # a channel with a far larger range still spans the full colour range
    feature[4] = 7.0  # a constant channel is shown as zeros, not NaN
    ax = V.feature_grid(feature)
    assert isinstance(ax, Axes)
    mosaic = np.asarray(ax.images[0].get_array())
    assert mosaic.shape == (2 * 5 - 1, 3 * 7 - 1)  # 5 channels: 2 rows x 3 columns, 1-pixel gaps
    tile = lambda i: mosaic[(i // 3) * 5 : (i // 3) * 5 + 4, (i % 3) * 7 : (i % 3) * 7 + 6]  # noqa: E731
    for i in range(4):
        assert tile(i).min() == 0 and tile(i).max() == pytest.approx(1.0)
    np.testing.assert_allclose(tile(2), tile(0), atol=1e-6)
    np.testing.assert_array_equal(tile(4), 0)
    assert texts(ax) == ["0", "1", "2", "3", "4"]
    assert np.isnan(mosaic[4]).all() and np.isnan(mosaic[:, 6]).all()  # the gaps are empty (NaN)
    assert V.feature_grid(feature, max_channels=2).images[0].get_array().shape == (4, 13)
    assert texts(V.feature_grid(feature, channels=[4, 1])) == ["4", "1"]
    assert V.feature_grid(feature[0]).images[0].get_array().shape == (4, 6)
    with pytest.raises(ValueError, match="channels"):
        V.feature_grid(feature, channels=[5])
    with pytest.raises(ValueError, match="feature"):
        V.feature_grid(feature[None])


def test_heatmap_values_and_errors():
    values = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    fig = Figure()
    ax = fig.add_subplot()
    out = V.heatmap(values, ax=ax, title="objectness")
    assert out is ax and ax.get_title() == "objectness" and len(fig.axes) == 2  # + colour bar
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), values.numpy())
    assert len(V.heatmap(values, colorbar=False).figure.axes) == 1
    with pytest.raises(ValueError, match="tensor"):
        V.heatmap(values[None])


# ---------------------------------------------------------------- log, summarize_trace

LINE = re.compile(r"^(?P<name>\S+)\s+shape: (?P<shape>\(.*?\))\s+min:\s+(?P<min>\S+)\s+max:\s+(?P<max>\S+)\s+"
                  r"dtype: (?P<dtype>\S+)(?P<extra>.*)$")  # fmt: skip


def test_log_known_tensor(capsys):
    t = torch.tensor([[-2.125, 1.0, 0.5], [0.25, 3.5, -1.0]])
    text = V.log("rpn_bbox", t)
    assert capsys.readouterr().out == text + "\n"
    m = LINE.match(text)
    assert m, text
    assert m["name"] == "rpn_bbox" and m["shape"] == "(2, 3)" and m["dtype"] == "float32"
    assert float(m["min"]) == -2.125 and float(m["max"]) == 3.5 and m["extra"] == ""


def test_log_special_values(capsys):
    empty = LINE.match(V.log("empty", torch.zeros(0, 4)))
    assert empty["shape"] == "(0, 4)" and empty["min"] == "-" and empty["max"] == "-"
    assert V.log("nothing", None) == "nothing                   None"
    ints = LINE.match(V.log("labels", torch.tensor([3, 1, 2])))
    assert (ints["min"], ints["max"], ints["dtype"]) == ("1", "3", "int64")
    nan = LINE.match(V.log("x", torch.tensor([1.0, float("nan"), -float("inf"), 4.0])))
    assert (float(nan["min"]), float(nan["max"])) == (1.0, 4.0) and "non-finite: 2" in nan["extra"]
    arr = LINE.match(V.log("np", np.array([[1.5, -0.5]], dtype=np.float64)))
    assert (arr["shape"], arr["dtype"], float(arr["min"])) == ("(1, 2)", "float64", -0.5)
    flags = LINE.match(V.log("flags", torch.tensor([True, False])))
    assert (flags["min"], flags["max"], flags["dtype"]) == ("0", "1", "bool")
    capsys.readouterr()
    assert V.log("quiet", torch.ones(1), print_fn=None) and capsys.readouterr().out == ""


def test_log_containers():
    boxes = [torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.tensor([[-5.0, 0.0, 9.0, 1.0]] * 2)]
    per_image = V.log("boxes", boxes, print_fn=None)
    assert "2 tensors: (1, 4), (2, 4)" in per_image
    assert re.search(r"min:\s+-5\s+max:\s+9\s", per_image)
    levels = {"P2": torch.zeros(1, 2, 4, 4), "P3": torch.ones(1, 2, 2, 2)}
    lines = V.log("fpn", levels, print_fn=None).splitlines()
    assert [LINE.match(x)["name"] for x in lines] == ["fpn['P2']", "fpn['P3']"]
    assert "list: [3072, 768]" in V.log("per_level", [3072, 768], print_fn=None)
    assert "empty list" in V.log("none", [], print_fn=None)
    nested = V.log("proposals", [{"boxes": torch.zeros(3, 4)}], print_fn=None)
    assert LINE.match(nested)["name"] == "proposals[0]['boxes']"


def test_summarize_trace_hand_made():
    trace = {
        "molded_images": torch.zeros(2, 3, 64, 64),
        "fpn": {"P2": torch.zeros(2, 8, 16, 16), "P3": torch.zeros(2, 8, 8, 8)},
        "anchors_per_level": [768, 192],
        "proposals": [{"boxes": torch.zeros(10, 4), "scores": torch.zeros(10)},
                      {"boxes": torch.zeros(7, 4), "scores": torch.zeros(7)}],  # fmt: skip
        "results": [{"labels": torch.zeros(3, dtype=torch.int64)}] * 2,
        "losses": {"mask": torch.tensor(0.5)},
        "nothing": None,
    }
    table = V.summarize_trace(trace)
    lines = table.splitlines()
    rows = {ln.split()[0]: ln for ln in lines[2:]}
    assert list(rows) == ["molded_images", "fpn.P2", "fpn.P3", "anchors_per_level", "proposals[*].boxes",
                          "proposals[*].scores", "results[*].labels", "losses.mask", "nothing"]  # fmt: skip
    assert lines[0].split() == ["stage", "shape", "dtype"] and set(lines[1]) == {"-", " "}
    assert "(2, 3, 64, 64)" in rows["molded_images"] and rows["molded_images"].endswith("float32")
    assert "(10, 4), (7, 4)" in rows["proposals[*].boxes"]
    assert "2 x (3,)" in rows["results[*].labels"] and rows["results[*].labels"].endswith("int64")
    assert "[768, 192]" in rows["anchors_per_level"]
    assert "()" in rows["losses.mask"]
    # aligned columns: every row's shape column starts where the header's does
    start = lines[0].index("shape")
    assert all(ln[start - 2 : start] == "  " and ln[start] != " " for ln in lines[2:])
    with pytest.raises(ValueError, match="trace"):
        V.summarize_trace([1, 2])


# ---------------------------------------------------------------- headless, no pyplot


def test_no_pyplot_global_state(tmp_path):
    code = (
        "import sys, torch; from mrcnn_edu import visualize as V; "
        "ax = V.draw_instances(torch.rand(3, 8, 8), torch.tensor([[1., 1., 4., 4.]]), torch.tensor([1])); "
        f"ax.figure.savefig(r'{tmp_path / 'x.png'}'); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)
    assert (tmp_path / "x.png").stat().st_size > 0


def test_heatmap_colour_scale_can_be_fixed():
    ax = V.heatmap(torch.tensor([[0.2, 0.4], [0.6, 0.8]]), vmin=0.0, vmax=1.0)
    assert ax.images[0].get_clim() == (0.0, 1.0)
    ax = V.heatmap(torch.tensor([[0.2, 0.4], [0.6, 0.8]]))
    assert ax.images[0].get_clim() == pytest.approx((0.2, 0.8))


# ------------------------------------------------------------------------------------- show_roi_sampling
def test_show_roi_sampling_draws_points_bins_and_box():
    from mrcnn_edu.roi_align import roi_align_bins, roi_align_sample_points, roi_pool_bins

    feature = torch.rand(8, 8)
    box = torch.tensor([1.3, 2.2, 6.1, 5.7])
    points = roi_align_sample_points(box, 2, 1.0, 2, aligned=True)  # [2, 2, 2, 2, 2]: 16 samples
    ax = V.show_roi_sampling(feature, box=box, points=points, bins=roi_align_bins(box, 2, aligned=True),
                             title="roi")  # fmt: skip
    assert isinstance(ax, Axes) and ax.get_title() == "roi"
    markers = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(markers) == 1 and len(markers[0].get_xdata()) == 16
    np.testing.assert_allclose(markers[0].get_xdata(), points[..., 1].flatten().numpy())
    dashed = [r for r in rectangles(ax) if r.get_linestyle() == "--"]
    assert len(dashed) == 4 and len(rectangles(ax)) == 5  # 4 bins + the box
    (red,) = [r for r in rectangles(ax) if r.get_linestyle() == "-"]
    np.testing.assert_allclose(red.get_xy(), (0.8, 1.7), atol=1e-6)  # the pixel convention: x1 - 0.5

    # int bins (RoIPool): one filled rectangle per non-empty bin; clipping empties the last ones
    bins = roi_pool_bins(torch.tensor([5.0, 5.0, 12.0, 12.0]), 3, (8, 8))
    empty = int(((bins[..., 2] <= bins[..., 0]) | (bins[..., 3] <= bins[..., 1])).sum())
    assert empty > 0
    ax = V.show_roi_sampling(feature, bins=bins)
    assert len(rectangles(ax)) == 9 - empty and all(r.get_fill() for r in rectangles(ax))
    assert not ax.lines[-1:] or ax.lines[-1].get_marker() != "o"  # no points given, none drawn


def test_show_roi_sampling_uses_given_axes_and_plain_sequences():
    fig = Figure()
    ax = fig.add_subplot()
    out = V.show_roi_sampling(np.zeros((4, 5), dtype=np.float32), ax=ax, box=(0, 0, 2, 2),
                              points=torch.zeros(0, 2), marker="s")  # fmt: skip
    assert out is ax and len(rectangles(ax)) == 1
    assert out.get_xlim() == (-1.5, 5.5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"feature": torch.zeros(2, 3, 4)}, "feature"),
     ({"points": torch.zeros(4, 3)}, "points"),
     ({"points": torch.zeros(4, 2, dtype=torch.long)}, "points"),
     ({"bins": torch.zeros(2, 5)}, "bins"),
     ({"box": (1, 2, 3)}, "box"),
     ({"ax": "not axes"}, "ax")],
)  # fmt: skip
def test_show_roi_sampling_bad_input_names_the_argument(kwargs, name):
    kwargs = {"feature": torch.zeros(4, 4), **kwargs}
    with pytest.raises(ValueError, match=name):
        V.show_roi_sampling(**kwargs)


# ------------------------------------------------------------------------------------- class_colors
def test_class_colors_one_colour_per_class_whatever_the_other_labels():
    colours = V.class_colors(torch.tensor([3, 1, 3, 2]))
    assert colours[0] == colours[2] and len({colours[0], colours[1], colours[3]}) == 3
    assert V.class_colors([3]) == [colours[0]]  # class 3's colour does not depend on the other labels
    assert colours[1] == V.instance_colors(4)[1]
    assert V.class_colors(torch.zeros(0, dtype=torch.int64)) == []
    with pytest.raises(ValueError, match="labels"):
        V.class_colors([1, -1])


def test_compare_figure_uses_class_colors():
    images, targets, preds = _shapes_batch(1)
    fig = V.compare_figure(images, targets, preds, CLASS_NAMES, score_threshold=0.0)
    expected = V.class_colors(targets[0]["labels"])
    for ax in fig.axes:  # ground truth and predictions (same labels here) wear the same colours
        assert [r.get_edgecolor()[:3] for r in rectangles(ax)] == [pytest.approx(c) for c in expected]


# ------------------------------------------------------------------------------------- overlay_boxes
def test_overlay_boxes_draws_over_the_picture_without_redrawing_it():
    image = gray_image()
    masks = square_mask(16, 16, 2, 2, 8, 8)[None]
    ax = V.draw_instances(image, torch.tensor([[2.0, 2.0, 8.0, 8.0]]), masks=masks)
    blended = np.asarray(ax.images[0].get_array()).copy()
    view = (ax.get_xlim(), ax.get_ylim())
    out = V.overlay_boxes(ax, torch.tensor([[1.0, 1.0, 40.0, 5.0]]), color="white", linestyle="--",
                          labels=torch.tensor([2]), class_names=CLASS_NAMES)  # fmt: skip
    assert out is ax and len(ax.images) == 1  # the image (with its mask tint) is not drawn again
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), blended)
    assert (ax.get_xlim(), ax.get_ylim()) == view  # a box past the image does not move the view
    new = rectangles(ax)[-1]
    assert new.get_linestyle() == "--" and new.get_xy() == pytest.approx((0.5, 0.5))
    assert texts(ax)[-1] == "circle"


def test_overlay_boxes_scale_and_grid_positions():
    ax = V.heatmap(torch.zeros(4, 4), colorbar=False)
    # an image box over a stride-4 map: edges at pixel 4..12 -> cells 1..3
    V.overlay_boxes(ax, torch.tensor([[4.0, 4.0, 12.0, 12.0]]), scale=0.25, pixel_edges=False)
    V.overlay_boxes(ax, torch.tensor([[4.0, 4.0, 12.0, 12.0]]), scale=0.25)
    on_grid, on_edges = rectangles(ax)
    assert on_grid.get_xy() == pytest.approx((1.0, 1.0)) and on_grid.get_width() == pytest.approx(2.0)
    assert on_edges.get_xy() == pytest.approx((0.5, 0.5))
    colors = ["red", "blue"]
    V.overlay_boxes(ax, torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]]), colors=colors, halo=True)
    assert [r.get_edgecolor()[:3] for r in rectangles(ax)[-2:]] == [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    assert rectangles(ax)[-1].get_path_effects()  # the halo
    with pytest.raises(ValueError, match="colors"):
        V.overlay_boxes(ax, torch.zeros(2, 4), colors=["red"])
    with pytest.raises(ValueError, match="color"):
        V.overlay_boxes(ax, torch.zeros(1, 4), color="red", colors=["red"])
    with pytest.raises(ValueError, match="ax"):
        V.overlay_boxes("not axes", torch.zeros(1, 4))


# ------------------------------------------------------------------------------------- show_suppression
def test_show_suppression_kept_solid_suppressed_dashed_counts_in_title():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [1.0, 1.0, 9.0, 9.0], [0.0, 1.0, 8.0, 9.0],
                          [9.0, 9.0, 15.0, 15.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    ax = V.show_suppression(gray_image(), boxes, 0, torch.tensor([1, 2]), scores=scores,
                            earlier=torch.tensor([3]), color="red")  # fmt: skip
    assert ax.get_title() == "box 0 kept, 2 suppressed (best 0.80)"
    earlier, kept, *gone = rectangles(ax)  # the suppressed boxes last, on top of the kept one
    assert earlier.get_linestyle() == ":" and earlier.get_xy() == pytest.approx((8.5, 8.5))
    assert [r.get_linestyle() for r in gone] == ["--", "--"]
    assert [r.get_xy() for r in gone] == [pytest.approx((0.5, 0.5)), pytest.approx((-0.5, 0.5))]
    assert all(r.get_edgecolor()[:3] == pytest.approx((0.85,) * 3) for r in gone)
    assert kept.get_linestyle() == "-" and kept.get_edgecolor()[:3] == (1.0, 0.0, 0.0)
    assert texts(ax) == ["0.90"]
    none = V.show_suppression(gray_image(), boxes, 3, torch.zeros(0, dtype=torch.int64))
    assert none.get_title() == "box 3 kept, 0 suppressed"
    with pytest.raises(ValueError, match="kept"):
        V.show_suppression(gray_image(), boxes, 4, torch.tensor([1]))
    with pytest.raises(ValueError, match="suppressed"):
        V.show_suppression(gray_image(), boxes, 0, torch.tensor([0.5]))


# ------------------------------------------------------------------------------------- heatmap options
def test_heatmap_writes_values_integer_ticks_and_auto_aspect():
    values = torch.tensor([[0.0, 0.25], [0.75, 1.0]])
    ax = V.heatmap(values, values=".2f", cell_ticks=True, vmin=0, vmax=1, cmap="gray")
    assert texts(ax) == ["0.00", "0.25", "0.75", "1.00"]
    assert [t.get_position() for t in ax.texts] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [t.get_color() for t in ax.texts] == ["white", "white", "black", "black"]  # legible on gray
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if -0.5 <= t <= 1.5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert V.heatmap(values, aspect="auto").get_aspect() == "auto"


def test_show_roi_sampling_colour_scale_and_bar():
    ax = V.show_roi_sampling(torch.rand(4, 4), vmin=-1.0, vmax=2.0, colorbar=True)
    assert ax.images[0].get_clim() == (-1.0, 2.0) and len(ax.figure.axes) == 2


# ------------------------------------------------------------------------------------- legend_outside
@pytest.mark.parametrize("where", ["below", "right"])
def test_legend_outside_does_not_cover_the_axes(where):
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.add_subplot()
    for k in range(3):
        ax.plot([0, 1], [k, k + 1], label=f"curve {k}")
    legend = V.legend_outside(ax, where=where)
    renderer = fig._get_renderer()  # a headless Figure: the Agg renderer savefig would use
    fig.draw(renderer)
    box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.y1 <= frame.y0 if where == "below" else box.x0 >= frame.x1
    assert [t.get_text() for t in legend.get_texts()] == ["curve 0", "curve 1", "curve 2"]
    with pytest.raises(ValueError, match="where"):
        V.legend_outside(ax, where="inside")


# ------------------------------------------------------------------------------------- architecture_figure
def test_architecture_figure_maps_every_trace_stage_once_per_path(tmp_path):
    from mrcnn_edu.model import TRACE_STAGES

    assert set(V.MATTERPORT_NAMES) == set(TRACE_STAGES)
    shared = [s for stages, _ in V._SHARED_PATH for s in stages]
    train = shared + [s for stages, _ in V._TRAIN_PATH for s in stages]
    infer = shared + [s for stages, _ in V._EVAL_PATH for s in stages]
    # each path shows exactly the stages the model records on it, each once
    assert sorted(train) == sorted(s for s, d in TRACE_STAGES.items() if d.startswith(("both", "train")))
    assert sorted(infer) == sorted(s for s, d in TRACE_STAGES.items() if d.startswith(("both", "eval")))
    fig = V.architecture_figure()
    words = [t.get_text() for t in fig.axes[0].texts]
    for stage, seed in V.MATTERPORT_NAMES.items():
        assert stage in words and seed in words
    seed_layers = ["ProposalLayer", "DetectionTargetLayer", "PyramidROIAlign", "DetectionLayer"]
    seed_layers.append("unmold_mask")
    assert all(any(layer in w for w in words) for layer in seed_layers)
    fig.savefig(tmp_path / "arch.png")
    assert mpimg.imread(tmp_path / "arch.png")[..., :3].std() > 0.05
