"""Mask R-CNN, composed from the stage functions: this file is the architecture diagram.

::

    images ─ mold ─ backbone (C2..C5) ─ FPN (P2..P6) ─┬─ RPN head (one for all levels) ─ proposal layer
                                                      │      │ training: RPN targets ─ RPN losses
                                                      │      ▼
                                                      │  proposals (detached: no gradient to the RPN)
                                                      │      │ training: detection targets (sampled ROIs)
                                                      ├─ pyramid RoIAlign 7x7 ─ box head ─ classes, deltas
                                                      │      │ training: classifier + box losses
                                                      │      │ inference: detection layer (threshold, NMS)
                                                      └─ pyramid RoIAlign 14x14 ─ mask head ─ 28x28 / class
                                                             │ training: mask loss on the positive ROIs
                                                             │ inference: on the detections, then pasted

Training runs the box and mask heads in parallel on the sampled ROIs; inference runs them in series (the mask
head sees the detection layer's boxes). Only the backbone, FPN and heads have weights; every other step is a
plain function of ``mrcnn_edu`` that a notebook can call on its own.

Calling convention (torchvision's): ``model(images, targets)`` in train mode returns the losses
``{"rpn_objectness", "rpn_box", "classifier", "box_reg", "mask"}``; in eval mode ``model(images)`` returns one
dict per image with ``boxes [N, 4]``, ``labels [N]``, ``scores [N]`` and ``masks [N, 1, H, W]``
(probabilities) in the coordinates of the original image. ``images`` is a list of float ``[3, H, W]`` in 0-1
(any float dtype: converted to the weights' dtype, float32; NaN pixels are refused; an image that requires
grad gets its gradient, e.g. for saliency maps);
a target is a dict with ``boxes [G, 4]``, ``labels [G]`` (1..K), ``masks [G, H, W]``, optional ``iscrowd``.

``model.trace(images, targets=None)`` runs the same forward pass and returns every intermediate result under
the stage names listed in :data:`TRACE_STAGES`, for the training path (with targets, in train mode) or the
inference path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import losses
from .anchors import concat_levels, pyramid_anchors
from .backbone import build_backbone
from .config import Config
from .data.transforms import validate_targets
from .detection import detect_batch
from .detection_targets import detection_targets, detection_targets_batch
from .fpn import FPN
from .heads import BoxHead, BoxPredictor, MaskHead, RPNHead
from .losses import LOSS_NAMES
from .masks import pad_masks_and_snap_boxes, paste_masks
from .molding import batch_images, normalize_image, resize_boxes, resize_image, resize_masks, unmold_boxes
from .proposals import propose
from .roi_align import pyramid_roi_align
from .rpn_targets import rpn_targets, rpn_targets_batch

# The target layers run for the whole batch at once (rpn_targets_batch, detection_targets_batch), which run
# rpn_targets / detection_targets image by image when mrcnn_edu.exercises has swapped a student's in. The
# two names stay importable here because the exercises' swap sites list them.
_SWAP_SITES = (rpn_targets, detection_targets)

__all__ = ["MaskRCNN", "TRACE_STAGES", "TRACE_FRAMES", "TraceStage", "LOSS_NAMES"]

#: Stage names of :meth:`MaskRCNN.trace`, in execution order. "train" stages appear only on the training path,
#: "eval" stages only on the inference path. Each value is a str with a ``frame`` (:class:`TraceStage`).
TRACE_STAGES = {
    "image_metas": "both: list of molding.ImageMeta (scale, window, padding) per image",
    "molded_images": "both: [B, 3, H, W] normalised, resized and padded batch",
    "backbone": "both: dict C2..C5, [B, C_k, H / 2^k, W / 2^k]",
    "fpn": "both: dict P2..P6, [B, F, H / 2^k, W / 2^k]",
    "anchors": "both: [A, 4] all anchors, level -> row -> column -> ratio",
    "anchors_per_level": "both: list of the anchor count of each level",
    "rpn_objectness": "both: [B, A] objectness logits",
    "rpn_deltas": "both: [B, A, 4] anchor deltas",
    "proposals_pre_nms": "both: per image, boxes [T, 4] and scores [T] entering NMS",
    "proposals": "both: per image, boxes [P, 4] and scores [P] after NMS",
    "rpn_targets": "train: dict labels [B, A] (1 / 0 / -1), deltas [B, A, 4]",
    "roi_targets": "train: per image, rois [R, 4], labels [R], box_targets [R, 4], mask_targets [R+, M, M]",
    "box_features": "both: [R, F, 7, 7] pooled features of the ROIs (all images)",
    "class_logits": "both: [R, K + 1]",
    "box_deltas": "both: [R, (K + 1) * 4]",
    "detections_pre_nms": "eval: per image, candidate boxes / scores / labels before per-class NMS",
    "detections": "eval: per image, boxes [N, 4], scores [N], labels [N] in molded-image pixels",
    "mask_features": "both: [R_mask, F, 14, 14] (train: positive ROIs; eval: detections)",
    "mask_logits": "both: [R_mask, K + 1, 28, 28]",
    "losses": "train: dict of the five losses",
    "results": "eval: per image, boxes / labels / scores / masks [N, 1, H, W] in original-image pixels",
}

#: The coordinate frames named by ``TRACE_STAGES[name].frame``. Boxes are always ``(x1, y1, x2, y2)``; what
#: differs is the image they are measured on.
TRACE_FRAMES = {
    "molded": "molded-image pixels: the resized and padded network input (image_metas maps them back)",
    "feature": "feature cells of one FPN level: molded-image pixels divided by the level's stride",
    "original": "original-image pixels: the image as given to the model",
}


class TraceStage(str):
    """A :data:`TRACE_STAGES` entry: its description (this string) and ``frame``, the :data:`TRACE_FRAMES` key
    of the coordinates its boxes, window or per-cell values are in (None: it has none)."""

    frame: str | None

    def __new__(cls, description: str, frame: str | None = None):
        stage = super().__new__(cls, description)
        stage.frame = frame
        return stage


# Where each stage lives: its boxes (anchors, proposals, ROIs, detections), the window of image_metas, or
# the cells of a level (feature maps, one objectness per anchor, features pooled from a level's cells).
_FRAMES = {
    "image_metas": "molded", "molded_images": "molded", "backbone": "feature", "fpn": "feature",
    "anchors": "molded", "rpn_objectness": "feature", "proposals_pre_nms": "molded", "proposals": "molded",
    "roi_targets": "molded", "box_features": "feature", "detections_pre_nms": "molded",
    "detections": "molded", "mask_features": "feature", "results": "original",
}  # fmt: skip
TRACE_STAGES = {name: TraceStage(text, _FRAMES.get(name)) for name, text in TRACE_STAGES.items()}


def _check_images(images) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError("images must be a non-empty list of float [3, H, W] tensors in 0-1")
    for i, im in enumerate(images):
        if (
            not isinstance(im, torch.Tensor)
            or im.dim() != 3
            or im.shape[0] != 3
            or not im.is_floating_point()
        ):
            got = (
                f"shape {tuple(im.shape)} dtype {im.dtype}"
                if isinstance(im, torch.Tensor)
                else type(im).__name__
            )
            raise ValueError(f"images[{i}] must be a float [3, H, W] tensor, got {got}")
    # One read for the whole batch: is every pixel of every image in 0-1 (a NaN is not)?
    outside = [~((im >= 0) & (im <= 1)).all() for im in images if im.numel()]
    if outside and bool(torch.stack(outside).any()):
        for i, im in enumerate(images):
            if im.numel() and not bool(((im >= 0) & (im <= 1)).all()):
                nan = int(torch.isnan(im).sum())
                if nan:
                    raise ValueError(f"images[{i}] has {nan} NaN pixels (expected 0-1)")
                raise ValueError(
                    f"images[{i}] values must be in 0-1, got {im.min().item():.3g}..{im.max().item():.3g}"
                    " (divide 0-255 images by 255)"
                )
    return list(images)


def _image_size(meta) -> tuple[int, int]:
    """``(h, w)`` of the image inside its molded frame, for ``clip_to_image``: clipping takes sizes, so the
    image must start at the top-left corner (``minmax``, ``none``, ``crop``), not be centred by padding."""
    x1, y1, x2, y2 = meta.window
    if (x1, y1) != (0, 0):
        raise ValueError(
            f"config.clip_to_image needs the image at the top-left of the molded frame, but resize_mode "
            f"{meta.mode!r} puts it at {(x1, y1)}; use resize_mode 'minmax', 'none' or 'crop', or "
            "clip_to_image=False"
        )
    return y2, x2


class MaskRCNN(nn.Module):
    """The trainable detector; ``config`` (a :class:`mrcnn_edu.config.Config`) fixes every choice.

    Settings that shape no weight (proposal counts, the detection layer's thresholds, pooling options) are
    read from ``self.config`` at every call, so a trained model can be re-tuned for inference:
    ``model.config = model.config.replace(detection_min_confidence=0.05, detection_candidates="all")``.
    """

    def __init__(self, config: Config | None = None):
        super().__init__()
        self.config = cfg = config or Config()
        if len(cfg.anchor_scales) != len(cfg.backbone_strides) or len(cfg.backbone_strides) != 5:
            raise ValueError("anchor_scales and backbone_strides must have one entry per level P2..P6")
        self.backbone = build_backbone(
            cfg.backbone,
            norm=cfg.backbone_norm,
            trainable_stages=cfg.trainable_stages,
            bn_eps=cfg.backbone_bn_eps,
        )
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels)
        self.rpn_head = RPNHead(cfg.fpn_channels, cfg.num_anchors_per_location)
        self.box_head = BoxHead(cfg.fpn_channels, cfg.pool_size, cfg.box_representation, variant=cfg.box_head)
        self.box_predictor = BoxPredictor(cfg.box_representation, cfg.num_classes)
        self.mask_head = MaskHead(cfg.fpn_channels, cfg.num_classes, conv_channels=cfg.mask_conv_channels)
        self._anchor_cache: dict = {}

    # ---------------------------------------------------------------- public API
    def forward(self, images, targets=None):
        return self._run(images, targets, trace=None)

    def trace(self, images, targets=None) -> dict:
        """Every intermediate result of one forward pass, by stage name (see :data:`TRACE_STAGES`).

        In train mode this *is* a training forward pass: BatchNorm layers update their running statistics
        (trace a copy, ``copy.deepcopy(model)``, to leave the model as it was).
        """
        record: dict = {}
        self._run(images, targets, trace=record)
        return record

    # ---------------------------------------------------------------- the pipeline
    def _run(self, images, targets, trace: dict | None):
        cfg = self.config
        training = self.training
        if training and targets is None:
            raise ValueError("targets are required in train mode (call model.eval() for inference)")

        def record(name, value):
            if trace is not None:
                trace[name] = value

        # float64 / float16 / bfloat16 images run in the weights' dtype (autocast, if on, takes it from there)
        dtype = next(self.parameters()).dtype
        images = [im.to(dtype) for im in _check_images(images)]
        batch, metas, gts = self.mold(images, targets if training else None)
        record("image_metas", metas)
        record("molded_images", batch)

        # Channels-last maps: oneDNN's (and cuDNN's) convolutions read them without a layout conversion per
        # layer, and roi_align reads them without a copy. Same values, another memory order.
        c = self.backbone(batch.contiguous(memory_format=torch.channels_last))
        p = self.fpn(c)
        record("backbone", c)
        record("fpn", p)
        levels = list(p.values())  # P2..P6: the RPN sees all five, the ROI heads P2..P5
        canvas = tuple(batch.shape[-2:])
        anchors, per_level = self.anchors(levels, canvas)
        record("anchors", anchors)
        record("anchors_per_level", per_level)

        obj, deltas = self.rpn_head(levels)
        objectness = concat_levels(obj, 1)[..., 0]
        rpn_deltas = concat_levels(deltas, 4)
        record("rpn_objectness", objectness)
        record("rpn_deltas", rpn_deltas)

        # The region boxes are clipped to: each image's own size (torchvision) or the padded canvas.
        clip_sizes = [_image_size(m) for m in metas] if cfg.clip_to_image else [canvas] * len(metas)
        proposals = propose(
            objectness,
            rpn_deltas,
            anchors,
            clip_sizes,
            num_anchors_per_level=per_level,
            pre_nms_top_n=cfg.rpn_pre_nms_train if training else cfg.rpn_pre_nms_test,
            post_nms_top_n=cfg.rpn_post_nms_train if training else cfg.rpn_post_nms_test,
            nms_threshold=cfg.rpn_nms_threshold,
            min_size=cfg.rpn_min_size,
            per_level=cfg.rpn_per_level,
            weights=cfg.rpn_weights,
            return_pre_nms=trace is not None,
        )
        if trace is not None:
            record(
                "proposals_pre_nms",
                [{"boxes": q["pre_nms_boxes"], "scores": q["pre_nms_scores"]} for q in proposals],
            )
        record("proposals", [{"boxes": q["boxes"], "scores": q["scores"]} for q in proposals])

        if training:
            result = self._train_heads(
                levels[:4], anchors, objectness, rpn_deltas, proposals, gts, canvas, record
            )
        else:
            result = self._detect(levels[:4], proposals, metas, canvas, clip_sizes, record)
        return result

    def _train_heads(self, features, anchors, objectness, rpn_deltas, proposals, gts, canvas, record):
        cfg = self.config
        rpn_t = rpn_targets_batch(
            anchors,
            [gt["boxes"] for gt in gts],
            [gt.get("iscrowd") for gt in gts],
            positive_iou=cfg.rpn_positive_iou,
            negative_iou=cfg.rpn_negative_iou,
            num_samples=cfg.rpn_batch_size,
            positive_fraction=cfg.rpn_positive_fraction,
            weights=cfg.rpn_weights,
        )
        rpn_labels, rpn_target_deltas = rpn_t["labels"], rpn_t["deltas"]
        record("rpn_targets", {"labels": rpn_labels, "deltas": rpn_target_deltas})

        roi_t = detection_targets_batch(
            [q["boxes"] for q in proposals],
            [gt["boxes"] for gt in gts],
            [gt["labels"] for gt in gts],
            [gt["masks"] for gt in gts],
            num_samples=cfg.rois_per_image,
            positive_fraction=cfg.roi_positive_fraction,
            positive_iou=cfg.roi_positive_iou,
            negative_iou=cfg.roi_negative_iou,
            add_gt_boxes=cfg.add_gt_boxes,
            fill_with_negatives=cfg.fill_with_negatives,
            mask_size=cfg.mask_size,
            weights=cfg.box_weights,
            gt_is_crowd=[gt.get("iscrowd") for gt in gts],
            aligned=cfg.aligned,
        )
        record("roi_targets", roi_t)
        rois = [t["rois"] for t in roi_t]
        labels = torch.cat([t["labels"] for t in roi_t])
        class_logits, box_deltas = self._box_branch(features, rois, canvas, record)

        # Positives come first in each image's ROIs, one per mask target: no need to look for them.
        num_positive = [len(t["mask_targets"]) for t in roi_t]
        positive_rois = [t["rois"][:n] for t, n in zip(roi_t, num_positive, strict=True)]
        mask_logits = self._mask_branch(features, positive_rois, canvas, record)
        mask_targets = torch.cat([t["mask_targets"] for t in roi_t])
        positive_labels = torch.cat([t["labels"][:n] for t, n in zip(roi_t, num_positive, strict=True)])

        result = {
            "rpn_objectness": losses.rpn_objectness_loss(objectness, rpn_labels),
            "rpn_box": losses.rpn_box_loss(rpn_deltas, rpn_target_deltas, rpn_labels, beta=cfg.rpn_box_beta),
            "classifier": losses.classifier_loss(class_logits, labels),
            "box_reg": losses.box_loss(
                box_deltas, labels, torch.cat([t["box_targets"] for t in roi_t]), beta=cfg.box_beta
            ),
            "mask": losses.mask_loss(mask_logits, positive_labels, mask_targets),
        }
        record("losses", result)
        return result

    def _detect(self, features, proposals, metas, canvas, clip_sizes, record):
        cfg = self.config
        rois = [q["boxes"] for q in proposals]
        class_logits, box_deltas = self._box_branch(features, rois, canvas, record)
        batch = detect_batch(
            class_logits,
            box_deltas,
            rois,
            clip_sizes,
            score_threshold=cfg.detection_min_confidence,
            nms_threshold=cfg.detection_nms_threshold,
            max_detections=cfg.detection_max_instances,
            weights=cfg.box_weights,
            candidates=cfg.detection_candidates,
            min_size=cfg.detection_min_size,
            return_pre_nms=True,
        )
        pre_nms = [{k[len("pre_nms_") :]: v for k, v in d.items() if k.startswith("pre_nms_")} for d in batch]
        detections = [{k: v for k, v in d.items() if not k.startswith("pre_nms_")} for d in batch]
        record("detections_pre_nms", pre_nms)
        record("detections", detections)

        mask_logits = self._mask_branch(features, [d["boxes"] for d in detections], canvas, record)
        results = []
        per_image = mask_logits.split([len(d["boxes"]) for d in detections])
        for d, logits, meta in zip(detections, per_image, metas, strict=True):
            # Each detection's mask is the channel of its own class (per-class masks, no competition).
            probs = logits[torch.arange(len(logits), device=logits.device), d["labels"]].sigmoid()
            # finite: detect drops a NaN box (its size fails the min_size test), and decoding clamps the
            # deltas, so paste_masks need not check them (a read by the host, per image, on a GPU)
            boxes = unmold_boxes(d["boxes"], meta)
            if cfg.mask_paste == "torchvision":
                masks = paste_masks(*pad_masks_and_snap_boxes(probs, boxes), meta.original_size,
                                    check_finite=False)  # fmt: skip
            elif cfg.mask_paste == "exact":
                masks = paste_masks(probs, boxes, meta.original_size, check_finite=False)
            else:
                raise ValueError(
                    f"config.mask_paste must be 'exact' or 'torchvision', got {cfg.mask_paste!r}"
                )
            results.append(
                {"boxes": boxes, "labels": d["labels"], "scores": d["scores"], "masks": masks[:, None]}
            )
        record("results", results)
        return results

    # ---------------------------------------------------------------- pieces
    def _pool(self, features, rois, output_size, canvas):
        cfg = self.config
        return pyramid_roi_align(
            features,
            rois,
            output_size,
            strides=cfg.backbone_strides[:4],
            sampling_ratio=cfg.sampling_ratio,
            aligned=cfg.aligned,
            rounding=cfg.level_rounding,
            canonical_size=cfg.canonical_size,
            method=cfg.roi_method,
            image_size=canvas,
        )

    def _box_branch(self, features, rois, canvas, record):
        pooled = self._pool(features, rois, self.config.pool_size, canvas)
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        record("box_features", pooled)
        record("class_logits", class_logits)
        record("box_deltas", box_deltas)
        return class_logits, box_deltas

    def _mask_branch(self, features, rois, canvas, record):
        pooled = self._pool(features, rois, self.config.mask_pool_size, canvas)
        if not self.training:  # its 3x3 convolutions run faster on channels-last maps (a copy of a few MB)
            pooled = pooled.contiguous(memory_format=torch.channels_last)
        mask_logits = self.mask_head(pooled)
        record("mask_features", pooled)
        record("mask_logits", mask_logits)
        return mask_logits

    def anchors(
        self, levels: Sequence[torch.Tensor], canvas: Sequence[int]
    ) -> tuple[torch.Tensor, list[int]]:
        """Anchors for feature maps of these shapes on a ``canvas`` ``(H, W)``, built once and cached."""
        cfg = self.config
        shapes = tuple(tuple(f.shape[-2:]) for f in levels)
        if cfg.anchor_strides_from_shapes:
            strides = [(canvas[0] // h, canvas[1] // w) for h, w in shapes]
        else:
            strides = cfg.backbone_strides
        key = (shapes, tuple(strides), cfg.anchor_scales, cfg.anchor_ratios, levels[0].device)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = pyramid_anchors(
                cfg.anchor_scales,
                cfg.anchor_ratios,
                shapes,
                strides,
                anchor_stride=cfg.anchor_stride,
                offset=cfg.anchor_offset,
                round_base=cfg.round_anchors,
                device=levels[0].device,
            )
        return self._anchor_cache[key]

    def mold(self, images: Sequence[torch.Tensor], targets=None):
        """Resize, normalise and batch the images (and move the targets into the molded frame).

        Returns ``(batch [B, 3, H, W], metas: list of ImageMeta, molded targets or None)``.
        """
        cfg = self.config
        if targets is not None and len(targets) != len(images):
            raise ValueError(
                f"targets must have one dict per image: {len(targets)} targets for {len(images)} images"
            )
        if targets is not None:  # (one read of the values for the whole batch)
            targets = validate_targets(images, targets, num_classes=cfg.num_classes)
        molded, metas, gts = [], [], []
        for i, image in enumerate(images):
            im, meta = resize_image(image, mode=cfg.resize_mode, min_dim=cfg.min_dim, max_dim=cfg.max_dim)
            molded.append(normalize_image(im, cfg.pixel_mean, cfg.pixel_std))
            metas.append(meta)
            if targets is not None:
                t = targets[i]
                gt = {
                    "boxes": resize_boxes(t["boxes"].float(), meta),
                    "labels": t["labels"],
                    "masks": resize_masks(t["masks"], meta),
                }
                if "iscrowd" in t:
                    gt["iscrowd"] = t["iscrowd"].bool()
                gts.append(gt)
        batch, _ = batch_images(molded, size_divisible=cfg.size_divisible)
        return batch, metas, (gts if targets is not None else None)
