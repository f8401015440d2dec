"""Convert annotations drawn with VGG Image Annotator (VIA) or labelme into a COCO folder.

matterport's own custom-data example (the balloons) was labelled with VIA, and many people label with labelme;
both store objects as polygons (or rectangles, circles, ellipses) in their own json. :func:`convert_via` and
:func:`convert_labelme` write the layout that ``mrcnn-edu export-shapes`` writes and
:class:`mrcnn_edu.data.CocoDataset` reads::

    out_dir/<split>/<the image files, copied unchanged>
    out_dir/annotations/instances_<split>.json

Each object becomes one annotation: its outline as a COCO polygon (rectangles, circles and ellipses as
polygons; circles and ellipses with :data:`ELLIPSE_POINTS` vertices), ``bbox`` the tight box of the pixels
that pycocotools rasterises from it, ``area`` their count, ``iscrowd`` 0. Categories come from the labels:
sorted by name with ids 1..K, or as given (``categories=["cat", "dog"]`` or ``[(5, "cat"), (17, "dog")]``:
convert a validation set with the training set's categories so both number them alike).

Nothing is dropped or guessed silently: a polygon of fewer than three points, a shape type that encloses no
area (points, lines), a shape that covers no pixel, a region without a label, a label outside ``categories``,
a missing image or one whose size differs from what the json says are :class:`DataError` naming the file and
the region (VIA) or shape (labelme). Nothing is written unless the whole set converts.

Command line: ``mrcnn-edu convert via via_region_data.json --out data/balloon --label balloon`` and
``mrcnn-edu convert labelme my_labelme_folder/ --out data/own --split val --categories cat,dog``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import shutil
from pathlib import Path

from pycocotools import mask as mask_utils

from .export import _check_split_name, write_coco_json
from .images import DataError

__all__ = ["convert_via", "convert_labelme", "ELLIPSE_POINTS"]

#: Vertices of the polygon that stands for a circle or an ellipse.
ELLIPSE_POINTS = 64


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    flat = []
    for k in range(ELLIPSE_POINTS):
        t = 2 * math.pi * k / ELLIPSE_POINTS
        x, y = rx * math.cos(t), ry * math.sin(t)
        c, s = math.cos(theta), math.sin(theta)
        flat += [cx + x * c - y * s, cy + x * s + y * c]
    return flat


def _polygon(xs, ys) -> list[float]:
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise ValueError(f"all_points_x and all_points_y must be lists of one length, got {xs!r}, {ys!r}")
    if not all(_is_number(v) for v in xs + ys):
        raise ValueError(f"polygon coordinates must be finite numbers, got {xs!r}, {ys!r}")
    if len(xs) < 3:
        raise ValueError(f"a polygon of {len(xs)} points encloses nothing: it needs at least 3")
    return [float(v) for x, y in zip(xs, ys, strict=True) for v in (x, y)]


def _numbers(shape: dict, *keys: str) -> list[float]:
    for key in keys:
        if not _is_number(shape.get(key)):
            raise ValueError(f"{key} must be a number, got {shape.get(key)!r}")
    return [float(shape[key]) for key in keys]


def _via_polygon(shape) -> list[float]:
    """A VIA ``shape_attributes`` dict as one flat polygon ``[x1, y1, x2, y2, ...]``."""
    name = shape.get("name") if isinstance(shape, dict) else None
    if name == "polygon":
        return _polygon(shape.get("all_points_x"), shape.get("all_points_y"))
    if name == "rect":
        x, y, w, h = _numbers(shape, "x", "y", "width", "height")
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if name == "circle":
        cx, cy, r = _numbers(shape, "cx", "cy", "r")
        return _ellipse(cx, cy, r, r)
    if name == "ellipse":
        cx, cy, rx, ry = _numbers(shape, "cx", "cy", "rx", "ry")
        theta = float(shape["theta"]) if _is_number(shape.get("theta")) else 0.0
        return _ellipse(cx, cy, rx, ry, theta)
    raise ValueError(f"shape {name!r} is not supported (polygon, rect, circle and ellipse enclose an area)")


def _via_label(attributes, label_attribute: str | None) -> str | None:
    """The label of a VIA region: ``attributes[label_attribute]``, or its only attribute; None if none."""
    if not isinstance(attributes, dict):
        raise ValueError(f"region_attributes must be an object, got {attributes!r}")
    if label_attribute is None:
        values = [v for v in attributes.values() if v not in ("", None, {})]
        if len(values) > 1:
            names = ", ".join(repr(k) for k in attributes)
            raise ValueError(f"has {len(attributes)} attributes ({names}): say which one is the label with "
                             "label_attribute= (--label-attribute NAME)")  # fmt: skip
        value = values[0] if values else None
    else:
        value = attributes.get(label_attribute)
    if isinstance(value, dict):  # a checkbox attribute: {"cat": true}
        chosen = [k for k, v in value.items() if v]
        if len(chosen) != 1:
            raise ValueError(f"label attribute must have exactly one option ticked, got {value!r}")
        value = chosen[0]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"label must be a string, got {value!r}")
    return value.strip() or None if value is not None else None


def _categories(categories, labels: set[str]) -> list[tuple[int, str]]:
    if categories is None:
        return list(enumerate(sorted(labels), start=1))
    items = list(categories)
    pairs = [(k, item) if isinstance(item, str) else tuple(item) for k, item in enumerate(items, start=1)]
    if not pairs or len({i for i, _ in pairs}) != len(pairs) or len({n for _, n in pairs}) != len(pairs):
        raise ValueError(f"categories must be unique names or (id, name) pairs, got {categories!r}")
    return pairs


def _write(objects: list[dict], images: list[dict], out_dir, split_name, categories, source: str) -> Path:
    """Check the labels and masks of ``objects``, then copy the images and write the json.

    images: ``{"source": Path or bytes, "file_name", "height", "width", "where"}``; objects: ``{"image"
    (index into images), "label", "polygons", "where"}``.
    """
    _check_split_name(split_name)
    categories = _categories(categories, {o["label"] for o in objects})
    ids = {name: cat_id for cat_id, name in categories}
    names = [img["file_name"] for img in images]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{source}: two images would be written as {twice[0]!r}: rename one of them")
    annotations = []
    for obj in objects:
        if obj["label"] not in ids:
            raise DataError(f"{obj['where']}: label {obj['label']!r} is not in the categories "
                            f"{[n for _, n in categories]}")  # fmt: skip
        img = images[obj["image"]]
        rle = mask_utils.merge(mask_utils.frPyObjects(obj["polygons"], img["height"], img["width"]))
        area = int(mask_utils.area(rle))
        if area == 0:
            size = f"{img['height']}x{img['width']}"
            raise DataError(f"{obj['where']}: the shape covers no pixel of the {size} image")
        annotations.append({
            "id": len(annotations) + 1, "image_id": obj["image"] + 1, "category_id": ids[obj["label"]],
            "segmentation": obj["polygons"], "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": area, "iscrowd": 0,
        })  # fmt: skip

    out_dir = Path(out_dir)
    image_dir = out_dir / split_name
    image_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        if isinstance(img["source"], bytes):
            (image_dir / img["file_name"]).write_bytes(img["source"])
        elif img["source"].resolve() != (image_dir / img["file_name"]).resolve():
            shutil.copyfile(img["source"], image_dir / img["file_name"])
    coco_images = [{"id": k + 1, **{key: img[key] for key in ("file_name", "height", "width")}}
                   for k, img in enumerate(images)]  # fmt: skip
    info = {"description": f"converted from {source}", "split": split_name}
    return write_coco_json(out_dir / "annotations" / f"instances_{split_name}.json", coco_images, annotations,
                           categories, info)  # fmt: skip


def _image_size(source, where: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError  # pillow comes with matplotlib

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{where}: the image could not be read: {err}") from None


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{str(path)!r} not found (no {what} json file or folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{str(path)!r} is not a readable {what} json: {err}") from None


def convert_via(
    via_json,
    out_dir,
    image_dir=None,
    split_name: str = "train",
    categories=None,
    label_attribute: str | None = None,
    label: str | None = None,
) -> Path:
    """Convert a VGG Image Annotator json (an export of VIA 1 or 2, or a VIA 2 project file) to a COCO folder.

    via_json: the VIA file; its images are in ``image_dir`` (default: the json's folder), named by each
        entry's ``filename``.
    out_dir, split_name: where the COCO folder goes (see the module docstring).
    categories: names or ``(id, name)`` pairs; default the labels found, sorted, ids 1..K.
    label_attribute: the region attribute that holds the label; default the region's only attribute.
    label: one category for every region (matterport's balloons have no attribute): attributes are ignored.
    Returns the json's path; raises DataError naming the file, image and region for anything wrong.
    """
    via_json = Path(via_json)
    image_dir = Path(image_dir) if image_dir is not None else via_json.parent
    data = _read_json(via_json, "VIA")
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise DataError(f"{str(via_json)!r} is not a VIA json: expected an object of images with a "
                        "'filename' (VIA's 'Export annotations (as json)', or a VIA 2 project file)")
    images, objects = [], []
    for entry in data.values():
        where = f"{str(via_json)!r}: image {entry['filename']!r}"
        path = image_dir / str(entry["filename"])
        if not path.is_file():
            raise DataError(f"{where}: the image file {str(path)!r} not found")
        height, width = _image_size(path, where)
        images.append({"source": path, "file_name": path.name, "height": height, "width": width})
        regions = entry.get("regions", [])
        regions = list(regions.values()) if isinstance(regions, dict) else regions
        for k, region in enumerate(regions):
            here = f"{where} region {k}"
            try:
                if not isinstance(region, dict):
                    raise ValueError(f"must be an object, got {region!r}")
                polygon = _via_polygon(region.get("shape_attributes"))
                name = label or _via_label(region.get("region_attributes", {}), label_attribute)
            except ValueError as err:
                raise DataError(f"{here}: {err}") from None
            if name is None:
                raise DataError(f"{here}: has no label: give the label attribute (--label-attribute NAME) or "
                                "one label for every region (--label NAME)")  # fmt: skip
            objects.append({"image": len(images) - 1, "label": name, "polygons": [polygon], "where": here})
    return _write(objects, images, out_dir, split_name, categories, str(via_json))


def _labelme_polygon(shape: dict) -> list[float]:
    kind, points = shape.get("shape_type") or "polygon", shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points
    ):
        raise ValueError(f"points must be [x, y] pairs of finite numbers, got {points!r}")
    if kind == "polygon":
        return _polygon([p[0] for p in points], [p[1] for p in points])
    if kind in ("rectangle", "circle") and len(points) != 2:
        raise ValueError(f"a {kind} needs 2 points, got {len(points)}")
    if kind == "rectangle":
        (x1, y1), (x2, y2) = points
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    if kind == "circle":
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        return _ellipse(cx, cy, r, r)
    raise ValueError(f"shape_type {kind!r} is not supported (polygon, rectangle and circle enclose an area)")


def convert_labelme(src, out_dir, split_name: str = "train", categories=None) -> Path:
    """Convert labelme json files (one per image) to a COCO folder.

    src: a labelme json, or a folder whose ``*.json`` files are labelme's. Each image is ``imagePath``
        (relative to its json) or, if that file is missing, the ``imageData`` embedded in the json (written
        out unchanged); its size must be the json's ``imageHeight`` x ``imageWidth``.
    Shapes of one ``group_id`` (and one label) are one object, their union (labelme's convention); other
    shapes are an object each. ``polygon``, ``rectangle`` and ``circle`` shapes are converted.
    out_dir, split_name, categories: as :func:`convert_via`. Returns the json's path.
    """
    src = Path(src)
    files = sorted(src.glob("*.json")) if src.is_dir() else [src]
    if not files:
        raise DataError(f"{str(src)!r} holds no labelme json files")
    images, objects = [], []
    for path in files:
        data = _read_json(path, "labelme")
        where = repr(str(path))
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or "imagePath" not in data:
            raise DataError(f"{where} is not a labelme json: expected 'shapes' and 'imagePath'")
        image_path = path.parent / str(data["imagePath"])
        if image_path.is_file():
            source = image_path
        elif data.get("imageData"):
            try:
                source = base64.b64decode(data["imageData"], validate=True)
            except (binascii.Error, ValueError):
                raise DataError(f"{where}: imageData is not base64") from None
        else:
            raise DataError(f"{where}: the image file {str(image_path)!r} not found (and no imageData)")
        height, width = _image_size(source, where)
        said = (data.get("imageHeight"), data.get("imageWidth"))
        if said != (height, width):
            raise DataError(f"{where}: imageHeight x imageWidth is {said[0]}x{said[1]} but the image is "
                            f"{height}x{width}")  # fmt: skip
        images.append({"source": source, "file_name": image_path.name, "height": height, "width": width})
        groups: dict = {}
        for k, shape in enumerate(data["shapes"]):
            here = f"{where} shape {k}"
            try:
                if not isinstance(shape, dict):
                    raise ValueError(f"must be an object, got {shape!r}")
                polygon = _labelme_polygon(shape)
            except ValueError as err:
                raise DataError(f"{here}: {err}") from None
            name = shape.get("label")
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"{here}: needs a label, got {name!r}")
            group = shape.get("group_id")
            key = ("group", group) if group is not None else ("shape", k)
            if key in groups:
                obj = groups[key]
                if obj["label"] != name.strip():
                    raise DataError(f"{where}: group_id {group} joins shapes labelled {obj['label']!r} and "
                                    f"{name.strip()!r}; one object has one label")  # fmt: skip
                obj["polygons"].append(polygon)
            else:
                groups[key] = {"image": len(images) - 1, "label": name.strip(), "polygons": [polygon],
                               "where": here}  # fmt: skip
        objects += groups.values()
    return _write(objects, images, out_dir, split_name, categories, str(src))
