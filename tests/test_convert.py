"""Tests of mrcnn_edu.data.convert: VIA and labelme annotations written by the tests, read back as COCO.

References: rectangles whose pixel areas are known by hand, a circle's area (pi r^2, up to the pixel grid),
and the loader of the converted folder (CocoDataset), which checks every field of the json on its own.
"""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu.data import CocoDataset, DataError
from mrcnn_edu.data.convert import convert_labelme, convert_via

H, W = 24, 32


def _image(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _via_region(shape: dict, **attributes) -> dict:
    return {"shape_attributes": shape, "region_attributes": attributes}


def _via_project(folder, regions_a=None, regions_b=None, project=False) -> object:
    _image(folder / "a.png", 0)
    _image(folder / "b.png", 1)
    square = {"name": "polygon", "all_points_x": [2, 12, 12, 2], "all_points_y": [3, 3, 9, 9]}
    regions_a = regions_a if regions_a is not None else [
        _via_region(square, kind="cat"),
        _via_region({"name": "rect", "x": 20, "y": 5, "width": 6, "height": 4}, kind="dog"),
        _via_region({"name": "circle", "cx": 15, "cy": 15, "r": 4}, kind="cat"),
    ]  # fmt: skip
    regions_b = regions_b if regions_b is not None else {  # VIA 1 stores regions as a dict
        "0": _via_region({"name": "ellipse", "cx": 10, "cy": 12, "rx": 6, "ry": 3}, kind="dog"),
    }
    data = {
        "a.png1234": {"filename": "a.png", "size": 1234, "regions": regions_a, "file_attributes": {}},
        "b.png999": {"filename": "b.png", "size": 999, "regions": regions_b, "file_attributes": {}},
    }
    if project:  # a VIA 2 project file holds the same under _via_img_metadata
        data = {"_via_settings": {}, "_via_img_metadata": data, "_via_attributes": {}}
    path = folder / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("project", [False, True])
def test_via_polygons_rects_circles_and_ellipses(tmp_path, project):
    src = tmp_path / "src"
    src.mkdir()
    json_path = convert_via(_via_project(src, project=project), tmp_path / "out")
    assert json_path == tmp_path / "out" / "annotations" / "instances_train.json"
    ds = CocoDataset(json_path, tmp_path / "out" / "train")
    ds.check()
    assert ds.class_names == ("background", "cat", "dog")  # labels sorted by name, ids 1..K
    assert (tmp_path / "out" / "train" / "a.png").read_bytes() == (src / "a.png").read_bytes()
    image, target = ds[0]
    assert image.shape == (3, H, W)
    assert target["labels"].tolist() == [1, 2, 1]
    areas = target["masks"].flatten(1).sum(1).tolist()
    assert areas[0] == 60 and areas[1] == 24  # 10 x 6 and 6 x 4 pixels
    assert abs(areas[2] - math.pi * 16) < 6
    assert target["boxes"][0].tolist() == [2, 3, 12, 9] and target["boxes"][1].tolist() == [20, 5, 26, 9]
    _, target_b = ds[1]
    assert target_b["labels"].tolist() == [2] and abs(int(target_b["masks"].sum()) - math.pi * 18) < 8


def test_via_single_label_and_label_attribute(tmp_path):
    # matterport's balloon set: the regions carry no attribute, one category for all
    regions = [_via_region({"name": "polygon", "all_points_x": [2, 12, 12], "all_points_y": [3, 3, 9]})]
    path = _via_project(tmp_path, regions_a=regions, regions_b=[])
    with pytest.raises(DataError, match=r"a\.png.*region 0.*no label.*--label"):
        convert_via(path, tmp_path / "out")
    json_path = convert_via(path, tmp_path / "out", label="balloon")
    assert CocoDataset(json_path, tmp_path / "out" / "train").class_names == ("background", "balloon")
    rect = {"name": "rect", "x": 1, "y": 1, "width": 5, "height": 5}
    regions = [_via_region(rect, kind="cat", colour="red")]
    path = _via_project(tmp_path, regions_a=regions, regions_b=[])
    with pytest.raises(DataError, match="region 0.*2 attributes.*label_attribute"):
        convert_via(path, tmp_path / "out")
    own = [(7, "cat"), (9, "dog")]
    json_path = convert_via(path, tmp_path / "out", label_attribute="kind", categories=own)
    data = json.loads(json_path.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(7, "cat"), (9, "dog")]
    assert [a["category_id"] for a in data["annotations"]] == [7]


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ({"name": "polygon", "all_points_x": [2, 12], "all_points_y": [3, 3]}, "2 points.*at least 3"),
        ({"name": "polygon", "all_points_x": [2, 12, 5], "all_points_y": [3, 3]}, "all_points_x.*one length"),
        ({"name": "point", "cx": 3, "cy": 4}, "'point'.*not supported"),
        ({"name": "rect", "x": 2, "y": 2, "width": 0, "height": 5}, "covers no pixel"),
        ({"name": "circle", "cx": 3, "cy": "4", "r": 2}, "cy"),
    ],
)
def test_via_bad_regions_name_the_file_and_region(tmp_path, shape, match):
    path = _via_project(tmp_path, regions_a=[_via_region(shape, kind="cat")], regions_b=[])
    with pytest.raises(DataError, match=r"via_region_data\.json.*a\.png.*region 0.*" + match):
        convert_via(path, tmp_path / "out")


