"""The explorer page (mrcnn_edu.explore, ``mrcnn-edu explore``): its numbers are the trace's, it is one
offline file, and it works in a real browser (headless Chromium driven by Playwright; skipped without one).

Also the coordinate frames of TRACE_STAGES, which the page quotes: checked on a molded image that is not the
original (scaled and padded), so that a frame named wrongly shows.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch

from mrcnn_edu import Config, MaskRCNN
from mrcnn_edu.cli import main
from mrcnn_edu.demo import load_shipped_model, shapes_splits
from mrcnn_edu.explore import _quantised, dequantise, explorer_data, render_page, write_page
from mrcnn_edu.model import TRACE_FRAMES, TRACE_STAGES
from mrcnn_edu.molding import unmold_boxes
from mrcnn_edu.roi_align import roi_align


@pytest.fixture(scope="module")
def shipped():
    return load_shipped_model()


@pytest.fixture(scope="module")
def held_out():
    _, data = shapes_splits(Config.preset("shapes"))
    return data


@pytest.fixture(scope="module")
def page_data(shipped, held_out):
    image, target = held_out[0]
    with torch.no_grad():
        trace = shipped.trace([image])
    return explorer_data(shipped, image, source="test", model_name="shipped", target=target), trace


# ------------------------------------------------------------------------------------- TRACE_STAGES frames
def _holds_boxes(value) -> bool:
    if isinstance(value, dict):
        return "boxes" in value or "rois" in value
    if isinstance(value, list):
        return any(_holds_boxes(v) for v in value)
    return False


def test_every_box_valued_stage_names_its_frame(shipped, held_out):
    image, target = held_out[1]
    with torch.no_grad():
        traces = [shipped.trace([image])]
    model = MaskRCNN(shipped.config).train()
    traces.append(model.trace([image], [target]))
    for trace in traces:
        for name, value in trace.items():
            if _holds_boxes(value) or name in ("anchors", "image_metas"):
                assert TRACE_STAGES[name].frame in TRACE_FRAMES, name
    assert set(TRACE_FRAMES) == {s.frame for s in TRACE_STAGES.values() if s.frame}
    assert all(isinstance(s, str) and s.startswith(("both", "train", "eval")) for s in TRACE_STAGES.values())


def test_the_frames_are_the_right_ones_on_a_scaled_and_padded_image(shipped, held_out):
    image = held_out[2][0][:, :64, :96]  # molded to 128 x 128: scaled by 4/3 and padded top and bottom
    with torch.no_grad():
        trace = shipped.trace([image])
    meta = trace["image_metas"][0]
    assert meta.scale != 1 and meta.padding[0] > 0
    frames = {name: TRACE_STAGES[name].frame for name in ("detections", "results", "proposals", "anchors")}
    assert frames == dict(detections="molded", results="original", proposals="molded", anchors="molded")
    detections, results = trace["detections"][0], trace["results"][0]
    assert len(detections["boxes"]) > 0
    torch.testing.assert_close(unmold_boxes(detections["boxes"], meta), results["boxes"])
    assert not torch.allclose(detections["boxes"], results["boxes"])  # the two frames differ here
    assert float(results["boxes"][:, 2].max()) <= 96 and float(results["boxes"][:, 3].max()) <= 64
    # molded frame: the anchors' centres cover the whole molded canvas, not the 96 x 64 image
    centres = (trace["anchors"][:, :2] + trace["anchors"][:, 2:]) / 2
    assert float(centres[:, 1].max()) > 64 and float(centres.max()) < 128
    x1, y1, x2, y2 = meta.window
    assert (y1, y2) == (meta.padding[0], 128 - meta.padding[1]) and (x1, x2) == (0, 128)


# ------------------------------------------------------------------------------------- the page's numbers
def test_quantised_arrays_come_back_within_half_a_step():
    values = torch.randn(3, 5, 7, dtype=torch.float64)
    packed = _quantised(values)
    back = dequantise(packed)
    assert back.shape == values.shape
    step = (packed["hi"] - packed["lo"]) / 255
    assert float((back - values).abs().max()) <= step / 2 + 1e-12
    assert float(back.min()) == pytest.approx(float(values.min()))
    constant = dequantise(_quantised(torch.full((4,), 2.5)))
    torch.testing.assert_close(constant, torch.full((4,), 2.5, dtype=torch.float64))
    assert dequantise(_quantised(torch.zeros(0, 28, 28))).shape == (0, 28, 28)


def test_anchors_rebuild_from_the_grid_as_the_page_does(page_data):
    data, trace = page_data
    rebuilt = []
    for level in data["levels"]:
        gh, gw = level["grid"]
        for r in range(gh):
            for c in range(gw):
                cx = level["origin"][0] + c * level["step"][0]
                cy = level["origin"][1] + r * level["step"][1]
                rebuilt += [[cx + b[0], cy + b[1], cx + b[2], cy + b[3]] for b in level["base"]]
    torch.testing.assert_close(torch.tensor(rebuilt), trace["anchors"], atol=2e-3, rtol=0)
    assert [lv["count"] for lv in data["levels"]] == trace["anchors_per_level"]
    # one size per level (the 3 ratios of a level share their area)
    for level, scale in zip(data["levels"], Config.preset("shapes").anchor_scales, strict=True):
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in level["base"]]
        assert areas == pytest.approx([scale**2] * 3, rel=1e-3)


def test_objectness_and_top_anchors_are_the_rpns(page_data):
    data, trace = page_data
    probs = trace["rpn_objectness"][0].sigmoid().double()
    start = 0
    for level in data["levels"]:
        stored = dequantise(level["objectness"]).flatten()
        part = probs[start : start + level["count"]]
        assert float((stored - part).abs().max()) <= 1 / 510 + 1e-9
        best = level["top"][0]
        assert best["index"] == start + int(part.argmax())
        r, c, a = best["cell"]
        assert best["index"] - start == (r * level["grid"][1] + c) * 3 + a
        start += level["count"]


def test_proposal_levels_are_the_ones_the_model_pooled_from(page_data, shipped):
    data, trace = page_data
    boxes = trace["proposals"][0]["boxes"]
    torch.testing.assert_close(torch.tensor(data["proposals"]["boxes"]), boxes, atol=0.006, rtol=0)
    levels = torch.tensor(data["proposals"]["levels"])
    cfg = shipped.config
    assert set(levels.tolist()) <= {2, 3, 4, 5}
    for k in levels.unique().tolist():
        chosen = levels == k
        feature = trace["fpn"][f"P{k}"]
        pooled = roi_align(feature, [boxes[chosen]], cfg.pool_size, 1 / cfg.backbone_strides[k - 2],
                           cfg.sampling_ratio, cfg.aligned)  # fmt: skip
        torch.testing.assert_close(pooled, trace["box_features"][chosen])


def test_pooled_features_class_scores_and_masks_are_the_heads(page_data):
    data, trace = page_data
    p, d = data["proposals"], data["detections"]
    pooled = trace["box_features"]
    spread = pooled.transpose(0, 1).reshape(pooled.shape[1], -1).std(1)
    assert set(p["pooled"]["channels"]) == set(spread.topk(len(p["pooled"]["channels"])).indices.tolist())
    for channel, packed in zip(p["pooled"]["channels"], p["pooled"]["values"], strict=True):
        step = (packed["hi"] - packed["lo"]) / 255
        assert float((dequantise(packed) - pooled[:, channel].double()).abs().max()) <= step / 2 + 1e-6
    probs = dequantise(p["class_probs"])
    torch.testing.assert_close(probs, trace["class_logits"].softmax(-1).double(), atol=1 / 510 + 1e-6, rtol=0)
    det = trace["detections"][0]
    assert d["roi_index"] == det["roi_index"].tolist() and len(d["roi_index"]) > 0
    for j, roi in enumerate(d["roi_index"]):
        assert p["detection"][roi] == j and roi in p["candidates"]
        assert p["best_class"][roi] == d["labels"][j]
        # the page's refined box is the detection layer's box (it lies inside the canvas: no clipping)
        torch.testing.assert_close(torch.tensor(p["refined"][roi]), det["boxes"][j], atol=0.011, rtol=0)
    assert sum(v >= 0 for v in p["detection"]) == len(d["roi_index"])
    own = trace["mask_logits"][torch.arange(len(det["labels"])), det["labels"]]
    bound = d["mask_logits"]["hi"]
    assert float((dequantise(d["mask_logits"]) - own.double()).abs().max()) <= bound / 255 + 1e-6


def test_pasted_masks_are_the_models_results(page_data):
    from PIL import Image

    data, trace = page_data
    results = trace["results"][0]
    for j, stored in enumerate(data["detections"]["results"]["masks"]):
        mask = results["masks"][j, 0] > 0.5
        if stored is None:
            assert not mask.any()
            continue
        png = base64.b64decode(stored["uri"].split(",", 1)[1])
        alpha = np.asarray(Image.open(io.BytesIO(png)).convert("LA"))[..., 1] > 127
        x, y, w, h = stored["x"], stored["y"], stored["w"], stored["h"]
        assert alpha.shape == (h, w)
        assert (alpha == mask[y : y + h, x : x + w].numpy()).all()
        assert int(mask.sum()) == int(alpha.sum())  # nothing of the mask lies outside the crop


def test_ground_truth_and_frames_are_on_the_page(page_data, held_out):
    data, _ = page_data
    target = held_out[0][1]
    assert data["ground_truth"]["labels"] == target["labels"].tolist()
    assert {view: f["frame"] for view, f in data["frames"].items()} == {
        "molded": "molded", "anchors": "molded", "objectness": "feature", "proposals": "molded",
        "pooled": "feature", "detections": "original",
    }  # fmt: skip
    assert all(f["text"] == TRACE_FRAMES[f["frame"]] for f in data["frames"].values())


def test_the_page_is_one_offline_file(page_data):
    data, _ = page_data
    html = render_page(data)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "url(http" not in html and "@import" not in html and "<link" not in html
    for marker in ("@DATA@", "/*@JS@*/", "/*@CSS@*/", "@TITLE@"):
        assert marker not in html
    payload = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', html, re.S)
    assert json.loads(payload.group(1))["proposals"]["order"] == data["proposals"]["order"]


@pytest.fixture(scope="module")
def empty_page(held_out, tmp_path_factory):
    model = load_shipped_model(detection_min_confidence=1.0)
    path = tmp_path_factory.mktemp("empty") / "empty.html"
    return path, write_page(path, model, held_out[0][0])


def test_a_model_that_detects_nothing_still_makes_a_page(empty_page, held_out):
    _, written = empty_page
    assert written["detections"] == 0 and written["proposals"] > 0
    with pytest.raises(ValueError, match="eval mode"):
        explorer_data(load_shipped_model().train(), held_out[0][0])


@pytest.fixture(scope="module")
def photo_page(tmp_path_factory):
    """A photo molded to 800 pixels by the torchvision preset (random weights, every candidate kept, so the
    page holds the most it can: 1000 proposals, 100 detections with masks)."""
    pytest.importorskip("skimage", reason="the bundled photos are scikit-image's sample images")
    from mrcnn_edu.data.photos import load_photo

    torch.manual_seed(0)
    model = MaskRCNN(Config.preset("torchvision", detection_min_confidence=0.0)).eval()
    path = tmp_path_factory.mktemp("photo") / "rocket.html"
    written = write_page(path, model, load_photo("rocket"), source="photo rocket", model_name="random")
    return path, written


def test_a_photo_at_800_pixels_makes_a_page_under_15_mb(photo_page):
    path, written = photo_page
    print(f"photo page: {written['bytes'] / 1e6:.2f} MB ({path})")
    assert written["proposals"] == 1000 and written["detections"] == 100
    assert written["bytes"] == path.stat().st_size < 15e6
    html = path.read_text()
    assert "data:image/jpeg;base64," in html and "embedded as JPEG" in html


# ------------------------------------------------------------------------------------- the command
def test_explore_command_writes_the_default_page(tmp_path, capsys):
    out = tmp_path / "sub" / "page.html"
    assert main(["explore", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "detections" in printed
    html = out.read_text()
    assert "held-out shapes image 0" in html and "the shapes model shipped with mrcnn_edu" in html
    assert not list(out.parent.glob(".*partial"))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["shapes:100"], "INDEX 0..99"),
        (["shapes:x"], "shapes:INDEX"),
        (["photo:nope"], "photo:nope"),
        (["missing.png"], "missing.png"),
        (["--set", "num_classes=7"], "num_classes=7"),
        (["--set", "detection_min_confidence=2"], "detection_min_confidence"),
    ],
)
def test_explore_user_errors_are_one_line_and_exit_2(args, expected, tmp_path, capsys):
    code = main(["explore", *args, "--out", str(tmp_path / "p.html")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.html").exists()


def test_explore_refuses_a_folder_as_out(tmp_path, capsys):
    assert main(["explore", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def default_page(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "explore.html"
    assert main(["explore", "shapes:0", "--out", str(path)]) == 0
    return path


def _drawn(page, canvas: str) -> str:
    return page.get_attribute(f"#{canvas}-canvas", "data-drawn")


def _pixels(page, canvas: str) -> str:
    return page.eval_on_selector(f"#{canvas}-canvas", "c => c.toDataURL()")


def test_explorer_in_chromium_click_and_toggles(default_page, open_page, tmp_path, screenshot_dir):
    page, problems = open_page(default_page.as_uri())
    data = json.loads(page.text_content("#explorer-data"))
    assert page.get_attribute("#detail", "data-proposal") == ""
    # a click on the left edge of a detection's proposal selects a proposal under the click
    target = data["detections"]["roi_index"][0]
    x1, y1, x2, y2 = data["proposals"]["boxes"][target]
    before = page.inner_text("#detail")
    canvas = page.locator("#proposals-canvas")
    canvas.scroll_into_view_if_needed()
    size = canvas.bounding_box()
    height, width = data["image"]["molded_size"]
    canvas.click(position={"x": x1 / width * size["width"], "y": (y1 + y2) / 2 / height * size["height"]})
    chosen = int(page.get_attribute("#detail", "data-proposal"))
    bx1, by1, bx2, by2 = data["proposals"]["boxes"][chosen]
    assert abs(bx1 - x1) < 2 or abs(bx2 - x1) < 2  # the box whose outline is under the click
    after = page.inner_text("#detail")
    assert after != before and f"Proposal #{chosen}" in after and "pooled features" in after
    assert f"selected={chosen}" in _drawn(page, "proposals")
    if chosen == target:
        assert "It became detection #0" in after and page.locator("#detail canvas").count() >= 10
    shot = screenshot_dir / "explorer_after_click.png"
    page.locator(".pair").screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    # another proposal (by its number) changes the panel again
    other = data["proposals"]["order"][-1]
    page.fill("#proposal-index", str(other))
    page.dispatch_event("#proposal-index", "change")
    assert page.get_attribute("#detail", "data-proposal") == str(other)
    assert page.inner_text("#detail") != after
    # the level toggles change what is drawn
    drawn, pixels = _drawn(page, "anchors"), _pixels(page, "anchors")
    assert drawn.startswith("levels=P2,P3,P4,P5,P6 anchors=15")
    page.uncheck('#anchor-levels input[data-level="P2"]')
    assert _drawn(page, "anchors").startswith("levels=P3,P4,P5,P6 anchors=12")
    assert _pixels(page, "anchors") != pixels
    page.check('#anchor-levels input[data-level="P2"]')
    assert _drawn(page, "anchors") == drawn and _pixels(page, "anchors") == pixels
    heat = _pixels(page, "objectness")
    page.check('#objectness-levels input[value="P2"]')
    assert _drawn(page, "objectness").startswith("level=P2 ratio=best cells=32x32")
    assert _pixels(page, "objectness") != heat
    page.select_option("#objectness-ratio", "1")
    assert "ratio=1" in _drawn(page, "objectness")
    # proposals before NMS, and detections above a threshold
    page.check('input[name="proposal-mode"][value="both"]')
    assert re.match(r"after=20/300 before=20/1000", _drawn(page, "proposals"))
    page.fill("#score-threshold", "1")
    page.dispatch_event("#score-threshold", "input")
    assert _drawn(page, "detections").startswith("detections=0/")
    assert problems == []


def test_explorer_photo_page_loads_without_errors(photo_page, open_page):
    page, problems = open_page(photo_page[0].as_uri())
    assert _drawn(page, "objectness").startswith("level=")
    assert re.match(r"after=20/1000 ", _drawn(page, "proposals"))
    page.fill("#score-threshold", "0")
    page.dispatch_event("#score-threshold", "input")
    assert _drawn(page, "detections").startswith("detections=100/100")
    assert problems == []


def test_explorer_without_detections_loads_without_errors(empty_page, open_page):
    page, problems = open_page(empty_page[0].as_uri())
    assert _drawn(page, "detections").startswith("detections=0/0")
    page.fill("#proposal-index", "0")
    page.dispatch_event("#proposal-index", "change")
    assert "Not a detection" in page.inner_text("#detail")
    assert problems == []
