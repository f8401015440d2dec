"""Tests of the data layer: shapes data set, COCO loading and export, transforms, collate, target checks.

References are independent of the code under test: hand-made COCO json (polygons whose pixel areas are known,
run lengths counted by hand), numpy for tight boxes, pycocotools' COCOeval on the exported files.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from mrcnn_edu.boxes import masks_to_boxes
from mrcnn_edu.data import (
    CLASS_NAMES,
    CocoDataset,
    Compose,
    DataError,
    RandomHorizontalFlip,
    ShapesDataset,
    collate,
    export_shapes_coco,
    horizontal_flip,
    load_coco_ground_truth,
    make_shapes_image,
    validate_target,
    validate_targets,
)
from mrcnn_edu.data.coco import decode_segmentation
from mrcnn_edu.data.export import main as export_main
from mrcnn_edu.data.transforms import degenerate_boxes


def _numpy_tight_boxes(masks: torch.Tensor) -> np.ndarray:
    """x1, y1, x2 (exclusive), y2 (exclusive) of each mask's pixels, computed with numpy."""
    out = []
    for m in masks.numpy():
        rows, cols = np.nonzero(m)
        out.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return np.array(out, dtype=np.float32).reshape(-1, 4)


def _items_equal(a, b) -> bool:
    (ia, ta), (ib, tb) = a, b
    return torch.equal(ia, ib) and all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "masks"))


# ---------------------------------------------------------------------------------------------------------
# Shapes data set


def test_shapes_deterministic_by_seed_and_index():
    small, large = ShapesDataset(4, (40, 48), seed=7), ShapesDataset(20, (40, 48), seed=7)
    assert _items_equal(small[3], large[3])  # item 3 does not depend on how many items exist
    assert _items_equal(small[2], ShapesDataset(4, (40, 48), seed=7)[2])
    assert not torch.equal(small[3][0], ShapesDataset(4, (40, 48), seed=8)[3][0])
    assert not torch.equal(small[0][0], small[1][0])


@pytest.mark.parametrize("size", [(64, 64), (40, 72), (97, 33)])
def test_shapes_item_format_and_masks(size):
    h, w = size
    ds = ShapesDataset(12, size, seed=3)
    clean_images = 0
    for index in range(len(ds)):
        image, target = ds[index]
        n = target["labels"].shape[0]
        assert image.shape == (3, h, w) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (n, h, w)
        assert n >= 1 and ((target["labels"] >= 1) & (target["labels"] <= 3)).all()
        masks = target["masks"]
        assert masks.sum(0).max() <= 1  # visible pixels only: no pixel belongs to two objects
        assert (masks.flatten(1).sum(1) >= 20).all()  # min_visible
        np.testing.assert_array_equal(target["boxes"].numpy(), _numpy_tight_boxes(masks))
        assert torch.equal(target["boxes"], masks_to_boxes(masks))
        for m in masks.bool():  # every visible pixel of a shape shows that shape's single colour
            colours = image[:, m]
            assert torch.equal(colours, colours[:, :1].expand_as(colours))
        if target["num_hidden"] == 0:  # then everything outside the masks is the plain background
            rest = image[:, masks.sum(0) == 0]
            assert torch.equal(rest, rest[:, :1].expand_as(rest))
            clean_images += 1
    assert clean_images > 0


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        ShapesDataset(-1)
    with pytest.raises(ValueError, match="height and width"):
        ShapesDataset(2, (8, 64))[0]
    with pytest.raises(ValueError, match="max_objects"):
        make_shapes_image(32, 32, torch.Generator().manual_seed(0), max_objects=0)
    with pytest.raises(IndexError):
        ShapesDataset(2)[2]


# ---------------------------------------------------------------------------------------------------------
# COCO export and round trip


