"""Evaluation: how good are the detections? COCO AP through pycocotools, and matterport's per-image VOC AP.

A detector returns, per image, scored boxes (and masks) with class labels. Scoring them needs three steps:
decide which detection *matches* which ground-truth object (same class, overlap above an IoU threshold,
each GT matched at most once, higher scores served first); rank all detections by score and trace the
precision (matched detections / detections so far) against the recall (matched GT / all GT); summarise
the curve by its area, the *average precision* (AP).

**COCO AP** (:func:`coco_evaluate`, computed by ``pycocotools.cocoeval.COCOeval``): matching is done per
image and per category, then the detections of a category are ranked over the *whole data set*. The
precision is made non-increasing (the "envelope": at each recall, the best precision reached at that recall
or beyond) and read at 101 recall points ``0, 0.01, ..., 1``; their mean is the category's AP at that IoU
threshold. The headline **AP** averages over 10 IoU thresholds ``0.50:0.05:0.95`` and over categories
(categories without GT are left out), so it rewards tight boxes and masks. **AP50** and **AP75** use a single
threshold (AP50 is the old PASCAL VOC metric); **APs / APm / APl** only count objects of area
``< 32**2``, ``32**2 .. 96**2``, ``> 96**2`` pixels (mask area for GT; detections outside the range that match
nothing are not counted either). **AR1 / AR10 / AR100** are the recall reached with at most 1, 10, 100
detections per image (per category, as pycocotools counts), averaged over thresholds and categories.
``bbox`` matches by box IoU, ``segm`` by mask IoU (on run-length-encoded binary masks).

**Crowd GT** (``iscrowd``, COCO's regions covering many objects, such as "a crowd of people"): never
required to be found, so never a miss; a detection that falls on a crowd region (COCO: intersection over the
*detection's* area at least the threshold) and matches no ordinary GT is ignored, neither right nor wrong, and
any number of detections may fall on the same crowd.

**matterport's mAP** (:func:`compute_voc_ap`, :func:`mean_voc_ap`, as ``utils.compute_ap`` and its
notebooks): AP is computed *per image* (all classes of the image ranked together, a detection still only
matches GT of its own class) at a single IoU threshold, 0.5, masks matched by **mask IoU** (so it is a
``segm`` AP50); the precision envelope is integrated at every recall step ("all-point" interpolation, as VOC
2010+), not at 101 points; the mAP is the mean of the per-image APs, so an image with one object weighs as
much as one with twenty. Numbers from the two are not comparable: COCO AP (0.50:0.95) is usually far lower
than matterport's mAP@0.5. matterport has no crowd handling in ``compute_ap``; here ``gt_crowd`` gives the
COCO behaviour (with IoU rather than intersection over detection area; see :func:`compute_voc_ap`).

Undefined values: pycocotools writes -1 for an AP or AR with nothing to measure (no GT at all, or none in an
area range, e.g. ``APl`` on 64 x 64 images); here they are ``float('nan')``, so they cannot be averaged by
mistake. An image without (non-crowd) GT has no recall, so its VOC AP is NaN too.

Shape glossary
    N: detections (predictions) of one image
    G: ground-truth objects of one image
    K: object classes; labels are ``1..K`` (0 is background and never appears in a prediction)
    H, W: image height and width in pixels
    T: detections of the whole data set (for :func:`precision_recall`)

Inputs are the model's output and the dataset's targets, one dict per image:
    prediction: ``boxes`` float ``[N, 4]`` ``(x1, y1, x2, y2)`` pixels, ``labels`` int64 ``[N]`` in ``1..K``,
        ``scores`` float ``[N]``, ``masks`` float ``[N, 1, H, W]`` or ``[N, H, W]`` probabilities (optional
        for box-only evaluation). Float masks count a pixel as inside at ``>= mask_threshold`` (0.5, as
        matterport's ``unmold_mask``); bool or integer masks are used as given (non-zero is inside).
    target: ``boxes`` float ``[G, 4]``, ``labels`` int ``[G]``, ``masks`` uint8 ``[G, H, W]`` (optional for
        box-only evaluation), optional ``iscrowd`` bool ``[G]``, optional ``image_id`` (int; by default the
        image's position in the list).
Tensors may live on any device; evaluation runs on the CPU (pycocotools is CPU code), results are CPU.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ._checks import check_boxes, check_size, check_tensor
from .boxes import box_area, box_convert, box_iou
from .masks import mask_iou

__all__ = [
    "to_coco_gt",
    "to_coco_results",
    "coco_evaluate",
    "format_table",
    "average_precision",
    "compute_voc_ap",
    "mean_voc_ap",
    "precision_recall",
    "plot_precision_recall",
]

#: The columns of :func:`format_table`.
_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_TABLE_TYPES = ("bbox", "segm")


# ------------------------------------------------------------------------------------------ input checks


def _check_list(name: str, items) -> list:
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ValueError(f"{name} must be a list of dicts (one per image), got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"{name}[{i}] must be a dict, got {type(item).__name__}")
    return list(items)


def _key_namer(name):
    """A function from a dict key to the name errors report: ``predictions[3]['boxes']`` for a list entry,
    or ``name`` itself when it is already such a function (``compute_voc_ap`` reports ``pred_boxes``)."""
    return name if callable(name) else (lambda key: f"{name}[{key!r}]")


def _get(key_name, d: Mapping, key: str) -> torch.Tensor:
    if d.get(key) is None:
        raise ValueError(f"{key_name(key)} is required, got none")
    return d[key]


def _same_length(name: str, t: torch.Tensor, n: int, ref: str) -> None:
    if t.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (as {ref}), got shape {tuple(t.shape)}")


def _binary_masks(name: str, masks, n: int, threshold: float) -> torch.Tensor:
    """``[N, 1, H, W]`` or ``[N, H, W]`` masks as a CPU bool ``[N, H, W]``."""
    check_tensor(name, masks, ndim=(3, 4))
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"{name} must be [N, 1, H, W] or [N, H, W], got shape {tuple(masks.shape)}")
        masks = masks[:, 0]
    _same_length(name, masks, n, "its boxes")
    masks = masks.detach().cpu()
    return masks >= threshold if masks.is_floating_point() else masks != 0


def _prediction(name, pred: Mapping, need_masks: bool, threshold: float) -> dict:
    """One prediction dict, checked, on the CPU, masks binarised (``None`` when absent and not needed).

    name: the argument's name for error messages, or a function from a key to the name to report.
    """
    key_name = _key_namer(name)
    boxes = check_boxes(key_name("boxes"), _get(key_name, pred, "boxes")).detach().cpu()
    labels = check_tensor(key_name("labels"), _get(key_name, pred, "labels"), ndim=1, kind="int").cpu()
    scores = check_tensor(key_name("scores"), _get(key_name, pred, "scores"), ndim=1, kind="float")
    scores = scores.detach().cpu()
    _same_length(key_name("labels"), labels, boxes.shape[0], key_name("boxes"))
    _same_length(key_name("scores"), scores, boxes.shape[0], key_name("boxes"))
    masks = None
    if need_masks or pred.get("masks") is not None:
        masks = _binary_masks(key_name("masks"), _get(key_name, pred, "masks"), boxes.shape[0], threshold)
    return {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}


def _target(name, target: Mapping, need_masks: bool) -> dict:
    """One target dict, checked, on the CPU; ``iscrowd`` filled with False when absent (``name``: as
    :func:`_prediction`)."""
    key_name = _key_namer(name)
    boxes = check_boxes(key_name("boxes"), _get(key_name, target, "boxes")).detach().cpu()
    labels = check_tensor(key_name("labels"), _get(key_name, target, "labels"), ndim=1, kind="int").cpu()
    _same_length(key_name("labels"), labels, boxes.shape[0], key_name("boxes"))
    masks = None
    if need_masks or target.get("masks") is not None:
        masks = check_tensor(key_name("masks"), _get(key_name, target, "masks"), ndim=3).detach().cpu() != 0
        _same_length(key_name("masks"), masks, boxes.shape[0], key_name("boxes"))
    crowd = target.get("iscrowd")
    if crowd is None:
        crowd = torch.zeros(boxes.shape[0], dtype=torch.bool)
    else:
        crowd = check_tensor(key_name("iscrowd"), crowd, ndim=1, kind="index").cpu() != 0
        _same_length(key_name("iscrowd"), crowd, boxes.shape[0], key_name("boxes"))
    return {"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": crowd}


def _pairs(predictions, targets) -> tuple[list, list]:
    predictions = _check_list("predictions", predictions)
    targets = _check_list("targets", targets)
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must have one entry per image each, got {len(predictions)} "
            f"predictions and {len(targets)} targets"
        )
    return predictions, targets


def _image_ids(targets: list) -> list[int]:
    ids = [int(t["image_id"]) if "image_id" in t else i for i, t in enumerate(targets)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"targets must have distinct 'image_id's (default: the list position), got {ids}")
    return ids


def _category_id(label: int, label_to_cat_id) -> int:
    if label_to_cat_id is None:
        return label
    try:
        return int(label_to_cat_id[label])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"label_to_cat_id has no category id for label {label}") from None


def _encode(masks: torch.Tensor) -> list[dict]:
    """Binary ``[N, H, W]`` masks as COCO run-length encodings, ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    # pycocotools reads column-major [H, W, N] uint8 (its RLE runs go down the columns).
    array = np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


