"""The exercises: what each asks of the student (:data:`EXERCISES`), and :func:`describe`."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    """One exercise: what the student writes and what it replaces.

    name: the student's function name (and the stage name for :func:`use_student`).
    title: one line. signature: the student's signature, as Python. task: one paragraph.
    shapes: shapes and dtypes of the arguments and the result. hint: where to start.
    reference: the library function the check compares with (qualified name).
    affects: what :func:`use_student` changes (which functions / model steps then run the student's code).
    forbidden: the library functions (qualified names) that compute this stage: a graded submission calling
        any of them, under any name, fails with a message saying so (the reference comes first).
    """

    name: str
    title: str
    signature: str
    task: str
    shapes: str
    hint: str
    reference: str
    affects: str
    forbidden: tuple[str, ...]


_EXERCISE_LIST = [
    Exercise(
        name="box_iou",
        title="Intersection over union of every pair of boxes",
        signature="def box_iou(boxes1, boxes2):",
        task=(
            "Return the IoU of every box of boxes1 with every box of boxes2: result[i, j] = area of the "
            "intersection of boxes1[i] and boxes2[j] divided by the area of their union. A box is (x1, y1, "
            "x2, y2) in pixels and covers [x1, x2) x [y1, y2), so its width is x2 - x1 (no + 1). Boxes "
            "that do "
            "not overlap have IoU 0. Use tensor operations (broadcasting), no Python loop over pairs."
        ),
        shapes="boxes1: float [N, 4]; boxes2: float [M, 4]; returns float [N, M] (same dtype as the boxes).",
        hint=(
            "Broadcast boxes1[:, None, :] against boxes2[None, :, :]: the intersection's left edge is "
            "torch.maximum of the x1s, its right edge torch.minimum of the x2s; clamp its width and height "
            "at "
            "0 before multiplying (two negative sizes would give a positive area)."
        ),
        reference="mrcnn_edu.boxes.box_iou",
        affects=(
            "RPN and detection targets (training), evaluation, the shapes data generator, nms_loop "
            "(the fast nms computes IoUs pair by pair with matched_box_iou)"
        ),
        forbidden=(
            "mrcnn_edu.boxes.box_iou",
            "mrcnn_edu.boxes.matched_box_iou",
            "mrcnn_edu.boxes._iou",
        ),
    ),
    Exercise(
        name="encode_deltas",
        title="Box deltas: how to move a reference box onto a target box",
        signature="def encode_deltas(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):",
        task=(
            "Return the deltas (dx, dy, dw, dh) that move each reference box (an anchor or a proposal) onto "
            "its target box: with centres (cx, cy) and sizes (w, h), dx = (gx - ax) / aw, dy = (gy - ay) / "
            "ah, dw = log(gw / aw), dh = log(gh / ah), where g is the target and a the reference; then "
            "multiply the four by weights = (wx, wy, ww, wh). Width is x2 - x1, the centre x1 + w / 2."
        ),
        shapes=(
            "boxes: float [N, 4] target boxes (x1, y1, x2, y2); reference: float [N, 4] (row i goes with "
            "row i of boxes); weights: 4 numbers; returns float [N, 4] (dx, dy, dw, dh)."
        ),
        hint="Compute width, height and centre of both sets, then torch.stack the four deltas along dim=1.",
        reference="mrcnn_edu.boxes.encode_deltas",
        affects="the regression targets of rpn_targets and detection_targets (training)",
        forbidden=(
            "mrcnn_edu.boxes.encode_deltas",
        ),
    ),
    Exercise(
        name="decode_deltas",
        title="Apply deltas to reference boxes (the inverse of encode_deltas)",
        signature=(
            "def decode_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000 / 16)):"
        ),
        task=(
            "Return the boxes obtained by moving each reference box by its deltas: first divide the deltas "
            "by "
            "weights, then, if clamp is not None, cap dw and dh at clamp (so exp cannot overflow); the new "
            "centre is (ax + dx * aw, ay + dy * ah) and the new size (aw * exp(dw), ah * exp(dh)). Return "
            "corners (x1, y1, x2, y2). decode_deltas(encode_deltas(b, r, w), r, w) gives b back."
        ),
        shapes=(
            "deltas: float [N, 4] (dx, dy, dw, dh); reference: float [N, 4]; weights: 4 numbers; clamp: a "
            "float or None; returns float [N, 4] boxes, dtype of deltas."
        ),
        hint="x1 = cx - w / 2 and x2 = cx + w / 2; dw.clamp(max=clamp) caps only from above.",
        reference="mrcnn_edu.boxes.decode_deltas",
        affects=(
            "the proposal layer (decoding the RPN's deltas) and the detection layer (the box head's deltas)"
        ),
        forbidden=(
            "mrcnn_edu.boxes.decode_deltas",
        ),
    ),
    Exercise(
        name="level_anchors",
        title="The anchors of one pyramid level",
        signature=(
            "def level_anchors(scale, ratios, feature_shape, feature_stride, anchor_stride=1, offset=0.0):"
        ),
        task=(
            "Return every anchor of one feature map of shape (H, W) whose cells are feature_stride pixels "
            "apart. Anchors sit on every anchor_stride-th cell: rows i = 0 .. ceil(H / anchor_stride) - 1 "
            "and "
            "columns j likewise; with s = anchor_stride * feature_stride, the centre is ((j + offset) * s, "
            "(i + offset) * s) in (x, y). At each position there is one anchor per ratio r = width / height, "
            "of area scale**2: w = scale * sqrt(r), h = scale / sqrt(r). Order: row, then column, then ratio "
            "(anchor (i * W' + j) * A + a), the order in which the RPN head's outputs are flattened."
        ),
        shapes=(
            "scale: float; ratios: A floats; feature_shape: (H, W); feature_stride: float; returns float32 "
            "[H' * W' * A, 4] (x1, y1, x2, y2) in image pixels, H' = ceil(H / anchor_stride)."
        ),
        hint=(
            "torch.meshgrid(ys, xs, indexing='ij') gives the centres row-major; add the [A, 4] base anchors "
            "(-w/2, -h/2, w/2, h/2) with broadcasting ([H'*W', 1, 4] + [1, A, 4]) and reshape to [-1, 4]."
        ),
        reference="mrcnn_edu.anchors.level_anchors",
        affects=(
            "pyramid_anchors (the reference calls level_anchors level by level), hence the model's anchors"
        ),
        forbidden=(
            "mrcnn_edu.anchors.level_anchors",
            "mrcnn_edu.anchors.level_anchors_loop",
            "mrcnn_edu.anchors.pyramid_anchors",
            "mrcnn_edu.anchors.image_anchors",
        ),
    ),
    Exercise(
        name="pyramid_anchors",
        title="The anchors of all pyramid levels",
        signature=(
            "def pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride=1, "
            "offset=0.0):"
        ),
        task=(
            "Return the anchors of every level, level after level (P2 first), and the number of anchors of "
            "each level. Level l uses scale scales[l] on the map of shape feature_shapes[l] with stride "
            "feature_strides[l]; ratios, anchor_stride and offset are shared. Return a tuple (anchors, "
            "num_per_level)."
        ),
        shapes=(
            "scales, feature_shapes, feature_strides: L entries each; returns (float32 [N, 4], list of L "
            "ints), N = sum of H'_l * W'_l * A."
        ),
        hint="Call your level_anchors (or mrcnn_edu.anchors.level_anchors) for each level and torch.cat.",
        reference="mrcnn_edu.anchors.pyramid_anchors",
        affects="the model's anchors (MaskRCNN.anchors; a model caches them per image size)",
        forbidden=(
            "mrcnn_edu.anchors.pyramid_anchors",
            "mrcnn_edu.anchors.image_anchors",
        ),
    ),
    Exercise(
        name="nms",
        title="Greedy non-maximum suppression",
        signature="def nms(boxes, scores, iou_threshold):",
        task=(
            "Remove near-duplicate boxes: take the highest-scoring remaining box, keep it, drop every "
            "remaining box whose IoU with it is > iou_threshold (strictly greater), and repeat until no box "
            "remains. Only kept boxes suppress others. Return the indices (into boxes) of the kept boxes, "
            "highest score first; equal scores keep their input order (a stable sort)."
        ),
        shapes="boxes: float [N, 4]; scores: float [N]; returns int64 [K] indices, by decreasing score.",
        hint=(
            "order = torch.sort(scores, descending=True, stable=True).indices; loop while order is not "
            "empty; box_iou of the best box against the rest tells which ones to drop."
        ),
        reference="mrcnn_edu.nms.nms",
        affects=(
            "the proposal layer (nms; batched_nms when rpn_per_level) and the detection layer's per-class "
            "NMS (batched_nms, built from your nms run on each class)"
        ),
        forbidden=(
            "mrcnn_edu.nms.nms",
            "mrcnn_edu.nms.nms_loop",
            "mrcnn_edu.nms.nms_steps",
            "mrcnn_edu.nms.batched_nms",
        ),
    ),
    Exercise(
        name="rpn_targets",
        title="RPN targets: label and sample the anchors, regress the positives",
        signature=(
            "def rpn_targets(anchors, gt_boxes, positive_iou=0.7, negative_iou=0.3, num_samples=256, "
            "positive_fraction=0.5, weights=(1.0, 1.0, 1.0, 1.0), generator=None):"
        ),
        task=(
            "Match every anchor to the GT box it overlaps most. Best IoU >= positive_iou: positive; best IoU "
            "< negative_iou: negative; in between: ignored. Also make positive, for each GT box, the "
            "anchor(s) with the highest IoU with it (ties included; skip a GT that overlaps nothing), even "
            "below positive_iou; such an anchor regresses to its own best GT. Then sample at random (use "
            "generator) at most int(num_samples * positive_fraction) positives and fill up to num_samples "
            "with random negatives. Return a dict: 'labels' (1 positive, 0 negative, -1 not sampled or "
            "ignored), 'matched_gt' (index of the GT box of each sampled positive, -1 elsewhere) and "
            "'deltas' (encode_deltas(gt_boxes[matched_gt], anchors, weights) at the sampled positives, 0 "
            "elsewhere). With no GT box every anchor is a negative."
        ),
        shapes=(
            "anchors: float [N, 4]; gt_boxes: float [G, 4] (G may be 0); returns {'labels': int64 [N], "
            "'matched_gt': int64 [N], 'deltas': float [N, 4]}."
        ),
        hint=(
            "box_iou(gt_boxes, anchors) is [G, N]; .max(dim=0) gives each anchor's best IoU and GT. "
            "mrcnn_edu.matching.match_by_iou and sample_balanced do the matching and the sampling if you "
            "want to concentrate on the composition; torch.randperm(n, generator=generator) samples."
        ),
        reference="mrcnn_edu.rpn_targets.rpn_targets",
        affects=(
            "the model's RPN targets in training (crowd boxes are dropped before your function sees the GT; "
            "allow_low_quality=False or allowed_border fall back to the reference, with a warning)"
        ),
        forbidden=(
            "mrcnn_edu.rpn_targets.rpn_targets",
            "mrcnn_edu.rpn_targets.rpn_targets_batch",
        ),
    ),
    Exercise(
        name="bilinear",
        title="One bilinear sample of a feature map (RoIAlign's border rules)",
        signature="def bilinear(feature, y, x):",
        task=(
            "Return the feature vector at the continuous point (y, x): feature cell (r, c) holds its value "
            "at "
            "exactly (r, c). A point more than one cell outside the map (y < -1 or y > H, same for x) "
            "reads 0. "
            "Otherwise clamp y into [0, H - 1] and x into [0, W - 1], take the 4 cells around the point "
            "(y0 = floor(y), y1 = min(y0 + 1, H - 1), same for x) and mix them with the bilinear weights "
            "(1 - ly)(1 - lx), (1 - ly) lx, ly (1 - lx), ly lx, where ly = y - y0 and lx = x - x0."
        ),
        shapes="feature: float [C, H, W]; y, x: 0-d float tensors; returns float [C].",
        hint="int(y) floors a non-negative y; on the last row y1 is y0 itself, with weight ly = 0.",
        reference="mrcnn_edu.roi_align.bilinear",
        affects=(
            "roi_align_loop only (notebook 07's readable RoIAlign); the model's fast roi_align does not call "
            "bilinear: put your sampling into the model with the roi_align exercise"
        ),
        forbidden=(
            "mrcnn_edu.roi_align.bilinear",
        ),
    ),
    Exercise(
        name="roi_align",
        title="RoIAlign: a fixed-size grid of features for every box",
        signature=(
            "def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):"
        ),
        task=(
            "For every box, cut an oh x ow grid of features out of input. Scale the box by spatial_scale "
            "(and, if aligned, subtract 0.5 from each coordinate: cell centres sit at c + 0.5 in box "
            "coordinates; if not aligned, make the box at least 1 x 1). Split it into oh x ow equal bins; in "
            "each bin take gh x gw samples at the centres of equal sub-cells (gh = gw = sampling_ratio if "
            "> 0, "
            "else gh = ceil(box_h / oh), gw = ceil(box_w / ow)), read each with bilinear() and average them. "
            "Loops are fine: a readable version is the goal (it will be slow in the model)."
        ),
        shapes=(
            "input: float [B, C, H, W]; boxes: float [K, 5] rows (image index, x1, y1, x2, y2) in image "
            "pixels; output_size: (oh, ow); returns [K, C, oh, ow] in the dtype of input."
        ),
        hint=(
            "Sample iy of bin ph sits at y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh (the same along x). "
            "mrcnn_edu.roi_align.bilinear (or your own) reads one point."
        ),
        reference="mrcnn_edu.roi_align.roi_align",
        affects=(
            "pyramid_roi_align (the model's box and mask pooling when roi_method='roi_align') and the mask "
            "targets of detection_targets"
        ),
        forbidden=(
            "mrcnn_edu.roi_align.roi_align",
            "mrcnn_edu.roi_align.roi_align_loop",
            "mrcnn_edu.roi_align.pyramid_roi_align",
            "mrcnn_edu.roi_align.roi_align_sample_points",
            "mrcnn_edu.roi_align.roi_align_bins",
        ),
    ),
    Exercise(
        name="detection_targets",
        title="Detection targets: sample ROIs and build their class, box and mask targets",
        signature=(
            "def detection_targets(proposals, gt_boxes, gt_labels, gt_masks, num_samples=200, "
            "positive_fraction=0.33, positive_iou=0.5, negative_iou=0.5, mask_size=28, "
            "weights=(10.0, 10.0, 5.0, 5.0), generator=None):"
        ),
        task=(
            "Match each proposal to the GT box it overlaps most (no low-quality matches): best IoU >= "
            "positive_iou is a positive, < negative_iou a negative. Sample at random (use generator) P = at "
            "most int(num_samples * positive_fraction) positives, then int(P / positive_fraction) - P "
            "negatives (matterport keeps the ratio; fewer if there are fewer). Return a dict with, positives "
            "first: 'rois' (the sampled proposals), 'labels' (GT class of positives, 0 for negatives), "
            "'matched_gt' (GT index, -1 for negatives), 'box_targets' (encode_deltas(matched GT box, roi, "
            "weights), 0 for negatives) and 'mask_targets': for each positive, its GT mask cut out at the "
            "ROI and resized to mask_size x mask_size, thresholded at 0.5."
        ),
        shapes=(
            "proposals: float [P, 4]; gt_boxes: float [G, 4]; gt_labels: int64 [G] in 1..K; gt_masks: [G, H, "
            "W] 0/1; returns rois [R, 4], labels int64 [R], matched_gt int64 [R], box_targets [R, 4], "
            "mask_targets float [R_pos, M, M]."
        ),
        hint=(
            "mrcnn_edu.matching.match_by_iou(iou, positive_iou, negative_iou, allow_low_quality=False) and "
            "sample_balanced(..., fill_with_negatives=False) do the matching and sampling; "
            "mrcnn_edu.roi_align.roi_align(mask[None, None].float(), roi_with_index, mask_size, "
            "aligned=True) "
            "cuts out one mask target."
        ),
        reference="mrcnn_edu.detection_targets.detection_targets",
        affects=(
            "the model's ROI sampling in training (add_gt_boxes is applied before your function, crowd "
            "boxes are dropped; fill_with_negatives=True falls back to the reference, with a warning)"
        ),
        forbidden=(
            "mrcnn_edu.detection_targets.detection_targets",
        ),
    ),
    Exercise(
        name="paste_mask",
        title="Paste a small box-relative mask into the full image",
        signature="def paste_mask(mask, box, image_size):",
        task=(
            "The mask head predicts an M x M mask laid out inside its box. Put it into an image of size "
            "image_size = (H, W): round the box edges to whole pixels (halves round down: "
            "math.ceil(v - 0.5)), resize the mask to the rounded box's height x width with bilinear "
            "interpolation (F.interpolate, align_corners=False) and copy the part inside the image into a "
            "zero image. Boxes may extend past the image. (Sampling the mask exactly at each pixel centre "
            "of a fractional box, as mrcnn_edu.masks.paste_masks does, is accepted too.)"
        ),
        shapes=(
            "mask: float [M, M] probabilities; box: float [4] (x1, y1, x2, y2) in image pixels; image_size: "
            "(H, W); returns float [H, W] (values, not thresholded)."
        ),
        hint=(
            "F.interpolate wants [1, 1, M, M] and size=(box_h, box_w); clip the paste region to the image "
            "and take the matching part of the resized mask."
        ),
        reference="mrcnn_edu.masks.paste_mask_loop",
        affects="paste_masks, hence the model's output masks (your function runs on each detection)",
        forbidden=(
            "mrcnn_edu.masks.paste_masks",
            "mrcnn_edu.masks.paste_mask_loop",
        ),
    ),
    Exercise(
        name="proposal_layer",
        title="The proposal layer: top-k anchors, decode, clip, NMS, best post-NMS boxes",
        signature=(
            "def proposal_layer(objectness, deltas, anchors, image_size, pre_nms_top_n=6000, "
            "post_nms_top_n=2000, nms_threshold=0.7, weights=(1.0, 1.0, 1.0, 1.0)):"
        ),
        task=(
            "For one image, turn the RPN's output at every anchor into proposals: keep the pre_nms_top_n "
            "anchors with the highest objectness logit (all of them if there are fewer), move each onto its "
            "box with decode_deltas(deltas, anchors, weights) (the default clamp), clip the boxes to the "
            "image (x into [0, W], y into [0, H]), score them with sigmoid(logit), remove near-duplicates "
            "with NMS at nms_threshold, and return the best post_nms_top_n as (boxes, scores), highest "
            "score first."
        ),
        shapes=(
            "objectness: float [A] logits; deltas: float [A, 4]; anchors: float [A, 4]; image_size: (H, W); "
            "returns (boxes float [P, 4], scores float [P]), P <= post_nms_top_n."
        ),
        hint=(
            "objectness.topk(min(pre_nms_top_n, A)).indices; mrcnn_edu.boxes.decode_deltas and "
            "mrcnn_edu.nms.nms are yours to call; clip with x.clamp(0, W) and y.clamp(0, H)."
        ),
        reference="mrcnn_edu.proposals.propose",
        affects=(
            "the model's proposals (per image; per_level, min_size or score_threshold settings fall back to "
            "the reference, with a warning)"
        ),
        forbidden=("mrcnn_edu.proposals.propose",),
    ),
    Exercise(
        name="detection_layer",
        title="The detection layer: best class, decode, threshold, per-class NMS",
        signature=(
            "def detection_layer(class_logits, box_deltas, proposals, image_size, score_threshold=0.7, "
            "nms_threshold=0.3, max_detections=100, weights=(10.0, 10.0, 5.0, 5.0)):"
        ),
        task=(
            "Turn the box head's output for one image into detections (matterport's DetectionLayer): take "
            "the softmax of the class logits; each ROI's candidate is its most likely class (column 0, "
            "background, included: an ROI whose best class is background is dropped) with that probability "
            "as its score; keep candidates with score >= score_threshold; decode that class's deltas "
            "box_deltas[r, class] from the ROI with decode_deltas(..., weights) (default clamp) and clip to "
            "the image; remove duplicates with NMS within each class (boxes of different classes never "
            "suppress each other); return the best max_detections as (boxes, scores, labels), highest score "
            "first."
        ),
        shapes=(
            "class_logits: float [R, K + 1]; box_deltas: float [R, K + 1, 4]; proposals: float [R, 4]; "
            "image_size: (H, W); returns (boxes float [N, 4], scores float [N], labels int64 [N] in 1..K)."
        ),
        hint=(
            "probs.max(dim=1) gives score and class; mrcnn_edu.nms.batched_nms(boxes, scores, labels, t) is "
            "NMS within each class."
        ),
        reference="mrcnn_edu.detection.detect",
        affects=(
            "the model's detections at inference (candidates='all' or min_size settings fall back to the "
            "reference, with a warning)"
        ),
        forbidden=("mrcnn_edu.detection.detect", "mrcnn_edu.detection.detect_batch"),
    ),
    Exercise(
        name="roi_pool",
        title="RoIPool: the quantised pooling of Fast R-CNN",
        signature="def roi_pool(input, boxes, output_size, spatial_scale=1.0):",
        task=(
            "For each box, scale it by spatial_scale and round its corners to whole cells (halves away from "
            "zero, as C's round: math.floor(v + 0.5) for v >= 0). The box then covers the cells x1..x2 and "
            "y1..y2 inclusive: w = max(x2 - x1 + 1, 1) cells, h likewise. Split it into oh x ow bins: bin ph "
            "covers the rows y1 + floor(ph * h / oh) to y1 + ceil((ph + 1) * h / oh) - 1 (columns likewise), "
            "clipped to the map. Each output is the maximum of its bin's cells, per channel; an empty bin "
            "gives 0."
        ),
        shapes=(
            "input: float [B, C, H, W]; boxes: float [K, 5] rows (image index, x1, y1, x2, y2) in image "
            "pixels; output_size: (oh, ow); returns float [K, C, oh, ow]."
        ),
        hint=(
            "Loops over boxes and bins are fine; input[b, :, r0:r1, c0:c1].amax(dim=(1, 2)) is the max of a "
            "bin. Compare with RoIAlign: how far can the two roundings move a bin?"
        ),
        reference="mrcnn_edu.roi_align.roi_pool",
        affects="mrcnn_edu.roi_align.roi_pool and mrcnn_edu.ops.roi_pool (the model pools with RoIAlign)",
        forbidden=(
            "mrcnn_edu.roi_align.roi_pool",
            "mrcnn_edu.roi_align.roi_pool_bins",
            "mrcnn_edu.roi_align._roi_pool_bin_edges",
        ),
    ),
    Exercise(
        name="crop_and_resize",
        title="TensorFlow's crop_and_resize, matterport's RoI sampler",
        signature="def crop_and_resize(image, boxes, box_indices, crop_size, extrapolation_value=0.0):",
        task=(
            "For each box (y1, x1, y2, x2), normalised so that 0 and 1 are the centres of the first and last "
            "pixel, read a ch x cw grid of bilinear samples from image[box_indices[k]]: output row i samples "
            "y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (ch - 1) (the centre 0.5 * (y1 + y2) * (H - 1) "
            "when ch == 1), columns likewise with W. The first and last rows lie exactly on the box's edges "
            "(corner-aligned). A sample outside [0, H - 1] x [0, W - 1] gives extrapolation_value."
        ),
        shapes=(
            "image: float [B, C, H, W]; boxes: float [K, 4] normalised (y1, x1, y2, x2); box_indices: int64 "
            "[K]; crop_size: (ch, cw); returns float [K, C, ch, cw]."
        ),
        hint=(
            "Compute the ch sample rows and cw sample columns of a box, then mix the 4 cells around each "
            "(y, x) with weights (1 - ly)(1 - lx), ...; mrcnn_edu.roi_align.bilinear reads one point."
        ),
        reference="mrcnn_edu.roi_align.crop_and_resize",
        affects="pyramid_roi_align with method='crop_and_resize' (the model's roi_method, matterport's)",
        forbidden=(
            "mrcnn_edu.roi_align.crop_and_resize",
            "mrcnn_edu.roi_align.crop_and_resize_sample_points",
            "mrcnn_edu.roi_align._crop_coordinates",
        ),
    ),
    Exercise(
        name="assign_fpn_levels",
        title="Which pyramid level pools each box (224 pixels <-> P4)",
        signature="def assign_fpn_levels(boxes, k0=4, canonical_size=224.0, min_level=2, max_level=5):",
        task=(
            "A box of w x h image pixels is pooled from level k = k0 + log2(sqrt(w * h) / canonical_size), "
            "rounded to the nearest integer (torch.round: halves to even, as matterport's tf.round) and "
            "clamped to [min_level, max_level]. So a 224-pixel box reads P4, a box half as big P3, twice as "
            "big P5. A box of zero area goes to min_level. Return the levels as int64."
        ),
        shapes="boxes: float [K, 4] (x1, y1, x2, y2) in image pixels; returns int64 [K] levels.",
        hint="torch.log2, torch.round, .clamp(min_level, max_level), .long(); log2(0) = -inf clamps fine.",
        reference="mrcnn_edu.roi_align.assign_fpn_levels",
        affects=(
            "pyramid_roi_align, hence which level the model's box and mask heads read for each ROI "
            "(rounding='floor' or matterport's normalised boxes fall back to the reference, with a warning)"
        ),
        forbidden=("mrcnn_edu.roi_align.assign_fpn_levels",),
    ),
    Exercise(
        name="mask_target",
        title="A mask target: the GT mask cut out at the ROI, resized to 28 x 28",
        signature="def mask_target(gt_mask, roi, mask_size=28):",
        task=(
            "The mask head learns, for each positive ROI, the part of its GT mask inside the ROI, resized to "
            "mask_size x mask_size. Cut it out with RoIAlign: roi_align of the full-image mask (as a float "
            "[1, 1, H, W] map) at the ROI (batch index 0), spatial_scale 1, adaptive sampling "
            "(sampling_ratio=-1), aligned=False; then threshold: 1.0 where the value is >= 0.5, else 0.0."
        ),
        shapes=(
            "gt_mask: [H, W] 0/1 (bool, uint8 or float); roi: float [4] (x1, y1, x2, y2) in image pixels; "
            "returns float [mask_size, mask_size] of 0.0 and 1.0."
        ),
        hint=(
            "mrcnn_edu.roi_align.roi_align(gt_mask[None, None].float(), torch.cat((roi.new_zeros(1), "
            "roi))[None], mask_size, sampling_ratio=-1)[0, 0] is the soft crop."
        ),
        reference="mrcnn_edu.detection_targets.mask_targets",
        affects=(
            "the mask targets of detection_targets, hence the model's mask loss in training (aligned=True "
            "or soft targets fall back to the reference, with a warning)"
        ),
        forbidden=(
            "mrcnn_edu.detection_targets.mask_targets",
            "mrcnn_edu.detection_targets.detection_targets",
        ),
    ),
    Exercise(
        name="rpn_loss",
        title="The RPN's two losses: objectness and box regression",
        signature="def rpn_loss(objectness, deltas, labels, target_deltas, beta=1.0 / 9):",
        task=(
            "labels marks each anchor 1 (object), 0 (background) or -1 (not sampled). Return "
            "(objectness_loss, box_loss): objectness_loss is the binary cross-entropy of the logits against "
            "the labels, averaged over the sampled anchors (labels >= 0); box_loss is the smooth L1 loss "
            "(switching from quadratic to linear at beta) between deltas and target_deltas, summed over the "
            "positive anchors and their 4 coordinates and divided by the number of sampled anchors "
            "(torchvision's normalisation). Both are 0 when no anchor is sampled, and both must carry the "
            "gradient back to objectness and deltas."
        ),
        shapes=(
            "objectness: float [A] logits; deltas, target_deltas: float [A, 4]; labels: int64 [A] in {1, 0, "
            "-1}; returns (objectness_loss, box_loss), two 0-d float tensors."
        ),
        hint=(
            "F.binary_cross_entropy_with_logits and F.smooth_l1_loss(..., beta=beta, reduction='sum') (its "
            "default beta is 1.0, not 1/9); divide by max(number sampled, 1)."
        ),
        reference="mrcnn_edu.losses.rpn_objectness_loss and mrcnn_edu.losses.rpn_box_loss",
        affects="the model's rpn_objectness and rpn_box losses in training",
        forbidden=("mrcnn_edu.losses.rpn_objectness_loss", "mrcnn_edu.losses.rpn_box_loss"),
    ),
    Exercise(
        name="mask_loss",
        title="The mask loss: per-pixel cross-entropy on the GT class's mask",
        signature="def mask_loss(mask_logits, labels, mask_targets):",
        task=(
            "The mask head predicts one mask per class for every ROI. Only positive ROIs (label > 0) are "
            "trained, and only on the mask of their own class: for the k-th positive ROI take "
            "mask_logits[r, labels[r]] and the binary cross-entropy (with logits) against mask_targets[k], "
            "pixel by pixel. Return the mean over all those pixels (0 when there is no positive ROI, still "
            "connected to mask_logits so that backward works)."
        ),
        shapes=(
            "mask_logits: float [R, K + 1, M, M]; labels: int64 [R] (0 = negative); mask_targets: float "
            "[R_pos, M, M], one per positive ROI in order; returns a 0-d float tensor."
        ),
        hint=(
            "positive = torch.nonzero(labels > 0).flatten(); mask_logits[positive, labels[positive]] is "
            "[R_pos, M, M]; F.binary_cross_entropy_with_logits averages by default."
        ),
        reference="mrcnn_edu.losses.mask_loss",
        affects="the model's mask loss in training",
        forbidden=("mrcnn_edu.losses.mask_loss",),
    ),
]

#: The exercises by name, in teaching order.
EXERCISES: dict[str, Exercise] = {e.name: e for e in _EXERCISE_LIST}

#: The assignments: exercise notebook name -> the exercises it is graded on. The grader takes a file's
#: exercises from here (``--assignment``), never from the submission, whose metadata the student can edit.
ASSIGNMENTS: dict[str, tuple[str, ...]] = {
    "01_box_iou": ("box_iou",),
    "02_box_deltas": ("encode_deltas", "decode_deltas"),
    "03_anchors": ("level_anchors", "pyramid_anchors"),
    "04_nms": ("nms",),
    "05_rpn_targets": ("rpn_targets",),
    "06_roi_align": ("bilinear", "roi_align"),
    "07_detection_targets": ("detection_targets",),
    "08_paste_mask": ("paste_mask",),
    "09_proposal_layer": ("proposal_layer",),
    "10_detection_layer": ("detection_layer",),
    "11_roi_pool": ("roi_pool",),
    "12_crop_and_resize": ("crop_and_resize",),
    "13_fpn_levels": ("assign_fpn_levels",),
    "14_mask_target": ("mask_target",),
    "15_rpn_loss": ("rpn_loss",),
    "16_mask_loss": ("mask_loss",),
}

#: Other names accepted for an exercise (the library function a student exercise stands for).
_ALIASES = {"paste_masks": "paste_mask", "mask_targets": "mask_target"}


def _exercise_name(name) -> str:
    if isinstance(name, str) and name in _ALIASES:
        return _ALIASES[name]
    if not isinstance(name, str) or name not in EXERCISES:
        raise ValueError(f"name must be one of {list(EXERCISES)}, got {name!r}")
    return name


def describe(name: str) -> str:
    """The exercise's title, signature, task, shapes, hint and what swapping it in changes, as text."""
    ex = EXERCISES[_exercise_name(name)]

    def wrap(label: str, text: str) -> str:
        return textwrap.fill(
            f"{label}{text}", width=100, subsequent_indent="  " if label else "", break_on_hyphens=False
        )

    return "\n\n".join(
        [
            ex.title,
            "    " + ex.signature,
            wrap("", ex.task),
            wrap("Shapes: ", ex.shapes),
            wrap("Hint: ", ex.hint),
            wrap("Checked against: ", ex.reference),
            wrap(f"use_student({ex.name!r}, {ex.name}) affects: ", ex.affects),
        ]
    )
