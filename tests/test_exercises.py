"""Exercises: every check passes the references and independent correct versions, fails the usual
mistakes with a message that names them, never raises for broken functions; swaps reach the model and
restore exactly."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import mrcnn_edu.detection
import mrcnn_edu.exercises.swap
import mrcnn_edu.model
import mrcnn_edu.ops
import mrcnn_edu.proposals
from mrcnn_edu import anchors, boxes, detection_targets, exercises, losses, masks, nms, roi_align, rpn_targets
from mrcnn_edu.boxes import box_iou as library_box_iou
from mrcnn_edu.config import Config
from mrcnn_edu.data import ShapesDataset
from mrcnn_edu.model import MaskRCNN

REFERENCES = {  # the library's own function, with the exercise's signature where that differs
    "box_iou": boxes.box_iou,
    "encode_deltas": boxes.encode_deltas,
    "decode_deltas": boxes.decode_deltas,
    "level_anchors": anchors.level_anchors,
    "pyramid_anchors": anchors.pyramid_anchors,
    "nms": nms.nms,
    "rpn_targets": rpn_targets.rpn_targets,
    "bilinear": roi_align.bilinear,
    "roi_align": roi_align.roi_align,
    "detection_targets": detection_targets.detection_targets,
    "paste_mask": masks.paste_mask_loop,
}
_LIB = exercises.swap._ORIGINALS  # the library's functions as the package saved them (never swapped)


def _proposal_layer(objectness, deltas, anchors, image_size, pre_nms_top_n=6000, post_nms_top_n=2000,
                    nms_threshold=0.7, weights=(1.0, 1.0, 1.0, 1.0)):  # fmt: skip
    out = _LIB["proposal_layer"]["propose"](objectness[None], deltas[None], anchors, [image_size],
                                            pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n,
                                            nms_threshold=nms_threshold, weights=weights)[0]  # fmt: skip
    return out["boxes"], out["scores"]


def _detection_layer(class_logits, box_deltas, proposals, image_size, score_threshold=0.7, nms_threshold=0.3,
                     max_detections=100, weights=(10.0, 10.0, 5.0, 5.0)):  # fmt: skip
    out = _LIB["detection_layer"]["detect"](class_logits, box_deltas, proposals, image_size, score_threshold,
                                            nms_threshold, max_detections, weights)  # fmt: skip
    return out["boxes"], out["scores"], out["labels"]


def _mask_target(gt_mask, roi, mask_size=28):
    return _LIB["mask_target"]["mask_targets"](gt_mask[None], roi[None], torch.zeros(1, dtype=torch.long),
                                               mask_size)[0]  # fmt: skip


def _rpn_loss(objectness, deltas, labels, target_deltas, beta=1.0 / 9):
    return (_LIB["rpn_loss"]["rpn_objectness_loss"](objectness, labels),
            _LIB["rpn_loss"]["rpn_box_loss"](deltas, target_deltas, labels, beta=beta))  # fmt: skip


REFERENCES.update(
    proposal_layer=_proposal_layer,
    detection_layer=_detection_layer,
    roi_pool=roi_align.roi_pool,
    crop_and_resize=roi_align.crop_and_resize,
    assign_fpn_levels=roi_align.assign_fpn_levels,
    mask_target=_mask_target,
    rpn_loss=_rpn_loss,
    mask_loss=losses.mask_loss,
)


@pytest.fixture(autouse=True)
def references_afterwards():
    yield
    exercises.use_reference()


def failure(name, fn) -> str:
    result = exercises.run_check(name, fn)
    assert not result.passed, f"{name}: a wrong implementation passed: {result.message}"
    assert result.name == name and not result.message.startswith("PASS")
    return result.message


# --------------------------------------------------------------------------------------------------------
# independent implementations, written from the task text (with switches for the usual mistakes)


def make_box_iou(plus=0.0, clamp=True, subtract=True, transpose=False):
    def box_iou(b1, b2):
        a, b = (b2, b1) if transpose else (b1, b2)
        x1 = torch.maximum(a[:, None, 0], b[None, :, 0])
        y1 = torch.maximum(a[:, None, 1], b[None, :, 1])
        x2 = torch.minimum(a[:, None, 2], b[None, :, 2])
        y2 = torch.minimum(a[:, None, 3], b[None, :, 3])
        w, h = x2 - x1 + plus, y2 - y1 + plus
        inter = w.clamp(min=0) * h.clamp(min=0) if clamp else w * h
        area_a = (a[:, 2] - a[:, 0] + plus) * (a[:, 3] - a[:, 1] + plus)
        area_b = (b[:, 2] - b[:, 0] + plus) * (b[:, 3] - b[:, 1] + plus)
        union = area_a[:, None] + area_b[None, :] - (inter if subtract else 0)
        return inter / union

    return box_iou


def make_encode(order=(0, 1, 2, 3), plus=0.0, log=True, divide_weights=False):
    def encode_deltas(b, r, weights=(1.0, 1.0, 1.0, 1.0)):
        gw, gh = b[:, 2] - b[:, 0] + plus, b[:, 3] - b[:, 1] + plus
        aw, ah = r[:, 2] - r[:, 0] + plus, r[:, 3] - r[:, 1] + plus
        gx, gy, ax, ay = b[:, 0] + gw / 2, b[:, 1] + gh / 2, r[:, 0] + aw / 2, r[:, 1] + ah / 2
        f = torch.log if log else (lambda v: v)
        d = torch.stack(((gx - ax) / aw, (gy - ay) / ah, f(gw / aw), f(gh / ah)), dim=1)
        w = torch.tensor(weights, dtype=d.dtype)
        return (d / w if divide_weights else d * w)[:, list(order)]

    return encode_deltas


CLAMP = math.log(1000 / 16)


def make_decode(clamps=True, multiply=False, corners=True):
    def decode_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clamp=CLAMP):
        w = torch.tensor(weights, dtype=deltas.dtype)
        d = deltas * w if multiply else deltas / w
        dx, dy, dw, dh = d.unbind(1)
        if clamp is not None and clamps:
            dw, dh = dw.clamp(max=clamp), dh.clamp(max=clamp)
        aw, ah = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
        cx, cy = reference[:, 0] + aw / 2 + dx * aw, reference[:, 1] + ah / 2 + dy * ah
        bw, bh = aw * torch.exp(dw), ah * torch.exp(dh)
        if not corners:
            return torch.stack((cx, cy, bw, bh), dim=1)
        return torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), dim=1)

    return decode_deltas


def make_level_anchors(order="yxa", reciprocal=False, swap_xy=False, use_offset=True, grid=False):
    def level_anchors(scale, ratios, feature_shape, feature_stride, anchor_stride=1, offset=0.0):
        rows = math.ceil(feature_shape[0] / anchor_stride)
        cols = math.ceil(feature_shape[1] / anchor_stride)
        step = anchor_stride * feature_stride
        off = offset if use_offset else 0.0
        table = {}
        for i in range(rows):
            for j in range(cols):
                for a, r in enumerate(ratios):
                    r = 1 / r if reciprocal else r
                    w, h = scale * math.sqrt(r), scale / math.sqrt(r)
                    cx, cy = (j + off) * step, (i + off) * step
                    if swap_xy:
                        cx, cy = cy, cx
                    table[i, j, a] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        index = {
            "yxa": lambda k: k,
            "ayx": lambda k: (k[2], k[0], k[1]),
            "xya": lambda k: (k[1], k[0], k[2]),
        }[order]
        out = torch.tensor([table[k] for k in sorted(table, key=index)], dtype=torch.float32).reshape(-1, 4)
        return out.reshape(rows, cols, len(ratios), 4) if grid else out

    return level_anchors


def make_pyramid(reverse=False, tensor_only=False, count_positions=False):
    level = make_level_anchors()

    def pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride=1, offset=0.0):
        parts = [
            level(s, ratios, shape, st, anchor_stride, offset)
            for s, shape, st in zip(scales, feature_shapes, feature_strides, strict=True)
        ]
        counts = [len(p) // (len(ratios) if count_positions else 1) for p in parts]
        out = torch.cat(parts[::-1] if reverse else parts)
        return out if tensor_only else (out, counts)

    return pyramid_anchors


def make_nms(rule="gt", order="score", only_kept=True, dtype=torch.int64, as_list=False, sort=True, plus=0.0):
    iou_fn = make_box_iou(plus=plus)

    def nms_fn(b, s, t):
        order_ = sorted(range(len(s)), key=lambda i: (-float(s[i]), i)) if sort else list(range(len(s)))
        iou = iou_fn(b, b) if len(b) else None
        keep, removed = [], set()
        for rank, i in enumerate(order_):
            if only_kept and i in removed:
                continue
            if not only_kept and any(iou[k, i] > t for k in order_[:rank]):
                continue
            keep.append(i)
            for j in order_[rank + 1 :]:
                if iou[i, j] > t or (rule == "ge" and iou[i, j] >= t):
                    removed.add(j)
        if order == "index":
            keep.sort()
        return keep if as_list else torch.tensor(keep, dtype=dtype)

    return nms_fn


def make_rpn_targets(rule_pos="ge", low_quality=True, sample="random", use_generator=True, cap=True,
                     weights_used=True):  # fmt: skip
    """An independent RPN target layer (own IoU, matching, sampling) with switchable mistakes."""
    iou_fn = make_box_iou()
    encode = make_encode()

    def pick(idx, k, generator):
        if sample == "first":
            return idx[:k]
        perm = torch.randperm(len(idx), generator=generator if use_generator else None)
        return idx[perm[:k]]

    def rpn_fn(anchors, gt_boxes, positive_iou=0.7, negative_iou=0.3, num_samples=256, positive_fraction=0.5,
               weights=(1.0, 1.0, 1.0, 1.0), generator=None):  # fmt: skip
        n = anchors.shape[0]
        labels = torch.full((n,), -1, dtype=torch.long)
        matched = torch.full((n,), -1, dtype=torch.long)
        if gt_boxes.shape[0] == 0:
            best = torch.zeros(n)
            arg = torch.zeros(n, dtype=torch.long)
        else:
            iou = iou_fn(gt_boxes, anchors)
            best, arg = iou.max(dim=0)
        labels[best < negative_iou] = 0
        labels[(best >= positive_iou) if rule_pos == "ge" else (best > positive_iou)] = 1
        if low_quality and gt_boxes.shape[0]:
            per_gt = iou.max(dim=1, keepdim=True).values
            hit = ((iou == per_gt) & (per_gt > 0)).any(dim=0)
            labels[hit] = 1
        pos, neg = torch.nonzero(labels == 1).flatten(), torch.nonzero(labels == 0).flatten()
        num_pos = min(len(pos), int(num_samples * positive_fraction)) if cap else len(pos)
        pos = pick(pos, num_pos, generator)
        neg = pick(neg, min(len(neg), num_samples - num_pos), generator)
        out_labels = torch.full((n,), -1, dtype=torch.long)
        out_labels[pos], out_labels[neg] = 1, 0
        matched[pos] = arg[pos]
        deltas = torch.zeros(n, 4)
        if len(pos):
            deltas[pos] = encode(gt_boxes[arg[pos]], anchors[pos], weights if weights_used else (1.0,) * 4)
        return {"labels": out_labels, "matched_gt": matched, "deltas": deltas}

    return rpn_fn


def make_bilinear(swap=False, nearest=False, zero_outside_map=False):
    def bilinear(feature, y, x):
        if swap:
            y, x = x, y
        _, h, w = feature.shape
        y, x = float(y), float(x)
        if y < -1 or y > h or x < -1 or x > w:
            return torch.zeros(feature.shape[0])
        if zero_outside_map and not (0 <= y <= h - 1 and 0 <= x <= w - 1):
            return torch.zeros(feature.shape[0])
        y, x = min(max(y, 0.0), h - 1), min(max(x, 0.0), w - 1)
        if nearest:
            return feature[:, round(y), round(x)]
        y0, x0 = math.floor(y), math.floor(x)
        y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feature[:, y0, x0] + (1 - ly) * lx * feature[:, y0, x1]
                + ly * (1 - lx) * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])  # fmt: skip

    return bilinear


def make_roi_align(ignore_aligned=False, swap_xy=False, ignore_scale=False, one_sample=False,
                   fixed_two=False):  # fmt: skip
    read = make_bilinear()

    def roi_align_fn(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        oh, ow = output_size
        scale = 1.0 if ignore_scale else spatial_scale
        shift = 0.5 if (aligned and not ignore_aligned) else 0.0
        out = torch.zeros(boxes.shape[0], input.shape[1], oh, ow)
        for k, (b, x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if swap_xy:
                x1, y1, x2, y2 = y1, x1, y2, x2
            x1, y1, x2, y2 = (v * scale - shift for v in (x1, y1, x2, y2))
            bw, bh = x2 - x1, y2 - y1
            if not aligned:
                bw, bh = max(bw, 1.0), max(bh, 1.0)
            gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bh / oh), 0)
            gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bw / ow), 0)
            if one_sample:
                gh = gw = 1
            if fixed_two and sampling_ratio <= 0:
                gh = gw = 2
            for ph in range(oh):
                for pw in range(ow):
                    total = torch.zeros(input.shape[1])
                    for iy in range(gh):
                        for ix in range(gw):
                            y = y1 + ph * bh / oh + (iy + 0.5) * bh / oh / gh
                            x = x1 + pw * bw / ow + (ix + 0.5) * bw / ow / gw
                            total += read(input[int(b)], torch.tensor(y), torch.tensor(x))
                    out[k, :, ph, pw] = total / max(gh * gw, 1)
        return out

    return roi_align_fn


def crop_mask(mask, box, m):
    """One sample at each output cell's centre, on a pixel grid whose centres are at c + 0.5."""
    h, w = mask.shape
    x1, y1, x2, y2 = box.tolist()
    xs = x1 + (torch.arange(m) + 0.5) * (x2 - x1) / m
    ys = y1 + (torch.arange(m) + 0.5) * (y2 - y1) / m
    gy, gx = torch.meshgrid(2 * ys / h - 1, 2 * xs / w - 1, indexing="ij")
    grid = torch.stack((gx, gy), dim=-1)[None]
    return F.grid_sample(mask[None, None].float(), grid, align_corners=False)[0, 0]