def test_via_missing_image_and_unknown_label(tmp_path):
    path = _via_project(tmp_path)
    with pytest.raises(DataError, match="label 'cat'.*not in the categories"):
        convert_via(path, tmp_path / "out", categories=["dog"])
    (tmp_path / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png.*not found"):
        convert_via(path, tmp_path / "out")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"bad\.json.*VIA"):
        convert_via(tmp_path / "bad.json", tmp_path / "out")


def _labelme(folder, name, shapes, image=True, embed=False, height=H):
    png = folder / f"{name}.png"
    _image(png, seed=len(name))
    data = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png", "imageData": None,
            "imageHeight": height, "imageWidth": W}  # fmt: skip
    if embed:
        data["imageData"] = base64.b64encode(png.read_bytes()).decode()
        data["imagePath"] = f"elsewhere/{name}.png"
    if not image or embed:
        png.rename(folder / f"{name}.moved")
    (folder / f"{name}.json").write_text(json.dumps(data))


def _shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type, "flags": {}}


def test_labelme_folder_with_groups_rectangles_and_embedded_images(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _labelme(src, "one", [
        _shape("dog", [[2, 3], [12, 3], [12, 9], [2, 9]]),
        _shape("cat", [[20, 5], [26, 9]], "rectangle"),
        # one object in two parts (labelme's group_id): their union
        _shape("cat", [[0, 12], [2, 12], [2, 14], [0, 14]], group_id=1),
        _shape("cat", [[5, 12], [8, 12], [8, 15], [5, 15]], group_id=1),
    ])  # fmt: skip
    _labelme(src, "two", [_shape("dog", [[10, 10], [14, 12]], "circle")], embed=True)
    json_path = convert_labelme(src, tmp_path / "out")
    ds = CocoDataset(json_path, tmp_path / "out" / "train")
    ds.check()
    assert ds.class_names == ("background", "cat", "dog")
    names = [ds.coco.imgs[i]["file_name"] for i in ds.image_ids]
    assert names == ["one.png", "two.png"]
    _, one = ds[0]
    assert one["labels"].tolist() == [2, 1, 1]
    assert one["masks"].flatten(1).sum(1).tolist() == [60, 24, 4 + 9]
    image, two = ds[1]
    assert two["labels"].tolist() == [2] and abs(int(two["masks"].sum()) - math.pi * 20) < 8
    with Image.open(src / "two.moved") as img:  # the embedded image was written out, pixels unchanged
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(pixels, np.asarray(img))


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ([_shape("cat", [[2, 3], [12, 3]])], r"one\.json.*shape 0.*2 points.*at least 3"),
        ([_shape("cat", [[2, 3], [12, 3]], "line")], r"one\.json.*shape 0.*'line'.*not supported"),
        ([_shape("", [[2, 3], [12, 3], [5, 9]])], r"one\.json.*shape 0.*label"),
        ([_shape("cat", [[2, 3], [12, 3], [5, 9]], group_id=1),
          _shape("dog", [[1, 1], [4, 1], [2, 4]], group_id=1)], r"one\.json.*group_id 1.*'cat'.*'dog'"),
    ],
)  # fmt: skip
def test_labelme_bad_shapes_name_the_file_and_shape(tmp_path, shapes, match):
    _labelme(tmp_path, "one", shapes)
    with pytest.raises(DataError, match=match):
        convert_labelme(tmp_path, tmp_path / "out")


def test_labelme_missing_image_and_wrong_size(tmp_path):
    _labelme(tmp_path, "one", [_shape("cat", [[2, 3], [12, 3], [5, 9]])], image=False)
    with pytest.raises(DataError, match=r"one\.json.*one\.png.*not found"):
        convert_labelme(tmp_path, tmp_path / "out")
    _labelme(tmp_path, "one", [_shape("cat", [[2, 3], [12, 3], [5, 9]])], height=H + 1)
    with pytest.raises(DataError, match=r"one\.json.*imageHeight.*25.*24"):
        convert_labelme(tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="no labelme json"):
        convert_labelme(tmp_path / "out", tmp_path / "out2")


def test_converted_images_keep_their_format(tmp_path):
    # a JPEG stays a JPEG: converting copies files, it never re-encodes pixels
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "c.jpg").write_bytes(buffer.getvalue())
    region = _via_region({"name": "rect", "x": 1, "y": 1, "width": 5, "height": 5}, kind="cat")
    data = {"c.jpg1": {"filename": "c.jpg", "size": 1, "regions": [region], "file_attributes": {}}}
    (tmp_path / "via.json").write_text(json.dumps(data))
    convert_via(tmp_path / "via.json", tmp_path / "out", split_name="val")
    assert (tmp_path / "out" / "val" / "c.jpg").read_bytes() == buffer.getvalue()