def test_export_then_load_equals_shapes(tmp_path):
    size, seed = (48, 64), 5
    json_path = export_shapes_coco(tmp_path, 6, size, seed=seed, split_name="val")
    assert json_path == tmp_path / "annotations" / "instances_val.json"
    coco_ds = CocoDataset(json_path, tmp_path / "val")
    shapes = ShapesDataset(6, size, seed=seed)
    assert len(coco_ds) == 6
    assert coco_ds.class_names == CLASS_NAMES
    assert coco_ds.cat_id_to_label == {1: 1, 2: 2, 3: 3}
    for i in range(6):
        (image, target), (ref_image, ref) = coco_ds[i], shapes[i]
        assert target["image_id"] == i + 1
        assert torch.equal(target["masks"], ref["masks"])
        assert torch.equal(target["boxes"], ref["boxes"])
        assert torch.equal(target["labels"], ref["labels"])
        assert not target["iscrowd"].any() and target["iscrowd"].shape == ref["labels"].shape
        assert (image - ref_image).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only

    data = json.loads(json_path.read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert [c["name"] for c in data["categories"]] == ["square", "circle", "triangle"]
    ids = [a["id"] for a in data["annotations"]]
    assert min(ids) == 1 and len(set(ids)) == len(ids)
    for ann in data["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
        assert ann["area"] == int(mask_utils.decode(ann["segmentation"]).sum())


def test_exported_json_evaluates_to_perfect_ap(tmp_path):
    """COCOeval of the ground truth against itself: an independent check that the files are valid COCO."""
    json_path = export_shapes_coco(tmp_path, 3, (40, 40), seed=2)
    gt = load_coco_ground_truth(json_path)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
         "bbox": a["bbox"], "score": 1.0}
        for a in gt.dataset["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        for iou_type in ("segm", "bbox"):
            ev = COCOeval(gt, gt.loadRes(results), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]


def test_export_is_deterministic(tmp_path):
    a = export_shapes_coco(tmp_path / "a", 3, (32, 40), seed=4)
    b = export_shapes_coco(tmp_path / "b", 3, (32, 40), seed=4)
    assert a.read_text() == b.read_text()
    png = ("train", "000002.png")
    assert (tmp_path / "a").joinpath(*png).read_bytes() == (tmp_path / "b").joinpath(*png).read_bytes()


def test_export_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        export_shapes_coco(tmp_path, -1)
    with pytest.raises(ValueError, match="image_size"):
        export_shapes_coco(tmp_path, 1, (32,))
    with pytest.raises(ValueError, match="split_name"):
        export_shapes_coco(tmp_path, 1, split_name="../x")


def test_export_main(tmp_path, capsys):
    out = tmp_path / "cli"
    assert export_main(["--out", str(out), "--num-images", "2", "--image-size", "24", "40", "--seed", "1",
                        "--split", "val"]) == 0
    json_path = out / "annotations" / "instances_val.json"
    assert capsys.readouterr().out.strip() == str(json_path)
    data = json.loads(json_path.read_text())
    assert [(i["height"], i["width"]) for i in data["images"]] == [(24, 40), (24, 40)]
    with Image.open(out / "val" / "000001.png") as img:
        assert img.size == (40, 24) and img.mode == "RGB"
    export_main(["--out", str(out), "--num-images", "1", "--image-size", "20"])
    assert json.loads((out / "annotations" / "instances_train.json").read_text())["images"][0]["height"] == 20
    with pytest.raises(SystemExit):
        export_main(["--out", str(out), "--image-size", "1", "2", "3"])
    with pytest.raises(SystemExit):
        export_main(["--num-images", "1"])  # --out is required


# ---------------------------------------------------------------------------------------------------------
# Hand-made COCO json

H, W = 20, 30


def _column_major_runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts, by hand: alternate runs of 0s and 1s in column-major order, 0s first."""
    runs, current, length = [], 0, 0
    for v in mask.flatten(order="F"):
        if v != current:
            runs.append(length)
            current, length = v, 0
        length += 1
    runs.append(length)
    return runs


def _rect(y1, y2, x1, x2) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


RLE_MASK = _rect(2, 6, 15, 25)  # compressed RLE object
CROWD_MASK = _rect(10, 15, 20, 25)  # uncompressed RLE crowd object


def _write_hand_made(tmp_path, **changes):
    """Three images (ids listed out of order, one without annotations), categories 90, 1, 5."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image_dir / "a.png")
    Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(image_dir / "gray.png")  # mode L
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image_dir / "empty.png")
    compressed = mask_utils.encode(np.asfortranarray(RLE_MASK))
    data = {
        "images": [
            {"id": 7, "file_name": "a.png", "height": H, "width": W},
            {"id": 3, "file_name": "gray.png", "height": H, "width": W},
            {"id": 11, "file_name": "empty.png", "height": H, "width": W},
        ],
        "categories": [
            {"id": 90, "name": "zebra"},
            {"id": 1, "name": "person"},
            {"id": 5, "name": "car"},
        ],
        "annotations": [
            # polygon: the rectangle x 2..12, y 3..9 covers pixel columns 2..11 and rows 3..8 = 60 pixels
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 3, 10, 6], "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 9, 2, 9]]},
            # two polygons (unioned: 4 + 9 pixels)
            {"id": 2, "image_id": 7, "category_id": 90, "bbox": [0, 12, 8, 3], "iscrowd": 0,
             "segmentation": [[0, 12, 2, 12, 2, 14, 0, 14], [5, 12, 8, 12, 8, 15, 5, 15]]},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [15, 2, 10, 4], "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": compressed["counts"].decode("ascii")}},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [20, 10, 5, 5], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _column_major_runs(CROWD_MASK)}},
            # zero-width box: kept here, for the caller (validate_target) to drop
            {"id": 5, "image_id": 3, "category_id": 90, "bbox": [4, 4, 0, 3], "iscrowd": 0,
             "segmentation": [[4, 4, 5, 4, 5, 7, 4, 7]]},
        ],
    }
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, image_dir


