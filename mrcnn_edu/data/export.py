"""Export the synthetic shapes set as a COCO data set: PNG files plus one annotation json.

This is the "bring your own data" example: the files written here have exactly the layout your own data
needs to be read by :class:`mrcnn_edu.data.CocoDataset`, and reading them back gives the same masks, boxes and
labels as the in-memory :class:`mrcnn_edu.data.ShapesDataset` (images up to 8-bit rounding). Layout::

    out_dir/
        <split>/000000.png ...                  one RGB PNG per image
        annotations/instances_<split>.json      COCO json (images, annotations, categories)

Categories are square, circle and triangle with ids 1, 2, 3 (so labels equal ids), or a category set of your
own (``categories=["cat", "dog", "bird"]`` or ``[(5, "cat"), (17, "dog"), (90, "bird")]``: one name per shape
kind, in that order), to try the "own data" path with names and ids that are not the shapes'. Each object's
``segmentation`` is compressed RLE (pycocotools' encoding, ``counts`` as a str for json), ``bbox`` is
``[x, y, w, h]`` of the tight box around its visible pixels, ``area`` its pixel count, ``iscrowd`` 0.
Image ids are ``index + 1`` and annotation ids count from 1 (COCOeval treats id 0 as "unmatched").

Command line (``mrcnn-edu export-shapes``, which calls :func:`main`)::

    mrcnn-edu export-shapes --out data/generated/shapes --num-images 200 --image-size 128 96 --split train
    mrcnn-edu export-shapes --out data/own --categories 5:cat,17:dog,90:bird
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .._checks import check_size
from ..boxes import box_convert
from .shapes import CLASS_NAMES, ShapesDataset

__all__ = ["export_shapes_coco", "parse_categories", "write_coco_json", "main"]

#: The shapes set's own categories: (id, name) of square, circle, triangle.
SHAPES_CATEGORIES = tuple((label, name) for label, name in enumerate(CLASS_NAMES) if label > 0)


def parse_categories(text: str) -> list[tuple[int, str]]:
    """``"cat,dog"`` -> ``[(1, "cat"), (2, "dog")]``; ``"5:cat,17:dog"`` -> ``[(5, "cat"), (17, "dog")]``.

    Names are numbered from 1 where no ``ID:`` is given. Raises ValueError for empty names, ids that are not
    positive integers, or repeated ids or names.
    """
    pairs = []
    for k, item in enumerate(text.split(","), start=1):
        ident, sep, name = item.strip().rpartition(":")
        name = name.strip()
        if sep and not ident.strip().isdigit() or (sep and int(ident) < 1) or not name:
            raise ValueError(f"categories must look like 'cat,dog' or '5:cat,17:dog', got {text!r}")
        pairs.append((int(ident) if sep else k, name))
    ids, names = [i for i, _ in pairs], [n for _, n in pairs]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise ValueError(f"categories must have unique ids and names, got {pairs}")
    return pairs


def _check_split_name(split_name: str) -> None:
    if not split_name or not all(c.isalnum() or c in "_-" for c in split_name):
        raise ValueError(f"split_name must be letters, digits, '_' or '-', got {split_name!r}")


def write_coco_json(path: Path, images: list, annotations: list, categories, info: dict) -> Path:
    """Write one COCO json (``categories`` as ``(id, name)`` pairs); its folder is created if needed."""
    coco = {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(i), "name": name} for i, name in categories],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return path


def _to_png_pixels(image: torch.Tensor) -> np.ndarray:
    """float ``[3, H, W]`` in 0-1 -> uint8 ``[H, W, 3]``, rounded to the nearest level."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def export_shapes_coco(
    out_dir,
    num_images: int,
    image_size=(128, 128),
    seed: int = 0,
    split_name: str = "train",
    categories=None,
    **shape_kwargs,
) -> Path:
    """Write ``num_images`` shapes images and their COCO json under ``out_dir``; return the json's path.

    out_dir: folder to write into (created if needed; existing files of the same names are overwritten).
    num_images, image_size ``(height, width)``, seed, shape_kwargs: as :class:`ShapesDataset`, whose items
        ``0 .. num_images - 1`` are exported (image id ``i + 1``).
    split_name: names the image folder and the json (``instances_<split_name>.json``); letters, digits,
        ``_`` and ``-`` only.
    categories: the categories of the square, circle and triangle, in that order: 3 names (ids 1, 2, 3) or
        3 ``(id, name)`` pairs; default square, circle, triangle with ids 1, 2, 3.
    """
    from PIL import Image  # pillow comes with matplotlib

    if int(num_images) < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    height, width = check_size("image_size", image_size)
    _check_split_name(split_name)
    categories = SHAPES_CATEGORIES if categories is None else _shape_categories(categories)
    dataset = ShapesDataset(num_images, (height, width), seed=seed, **shape_kwargs)

    out_dir = Path(out_dir)
    image_dir = out_dir / split_name
    json_path = out_dir / "annotations" / f"instances_{split_name}.json"
    image_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)

    images, annotations = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        image_id = index + 1
        file_name = f"{index:06d}.png"
        Image.fromarray(_to_png_pixels(image)).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        xywh = box_convert(target["boxes"], "xyxy", "xywh").tolist()
        for mask, label, box in zip(target["masks"].numpy(), target["labels"].tolist(), xywh, strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[label - 1][0],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "bbox": box,
                    "area": int(mask_utils.area(rle)),
                    "iscrowd": 0,
                }
            )

    info = {"description": f"mrcnn_edu synthetic shapes, split {split_name!r}", "seed": int(seed),
            "image_size": [height, width]}  # fmt: skip
    return write_coco_json(json_path, images, annotations, categories, info)