def make_detection_targets(negatives_first=False, fill=False, whole_image_mask=False, wrong_gt_mask=False):
    iou_fn = make_box_iou()
    encode = make_encode()

    def det_fn(proposals, gt_boxes, gt_labels, gt_masks, num_samples=200, positive_fraction=0.33,
               positive_iou=0.5, negative_iou=0.5, mask_size=28, weights=(10.0, 10.0, 5.0, 5.0),
               generator=None):  # fmt: skip
        iou = iou_fn(gt_boxes, proposals)
        best, arg = iou.max(dim=0)
        pos = torch.nonzero(best >= positive_iou).flatten()
        neg = torch.nonzero(best < negative_iou).flatten()
        pos = pos[torch.randperm(len(pos), generator=generator)][: int(num_samples * positive_fraction)]
        want = num_samples - len(pos) if fill else int(len(pos) / positive_fraction) - len(pos)
        neg = neg[torch.randperm(len(neg), generator=generator)][: min(want, len(neg))]
        gt_of = arg[pos]
        rois = torch.cat((proposals[pos], proposals[neg]))
        labels = torch.cat((gt_labels[gt_of], torch.zeros(len(neg), dtype=torch.long)))
        matched = torch.cat((gt_of, torch.full((len(neg),), -1)))
        targets = torch.cat((encode(gt_boxes[gt_of], proposals[pos], weights), torch.zeros(len(neg), 4)))
        mask_list = []
        for g, roi in zip(gt_of.tolist(), proposals[pos], strict=True):
            g = (g + 1) % len(gt_boxes) if wrong_gt_mask else g
            if whole_image_mask:
                h, w = gt_masks.shape[1:]
                roi = torch.tensor([0.0, 0.0, w, h])
            mask_list.append((crop_mask(gt_masks[g], roi, mask_size) >= 0.5).float())
        mask_targets = torch.stack(mask_list) if mask_list else torch.zeros(0, mask_size, mask_size)
        out = {"rois": rois, "labels": labels, "matched_gt": matched, "box_targets": targets,
               "mask_targets": mask_targets}  # fmt: skip
        if negatives_first:
            order = torch.cat((torch.arange(len(pos), len(rois)), torch.arange(len(pos))))
            out.update(
                rois=rois[order], labels=labels[order], matched_gt=matched[order], box_targets=targets[order]
            )
        return out

    return det_fn