def test_hand_made_polygons_rle_crowd(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    ds = CocoDataset(path, image_dir)
    assert ds.image_ids == [3, 7, 11]  # sorted by id
    _, target = ds[1]  # image 7
    assert target["image_id"] == 7
    masks = target["masks"].numpy()
    assert masks.shape == (4, H, W) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], _rect(3, 9, 2, 12))
    assert masks[0].sum() == 60
    np.testing.assert_array_equal(masks[1], _rect(12, 14, 0, 2) | _rect(12, 15, 5, 8))
    assert masks[1].sum() == 4 + 9
    np.testing.assert_array_equal(masks[2], RLE_MASK)
    np.testing.assert_array_equal(masks[3], CROWD_MASK)
    assert target["iscrowd"].tolist() == [False, False, False, True]
    # labels: category ids 1, 5, 90 -> 1, 2, 3
    assert target["labels"].tolist() == [2, 3, 1, 1]
    assert target["labels"].dtype == torch.int64
    expected_boxes = [[2, 3, 12, 9], [0, 12, 8, 15], [15, 2, 25, 6], [20, 10, 25, 15]]
    assert target["boxes"].tolist() == expected_boxes
    # the json boxes are the tight boxes of these masks
    np.testing.assert_array_equal(target["boxes"].numpy(), _numpy_tight_boxes(target["masks"]))


def test_category_remapping(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    ds = CocoDataset(path, image_dir)
    assert ds.class_names == ("background", "person", "car", "zebra")
    assert ds.cat_id_to_label == {1: 1, 5: 2, 90: 3}
    assert ds.label_to_cat_id == {1: 1, 2: 5, 3: 90}
    assert ds.num_classes == 4


def test_categories_of_another_set_number_the_labels(tmp_path):
    """A validation set numbers its labels with the training set's categories, whatever it lacks."""
    path, image_dir = _write_hand_made(tmp_path)
    train = CocoDataset(path, image_dir)
    assert train.categories == ((1, "person"), (5, "car"), (90, "zebra"))
    data = json.loads(path.read_text())
    data["categories"] = [c for c in data["categories"] if c["id"] != 1]  # no person in the val set
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 1]
    val_path = tmp_path / "val.json"
    val_path.write_text(json.dumps(data))
    alone = CocoDataset(val_path, image_dir)
    assert alone.class_names == ("background", "car", "zebra")  # numbered on its own: car would be 1
    val = CocoDataset(val_path, image_dir, categories=train.categories)
    assert val.class_names == train.class_names and val.num_classes == 4
    assert val.cat_id_to_label == train.cat_id_to_label
    assert val[1][1]["labels"].tolist() == [2, 3]  # car 2, zebra 3, as in training

    data["categories"].append({"id": 33, "name": "kite"})
    val_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"val\.json.*category ids \[33\].*not in the training"):
        CocoDataset(val_path, image_dir, categories=train.categories)
    data["categories"] = [{"id": 5, "name": "truck"}, {"id": 90, "name": "zebra"}]
    val_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="category id 5 is 'truck'.*'car'"):
        CocoDataset(val_path, image_dir, categories=train.categories)
    with pytest.raises(ValueError, match="categories"):
        CocoDataset(path, image_dir, categories=[(1, "person"), (1, "car")])


