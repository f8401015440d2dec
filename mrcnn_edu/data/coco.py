"""COCO-format instance segmentation data: your own images and annotations, read through pycocotools.

A COCO annotation file is one json with three lists: ``images`` (``id``, ``file_name``, ``height``,
``width``), ``categories`` (``id``, ``name``) and ``annotations`` (``image_id``, ``category_id``, ``bbox`` as
``[x, y, w, h]``, ``segmentation``, ``iscrowd``). :class:`CocoDataset` turns each image into the item format
used everywhere in mrcnn_edu (torchvision's): masks decoded with ``pycocotools.mask``, boxes converted to
``x1, y1, x2, y2``, category ids renumbered to contiguous labels.

Shape glossary
    H, W: image height and width
    N:    annotations of one image (crowd annotations included unless ``include_crowd=False``)
    K:    number of categories (labels run 1..K; 0 is the background)

Each item is ``(image, target)``:
    image:  float32 ``[3, H, W]`` in 0-1 (RGB, whatever the file's mode)
    target: ``boxes`` float32 ``[N, 4]`` (the json ``bbox`` as ``x1, y1, x2, y2``), ``labels`` int64 ``[N]``
            (1..K), ``masks`` uint8 ``[N, H, W]``, ``iscrowd`` bool ``[N]``, ``image_id`` int (the COCO id,
            needed to write results back).

Segmentations come in three forms, all handled: polygons (a list of ``[x1, y1, x2, y2, ...]`` lists, unioned),
compressed RLE (``counts`` a string) and uncompressed RLE (``counts`` a list of run lengths, used by COCO for
crowd regions).

Nothing in the json is changed without a word: every field is checked when the file is read, and anything
that pycocotools would silently turn into something else is a :class:`DataError` naming the file and the
annotation (or image, or category) and what was expected. In particular: a polygon needs three points (with
fewer it encloses nothing, and pycocotools reads two points as a box), finite coordinates, and at least one
polygon per object; run lengths must be non-negative integers that sum to ``height * width`` (pycocotools
decodes them without bounds checks); ``iscrowd`` is 0 or 1; ids are integers (``category_id: "2"`` is not 2);
and an object whose mask covers no pixel is refused when it is read (or by :meth:`CocoDataset.check`),
rather than trained on as an all-zero mask.

Crowd annotations (``iscrowd=1``: one region covering many objects) are kept with ``iscrowd=True`` by default:
matterport and torchvision ignore them when matching anchors and proposals rather than training on them. Pass
``include_crowd=False`` to drop them here.

Nothing is filtered silently: boxes of zero area or outside the image are kept exactly as the json gives them;
:func:`mrcnn_edu.data.transforms.validate_target` (which the training path calls) drops them with a warning.
Images without annotations are kept, with empty targets of the right shapes.

Category ids need not be contiguous (COCO's run 1..90 with gaps): they are sorted and numbered 1..K;
``cat_id_to_label`` and ``label_to_cat_id`` translate, and ``class_names[label]`` is the category name
(``class_names[0] == "background"``, as in :data:`mrcnn_edu.data.CLASS_NAMES`). A second set (validation)
must be numbered like the first: ``CocoDataset(val_json, val_dir, categories=train_set.categories)`` maps its
categories by id into the training set's labels, and refuses ids or names that the training set does not have
(numbered on its own, a validation set lacking one category would shift every label after it).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..boxes import box_convert
from .images import DataError, read_image

__all__ = ["CocoDataset", "load_coco_ground_truth", "decode_segmentation", "rle_string_counts"]


def _fail(path, what: str) -> DataError:
    return DataError(f"annotation_file {str(path)!r}: {what}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path) -> dict:
    """Read and check a COCO json (see the module docstring); every problem is a DataError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, expected a json file") from None
    except OSError as err:
        raise _fail(path, f"could not be read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"not valid json ({err})") from None
    if not isinstance(data, dict):
        raise _fail(path, f"expected a json object with 'images' and 'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"missing the list {key!r}")
    if not isinstance(data.setdefault("annotations", []), list):  # test-set files have no annotations
        raise _fail(path, "'annotations' must be a list")

    sizes = {}
    for img in data["images"]:
        problem = _image_problem(img)
        if problem:
            raise _fail(path, problem)
        if img["id"] in sizes:
            raise _fail(path, f"image ids must be unique, {img['id']} appears twice")
        sizes[img["id"]] = (img["height"], img["width"])
    cat_ids = set()
    for cat in data["categories"]:
        problem = _category_problem(cat)
        if problem:
            raise _fail(path, problem)
        if cat["id"] in cat_ids:
            raise _fail(path, f"category ids must be unique, {cat['id']} appears twice")
        cat_ids.add(cat["id"])
    ann_ids = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            got = ann.get("id") if isinstance(ann, dict) else ann
            raise _fail(path, f"annotation #{k} in the list: needs an integer 'id', got {got!r}")
        if ann["id"] in ann_ids:
            raise _fail(path, f"annotation ids must be unique, {ann['id']} appears twice")
        ann_ids.add(ann["id"])
        problem = _annotation_problem(ann, sizes, cat_ids)
        if problem:
            raise _fail(path, f"annotation {ann['id']}: {problem}")
    return data


def _image_problem(img) -> str | None:
    if not isinstance(img, dict) or any(k not in img for k in ("id", "file_name", "height", "width")):
        return f"every image needs 'id', 'file_name', 'height' and 'width', got {img!r}"
    if not _is_int(img["id"]):
        return f"image id must be an integer, got {img['id']!r}"
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        return f"image {img['id']}: file_name must be a non-empty string, got {img['file_name']!r}"
    for key in ("height", "width"):
        if not _is_int(img[key]) or img[key] < 1:
            return f"image {img['id']}: {key} must be a positive integer, got {img[key]!r}"
    return None


def _category_problem(cat) -> str | None:
    if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
        return f"every category needs 'id' and 'name', got {cat!r}"
    if not _is_int(cat["id"]):
        return f"category id must be an integer, got {cat['id']!r}"
    if not isinstance(cat["name"], str) or not cat["name"]:
        return f"category {cat['id']}: name must be a non-empty string, got {cat['name']!r}"
    return None


def _annotation_problem(ann: dict, sizes: dict, cat_ids: set) -> str | None:
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            return f"has no {key!r}"
    for key in ("image_id", "category_id"):
        if not _is_int(ann[key]):
            return f"{key} must be an integer, got {ann[key]!r}"
    if ann["image_id"] not in sizes:
        return f"refers to image_id {ann['image_id']} not in 'images'"
    if ann["category_id"] not in cat_ids:
        return f"has category_id {ann['category_id']} not in 'categories'"
    bbox = ann["bbox"]
    finite = isinstance(bbox, list) and all(_is_number(v) and math.isfinite(v) for v in bbox)
    if not finite or len(bbox) != 4:
        return f"bbox must be [x, y, w, h], 4 finite numbers, got {bbox!r}"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), (str, float)):
        return f"iscrowd must be 0 or 1, got {ann['iscrowd']!r}"
    if "segmentation" not in ann:
        return "has no 'segmentation' (Mask R-CNN needs a mask for every object)"
    try:
        _check_segmentation(ann["segmentation"], *sizes[ann["image_id"]], read_strings=False)
    except ValueError as err:
        return str(err)
    return None