@contextlib.contextmanager
def _maybe_quiet(quiet: bool):
    """pycocotools prints progress ("creating index...") on stdout; swallow it when ``quiet``."""
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield


def _nan_if_undefined(value: float) -> float:
    return float("nan") if value < 0 else float(value)


# ----------------------------------------------------------------------------------------------- COCO


def to_coco_gt(
    targets: Sequence[Mapping],
    image_sizes: Sequence[Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
    label_to_cat_id=None,
    quiet: bool = True,
):
    """The ground truth as an in-memory ``pycocotools.coco.COCO`` object (no JSON file).

    targets: one dict per image (see the module docstring): ``boxes [G, 4]``, ``labels [G]``, optional
        ``masks [G, H, W]`` (uint8 or bool), ``iscrowd [G]``, ``image_id``.
    image_sizes: ``(height, width)`` per image; None takes them from the masks (then every target needs
        ``masks``, which keep their ``[0, H, W]`` shape when the image has no objects).
    class_names: names indexed by label, entry 0 the background (matterport's ``class_names``, e.g.
        ``("BG", "square", "circle", "triangle")``), giving categories ``1..K``; None makes one category per
        label found in ``targets`` (named ``class_<label>``).
    label_to_cat_id: a dict (or list) mapping each label to its COCO category id, e.g. a ``CocoDataset``'s
        ``label_to_cat_id`` to write real COCO ids; None keeps the label as the id.
    Each annotation gets: ``bbox`` the target box as ``[x, y, w, h]``; ``area`` the mask's pixel count
    (the box area when there are no masks), which decides small/medium/large; ``segmentation`` the mask as
    RLE; ``iscrowd``; ids ``1, 2, ...`` (pycocotools treats an annotation id 0 as "unmatched").
    Returns ``pycocotools.coco.COCO`` with ``dataset`` and the index built.
    """
    from pycocotools.coco import COCO

    targets = _check_list("targets", targets)
    image_ids = _image_ids(targets)
    if image_sizes is not None and len(image_sizes) != len(targets):
        raise ValueError(
            f"image_sizes must have {len(targets)} entries (one per target), got {len(image_sizes)}"
        )
    checked = [_target(f"targets[{i}]", t, need_masks=image_sizes is None) for i, t in enumerate(targets)]

    if class_names is not None:
        labels = range(1, len(class_names))
        names = {k: str(class_names[k]) for k in labels}
    else:
        labels = sorted({int(v) for t in checked for v in t["labels"].tolist()})
        names = {k: f"class_{k}" for k in labels}
    categories = [{"id": _category_id(k, label_to_cat_id), "name": names[k]} for k in labels]

    images, annotations = [], []
    for i, (t, image_id) in enumerate(zip(checked, image_ids, strict=True)):
        if image_sizes is not None:
            h, w = check_size(f"image_sizes[{i}]", image_sizes[i])
        else:
            h, w = t["masks"].shape[1:]
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        if t["masks"] is not None:
            if tuple(t["masks"].shape[1:]) != (h, w):
                raise ValueError(
                    f"targets[{i}]['masks'] must be [G, {h}, {w}] (the image size), "
                    f"got {tuple(t['masks'].shape)}"
                )
            rles = _encode(t["masks"])
            areas = t["masks"].sum(dim=(1, 2)).tolist()
        else:
            rles = [None] * t["boxes"].shape[0]
            areas = box_area(t["boxes"]).tolist()
        xywh = box_convert(t["boxes"].double(), "xyxy", "xywh").tolist()
        for box, label, crowd, area, rle in zip(
            xywh, t["labels"].tolist(), t["iscrowd"].tolist(), areas, rles, strict=True
        ):
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": _category_id(label, label_to_cat_id),
                "bbox": box,
                "area": float(area),
                "iscrowd": int(crowd),
            }
            if rle is not None:
                ann["segmentation"] = rle
            annotations.append(ann)

    coco = COCO()
    coco.dataset = {"info": {}, "images": images, "categories": categories, "annotations": annotations}
    with _maybe_quiet(quiet):
        coco.createIndex()
    return coco