def test_drop_crowd_option(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    _, target = CocoDataset(path, image_dir, include_crowd=False)[1]
    assert target["labels"].tolist() == [2, 3, 1]
    assert not target["iscrowd"].any()
    assert target["masks"].shape == (3, H, W)


def test_image_without_annotations_and_gray_image(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    ds = CocoDataset(path, image_dir)
    image, target = ds[2]  # id 11
    assert target["image_id"] == 11 and image.shape == (3, H, W)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, H, W) and target["masks"].dtype == torch.uint8
    assert target["iscrowd"].shape == (0,) and target["iscrowd"].dtype == torch.bool
    assert validate_target(image, target)["boxes"].shape == (0, 4)

    image, target = ds[0]  # id 3: a grayscale PNG, read as RGB with three equal channels
    with Image.open(image_dir / "gray.png") as img:
        pixels = torch.from_numpy(np.array(img)).float() / 255
    assert image.dtype == torch.float32
    for c in range(3):
        assert torch.equal(image[c], pixels)


def test_zero_area_box_kept_then_dropped_by_validate_target(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    image, target = CocoDataset(path, image_dir)[0]
    assert target["boxes"].tolist() == [[4, 4, 4, 7]]  # kept as the json says
    with pytest.warns(UserWarning, match="dropped 1 of 1"):
        clean = validate_target(image, target)
    assert clean["boxes"].shape == (0, 4) and clean["masks"].shape == (0, H, W)
    assert clean["iscrowd"].shape == (0,) and clean["image_id"] == 3


def test_transforms_applied_and_dataloader(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    plain = CocoDataset(path, image_dir)
    flipped = CocoDataset(path, image_dir, transforms=RandomHorizontalFlip(p=1.0))
    image, target = flipped[1]
    assert torch.equal(image, plain[1][0].flip(-1))
    assert torch.equal(target["masks"], plain[1][1]["masks"].flip(-1))
    loader = torch.utils.data.DataLoader(plain, batch_size=2, collate_fn=collate)
    sizes = [(len(images), len(targets)) for images, targets in loader]
    assert sizes == [(2, 2), (1, 1)]
    assert plain[-1][1]["image_id"] == 11


def test_decode_segmentation_errors():
    with pytest.raises(ValueError, match="polygon"):
        decode_segmentation([[1, 2, 3]], H, W)
    with pytest.raises(ValueError, match="size"):
        decode_segmentation({"size": [H + 1, W], "counts": [H * W + W]}, H, W)
    with pytest.raises(ValueError, match="segmentation"):
        decode_segmentation("abc", H, W)
    with pytest.raises(ValueError, match="no polygon"):
        decode_segmentation([], H, W)
    with pytest.raises(ValueError, match="3 points"):
        decode_segmentation([[1, 1, 4, 4]], H, W)  # pycocotools would read two points as a box
    # pycocotools decodes run lengths without bounds checks: too long a total writes past the mask
    with pytest.raises(ValueError, match=f"sum to {H * W}"):
        decode_segmentation({"size": [H, W], "counts": [H * W, 50]}, H, W)
    too_long = mask_utils.frPyObjects({"size": [H, W + 5], "counts": [3, H * (W + 5) - 3]}, H, W + 5)
    with pytest.raises(ValueError, match=f"sum to {H * W}"):
        decode_segmentation({"size": [H, W], "counts": too_long["counts"].decode()}, H, W)


def test_compressed_rle_counts_are_read_back_exactly():
    from mrcnn_edu.data.coco import rle_string_counts

    for mask in (RLE_MASK, CROWD_MASK, np.ones((H, W), np.uint8), np.zeros((H, W), np.uint8)):
        rle = mask_utils.encode(np.asfortranarray(mask))
        assert rle_string_counts(rle["counts"]) == _column_major_runs(mask)


def _one_annotation(tmp_path, **changes):
    """The hand-made set with one annotation (id 9 on image 7), changed as given; returns its path."""
    ann = {"id": 9, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 6], "iscrowd": 0,
           "segmentation": [[2, 3, 12, 3, 12, 9, 2, 9]]} | changes  # fmt: skip
    return _write_hand_made(tmp_path, annotations=[ann])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"segmentation": [[2, 3, 12, 3]]}, "polygon 0 has 2 points.*3"),
        ({"segmentation": [[2, 3, 12, 3, 12, 9, 2, 9], [1, 1]]}, "polygon 1 has 1 point"),
        ({"segmentation": []}, "no polygon"),
        ({"segmentation": [[]]}, "polygon 0 has 0 points"),
        ({"segmentation": [[2, 3, 12, float("nan"), 12, 9]]}, "polygon 0.*finite"),
        ({"segmentation": [[2, 3, 12, "3", 12, 9]]}, "polygon 0.*numbers"),
        ({"segmentation": {"size": [H, W], "counts": [10, 5]}}, f"sum to {H * W}"),
        ({"segmentation": {"size": [H, W], "counts": [-5, H * W + 5]}}, "negative"),
        ({"segmentation": {"size": [H, W], "counts": [H * W / 2, H * W / 2]}}, "integers"),
        ({"segmentation": {"size": [H, W + 1], "counts": [H * (W + 1)]}}, "size"),
        ({"iscrowd": "no"}, "iscrowd must be 0 or 1.*'no'"),
        ({"iscrowd": 2}, "iscrowd must be 0 or 1"),
        ({"category_id": "2"}, "category_id must be an integer.*'2'"),
        ({"image_id": "7"}, "image_id must be an integer"),
        ({"bbox": [2, 3, float("nan"), 6]}, "bbox"),
        ({"segmentation": None}, "segmentation"),
    ],
)
def test_malformed_annotations_name_the_file_and_the_annotation(tmp_path, changes, match):
    path, image_dir = _one_annotation(tmp_path, **changes)
    with pytest.raises(DataError, match=r"instances\.json.*annotation 9.*" + match):
        CocoDataset(path, image_dir)


def test_annotation_without_segmentation_is_named_on_load(tmp_path):
    path, image_dir = _one_annotation(tmp_path)
    data = json.loads(path.read_text())
    del data["annotations"][0]["segmentation"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotation 9.*no 'segmentation'"):
        CocoDataset(path, image_dir)


@pytest.mark.parametrize(
    ("key", "changes", "match"),
    [
        ("images", {"file_name": 123}, "image 7.*file_name must be a non-empty string, got 123"),
        ("images", {"height": "abc"}, "image 7.*height must be a positive integer, got 'abc'"),
        ("images", {"width": 0}, "image 7.*width must be a positive integer"),
        ("images", {"id": "7"}, "image id must be an integer, got '7'"),
        ("categories", {"id": "90"}, "category id must be an integer, got '90'"),
        ("categories", {"name": ""}, "category 90.*name must be a non-empty string"),
    ],
)
def test_malformed_images_and_categories_name_the_file_and_the_entry(tmp_path, key, changes, match):
    path, image_dir = _write_hand_made(tmp_path)
    data = json.loads(path.read_text())
    data[key][0].update(changes)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances\.json.*" + match):
        CocoDataset(path, image_dir)


def test_duplicate_annotation_ids_are_refused(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]  # pycocotools would keep only one of them
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotation ids must be unique.*1"):
        CocoDataset(path, image_dir)


def test_a_mask_with_no_pixel_is_refused_when_read(tmp_path):
    # a valid polygon thinner than a pixel's centre: the object would train on an all-zero mask
    path, image_dir = _one_annotation(tmp_path, segmentation=[[2.1, 3, 2.3, 3, 2.3, 9, 2.1, 9]])
    ds = CocoDataset(path, image_dir)
    with pytest.raises(DataError, match=r"annotation 9.*covers no pixel"):
        ds[1]
    with pytest.raises(DataError, match=r"annotation 9.*covers no pixel"):
        ds.check()


def test_check_passes_a_clean_set_and_counts_annotations(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    ds = CocoDataset(path, image_dir)
    ds.check()
    assert ds.num_annotations == 5
    (tmp_path / "e").mkdir()
    empty, _ = _write_hand_made(tmp_path / "e", annotations=[])
    assert CocoDataset(empty, image_dir).num_annotations == 0


def test_bad_annotation_files_name_the_file(tmp_path):
    _, image_dir = _write_hand_made(tmp_path)
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="nope.json.*not found"):
        CocoDataset(missing, image_dir)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"images": [')
    with pytest.raises(ValueError, match="corrupt.json.*json"):
        CocoDataset(corrupt, image_dir)
    with pytest.raises(ValueError, match="corrupt.json"):
        load_coco_ground_truth(corrupt)
    as_list = tmp_path / "list.json"
    as_list.write_text("[]")
    with pytest.raises(ValueError, match="list.json"):
        CocoDataset(as_list, image_dir)

    path, _ = _write_hand_made(tmp_path, categories=None)
    with pytest.raises(ValueError, match="instances.json.*categories"):
        CocoDataset(path, image_dir)
    bad_ann = {"id": 9, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": []}
    path, _ = _write_hand_made(tmp_path, annotations=[bad_ann])
    with pytest.raises(ValueError, match="instances.json.*annotation 9.*category_id 2"):
        CocoDataset(path, image_dir)
    path, _ = _write_hand_made(tmp_path, annotations=[dict(bad_ann, category_id=1, image_id=99)])
    with pytest.raises(ValueError, match="annotation 9.*image_id 99"):
        CocoDataset(path, image_dir)
    path, _ = _write_hand_made(tmp_path, annotations=[dict(bad_ann, category_id=1, bbox=[0, 0, 1])])
    with pytest.raises(ValueError, match="annotation 9.*bbox"):
        CocoDataset(path, image_dir)
    path, _ = _write_hand_made(tmp_path, annotations=[dict(bad_ann, category_id=1, bbox=[0, 0, "1", 1])])
    with pytest.raises(ValueError, match="annotation 9.*bbox"):
        CocoDataset(path, image_dir)
    with pytest.raises(ValueError, match="image_dir"):
        CocoDataset(path, tmp_path / "no_such_dir")


def test_bad_segmentation_names_annotation(tmp_path):
    rle = {"size": [H, W + 1], "counts": [H * (W + 1)]}
    ann = {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": rle}
    path, image_dir = _write_hand_made(tmp_path, annotations=[ann])
    with pytest.raises(ValueError, match="instances.json.*annotation 4.*size"):
        CocoDataset(path, image_dir)[1]
    del ann["segmentation"]
    path, image_dir = _write_hand_made(tmp_path, annotations=[ann])
    with pytest.raises(ValueError, match="annotation 4.*segmentation"):
        CocoDataset(path, image_dir)[1]


def test_missing_or_unreadable_image_names_the_file(tmp_path):
    path, image_dir = _write_hand_made(tmp_path)
    ds = CocoDataset(path, image_dir)
    (image_dir / "a.png").unlink()
    with pytest.raises(DataError, match="a.png.*not found"):
        ds[1]
    with pytest.raises(DataError, match=r"1 of 3 image files.*a\.png"):
        ds.check()
    (image_dir / "a.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="a.png"):
        ds[1]
    Image.fromarray(np.zeros((H + 2, W, 3), dtype=np.uint8)).save(image_dir / "a.png")
    with pytest.raises(ValueError, match="a.png.*22x30"):
        ds[1]
    assert ds.load_target(1)["labels"].shape == (4,)  # targets alone need no image file


# ---------------------------------------------------------------------------------------------------------
# Transforms, collate, validate_target


def test_horizontal_flip_hand_case():
    image = torch.arange(2 * 10, dtype=torch.float32).reshape(1, 2, 10).expand(3, 2, 10)
    masks = torch.zeros((1, 2, 10), dtype=torch.uint8)
    masks[0, :, 1:4] = 1  # columns 1..3: box x 1..4
    target = {"boxes": torch.tensor([[1.0, 0.0, 4.0, 2.0]]), "masks": masks, "labels": torch.tensor([2])}
    image2, target2 = horizontal_flip(image, target)
    assert target2["boxes"].tolist() == [[6.0, 0.0, 9.0, 2.0]]  # x1' = 10 - 4, x2' = 10 - 1
    assert target2["masks"][0, 0].nonzero().flatten().tolist() == [6, 7, 8]
    assert image2[0, 0].tolist() == list(range(9, -1, -1))
    assert target2["labels"] is target["labels"]
    assert target["boxes"].tolist() == [[1.0, 0.0, 4.0, 2.0]]  # input untouched


def test_flip_twice_is_identity_and_box_follows_mask():
    for index in range(4):
        image, target = ShapesDataset(4, (36, 52), seed=11)[index]
        image2, target2 = horizontal_flip(image, target)
        assert torch.equal(target2["boxes"], masks_to_boxes(target2["masks"]))
        np.testing.assert_array_equal(target2["boxes"].numpy(), _numpy_tight_boxes(target2["masks"]))
        image3, target3 = horizontal_flip(image2, target2)
        assert torch.equal(image3, image)
        for key in ("boxes", "masks", "labels"):
            assert torch.equal(target3[key], target[key])


def test_random_flip_probability_and_generator():
    image, target = ShapesDataset(1, (20, 24))[0]
    assert RandomHorizontalFlip(p=0.0)(image, target)[0] is image
    assert torch.equal(RandomHorizontalFlip(p=1.0)(image, target)[0], image.flip(-1))

    def decisions(seed):
        flip = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(seed))
        return [not torch.equal(flip(image, target)[0], image) for _ in range(64)]

    assert decisions(1) == decisions(1)
    assert 10 < sum(decisions(1)) < 54
    assert decisions(1) != decisions(2)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p must"):
            RandomHorizontalFlip(p)


def test_compose():
    image, target = ShapesDataset(1, (20, 24))[0]
    twice = Compose([horizontal_flip, horizontal_flip])
    out_image, out_target = twice(image, target)
    assert torch.equal(out_image, image) and torch.equal(out_target["masks"], target["masks"])
    calls = []
    def record(name):
        return lambda i, t: (calls.append(name) or i, t)

    Compose([record("a"), record("b")])(image, target)
    assert calls == ["a", "b"]
    with pytest.raises(ValueError, match=r"transforms\[1\]"):
        Compose([horizontal_flip, 3])


def test_collate_shapes():
    ds = ShapesDataset(5, (24, 32))
    images, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert isinstance(images, list) and isinstance(targets, list)
    assert [tuple(i.shape) for i in images] == [(3, 24, 32)] * 3
    assert [t["masks"].shape[1:] for t in targets] == [(24, 32)] * 3
    assert torch.equal(images[2], ds[2][0])
    assert collate([]) == ([], [])
    with pytest.raises(ValueError, match=r"batch\[0\]"):
        collate([torch.zeros(3, 2, 2)])


def _target(boxes, h=32, w=32):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes.shape[0]
    masks = torch.zeros((n, h, w), dtype=torch.uint8)
    for i in range(n):
        masks[i, i] = 1  # row i marks mask i, to see which survived
    return torch.rand(3, h, w), {
        "boxes": boxes,
        "labels": torch.arange(1, n + 1),
        "masks": masks,
        "iscrowd": torch.tensor([False] * n),
        "image_id": 4,
    }


def test_validate_target_keeps_good_targets_silently():
    image, target = _target([[1, 1, 5, 5], [-5, -5, 3, 3], [30, 0, 40, 32]])  # partly outside is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = validate_target(image, target, num_classes=4)
    for key in ("boxes", "labels", "masks", "iscrowd"):
        assert torch.equal(out[key], target[key])
    assert out["image_id"] == 4


def test_validate_target_drops_degenerate_boxes_with_warning():
    boxes = [[1, 1, 5, 5], [3, 3, 3, 9], [50, 50, 60, 60], [-5, -5, 3, 3], [4, 9, 8, 2], [0, 32, 8, 40]]
    image, target = _target(boxes)
    assert degenerate_boxes(target["boxes"], (32, 32)).tolist() == [False, True, True, False, True, True]
    with pytest.warns(UserWarning, match=r"targets\[2\]: dropped 4 of 6"):
        out = validate_target(image, target, name="targets[2]")
    assert out["boxes"].tolist() == [[1, 1, 5, 5], [-5, -5, 3, 3]]
    assert out["labels"].tolist() == [1, 4]
    assert out["masks"].shape == (2, 32, 32)
    assert out["masks"][1, 3].all() and out["masks"][0, 0].all()  # masks 0 and 3 kept, in order
    assert out["iscrowd"].shape == (2,)
    assert target["boxes"].shape == (6, 4)  # input untouched


def test_validate_targets_checks_a_batch_as_each_item_and_names_the_item():
    good = _target([[1, 1, 5, 5], [2, 2, 9, 9]])
    degenerate = _target([[1, 1, 5, 5], [3, 3, 3, 9]])
    image, one = _target([[1, 1, 5, 5]])
    empty = image, {k: v[:0] if torch.is_tensor(v) else v for k, v in one.items()}  # no objects
    images, targets = zip(good, degenerate, empty, strict=True)
    with pytest.warns(UserWarning, match=r"targets\[1\]: dropped 1 of 2") as caught:
        out = validate_targets(images, targets, num_classes=4)
    assert len(caught) == 1  # the other two items are fine
    for checked, item in zip(out, (good, degenerate, empty), strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = validate_target(*item, num_classes=4)
        assert all(torch.equal(checked[k], alone[k]) for k in ("boxes", "labels", "masks", "iscrowd"))
    wrong = _target([[1, 1, 5, 5], [2, 2, 9, 9]])
    wrong[1]["labels"] = torch.tensor([1, 9])
    with pytest.raises(ValueError, match=r"targets\[2\]\['labels'\] must be < num_classes=4, got 9"):
        validate_targets([good[0], good[0], wrong[0]], [good[1], good[1], wrong[1]], num_classes=4)
    with pytest.raises(ValueError, match="one entry per item"):
        validate_targets([good[0]], [good[1], good[1]])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: t.pop("boxes"), r"target\['boxes'\] is missing"),
        (lambda t: t.pop("masks"), r"target\['masks'\] is missing"),
        (lambda t: t.update(boxes=t["boxes"].long()), r"target\['boxes'\].*floating"),
        (lambda t: t.update(boxes=t["boxes"][:, :3]), r"target\['boxes'\]"),
        (lambda t: t.update(boxes=torch.full((2, 4), float("nan"))), r"target\['boxes'\] must be finite"),
        (lambda t: t.update(labels=t["labels"].float()), r"target\['labels'\].*int64"),
        (lambda t: t.update(labels=t["labels"].int()), r"target\['labels'\].*int64"),
        (lambda t: t.update(labels=t["labels"][:1]), r"target\['labels'\].*one entry per box"),
        (lambda t: t.update(labels=torch.tensor([0, 1])), r"target\['labels'\].*background"),
        (lambda t: t.update(labels=torch.tensor([1, 9])), r"target\['labels'\].*num_classes"),
        (lambda t: t.update(masks=t["masks"][:, :, :20]), r"target\['masks'\].*\[2, 32, 32\]"),
        (lambda t: t.update(masks=t["masks"][:1]), r"target\['masks'\]"),
        (lambda t: t.update(masks=t["masks"].float()), r"target\['masks'\].*uint8"),
        (lambda t: t.update(iscrowd=torch.tensor([0, 1])), r"target\['iscrowd'\].*bool"),
        (lambda t: t.update(iscrowd=torch.tensor([True])), r"target\['iscrowd'\].*one entry"),
        (lambda t: t.update(image_id=1.5), r"target\['image_id'\]"),
    ],
)
def test_validate_target_errors_name_the_field(change, match):
    image, target = _target([[1, 1, 5, 5], [2, 2, 9, 9]])
    change(target)
    with pytest.raises(ValueError, match=match):
        validate_target(image, target, num_classes=4)


def test_validate_target_bad_image_and_type():
    image, target = _target([[1, 1, 5, 5]])
    with pytest.raises(ValueError, match="image"):
        validate_target(image[:2], target)
    with pytest.raises(ValueError, match="image"):
        validate_target((image * 255).to(torch.uint8), target)
    with pytest.raises(ValueError, match="sample must be a dict"):
        validate_target(image, [target], name="sample")
    del target["masks"]
    assert validate_target(image, target, require_masks=False)["boxes"].shape == (1, 4)


# ---------------------------------------------------------------------------------------------------------
# Export with a category set of your own


def test_export_with_your_own_categories(tmp_path):
    own = [(5, "cat"), (17, "dog"), (90, "bird")]
    json_path = export_shapes_coco(tmp_path, 4, (40, 40), seed=3, categories=own)
    data = json.loads(json_path.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(5, "cat"), (17, "dog"), (90, "bird")]
    ds = CocoDataset(json_path, tmp_path / "train")
    assert ds.class_names == ("background", "cat", "dog", "bird")
    shapes = ShapesDataset(4, (40, 40), seed=3)
    for i in range(4):  # square -> cat (label 1), circle -> dog (2), triangle -> bird (3)
        assert torch.equal(ds[i][1]["labels"], shapes[i][1]["labels"])
    named = export_shapes_coco(tmp_path / "n", 1, (40, 40), categories=["a", "b", "c"])
    assert [c["id"] for c in json.loads(named.read_text())["categories"]] == [1, 2, 3]
    for bad in (["a", "b"], ["a", "a", "b"], [(0, "a"), (2, "b"), (3, "c")]):
        with pytest.raises(ValueError, match="categories"):
            export_shapes_coco(tmp_path, 1, categories=bad)


def test_parse_categories():
    from mrcnn_edu.data.export import parse_categories

    assert parse_categories("cat, dog") == [(1, "cat"), (2, "dog")]
    assert parse_categories("5:cat,17:dog") == [(5, "cat"), (17, "dog")]
    for bad in ("", "a,,b", "x:cat", "0:cat", "1:a,1:b", "a,a"):
        with pytest.raises(ValueError, match="categories"):
            parse_categories(bad)


def test_export_main_categories(tmp_path, capsys):
    out = tmp_path / "own"
    assert export_main(["--out", str(out), "--num-images", "1", "--categories", "5:cat,17:dog,90:bird"]) == 0
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["cat", "dog", "bird"]
    with pytest.raises(SystemExit) as err:
        export_main(["--out", str(out), "--categories", "cat,dog"])
    assert err.value.code == 2 and "categories" in capsys.readouterr().err