# ------------------------------------------------------------------------------------------ segmentations


def rle_string_counts(counts: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, read in Python).

    Each count is a little-endian series of 5-bit groups, each stored as ``48 + group`` (``+ 32`` while more
    groups follow, the top bit of the last group being the sign); from the third count on, the value is
    stored as the difference to the count two places before. Raises ValueError if the string ends inside a
    count.
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    p = 0
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("segmentation RLE counts string ends inside a run length")
            c = data[p] - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_segmentation(segmentation, height: int, width: int, read_strings: bool = True) -> None:
    """Raise ValueError saying what is wrong with a COCO ``segmentation`` of an ``height x width`` image.

    read_strings: also read a compressed RLE string's run lengths (what :func:`decode_segmentation` needs
        before handing it to pycocotools; the file check skips it to stay fast).
    """
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("segmentation has no polygon (an empty list)")
        for k, poly in enumerate(segmentation):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise ValueError(f"segmentation polygon {k} must be a list of numbers x1, y1, x2, y2, ..., "
                                 f"got {poly!r}")  # fmt: skip
            if len(poly) % 2 or len(poly) < 6:
                points = len(poly) // 2
                raise ValueError(
                    f"segmentation polygon {k} has {points} point{'s' if points != 1 else ''}"
                    f"{' and an odd coordinate' if len(poly) % 2 else ''}: a polygon needs at least 3 "
                    "points (x, y pairs)"
                )
            if not all(math.isfinite(v) for v in poly):
                raise ValueError(f"segmentation polygon {k} coordinates must be finite, got {poly!r}")
        return
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        got = type(segmentation).__name__
        raise ValueError(f"segmentation must be a list of polygons or an RLE dict, got {got}")
    size = segmentation["size"]
    if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size):
        raise ValueError(f"segmentation RLE size must be [height, width], got {size!r}")
    if size != [height, width]:
        raise ValueError(f"segmentation RLE size {size} does not match the image's [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, (str, bytes)):
        if not read_strings:
            return
        counts = rle_string_counts(counts)
    elif not isinstance(counts, list) or not all(_is_int(v) for v in counts):
        raise ValueError("segmentation RLE counts must be a string or a list of integers")
    if any(v < 0 for v in counts):
        raise ValueError(f"segmentation RLE counts must not be negative, got {min(counts)}")
    if sum(counts) != height * width:
        raise ValueError(
            f"segmentation RLE counts must sum to {height * width} (height x width), got {sum(counts)}"
        )


def _segmentation_rle(segmentation, height: int, width: int) -> dict:
    """A checked segmentation as one pycocotools RLE (polygons unioned)."""
    _check_segmentation(segmentation, height, width)
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in poly] for poly in segmentation]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed: encode first
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Decode one COCO ``segmentation`` (polygons, compressed or uncompressed RLE) to a mask.

    segmentation: a non-empty list of polygons ``[[x1, y1, x2, y2, ...], ...]`` of at least 3 points each
        (pixel coordinates; their union is the object), or a dict ``{"size": [H, W], "counts": str | bytes |
        list[int]}`` whose run lengths are non-negative and sum to ``H * W``.
    Returns a C-contiguous uint8 numpy array ``[H, W]`` of 0/1. Raises ValueError saying what is wrong for
    anything else.
    """
    return np.ascontiguousarray(mask_utils.decode(_segmentation_rle(segmentation, height, width)))


# ------------------------------------------------------------------------------------------ data set


def _quiet_coco(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over already-loaded json, without its progress prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_ground_truth(annotation_file) -> COCO:
    """The pycocotools ``COCO`` object of an annotation file, for ``COCOeval``.

    Same checks as :class:`CocoDataset`: a missing, unreadable or malformed file raises DataError naming it.
    """
    return _quiet_coco(_read_json(annotation_file))


def _check_categories(categories) -> tuple[tuple[int, str], ...]:
    try:
        pairs = tuple((cat_id, name) for cat_id, name in categories)
    except (TypeError, ValueError):
        raise ValueError(f"categories must be (category id, name) pairs, got {categories!r}") from None
    ids = [cat_id for cat_id, _ in pairs]
    typed = all(_is_int(i) and isinstance(n, str) for i, n in pairs)
    if not typed or len(set(ids)) != len(ids):
        raise ValueError(f"categories must be (id, name) pairs with unique integer ids, got {pairs!r}")
    return pairs


class CocoDataset(torch.utils.data.Dataset):
    """Items ``(image, target)`` from a COCO annotation file and a folder of images.

    annotation_file: path of the COCO json. A missing, non-json or malformed file raises DataError naming
        it and the problem (an annotation pointing at an unknown image or category, a bbox not 4 numbers, a
        polygon of two points...; see the module docstring).
    image_dir: folder that ``images[i].file_name`` is relative to.
    include_crowd: keep crowd annotations (``iscrowd=True`` in the target; default) or drop them.
    transforms: optional callable ``(image, target) -> (image, target)`` applied to each item
        (e.g. :class:`mrcnn_edu.data.transforms.RandomHorizontalFlip`).
    categories: ``(category id, name)`` pairs that number the labels ``1..K`` in this order, e.g. the
        training set's ``.categories`` for a validation set; every category of the json must be among them
        with the same name (DataError naming the ids otherwise). Default: the json's categories, by id.

    Items are ordered by increasing image id (``self.image_ids``). Reading an item raises DataError naming the
    image file if it is missing or unreadable (:func:`mrcnn_edu.data.read_image`) or its size differs from
    the json's ``height`` / ``width``, and naming the annotation if its mask covers no pixel.
    :meth:`check` finds the missing files and empty masks of the whole set at once, without reading images.

    Attributes: ``coco`` (the pycocotools index), ``image_ids``, ``categories`` (``(id, name)`` per label
    1..K), ``class_names`` (``[0]`` is "background"), ``cat_id_to_label``, ``label_to_cat_id``,
    ``num_classes`` (K + 1, background included), ``num_annotations`` (in the file).
    """

    def __init__(
        self,
        annotation_file,
        image_dir,
        include_crowd: bool = True,
        transforms=None,
        categories: Sequence[tuple[int, str]] | None = None,
    ):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"image_dir must be an existing folder, got {str(image_dir)!r}")
        own = categories is None
        if not own:
            categories = _check_categories(categories)
        self.coco = _quiet_coco(_read_json(self.annotation_file))
        self.include_crowd = bool(include_crowd)
        self.transforms = transforms

        mine = {cat_id: cat["name"] for cat_id, cat in self.coco.cats.items()}
        if own:
            categories = tuple((cat_id, mine[cat_id]) for cat_id in sorted(mine))
        else:
            self._check_mapping(mine, categories)
        self.categories = categories
        self.cat_id_to_label = {cat_id: label for label, (cat_id, _) in enumerate(categories, start=1)}
        self.label_to_cat_id = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.class_names = ("background",) + tuple(name for _, name in categories)
        self.num_classes = len(self.class_names)
        self.image_ids = sorted(self.coco.imgs)

    def _check_mapping(self, mine: dict, categories) -> None:
        theirs = dict(categories)
        unknown = sorted(set(mine) - set(theirs))
        if unknown:
            names = ", ".join(repr(mine[i]) for i in unknown)
            raise _fail(
                self.annotation_file,
                f"category ids {unknown} ({names}) are not in the training categories {list(categories)}; "
                "a model can only be evaluated on the categories it was trained on",
            )
        for cat_id, name in mine.items():
            if theirs[cat_id] != name:
                raise _fail(
                    self.annotation_file,
                    f"category id {cat_id} is {name!r} here but {theirs[cat_id]!r} in the training "
                    "categories",
                )

    @property
    def num_annotations(self) -> int:
        return len(self.coco.anns)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of item ``index``'s image file."""
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def check(self, limit: int = 5) -> None:
        """Check the whole set without reading an image: every image file exists, every mask covers a pixel.

        Raises DataError listing the first ``limit`` problems of the first kind found (with their count).
        """
        missing = [str(self.image_path(i)) for i in range(len(self)) if not self.image_path(i).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(self)} image files of {str(self.annotation_file)!r} not found: "
                + ", ".join(missing[:limit]) + (" ..." if len(missing) > limit else "")
            )
        empty = []
        for ann in self.coco.anns.values():
            info = self.coco.imgs[ann["image_id"]]
            rle = self._rle(ann, info)
            if int(mask_utils.area(rle)) == 0:
                empty.append(ann)
        if empty:
            raise self._empty_mask_error(empty[0], len(empty))

    def _rle(self, ann: dict, info: dict) -> dict:
        try:
            return _segmentation_rle(ann["segmentation"], info["height"], info["width"])
        except ValueError as err:
            raise _fail(self.annotation_file, f"annotation {ann['id']}: {err}") from None

    def _empty_mask_error(self, ann: dict, count: int = 1) -> DataError:
        info = self.coco.imgs[ann["image_id"]]
        more = f" ({count} annotations in all)" if count > 1 else ""
        return _fail(
            self.annotation_file,
            f"annotation {ann['id']} (image {ann['image_id']}): its segmentation covers no pixel of the "
            f"{info['height']}x{info['width']} image{more}; fix or remove it (an object needs a mask)",
        )

    def load_image(self, index: int) -> torch.Tensor:
        """Item ``index``'s image as float32 ``[3, H, W]`` in 0-1, checked against the json's size."""
        info = self.coco.imgs[self.image_ids[index]]
        path = self.image_path(index)
        try:
            image = read_image(path)
        except DataError as err:
            raise DataError(f"{err} (image id {info['id']} in {str(self.annotation_file)!r})") from None
        h, w = image.shape[1:]
        if (h, w) != (info["height"], info["width"]):
            raise DataError(
                f"image file {str(path)!r} is {h}x{w} (HxW) but {str(self.annotation_file)!r} says "
                f"{info['height']}x{info['width']}"
            )
        return image

    def load_target(self, index: int) -> dict:
        """Item ``index``'s target (see the module docstring), without reading the image file."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = self.coco.imgToAnns.get(image_id, [])
        if not self.include_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        for i, ann in enumerate(anns):
            masks[i] = mask_utils.decode(self._rle(ann, info))
            if not masks[i].any():
                raise self._empty_mask_error(ann)
        xywh = torch.tensor([[float(v) for v in a["bbox"]] for a in anns], dtype=torch.float32).reshape(-1, 4)
        return {
            "boxes": box_convert(xywh, "xywh", "xyxy"),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            "image_id": int(image_id),
        }

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        image, target = self.load_image(index), self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"CocoDataset({len(self)} images, {self.num_classes - 1} classes, "
            f"annotation_file={os.fspath(self.annotation_file)!r})"
        )