def to_coco_results(
    predictions: Sequence[Mapping],
    image_ids: Sequence[int],
    label_to_cat_id=None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Detections as a COCO results list (what ``COCO.loadRes`` reads, and what a results JSON holds).

    predictions: one dict per image (see the module docstring); ``masks`` optional.
    image_ids: the COCO image id of each prediction dict.
    label_to_cat_id: a dict (or list) from label to COCO category id; None keeps the label.
    mask_threshold: float masks are inside where ``>= mask_threshold``.
    Returns one dict per detection: ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` (floats),
    ``score`` (float) and, when the prediction has masks, ``segmentation`` (RLE dict: ``size [H, W]`` and
    ``counts`` as str). pycocotools evaluates ``bbox`` from a list whose first entry has a ``bbox``, even when
    it also has masks; :func:`coco_evaluate` therefore splits the two.
    """
    predictions = _check_list("predictions", predictions)
    if len(image_ids) != len(predictions):
        raise ValueError(
            f"image_ids must have {len(predictions)} entries (one per prediction), got {len(image_ids)}"
        )
    results = []
    for i, (pred, image_id) in enumerate(zip(predictions, image_ids, strict=True)):
        p = _prediction(f"predictions[{i}]", pred, need_masks=False, threshold=mask_threshold)
        xywh = box_convert(p["boxes"].double(), "xyxy", "xywh").tolist()
        rles = _encode(p["masks"]) if p["masks"] is not None else [None] * len(xywh)
        for box, label, score, rle in zip(
            xywh, p["labels"].tolist(), p["scores"].tolist(), rles, strict=True
        ):
            result = {
                "image_id": int(image_id),
                "category_id": _category_id(label, label_to_cat_id),
                "bbox": box,
                "score": float(score),
            }
            if rle is not None:
                result["segmentation"] = rle
            results.append(result)
    return results


def _load_results(coco_gt, results: list[dict], iou_type: str):
    """``coco_gt.loadRes`` on the results of one IoU type (it cannot load an empty list)."""
    from pycocotools.coco import COCO

    drop = "segmentation" if iou_type == "bbox" else "bbox"
    # Copies: loadRes writes ids and areas into the dicts it is given.
    anns = [{k: v for k, v in r.items() if k != drop} for r in results]
    if anns:
        return coco_gt.loadRes(anns)
    empty = COCO()
    empty.dataset = {
        "info": {},
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    empty.createIndex()
    return empty


def _summary(evaluator, max_detections: int) -> dict[str, float]:
    """The 12 numbers of ``COCOeval.summarize()``, read from ``evaluator.eval`` (also right when
    ``max_detections != 100``, where ``summarize`` reports -1 for AP), -1 turned into NaN.

    ``params.maxDets`` must hold 1, 10 and ``max_detections``; found by value, as pycocotools sorts them.
    """
    p = evaluator.params
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, categories, areas, max dets]
    recall = evaluator.eval["recall"]  # [iou thresholds, categories, areas, max dets]
    areas = {label: j for j, label in enumerate(p.areaRngLbl)}

    def mean(values: np.ndarray) -> float:
        defined = values[values > -1]
        return float(defined.mean()) if defined.size else float("nan")

    def ap(iou: float | None = None, area: str = "all") -> float:
        s = precision[..., areas[area], p.maxDets.index(max_detections)]
        if iou is not None:
            s = s[np.isclose(p.iouThrs, iou)]
        return mean(s)

    def ar(max_dets: int, area: str = "all") -> float:
        return mean(recall[:, :, areas[area], p.maxDets.index(max_dets)])

    return {
        "AP": ap(),
        "AP50": ap(0.5),
        "AP75": ap(0.75),
        "APs": ap(area="small"),
        "APm": ap(area="medium"),
        "APl": ap(area="large"),
        "AR1": ar(1),
        "AR10": ar(10),
        f"AR{max_detections}": ar(max_detections),
        "ARs": ar(max_detections, "small"),
        "ARm": ar(max_detections, "medium"),
        "ARl": ar(max_detections, "large"),
    }


def _per_class(evaluator, coco_gt, max_detections: int) -> dict[str, float]:
    """AP (0.50:0.95, all areas, most detections) of each category, by name."""
    precision = evaluator.eval["precision"]
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        s = precision[:, :, k, 0, evaluator.params.maxDets.index(max_detections)]  # all areas
        defined = s[s > -1]
        out[names[cat_id]] = float(defined.mean()) if defined.size else float("nan")
    return out


def coco_evaluate(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    image_sizes: Sequence[Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
    iou_types: Sequence[str] = ("bbox", "segm"),
    max_detections: int = 100,
    mask_threshold: float = 0.5,
    per_class: bool = False,
    quiet: bool = True,
) -> dict[str, dict]:
    """COCO AP/AR of ``predictions`` against ``targets``, by ``pycocotools.cocoeval.COCOeval``.

    predictions, targets: equally long lists, one dict per image (see the module docstring). ``segm``
        needs ``masks`` in both, of the image's size.
    image_sizes: ``(height, width)`` per image; None takes them from the target masks.
    class_names: names indexed by label (entry 0 background); None: one category per label in the targets
        (a category without GT has no AP and is left out of the means, as in pycocotools).
    iou_types: any of ``"bbox"`` (box IoU) and ``"segm"`` (mask IoU).
    max_detections: most detections counted per image and category (the best-scoring; COCO's 100).
    mask_threshold: float masks are inside where ``>= mask_threshold``.
    per_class: also return ``"per_class": {name: AP}`` in each IoU type's dict.
    quiet: swallow pycocotools' prints; False lets them through and prints its summary table
        (whose AP line is only right for ``max_detections=100``; the returned numbers always are).
    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR<max_detections>",
    "ARs", "ARm", "ARl"}}``, floats in 0..1, NaN where pycocotools has -1 (nothing to measure).
    """
    from pycocotools.cocoeval import COCOeval

    predictions, targets = _pairs(predictions, targets)
    for t in iou_types:
        if t not in _TABLE_TYPES:
            raise ValueError(f"iou_types must contain only 'bbox' and 'segm', got {t!r}")
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"max_detections must be a positive int, got {max_detections!r}")
    need_masks = "segm" in iou_types
    with _maybe_quiet(quiet):
        coco_gt = to_coco_gt(targets, image_sizes, class_names, quiet=quiet)
        sizes = [(img["height"], img["width"]) for img in coco_gt.dataset["images"]]
        image_ids = [img["id"] for img in coco_gt.dataset["images"]]
        checked = []
        for i, pred in enumerate(predictions):
            p = _prediction(f"predictions[{i}]", pred, need_masks=need_masks, threshold=mask_threshold)
            if not need_masks:
                p["masks"] = None  # no need to encode them
            elif tuple(p["masks"].shape[1:]) != sizes[i]:
                raise ValueError(
                    f"predictions[{i}]['masks'] must have the image size {sizes[i]}, "
                    f"got {tuple(p['masks'].shape)}"
                )
            elif targets[i].get("masks") is None:
                raise ValueError(f"targets[{i}]['masks'] is required for iou_types 'segm', got none")
            checked.append(p)
        results = to_coco_results(checked, image_ids)
        out = {}
        for iou_type in iou_types:
            evaluator = COCOeval(coco_gt, _load_results(coco_gt, results, iou_type), iouType=iou_type)
            # COCOeval sorts these and truncates each image's detections (per category) at the largest.
            evaluator.params.maxDets = sorted({1, 10, max_detections})
            evaluator.evaluate()
            evaluator.accumulate()
            if not quiet:
                evaluator.summarize()
            out[iou_type] = _summary(evaluator, max_detections)
            if per_class:
                out[iou_type]["per_class"] = _per_class(evaluator, coco_gt, max_detections)
    return out


def format_table(results: Mapping[str, Mapping[str, float]], digits: int = 3) -> str:
    """A small aligned text table of :func:`coco_evaluate`'s results: a row per IoU type (``bbox``, ``segm``;
    others ignored), columns ``AP AP50 AP75 APs APm APl``, undefined (NaN) values as ``-``.
    """
    if not isinstance(results, Mapping):
        raise ValueError(f"results must be a dict as coco_evaluate returns, got {type(results).__name__}")
    width = max(digits + 2, 4)
    lines = [f"{'':<5}" + "".join(f" {k:>{width}}" for k in _AP_KEYS)]
    for iou_type in _TABLE_TYPES:
        if iou_type not in results:
            continue
        row = results[iou_type]
        cells = []
        for key in _AP_KEYS:
            value = row.get(key, float("nan"))
            cells.append("-" if value is None or math.isnan(value) else f"{value:.{digits}f}")
        lines.append(f"{iou_type:<5}" + "".join(f" {c:>{width}}" for c in cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ matterport's VOC-style AP


def _envelope_ap(precision: np.ndarray, recall: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """All-point AP of a ranked list; also the padded curve: precision ``[0, p..., 0]`` with the envelope
    applied, recall ``[0, r..., 1]`` (matterport's ``compute_ap`` return values)."""
    p = np.concatenate(([0.0], precision, [0.0]))
    r = np.concatenate(([0.0], recall, [1.0]))
    # Envelope: the precision at a recall is the best precision at that recall or any higher one.
    p = np.ascontiguousarray(np.maximum.accumulate(p[::-1])[::-1])
    steps = np.nonzero(r[1:] != r[:-1])[0] + 1  # where the recall grows
    ap = float(np.sum((r[steps] - r[steps - 1]) * p[steps]))
    return ap, p, r


def average_precision(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """All-point interpolated AP (VOC 2010+, matterport) of a precision/recall curve.

    precision, recall: float ``[T]``, one point per ranked detection (as :func:`precision_recall` returns;
    recall non-decreasing). AP is the area under the precision envelope (at each recall, the best precision
    at that recall or beyond), summed over the recall steps. Returns a float; 0 when ``T == 0``, NaN when
    the recall is NaN (no GT).
    """
    check_tensor("precision", precision, ndim=1, kind="float")
    check_tensor("recall", recall, ndim=1, kind="float")
    _same_length("recall", recall, precision.shape[0], "precision")
    r = recall.detach().cpu().double().numpy()
    if np.isnan(r).any():
        return float("nan")
    return _envelope_ap(precision.detach().cpu().double().numpy(), r)[0]


def _overlaps(pred: dict, target: dict, use_masks: bool) -> torch.Tensor:
    """IoU ``[N, G]`` of every prediction with every GT, by masks or by boxes."""
    if use_masks:
        if pred["masks"].shape[1:] != target["masks"].shape[1:]:
            raise ValueError(
                f"pred_masks and gt_masks must have the same (H, W), got {tuple(pred['masks'].shape[1:])} "
                f"and {tuple(target['masks'].shape[1:])}"
            )
        return mask_iou(pred["masks"], target["masks"])
    return box_iou(pred["boxes"].float(), target["boxes"].float())


def _match_greedy(
    overlaps: np.ndarray,
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    gt_crowd: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Match score-sorted predictions to GT, one at a time (matterport's ``compute_matches``).

    Each prediction, best score first, takes the unmatched non-crowd GT of its own class with the highest
    IoU, if that IoU is ``>= threshold`` (ties: the first GT). Returns int64 ``[N]``: the GT index, -1 for
    no match (a false positive), -2 for "ignored" (no ordinary match, but IoU ``>= threshold`` with a crowd
    GT of its class, which any number of predictions may share).
    """
    n, g = overlaps.shape
    result = np.full(n, -1, dtype=np.int64)
    taken = gt_crowd.copy()  # crowd GT are never matched one-to-one
    for i in range(n):
        same_class = gt_labels == pred_labels[i]
        candidates = same_class & ~taken & (overlaps[i] >= threshold)
        if candidates.any():
            j = int(np.argmax(np.where(candidates, overlaps[i], -1.0)))
            result[i] = j
            taken[j] = True
        elif (same_class & gt_crowd & (overlaps[i] >= threshold)).any():
            result[i] = -2
    return result


def _match_image(pred: dict, target: dict, iou_threshold: float, use_masks: bool):
    """Sort one image's predictions by score and match them; returns (order, overlaps, match)."""
    order = torch.argsort(pred["scores"], descending=True, stable=True)
    overlaps = _overlaps(pred, target, use_masks)[order]  # sorting the [N, G] IoU, not the masks
    match = _match_greedy(
        overlaps.double().numpy(),
        pred["labels"][order].numpy(),
        target["labels"].numpy(),
        target["iscrowd"].numpy(),
        iou_threshold,
    )
    return order, overlaps, match


def _check_iou_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"iou_threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def _voc_ap(p: dict, t: dict, threshold: float, use_masks: bool):
    """:func:`compute_voc_ap` on a checked prediction and target."""
    _, overlaps, match = _match_image(p, t, threshold, use_masks)
    counted = match != -2
    num_gt = int((~t["iscrowd"]).sum())
    hits = np.cumsum(match[counted] >= 0)
    precision = hits / np.arange(1, hits.size + 1)
    recall = hits / num_gt if num_gt > 0 else np.full(hits.size, np.nan)
    ap, p_env, r_pad = _envelope_ap(precision, recall)
    if num_gt == 0:
        ap = float("nan")  # no recall without GT
    return ap, torch.from_numpy(p_env), torch.from_numpy(r_pad), overlaps


def compute_voc_ap(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_masks: torch.Tensor | None,
    pred_boxes: torch.Tensor,
    pred_labels: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_masks: torch.Tensor | None,
    iou_threshold: float = 0.5,
    use_masks: bool = True,
    gt_crowd: torch.Tensor | None = None,
    mask_threshold: float = 0.5,
) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AP of one image's detections, as matterport's ``utils.compute_ap``.

    gt_boxes: float ``[G, 4]``; gt_labels: int ``[G]``; gt_masks: ``[G, H, W]`` (non-zero inside), or None
        when ``use_masks=False``.
    pred_boxes: float ``[N, 4]``; pred_labels: int ``[N]``; pred_scores: float ``[N]``;
        pred_masks: ``[N, 1, H, W]`` or ``[N, H, W]`` probabilities (or binary), or None when
        ``use_masks=False``.
    iou_threshold: a match needs IoU ``>=`` this (0.5).
    use_masks: match by mask IoU (matterport) or, False, by box IoU.
    gt_crowd: optional bool ``[G]``; crowd GT are not counted in the recall, and a prediction that matches no
        ordinary GT but has IoU ``>= iou_threshold`` with a crowd GT of its class is dropped from the ranking
        (COCO's rule uses intersection over the prediction's area instead of IoU). None: no crowds.
    mask_threshold: float masks are inside where ``>= mask_threshold``.

    Predictions are sorted by score (best first, ties kept in input order); each takes the unmatched GT of
    its own class with the highest IoU, if at least ``iou_threshold``. After ``n`` predictions the precision
    is ``matched / n`` and the recall ``matched / G``; AP is the area under the precision envelope, summed
    at every recall step (:func:`average_precision`).

    Returns ``(ap, precisions, recalls, overlaps)``:
        ap: float; 0 when there are GT but no predictions; NaN when there is no (non-crowd) GT, where the
            recall is undefined (matterport's code gives NaN with predictions and 0 without).
        precisions: float64 ``[N' + 2]``, the envelope, padded ``[0, ..., 0]`` as matterport returns it
            (``N'``: predictions not dropped on crowds).
        recalls: float64 ``[N' + 2]``, padded ``[0, ..., 1]``.
        overlaps: float32 ``[N, G]`` IoU of the score-sorted predictions with the GT (matterport's order).
    """
    threshold = _check_iou_threshold(iou_threshold)
    # Masks are not even looked at when matching by boxes.
    target = {"boxes": gt_boxes, "labels": gt_labels, "iscrowd": gt_crowd}
    target["masks"] = gt_masks if use_masks else None
    pred = {"boxes": pred_boxes, "labels": pred_labels, "scores": pred_scores}
    pred["masks"] = pred_masks if use_masks else None
    t = _target(lambda key: "gt_crowd" if key == "iscrowd" else f"gt_{key}", target, need_masks=use_masks)
    p = _prediction(lambda key: f"pred_{key}", pred, need_masks=use_masks, threshold=mask_threshold)
    return _voc_ap(p, t, threshold, use_masks)


def _checked_pairs(predictions, targets, use_masks: bool, mask_threshold: float):
    predictions, targets = _pairs(predictions, targets)
    return [
        (
            _prediction(f"predictions[{i}]", p, need_masks=use_masks, threshold=mask_threshold),
            _target(f"targets[{i}]", t, need_masks=use_masks),
        )
        for i, (p, t) in enumerate(zip(predictions, targets, strict=True))
    ]


def mean_voc_ap(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    iou_threshold: float = 0.5,
    use_masks: bool = True,
    mask_threshold: float = 0.5,
) -> float:
    """matterport's mAP: the mean over images of :func:`compute_voc_ap` (per-image AP at one IoU threshold).

    predictions, targets: equally long lists, one dict per image (see the module docstring; ``iscrowd``
        of the targets is honoured as in :func:`compute_voc_ap`).
    Images without (non-crowd) GT are skipped: their AP is undefined (matterport's notebooks would average
    in a NaN, or a 0 for an image with neither GT nor predictions; its training generator skips such
    images). Returns a float; NaN when no image has GT.
    """
    threshold = _check_iou_threshold(iou_threshold)
    aps = []
    for p, t in _checked_pairs(predictions, targets, use_masks, mask_threshold):
        if not bool((~t["iscrowd"]).any()):
            continue
        ap = _voc_ap(p, t, threshold, use_masks)[0]
        aps.append(ap)
    return float(np.mean(aps)) if aps else float("nan")


def precision_recall(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    iou_threshold: float = 0.5,
    use_masks: bool = True,
    label: int | None = None,
    mask_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The precision/recall curve over a whole data set (detections of all images ranked together).

    Matching is per image, as :func:`compute_voc_ap` (same class, IoU ``>= iou_threshold``, best score
    first; crowd GT honoured). Then all detections are ranked by score (ties: image order, then score order
    within the image); the ``t``-th point is the precision and recall of the best ``t`` detections.
    label: None pools all classes into one curve (each detection still only matches its own class); a label
        keeps only that class's detections and GT (the per-class curve of VOC/COCO).
    Returns float64 ``(precision [T], recall [T], scores [T])``: raw precision (not the envelope; it may go
    up and down), recall non-decreasing, scores non-increasing. Recall is NaN when there is no GT.
    Detections dropped on crowds are not in the curve.
    """
    threshold = _check_iou_threshold(iou_threshold)
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise ValueError(f"label must be None or an int class label, got {label!r}")
    all_scores, all_hits, num_gt = [], [], 0
    for p, t in _checked_pairs(predictions, targets, use_masks, mask_threshold):
        if label is not None:
            keep_p, keep_t = p["labels"] == label, t["labels"] == label
            p = {k: (v[keep_p] if v is not None else None) for k, v in p.items()}
            t = {k: (v[keep_t] if v is not None else None) for k, v in t.items()}
        order, _, match = _match_image(p, t, threshold, use_masks)
        counted = match != -2
        all_scores.append(p["scores"][order].double().numpy()[counted])
        all_hits.append(match[counted] >= 0)
        num_gt += int((~t["iscrowd"]).sum())
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    hits = np.concatenate(all_hits) if all_hits else np.zeros(0, dtype=bool)
    rank = np.argsort(-scores, kind="stable")
    scores, hits = scores[rank], np.cumsum(hits[rank])
    precision = hits / np.arange(1, hits.size + 1)
    recall = hits / num_gt if num_gt > 0 else np.full(hits.size, np.nan)
    return torch.from_numpy(precision), torch.from_numpy(recall.astype(np.float64)), torch.from_numpy(scores)


def plot_precision_recall(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    iou_threshold: float = 0.5,
    use_masks: bool = True,
    per_class: bool = False,
    class_names: Sequence[str] | None = None,
    path=None,
    ax=None,
):
    """Plot the data set's precision/recall curve(s) with matplotlib; returns the ``Figure``.

    predictions, targets, iou_threshold, use_masks: as :func:`precision_recall`.
    per_class: one curve per class (labels found in the targets or predictions) instead of one pooled curve.
    class_names: names indexed by label (entry 0 background), for the legend.
    path: if given, the figure is saved there (PNG, or any format matplotlib infers from the suffix).
    ax: draw into this ``Axes``; None makes a new ``Figure`` without pyplot (no GUI backend needed, nothing
        kept open).
    Each curve is drawn as the raw precision (thin) and its envelope (thick), whose area is the legend's AP.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(5.0, 4.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if per_class:
        pairs = _checked_pairs(predictions, targets, use_masks, 0.5)
        found = {int(v) for p, t in pairs for v in torch.cat((p["labels"], t["labels"])).tolist()}
        curves = sorted(found)
    else:
        curves = [None]
    for label in curves:
        precision, recall, _ = precision_recall(predictions, targets, iou_threshold, use_masks, label=label)
        ap = average_precision(precision, recall)
        if label is None:
            name = "all classes"
        elif class_names is not None and 0 <= label < len(class_names):
            name = str(class_names[label])
        else:
            name = f"class {label}"
        _, envelope, padded_recall = _envelope_ap(precision.numpy(), recall.numpy())
        (line,) = ax.plot(padded_recall[:-1], envelope[:-1], drawstyle="steps-post", linewidth=2.0)
        line.set_label(f"{name} (AP={ap:.3f})")
        ax.plot(recall.numpy(), precision.numpy(), color=line.get_color(), linewidth=0.8, alpha=0.5)
    kind = "mask" if use_masks else "box"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0.0, 1.02), ylim=(0.0, 1.02))
    ax.set_title(f"precision / recall ({kind} IoU >= {iou_threshold:g})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig
