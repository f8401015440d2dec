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
crowd regions). A polygon with fewer than three points encloses no area and adds nothing to the mask
(pycocotools itself would reject it or, for two points, read it as a box).

Crowd annotations (``iscrowd=1``: one region covering many objects) are kept with ``iscrowd=True`` by default:
matterport and torchvision ignore them when matching anchors and proposals rather than training on them. Pass
``include_crowd=False`` to drop them here.

Nothing is filtered silently: boxes of zero area or outside the image are kept exactly as the json gives them;
:func:`mrcnn_edu.data.transforms.validate_target` (which the training path calls) drops them with a warning.
Images without annotations are kept, with empty targets of the right shapes.

Category ids need not be contiguous (COCO's run 1..90 with gaps): they are sorted and numbered 1..K;
``cat_id_to_label`` and ``label_to_cat_id`` translate, and ``class_names[label]`` is the category name
(``class_names[0] == "background"``, as in :data:`mrcnn_edu.data.CLASS_NAMES`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..boxes import box_convert

__all__ = ["CocoDataset", "load_coco_ground_truth", "decode_segmentation"]


def _fail(path, what: str) -> ValueError:
    return ValueError(f"annotation_file {str(path)!r}: {what}")


def _read_json(path) -> dict:
    """Read and structurally check a COCO json; every problem becomes a ValueError naming the file."""
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

    for img in data["images"]:
        if not isinstance(img, dict) or any(k not in img for k in ("id", "file_name", "height", "width")):
            raise _fail(path, f"every image needs 'id', 'file_name', 'height' and 'width', got {img!r}")
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise _fail(path, f"every category needs 'id' and 'name', got {cat!r}")
    image_ids = {img["id"] for img in data["images"]}
    cat_ids = {cat["id"] for cat in data["categories"]}
    if len(image_ids) != len(data["images"]) or len(cat_ids) != len(data["categories"]):
        raise _fail(path, "image ids and category ids must be unique")
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise _fail(path, f"every annotation must be an object, got {ann!r}")
        ident = ann.get("id", "?")
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise _fail(path, f"annotation {ident} has no {key!r}")
        if ann["image_id"] not in image_ids:
            raise _fail(path, f"annotation {ident} refers to image_id {ann['image_id']} not in 'images'")
        if ann["category_id"] not in cat_ids:
            raise _fail(path, f"annotation {ident} has category_id {ann['category_id']} not in 'categories'")
        bbox = ann["bbox"]
        numbers = isinstance(bbox, list) and all(isinstance(v, (int, float)) for v in bbox)
        if not numbers or len(bbox) != 4:
            raise _fail(path, f"annotation {ident} bbox must be [x, y, w, h], got {bbox!r}")
    return data


def _quiet_coco(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over already-loaded json, without its progress prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_ground_truth(annotation_file) -> COCO:
    """The pycocotools ``COCO`` object of an annotation file, for ``COCOeval``.

    Same checks as :class:`CocoDataset`: a missing, unreadable or malformed file raises ValueError naming it.
    """
    return _quiet_coco(_read_json(annotation_file))


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Decode one COCO ``segmentation`` (polygons, compressed or uncompressed RLE) to a mask.

    segmentation: a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (pixel coordinates; their union is the
        object), or a dict ``{"size": [H, W], "counts": str | bytes | list[int]}``.
    Returns a C-contiguous uint8 numpy array ``[H, W]`` of 0/1. Polygons with fewer than three points add
    nothing; an empty list gives an empty mask. Raises ValueError for anything else.
    """
    if isinstance(segmentation, list):
        for poly in segmentation:
            if not isinstance(poly, list) or len(poly) % 2:
                raise ValueError(f"segmentation polygon must be a flat list of x, y pairs, got {poly!r}")
        # fewer than three points enclose no area (and pycocotools would read two points as a box)
        polygons = [[float(v) for v in poly] for poly in segmentation if len(poly) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        return np.ascontiguousarray(mask_utils.decode(rle))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"segmentation RLE size {size} does not match the image's [{height}, {width}]")
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed: encode first
            rle = mask_utils.frPyObjects(rle, height, width)
        return np.ascontiguousarray(mask_utils.decode(rle))
    got = type(segmentation).__name__
    raise ValueError(f"segmentation must be a list of polygons or an RLE dict, got {got}")


class CocoDataset(torch.utils.data.Dataset):
    """Items ``(image, target)`` from a COCO annotation file and a folder of images.

    annotation_file: path of the COCO json. A missing, non-json or malformed file raises ValueError naming
        it and the problem (an annotation pointing at an unknown image or category, a bbox not 4 numbers...).
    image_dir: folder that ``images[i].file_name`` is relative to.
    include_crowd: keep crowd annotations (``iscrowd=True`` in the target; default) or drop them.
    transforms: optional callable ``(image, target) -> (image, target)`` applied to each item
        (e.g. :class:`mrcnn_edu.data.transforms.RandomHorizontalFlip`).

    Items are ordered by increasing image id (``self.image_ids``). Reading an item raises FileNotFoundError
    naming the image file if it is missing, and ValueError naming it if PIL cannot read it or its size differs
    from the json's ``height`` / ``width``.

    Attributes: ``coco`` (the pycocotools index), ``image_ids``, ``class_names`` (``[0]`` is "background"),
    ``cat_id_to_label``, ``label_to_cat_id``, ``num_classes`` (K + 1, background included).
    """

    def __init__(self, annotation_file, image_dir, include_crowd: bool = True, transforms=None):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise ValueError(f"image_dir must be an existing folder, got {str(image_dir)!r}")
        self.coco = _quiet_coco(_read_json(self.annotation_file))
        self.include_crowd = bool(include_crowd)
        self.transforms = transforms

        cat_ids = sorted(self.coco.cats)
        self.cat_id_to_label = {cat_id: label for label, cat_id in enumerate(cat_ids, start=1)}
        self.label_to_cat_id = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.class_names = ("background",) + tuple(self.coco.cats[c]["name"] for c in cat_ids)
        self.num_classes = len(self.class_names)
        self.image_ids = sorted(self.coco.imgs)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of item ``index``'s image file."""
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def load_image(self, index: int) -> torch.Tensor:
        """Item ``index``'s image as float32 ``[3, H, W]`` in 0-1, checked against the json's size."""
        from PIL import Image, UnidentifiedImageError  # pillow comes with matplotlib

        info = self.coco.imgs[self.image_ids[index]]
        path = self.image_path(index)
        if not path.is_file():
            raise FileNotFoundError(
                f"image file {str(path)!r} (image id {info['id']} in {str(self.annotation_file)!r}) not found"
            )
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image file {str(path)!r} could not be read: {err}") from None
        h, w = pixels.shape[:2]
        if (h, w) != (int(info["height"]), int(info["width"])):
            raise ValueError(
                f"image file {str(path)!r} is {h}x{w} (HxW) but {str(self.annotation_file)!r} says "
                f"{info['height']}x{info['width']}"
            )
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)

    def load_target(self, index: int) -> dict:
        """Item ``index``'s target (see the module docstring), without reading the image file."""
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        h, w = int(info["height"]), int(info["width"])
        anns = self.coco.imgToAnns.get(image_id, [])
        if not self.include_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        for i, ann in enumerate(anns):
            try:
                if "segmentation" not in ann:
                    raise ValueError("has no 'segmentation' (Mask R-CNN needs a mask for every object)")
                masks[i] = decode_segmentation(ann["segmentation"], h, w)
            except ValueError as err:
                raise ValueError(
                    f"annotation {ann['id']} in {str(self.annotation_file)!r}: {err}"
                ) from None
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