def make_paste(plus=0, align_corners=False, transpose=False, exact=False):
    def paste_mask(mask, box, image_size):
        h, w = image_size
        out = torch.zeros(h, w)
        if exact:  # sample the mask at every pixel centre inside the fractional box
            x1, y1, x2, y2 = box.tolist()
            px, py = torch.arange(w) + 0.5, torch.arange(h) + 0.5
            inside = ((px >= x1) & (px < x2))[None, :] & ((py >= y1) & (py < y2))[:, None]
            gy, gx = torch.meshgrid(
                2 * (py - y1) / (y2 - y1) - 1, 2 * (px - x1) / (x2 - x1) - 1, indexing="ij"
            )
            grid = torch.stack((gx, gy), dim=-1)[None]
            sampled = F.grid_sample(mask[None, None], grid, align_corners=False, padding_mode="border")[0, 0]
            return torch.where(inside, sampled, out)
        x1, y1, x2, y2 = (math.ceil(float(v) - 0.5) for v in box)
        x2, y2 = x2 + plus, y2 + plus
        if x2 <= x1 or y2 <= y1:
            return out
        src = mask.T if transpose else mask
        resized = F.interpolate(src[None, None], size=(y2 - y1, x2 - x1), mode="bilinear",
                                align_corners=align_corners)[0, 0]  # fmt: skip
        left, top, right, bottom = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if left < right and top < bottom:
            out[top:bottom, left:right] = resized[top - y1 : bottom - y1, left - x1 : right - x1]
        return out

    return paste_mask


def make_proposal_layer(clip=True, sigmoid=True, post_cut=True, swap_hw=False):
    decode, nms_fn = make_decode(), make_nms()

    def proposal_layer(objectness, deltas, anchors, image_size, pre_nms_top_n=6000, post_nms_top_n=2000,
                       nms_threshold=0.7, weights=(1.0, 1.0, 1.0, 1.0)):  # fmt: skip
        top = objectness.topk(min(pre_nms_top_n, len(objectness))).indices
        boxes = decode(deltas[top], anchors[top], weights)
        h, w = image_size[::-1] if swap_hw else image_size
        if clip:
            boxes = torch.stack((boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                                 boxes[:, 3].clamp(0, h)), dim=1)  # fmt: skip
        scores = torch.sigmoid(objectness[top]) if sigmoid else objectness[top]
        keep = nms_fn(boxes, scores, nms_threshold)
        if post_cut:
            keep = keep[:post_nms_top_n]
        return boxes[keep], scores[keep]

    return proposal_layer


def make_detection_layer(per_class=True, softmax=True, background=True, column="class"):
    decode, nms_fn = make_decode(), make_nms()

    def detection_layer(class_logits, box_deltas, proposals, image_size, score_threshold=0.7,
                        nms_threshold=0.3, max_detections=100, weights=(10.0, 10.0, 5.0, 5.0)):  # fmt: skip
        probs = torch.softmax(class_logits, dim=1) if softmax else class_logits
        if background:
            scores, labels = probs.max(dim=1)
        else:
            scores, labels = probs[:, 1:].max(dim=1)
            labels = labels + 1
        keep = torch.nonzero((labels > 0) & (scores >= score_threshold)).flatten()
        scores, labels = scores[keep], labels[keep]
        used = labels if column == "class" else torch.ones_like(labels)
        boxes = decode(box_deltas[keep, used], proposals[keep], weights)
        h, w = image_size
        boxes = torch.stack((boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                             boxes[:, 3].clamp(0, h)), dim=1)  # fmt: skip
        groups = labels if per_class else torch.zeros_like(labels)
        kept = []
        for g in torch.unique(groups).tolist():
            members = torch.nonzero(groups == g).flatten()
            kept += members[nms_fn(boxes[members], scores[members], nms_threshold)].tolist()
        kept = sorted(kept, key=lambda i: (-float(scores[i]), i))[:max_detections]
        kept = torch.tensor(kept, dtype=torch.long)
        return boxes[kept], scores[kept], labels[kept]

    return detection_layer


def _round_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def make_roi_pool(rounding=_round_away, plus_one=True, reduce="max"):
    def roi_pool(input, boxes, output_size, spatial_scale=1.0):
        oh, ow = output_size
        _, c, h, w = input.shape
        out = torch.zeros(boxes.shape[0], c, oh, ow)
        for k, (b, *corners) in enumerate(boxes.tolist()):
            x1, y1, x2, y2 = (int(rounding(v * spatial_scale)) for v in corners)
            bw, bh = max(x2 - x1 + int(plus_one), 1), max(y2 - y1 + int(plus_one), 1)
            for ph in range(oh):
                r0 = min(max(y1 + math.floor(ph * bh / oh), 0), h)
                r1 = min(max(y1 + math.ceil((ph + 1) * bh / oh), 0), h)
                for pw in range(ow):
                    c0 = min(max(x1 + math.floor(pw * bw / ow), 0), w)
                    c1 = min(max(x1 + math.ceil((pw + 1) * bw / ow), 0), w)
                    cells = input[int(b), :, r0:r1, c0:c1].reshape(c, -1)
                    if cells.shape[1]:
                        out[k, :, ph, pw] = cells.amax(1) if reduce == "max" else cells.mean(1)
        return out

    return roi_pool


def make_crop_and_resize(swap=False, nearest=False, cells="H-1"):
    def crop_and_resize(image, boxes, box_indices, crop_size, extrapolation_value=0.0):
        ch, cw = crop_size
        _, c, h, w = image.shape
        out = torch.full((boxes.shape[0], c, ch, cw), float(extrapolation_value))

        def samples(a, b, n, size):
            span = size - 1 if cells == "H-1" else size
            if n == 1:
                return [0.5 * (a + b) * span]
            return [a * span + i * (b - a) * span / (n - 1) for i in range(n)]

        for k, box in enumerate(boxes.tolist()):
            y1, x1, y2, x2 = (box[1], box[0], box[3], box[2]) if swap else box
            im = image[int(box_indices[k])]
            for i, y in enumerate(samples(y1, y2, ch, h)):
                for j, x in enumerate(samples(x1, x2, cw, w)):
                    if not (0 <= y <= h - 1 and 0 <= x <= w - 1):
                        continue
                    if nearest:
                        out[k, :, i, j] = im[:, round(y), round(x)]
                        continue
                    y0, x0 = math.floor(y), math.floor(x)
                    ya, xa = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                    ly, lx = y - y0, x - x0
                    out[k, :, i, j] = ((1 - ly) * ((1 - lx) * im[:, y0, x0] + lx * im[:, y0, xa])
                                       + ly * ((1 - lx) * im[:, ya, x0] + lx * im[:, ya, xa]))  # fmt: skip
        return out

    return crop_and_resize


def make_assign_fpn_levels(rounding=torch.round, size="sqrt", clamp=True):
    def assign_fpn_levels(boxes, k0=4, canonical_size=224.0, min_level=2, max_level=5):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        s = torch.sqrt(w * h) if size == "sqrt" else w * h
        level = k0 + rounding(torch.log2(s / canonical_size))
        level = torch.nan_to_num(level, nan=min_level, neginf=min_level, posinf=max_level)
        return (level.clamp(min_level, max_level) if clamp else level).long()

    return assign_fpn_levels


def make_mask_target(rule="ge", whole=False, aligned=False):
    crop = make_roi_align()

    def mask_target(gt_mask, roi, mask_size=28):
        if whole:  # the whole image's mask resized
            resized = F.interpolate(gt_mask[None, None].float(), size=(mask_size, mask_size), mode="bilinear")
            return (resized[0, 0] >= 0.5).float()
        rois = torch.cat((torch.zeros(1), roi.float()))[None]
        soft = crop(gt_mask[None, None].float(), rois, (mask_size, mask_size), 1.0, -1, aligned)[0, 0]
        if rule == "soft":
            return soft
        return ((soft >= 0.5) if rule == "ge" else (soft > 0.5)).float()

    return mask_target


def make_rpn_loss(ignored_as_negative=False, per="sampled", use_beta=True, detached=False):
    def rpn_loss(objectness, deltas, labels, target_deltas, beta=1.0 / 9):
        sampled = labels >= 0
        chosen = torch.ones_like(sampled) if ignored_as_negative else sampled
        targets = (labels[chosen] == 1).to(objectness.dtype)
        bce = F.binary_cross_entropy_with_logits(objectness[chosen], targets, reduction="sum")
        objectness_loss = bce / max(int(chosen.sum()), 1)
        positive = labels == 1
        kwargs = {"beta": beta} if use_beta else {}
        total = F.smooth_l1_loss(deltas[positive], target_deltas[positive], reduction="sum", **kwargs)
        count = int(sampled.sum()) if per == "sampled" else int(positive.sum())
        out = (objectness_loss, total / max(count, 1))
        return tuple(torch.tensor(v.item()) for v in out) if detached else out

    return rpn_loss


def make_mask_loss(channel="label", softmax=False):
    def mask_loss(mask_logits, labels, mask_targets):
        positive = torch.nonzero(labels > 0).flatten()
        if softmax:
            probs = torch.softmax(mask_logits[positive], dim=1)[torch.arange(len(positive)), labels[positive]]
            return F.binary_cross_entropy(probs, mask_targets)
        if channel == "all":
            chosen = mask_logits[positive]
            return F.binary_cross_entropy_with_logits(chosen, mask_targets[:, None].expand_as(chosen))
        index = labels[positive] if channel == "label" else torch.zeros_like(positive)
        chosen = mask_logits[positive, index]
        if chosen.numel() == 0:
            return mask_logits.sum() * 0
        return F.binary_cross_entropy_with_logits(chosen, mask_targets)

    return mask_loss


INDEPENDENT = {
    "box_iou": make_box_iou(),
    "encode_deltas": make_encode(),
    "decode_deltas": make_decode(),
    "level_anchors": make_level_anchors(),
    "pyramid_anchors": make_pyramid(),
    "nms": make_nms(),
    "rpn_targets": make_rpn_targets(),
    "bilinear": make_bilinear(),
    "roi_align": make_roi_align(),
    "detection_targets": make_detection_targets(),
    "paste_mask": make_paste(),
    "proposal_layer": make_proposal_layer(),
    "detection_layer": make_detection_layer(),
    "roi_pool": make_roi_pool(),
    "crop_and_resize": make_crop_and_resize(),
    "assign_fpn_levels": make_assign_fpn_levels(),
    "mask_target": make_mask_target(),
    "rpn_loss": make_rpn_loss(),
    "mask_loss": make_mask_loss(),
}


# --------------------------------------------------------------------------------------------------------
# API


def test_exercise_list_and_describe():
    assert list(exercises.EXERCISES) == list(REFERENCES)
    for name, ex in exercises.EXERCISES.items():
        assert ex.name == name
        assert ex.signature.startswith(f"def {name}(")
        text = " ".join(exercises.describe(name).split())
        for part in (ex.title, ex.signature, ex.task, ex.shapes, ex.hint, ex.affects):
            assert " ".join(part.split()) in text
    with pytest.raises(AttributeError):
        exercises.EXERCISES["nms"].name = "other"  # frozen


@pytest.mark.parametrize("call", [exercises.run_check, exercises.check, lambda n, f: exercises.describe(n)])
def test_unknown_name_is_a_value_error_listing_the_names(call):
    with pytest.raises(ValueError, match="box_iou.*paste_mask"):
        call("iou", make_box_iou())


def test_not_implemented_and_not_callable():
    result = exercises.run_check("nms", None)
    assert not result.passed and "not implemented yet" in result.message
    assert not exercises.run_check("nms", 3).passed


def test_check_prints_and_returns(capsys):
    assert exercises.check("box_iou", boxes.box_iou) is True
    assert capsys.readouterr().out.startswith("PASS box_iou")
    assert exercises.check("box_iou", make_box_iou(plus=1.0)) is False
    assert "+ 1" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------
# correct implementations pass


@pytest.mark.parametrize("name", list(REFERENCES))
def test_reference_passes(name):
    result = exercises.run_check(name, REFERENCES[name])
    assert result.passed, result.message
    assert result.message.startswith(f"PASS {name}")


@pytest.mark.parametrize("name", list(INDEPENDENT))
def test_independent_implementation_passes(name):
    result = exercises.run_check(name, INDEPENDENT[name])
    assert result.passed, result.message


def test_readable_references_pass_too():
    assert exercises.run_check("roi_align", roi_align.roi_align_loop).passed
    assert exercises.run_check("nms", nms.nms_loop).passed
    assert exercises.run_check(
        "paste_mask", make_paste(exact=True)
    ).passed  # fractional boxes sampled exactly


# --------------------------------------------------------------------------------------------------------
# the usual mistakes fail, and the message says which one

MISTAKES = [
    ("box_iou", make_box_iou(plus=1.0), "+ 1"),
    ("box_iou", make_box_iou(clamp=False), "clamp each at 0"),
    ("box_iou", make_box_iou(subtract=False), "union"),
    ("box_iou", make_box_iou(transpose=True), "transposed"),
    ("encode_deltas", make_encode(order=(1, 0, 3, 2)), "(dy, dx, dh, dw)"),
    ("encode_deltas", make_encode(plus=1.0), "+ 1"),
    ("encode_deltas", make_encode(log=False), "logarithm"),
    ("encode_deltas", make_encode(divide_weights=True), "you divided"),
    ("decode_deltas", make_decode(clamps=False), "not clamped"),
    ("decode_deltas", make_decode(multiply=True), "you multiplied"),
    ("decode_deltas", make_decode(corners=False), "corners"),
    ("level_anchors", make_level_anchors(order="ayx"), "ratios outermost"),
    ("level_anchors", make_level_anchors(order="xya"), "column by column"),
    ("level_anchors", make_level_anchors(reciprocal=True), "width / height"),
    ("level_anchors", make_level_anchors(swap_xy=True), "x and y"),
    ("level_anchors", make_level_anchors(use_offset=False), "offset"),
    ("level_anchors", make_level_anchors(grid=True), "reshape"),
    ("pyramid_anchors", make_pyramid(reverse=True), "reverse order"),
    ("pyramid_anchors", make_pyramid(tensor_only=True), "tuple"),
    ("pyramid_anchors", make_pyramid(count_positions=True), "counted positions"),
    ("nms", make_nms(order="index"), "decreasing score"),
    ("nms", make_nms(rule="ge"), "strictly"),
    ("nms", make_nms(only_kept=False), "only *kept* boxes"),
    ("nms", make_nms(dtype=torch.int32), "int64"),
    ("nms", make_nms(sort=False), "you did not sort by score"),
    ("nms", make_nms(as_list=True), "list"),
    ("rpn_targets", make_rpn_targets(rule_pos="gt"), "you used >"),
    ("rpn_targets", make_rpn_targets(low_quality=False), "low-quality"),
    ("rpn_targets", make_rpn_targets(sample="first"), "random"),
    ("rpn_targets", make_rpn_targets(use_generator=False), "same generator seed"),
    ("rpn_targets", make_rpn_targets(cap=False), "int(num_samples * positive_fraction)"),
    ("rpn_targets", make_rpn_targets(weights_used=False), "weights were not applied"),
    ("bilinear", make_bilinear(swap=True), "x and y"),
    ("bilinear", make_bilinear(nearest=True), "nearest"),
    ("bilinear", make_bilinear(zero_outside_map=True), "border rule"),
    ("roi_align", make_roi_align(ignore_aligned=True), "half-pixel"),
    ("roi_align", make_roi_align(swap_xy=True), "x and y"),
    ("roi_align", make_roi_align(ignore_scale=True), "spatial_scale was ignored"),
    ("roi_align", make_roi_align(one_sample=True), "one sample per bin"),
    ("roi_align", make_roi_align(fixed_two=True), "sampling_ratio <= 0 means adaptive"),
    ("detection_targets", make_detection_targets(negatives_first=True), "positives come first"),
    ("detection_targets", make_detection_targets(fill=True), "fill up to num_samples"),
    ("detection_targets", make_detection_targets(whole_image_mask=True), "whole image"),
    ("detection_targets", make_detection_targets(wrong_gt_mask=True), "matched GT"),
    ("paste_mask", make_paste(plus=1), "+ 1"),
    ("paste_mask", make_paste(align_corners=True), "align_corners=False"),
    ("paste_mask", make_paste(transpose=True), "transposed"),
    ("paste_mask", lambda m, b, s: (make_paste()(m, b, s) >= 0.5).float(), "thresholding comes later"),
    ("proposal_layer", make_proposal_layer(clip=False), "not clipped"),
    ("proposal_layer", make_proposal_layer(swap_hw=True), "you swapped them"),
    ("proposal_layer", make_proposal_layer(sigmoid=False), "sigmoid(logit)"),
    ("proposal_layer", make_proposal_layer(post_cut=False), "post_nms_top_n was ignored"),
    ("detection_layer", make_detection_layer(per_class=False), "within each class"),
    ("detection_layer", make_detection_layer(softmax=False), "softmax the class logits"),
    ("detection_layer", make_detection_layer(background=False), "*including* background"),
    ("detection_layer", make_detection_layer(column="first"), "you used class 1's"),
    ("roi_pool", make_roi_pool(rounding=round), "halves round away from zero"),
    ("roi_pool", make_roi_pool(plus_one=False), "last row and column"),
    ("roi_pool", make_roi_pool(reduce="mean"), "not the average"),
    ("crop_and_resize", make_crop_and_resize(swap=True), "TensorFlow's order"),
    ("crop_and_resize", make_crop_and_resize(cells="H"), "H - 1"),
    ("crop_and_resize", make_crop_and_resize(nearest=True), "nearest cell"),
    ("assign_fpn_levels", make_assign_fpn_levels(rounding=torch.floor), "torchvision's rule"),
    ("assign_fpn_levels", make_assign_fpn_levels(size="area"), "not its area"),
    ("assign_fpn_levels", make_assign_fpn_levels(clamp=False), "clamp the levels"),
    ("mask_target", make_mask_target(whole=True), "whole image's mask"),
    ("mask_target", make_mask_target(rule="soft"), "soft"),
    ("mask_target", make_mask_target(rule="gt"), "you used > 0.5"),
    ("mask_target", make_mask_target(aligned=True), "half a pixel"),
    ("rpn_loss", make_rpn_loss(ignored_as_negative=True), "not background"),
    ("rpn_loss", make_rpn_loss(per="positives"), "not of positives"),
    ("rpn_loss", make_rpn_loss(use_beta=False), "default beta is 1.0"),
    ("rpn_loss", make_rpn_loss(detached=True), "carries no gradient"),
    ("mask_loss", make_mask_loss(channel="all"), "every class's channel"),
    ("mask_loss", make_mask_loss(channel="zero"), "channel 0"),
    ("mask_loss", make_mask_loss(softmax=True), "not a softmax"),
]


@pytest.mark.parametrize(("name", "fn", "diagnosis"), MISTAKES, ids=[f"{m[0]}:{m[2]}" for m in MISTAKES])
def test_mistake_is_diagnosed(name, fn, diagnosis):
    message = failure(name, fn)
    assert diagnosis in message, message


def test_a_diagnosis_only_for_the_mistake_the_function_makes():
    """Exactly at the threshold a >= and widths + 1 give the same output: only the right one is named."""
    message = failure("nms", make_nms(rule="ge"))
    assert "strictly" in message and "+ 1" not in message
    message = failure("nms", make_nms(plus=1.0))
    assert "+ 1" in message and "strictly" not in message
    message = failure("roi_align", make_roi_align(fixed_two=True))
    assert "hand-made case 4" in message and "adaptive" in message and "one sample" not in message


def test_random_cases_depend_on_the_seed_so_answers_cannot_be_copied():
    """A table of one student's answers (inputs -> outputs) passes that student's check, not another's."""
    table = {}
    honest = make_box_iou()

    def recorder(b1, b2):
        out = honest(b1, b2)
        table[(b1.numpy().tobytes(), b2.numpy().tobytes())] = out
        return out

    def copied(b1, b2):
        return table.get((b1.numpy().tobytes(), b2.numpy().tobytes()), torch.zeros(len(b1), len(b2)))

    assert exercises.run_check("box_iou", recorder, seed="alice").passed
    assert exercises.run_check("box_iou", copied, seed="alice").passed
    message = failure("box_iou", lambda b1, b2: copied(b1, b2))  # the notebooks' cases (seed None)
    assert "random case 1" in message
    assert "random case 1" in exercises.run_check("box_iou", copied, seed="bob").message


def test_failure_shows_the_hand_made_input_and_the_expected_value():
    message = failure("box_iou", make_box_iou(plus=1.0))
    assert "two overlapping 2x2 squares" in message and "1/7" in message
    assert "Expected" in message and "Got" in message and "0.1429" in message


def test_in_place_modification_is_reported():
    def box_iou(b1, b2):
        b1[:, 2:] -= b1[:, :2]  # turns the input into (x, y, w, h)
        return make_box_iou()(boxes.box_convert(b1, "xywh", "xyxy"), b2)

    assert "changed its input `boxes1` in place" in failure("box_iou", box_iou)


def test_wrapping_the_library_fails_with_a_message_saying_so():
    """A notebook's alias is a global of the student's module, as ``library_box_iou`` is of this one."""
    wrappers = [
        lambda b1, b2: boxes.box_iou(b1, b2),
        lambda b1, b2: library_box_iou(b1, b2),
        lambda b1, b2: mrcnn_edu.ops.box_iou(b1, b2),
    ]
    for fn in wrappers:
        message = failure("box_iou", fn)
        assert "mrcnn_edu.boxes.box_iou is mrcnn_edu's own implementation of box_iou" in message
    assert "own implementation of nms" in failure("nms", lambda b, s, t: mrcnn_edu.ops.nms(b, s, t))
    assert boxes.box_iou is mrcnn_edu.ops.box_iou is library_box_iou  # restored after the check
    assert exercises.run_check("nms", make_nms()).passed  # library functions of other stages stay usable
    assert "own implementation" in failure("pyramid_anchors", lambda *a, **k: anchors.pyramid_anchors(*a))


def test_student_exception_names_the_line():
    def box_iou(b1, b2):
        area = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
        return area / 0 if len(b1) > 5 else undefined_name  # noqa: F821

    message = failure("box_iou", box_iou)
    assert "NameError" in message and "undefined_name" in message and "line" in message


BROKEN = [
    lambda *a, **k: None,
    lambda *a, **k: "a string",
    lambda *a, **k: {"labels": 3},
    lambda *a, **k: torch.zeros(2, 2, 2),
    lambda *a, **k: (torch.zeros(1), [1, 2]),
    lambda *a, **k: 1 / 0,
    lambda *a, **k: torch.zeros(3, dtype=torch.bool),
    lambda: None,  # wrong signature: TypeError when called
]


@pytest.mark.parametrize("name", list(REFERENCES))
def test_broken_functions_never_raise(name):
    for fn in BROKEN:
        result = exercises.run_check(name, fn)
        assert not result.passed
        assert result.message.startswith("FAIL"), result.message


def test_returning_none_and_lists_are_explained():
    assert "forget the `return`" in failure("box_iou", lambda b1, b2: None)
    assert "Python list" in failure("box_iou", lambda b1, b2: boxes.box_iou(b1, b2).tolist())


# --------------------------------------------------------------------------------------------------------
# swapping