def _shape_categories(categories) -> tuple[tuple[int, str], ...]:
    """3 names or 3 (id, name) pairs -> checked (id, name) pairs of square, circle, triangle."""
    items = list(categories)
    pairs = [(k, item) if isinstance(item, str) else tuple(item) for k, item in enumerate(items, start=1)]
    ok = len(pairs) == 3 and all(
        len(p) == 2 and isinstance(p[0], int) and p[0] >= 1 and isinstance(p[1], str) and p[1] for p in pairs
    )
    if not ok or len({i for i, _ in pairs}) != 3 or len({n for _, n in pairs}) != 3:
        raise ValueError(
            "categories must name the 3 shape kinds (square, circle, triangle) with unique names and "
            f"positive ids: 3 names or 3 (id, name) pairs, got {categories!r}"
        )
    return tuple(pairs)


def main(argv=None) -> int:
    """Command line entry: parse ``argv`` (default ``sys.argv[1:]``), export, print the json path."""
    parser = argparse.ArgumentParser(
        prog="mrcnn-edu export-shapes",
        description="Write the synthetic shapes set as COCO (PNG images + annotations json).",
    )
    parser.add_argument("--out", required=True, help="output folder (e.g. data/generated/shapes)")
    parser.add_argument("--num-images", type=int, default=100, help="number of images (default 100)")
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=[128, 128], metavar="N",
        help="image size: one number (square) or HEIGHT WIDTH (default 128 128)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", default="train", help="split name (default train)")
    parser.add_argument(
        "--categories", metavar="NAMES",
        help="your own names (and ids) for square, circle, triangle: 'cat,dog,bird' or "
        "'5:cat,17:dog,90:bird' (default 1:square,2:circle,3:triangle)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        parser.error(f"--image-size takes one or two numbers, got {len(args.image_size)}")
    size = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    try:
        categories = parse_categories(args.categories) if args.categories else None
        path = export_shapes_coco(args.out, args.num_images, tuple(size), seed=args.seed,
                                  split_name=args.split, categories=categories)  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