def counting(calls: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


def shapes_images(n=1, seed=0):
    ds = ShapesDataset(n, (128, 128), seed=seed)
    items = [ds[i] for i in range(n)]
    return [im for im, _ in items], [t for _, t in items]


def test_use_student_reaches_the_model_and_use_reference_restores_identity():
    original_nms, original_batched = nms.nms, nms.batched_nms
    calls: dict = {}
    exercises.use_student("nms", counting(calls, "nms", nms.nms))
    assert mrcnn_edu.proposals.nms is not original_nms
    assert exercises.active()["nms"] == "student"
    torch.manual_seed(0)
    model = MaskRCNN(Config.preset("shapes")).eval()
    images, _ = shapes_images()
    with torch.no_grad():
        model(images)
    assert calls["nms"] > 0
    exercises.use_reference("nms")
    assert mrcnn_edu.proposals.nms is original_nms and nms.nms is original_nms
    for module in (nms, mrcnn_edu.proposals, mrcnn_edu.detection):
        assert module.batched_nms is original_batched
    assert exercises.active()["nms"] == "reference"


def test_swapping_twice_then_restoring_gives_the_originals():
    sites = {
        stage: {(m, a): getattr(__import__(m, fromlist=[a]), a) for a, mods in attrs.items() for m in mods}
        for stage, attrs in exercises.SITES.items()
    }
    for stage in exercises.EXERCISES:
        exercises.use_student(stage, INDEPENDENT[stage])
        exercises.use_student(stage, REFERENCES[stage])
    assert set(exercises.active().values()) == {"student"}
    exercises.use_reference()
    for stage, held in sites.items():
        for (module, attr), original in held.items():
            assert getattr(__import__(module, fromlist=[attr]), attr) is original, (stage, module, attr)
    assert set(exercises.active().values()) == {"reference"}


def test_every_stage_reaches_the_model():
    """All stages swapped at once (counting wrappers of correct functions): train and eval forward passes."""
    calls: dict = {}
    for stage in exercises.EXERCISES:
        exercises.use_student(stage, counting(calls, stage, REFERENCES[stage]))
    torch.manual_seed(0)
    config = Config.preset("shapes", detection_min_confidence=0.0, rpn_post_nms_test=50)
    model = MaskRCNN(config)
    images, targets = shapes_images(2)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        results = model(images)
        assert results[0]["masks"].shape[-2:] == images[0].shape[-2:]
        model.config = model.config.replace(roi_method="crop_and_resize")  # matterport's sampler
        with warnings.catch_warnings():  # its level rule (normalised boxes) is not the exercise's: a warning
            warnings.simplefilter("ignore")
            model(images)
    roi_align.roi_align_loop(torch.rand(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), 2)  # reads bilinear
    mrcnn_edu.ops.roi_pool(torch.rand(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), 2)  # not in the model
    missing = [s for s in exercises.EXERCISES if calls.get(s, 0) == 0]
    assert not missing, f"stages never called: {missing}"


def test_round_base_is_supplied_by_the_adapter():
    exercises.use_student("pyramid_anchors", make_pyramid())
    args = ((8, 16), (0.5, 1.0, 2.0), ((3, 2), (2, 1)), (4, 8))
    got, counts = anchors.pyramid_anchors(*args, round_base=True)
    exercises.use_reference()
    want, want_counts = anchors.pyramid_anchors(*args, round_base=True)
    assert counts == want_counts
    torch.testing.assert_close(got, want)


def test_checks_judge_one_stage_with_the_other_stages_as_references():
    exercises.use_student("box_iou", make_box_iou(plus=1.0))  # a wrong IoU in the library...
    assert exercises.run_check("rpn_targets", rpn_targets.rpn_targets).passed  # ...does not fail this check
    assert getattr(rpn_targets.box_iou, "_exercise_stage", None) == "box_iou"  # swapped in again afterwards
    assert exercises.active()["box_iou"] == "student"


def test_use_student_rejects_non_functions():
    with pytest.raises(ValueError, match="fn"):
        exercises.use_student("nms", None)
    with pytest.raises(ValueError, match="box_iou"):
        exercises.use_student("no_such_stage", make_nms())
    with pytest.raises(ValueError, match="box_iou"):
        exercises.use_reference("no_such_stage")


def test_sites_hold_the_originals_and_no_other_module_does():
    import importlib
    import pkgutil
    import sys

    import mrcnn_edu

    for info in pkgutil.walk_packages(mrcnn_edu.__path__, "mrcnn_edu."):
        if info.name not in ("mrcnn_edu.__main__",):
            importlib.import_module(info.name)

    def never_swapped(name):  # the exercises package (its checks and its grader keep references)
        return name == "mrcnn_edu.exercises" or name.startswith("mrcnn_edu.exercises.")

    for stage, attrs in exercises.SITES.items():
        for attr, modules in attrs.items():
            original = getattr(sys.modules[modules[0]], attr)
            for module in modules:
                assert getattr(sys.modules[module], attr) is original, (module, attr)
            holders = {
                name for name, mod in list(sys.modules.items())
                if name.startswith("mrcnn_edu.") and not never_swapped(name)
                and mod is not None and mod.__dict__.get(attr) is original
            }  # fmt: skip
            assert holders <= set(modules), (
                f"{stage}: {attr} also held by {holders - set(modules)}: add to SITES"
            )


def test_a_swap_never_touches_the_exercises_package(monkeypatch):
    import sys

    from mrcnn_edu.exercises import check_boxes, check_nms

    original = boxes.box_iou
    assert check_boxes._box_iou is original and check_nms._box_iou is original  # they do hold originals
    # even under the library's own name (as `from ..boxes import box_iou` would bind it), never swapped:
    monkeypatch.setattr(check_boxes, "box_iou", original, raising=False)
    exercises.use_student("box_iou", make_box_iou(plus=1.0))
    assert rpn_targets.box_iou is not original  # the library is swapped...
    assert check_boxes.box_iou is original
    for name, module in list(sys.modules.items()):  # ...the package's own modules are not
        if name == "mrcnn_edu.exercises" or name.startswith("mrcnn_edu.exercises."):
            held = [v for v in vars(module).values() if hasattr(v, "_exercise_stage")]
            assert held == [], (name, held)
    assert exercises.run_check("box_iou", original).passed  # the check still compares with the reference
    assert not exercises.run_check("box_iou", make_box_iou(plus=1.0)).passed
