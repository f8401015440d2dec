"""One forward pass of Mask R-CNN as a single HTML page (``mrcnn-edu explore``).

:func:`write_page` runs :meth:`mrcnn_edu.MaskRCNN.trace` on one image and writes one self-contained file (the
page's HTML, CSS and JavaScript and the tensors it shows: no server, no kernel, no network; it opens from
disk). A student walks the pass in the order of the architecture: the molded image and its window, the
anchors of each FPN level, the RPN's objectness on each level and its best anchors, the proposals before and
after NMS with the pyramid level each is pooled from, the heads on a clicked proposal (pooled features, class
scores, box refinement, and for a detection its 28x28 mask and the mask pasted into the image), and the
detections. Each view names its coordinate frame from ``TRACE_STAGES[stage].frame``
(:data:`mrcnn_edu.model.TRACE_FRAMES`).

Everything on the page is computed here, in Python, from the trace: the page draws and never recomputes a
stage. What is reduced to keep the file small is listed on the page (``notes`` of :func:`explorer_data`):
probabilities, logits and pooled features are quantised to 8 bits, only the pooled-feature channels that
vary most between proposals are kept, large images are embedded as JPEG, pasted masks as their 0.5
threshold. A photo molded to 800 pixels makes a page of a few MB.

The page's code lives beside this file as package data: ``web/explore.html``, ``web/explore.css`` and
``web/explore.js``.

Shape glossary (one image)
    A_l: anchors of level l, ``h_l * w_l * R`` (R ratios)
    T: proposals entering NMS;  P: proposals after NMS (the ROIs of the box head)
    K: classes (K + 1 columns with the background);  N: detections
    C: pooled-feature channels kept on the page
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import torch

# stages by module (boxes.decode_deltas, not the name): an exercise that swaps in a student's function swaps
# it here too, as in the model (mrcnn_edu.exercises.swap)
from . import __version__, boxes, roi_align
from .model import TRACE_FRAMES, TRACE_STAGES
from .molding import denormalize_image
from .visualize import instance_colors

__all__ = ["explorer_data", "render_page", "write_page", "dequantise", "PAGE_FILES", "VIEWS"]

#: The page's template, style and code (package data in ``mrcnn_edu/web/``).
PAGE_FILES = ("explore.html", "explore.css", "explore.js")
#: The stage each view of the page shows, in the page's order; its frame comes from TRACE_STAGES.
VIEWS = {
    "molded": "molded_images",
    "anchors": "anchors",
    "objectness": "rpn_objectness",
    "proposals": "proposals",
    "pooled": "box_features",
    "detections": "results",
}
#: Images with more pixels than this are embedded as JPEG (quality 90), smaller ones as PNG.
PNG_MAX_PIXELS = 256 * 256
#: Config fields the page shows (each view quotes the ones it depends on).
SHOWN_CONFIG = (
    "name", "resize_mode", "min_dim", "max_dim", "anchor_scales", "anchor_ratios", "anchor_offset",
    "backbone_strides", "rpn_weights", "rpn_pre_nms_test", "rpn_post_nms_test", "rpn_nms_threshold",
    "rpn_per_level", "canonical_size", "level_rounding", "roi_method", "pool_size", "box_weights",
    "detection_candidates", "detection_min_confidence", "detection_nms_threshold", "detection_max_instances",
    "mask_paste",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ encoding
def _round(t: torch.Tensor, digits: int = 2) -> list:
    """A tensor as nested lists of floats rounded to ``digits`` (boxes and scores: exact enough to draw)."""
    return np.round(t.detach().cpu().double().numpy(), digits).tolist()


def _quantised(t: torch.Tensor, lo: float | None = None, hi: float | None = None) -> dict:
    """``t`` as 8-bit codes over ``[lo, hi]`` (default its range): ``value = lo + code / 255 * (hi - lo)``.

    Returns ``{"shape", "lo", "hi", "b64"}``, the codes row-major in base64; the error is at most
    ``(hi - lo) / 510``.
    """
    t = t.detach().cpu().double()
    if lo is None:
        lo = float(t.min()) if t.numel() else 0.0
    if hi is None:
        hi = float(t.max()) if t.numel() else 1.0
    span = hi - lo if hi > lo else 1.0
    codes = ((t - lo) / span * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return {"shape": list(t.shape), "lo": lo, "hi": hi, "b64": base64.b64encode(codes.tobytes()).decode()}


def dequantise(packed: dict) -> torch.Tensor:
    """The float64 tensor of a :func:`_quantised` dict (what the page computes in JavaScript)."""
    codes = np.frombuffer(base64.b64decode(packed["b64"]), dtype=np.uint8).astype(np.float64)
    span = packed["hi"] - packed["lo"] if packed["hi"] > packed["lo"] else 1.0
    return torch.from_numpy(packed["lo"] + codes / 255 * span).reshape(packed["shape"])


def _image_uri(image: torch.Tensor) -> str:
    """A ``[3, H, W]`` 0-1 image as a data URI: PNG up to :data:`PNG_MAX_PIXELS`, JPEG (quality 90) above."""
    from PIL import Image

    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    picture = Image.fromarray(pixels.numpy())
    buffer = io.BytesIO()
    if image.shape[-1] * image.shape[-2] > PNG_MAX_PIXELS:
        picture.save(buffer, format="JPEG", quality=90)
        kind = "jpeg"
    else:
        picture.save(buffer, format="PNG", optimize=True)
        kind = "png"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _mask_uri(mask: torch.Tensor) -> str:
    """A boolean ``[h, w]`` mask as a PNG data URI: white, opaque where True, transparent elsewhere."""
    from PIL import Image

    alpha = mask.cpu().numpy().astype(np.uint8) * 255
    picture = Image.fromarray(np.stack([np.full_like(alpha, 255), alpha], axis=-1), mode="LA")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgb[:3])


# ------------------------------------------------------------------------------------------ the stages
def _anchor_grid(anchors: torch.Tensor, ratios: int, name: str) -> dict:
    """The anchors ``[A_l, 4]`` of one level as a grid: cell centres ``origin + (c, r) * step`` plus the
    ``R`` boxes of one cell relative to its centre (``base``). The page rebuilds any anchor from them;
    this checks that the rebuilt anchors are the trace's (else the level is not a regular grid: an error)."""
    per_cell = anchors.reshape(-1, ratios, 4)
    centres = (per_cell[:, 0, :2] + per_cell[:, 0, 2:]) / 2
    xs, ys = torch.unique(centres[:, 0]), torch.unique(centres[:, 1])
    grid = (len(ys), len(xs))
    if grid[0] * grid[1] != len(per_cell):
        raise ValueError(f"anchors of {name} are not a regular grid of cells ({len(per_cell)} cells)")
    step = [float(xs[1] - xs[0]) if len(xs) > 1 else 0.0, float(ys[1] - ys[0]) if len(ys) > 1 else 0.0]
    origin = [float(xs[0]), float(ys[0])]
    base = per_cell[0] - per_cell.new_tensor(origin * 2)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    shift = torch.stack((cols * step[0], rows * step[1]), -1).reshape(-1, 1, 2).to(anchors.dtype) + \
        anchors.new_tensor(origin)  # fmt: skip
    rebuilt = base[None] + shift.repeat(1, 1, 2)
    if not torch.allclose(rebuilt, per_cell, atol=1e-3):
        raise ValueError(f"anchors of {name} are not one set of boxes shifted over a grid")
    return {"grid": list(grid), "origin": origin, "step": step, "base": _round(base, 3)}


def _levels(trace: dict, config, top: int) -> list[dict]:
    """Per FPN level: anchor grid, objectness probabilities ``[h, w, R]`` (8 bits), the ``top`` anchors by
    objectness with the boxes the RPN's deltas decode them into (before the proposal layer clips them)."""
    anchors, counts = trace["anchors"], trace["anchors_per_level"]
    objectness, deltas = trace["rpn_objectness"][0], trace["rpn_deltas"][0]
    ratios = len(config.anchor_ratios)
    levels, start = [], 0
    for (name, feature), count, scale in zip(trace["fpn"].items(), counts, config.anchor_scales, strict=True):
        part = slice(start, start + count)
        grid = _anchor_grid(anchors[part], ratios, name)
        probs = objectness[part].sigmoid()
        best = probs.topk(min(top, count)).indices
        chosen = anchors[part][best]
        decoded = boxes.decode_deltas(deltas[part][best], chosen, config.rpn_weights)
        levels.append({
            "name": name, "feature_size": list(feature.shape[-2:]), "count": count, "scale": float(scale),
            **grid,
            "objectness": _quantised(probs.reshape(*grid["grid"], ratios), 0.0, 1.0),
            "top": [
                {"index": start + int(i), "cell": [int(i) // ratios // grid["grid"][1],
                                                   int(i) // ratios % grid["grid"][1], int(i) % ratios],
                 "anchor": a, "decoded": d, "score": round(float(probs[i]), 4)}
                for i, a, d in zip(best.tolist(), _round(chosen), _round(decoded), strict=True)
            ],
        })  # fmt: skip
        start += count
    return levels


def _proposals(trace: dict, config, canvas, channels: int) -> dict:
    """The P proposals after NMS (row i is ROI i of the box head) with what the heads made of each."""
    rois, scores = trace["proposals"][0]["boxes"], trace["proposals"][0]["scores"]
    count = len(rois)
    probs = trace["class_logits"].softmax(-1)
    num = probs.shape[1]
    # the level rule of pyramid_roi_align, as the model calls it (P2..P5 pool the ROIs)
    levels = roi_align.assign_fpn_levels(
        rois, canonical_size=config.canonical_size, min_level=2, max_level=5, rounding=config.level_rounding,
        image_size=canvas if config.roi_method == "crop_and_resize" else None,
    )  # fmt: skip
    best = probs[:, 1:].argmax(1) + 1  # the most likely foreground class
    deltas = trace["box_deltas"].reshape(count, num, 4)[torch.arange(count), best]
    refined = boxes.decode_deltas(deltas, rois, config.box_weights)
    pooled = trace["box_features"]
    spread = pooled.transpose(0, 1).reshape(pooled.shape[1], -1).std(1).nan_to_num(0.0)
    kept = spread.topk(min(channels, pooled.shape[1])).indices.sort().values
    detections = trace["detections"][0]
    detection_of = [-1] * count
    for j, roi in enumerate(detections["roi_index"].tolist()):
        detection_of[roi] = j
    return {
        "boxes": _round(rois), "scores": _round(scores, 4),
        "order": scores.argsort(descending=True).tolist(),
        "levels": levels.tolist(),
        "class_probs": _quantised(probs, 0.0, 1.0),
        "best_class": best.tolist(), "deltas": _round(deltas, 3), "refined": _round(refined),
        "pooled": {
            "channels": kept.tolist(), "of": int(pooled.shape[1]), "size": list(pooled.shape[-2:]),
            "values": [_quantised(pooled[:, c]) for c in kept.tolist()],
        },
        "candidates": sorted(set(trace["detections_pre_nms"][0]["roi_index"].tolist())),
        "detection": detection_of,
    }  # fmt: skip


def _detections(trace: dict) -> dict:
    """The N detections: molded-frame boxes, the mask logits of each one's class, and the model's results
    in original-image pixels with each pasted mask (thresholded at 0.5, cropped to its bounding box)."""
    det, result = trace["detections"][0], trace["results"][0]
    logits = trace["mask_logits"]
    own = logits[torch.arange(len(logits)), det["labels"]]  # each detection's own class
    bound = float(own.abs().max()) if own.numel() else 1.0
    masks = []
    for mask in result["masks"][:, 0] > 0.5:
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        if len(rows) == 0:
            masks.append(None)
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        masks.append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "uri": _mask_uri(mask[y0:y1, x0:x1])})
    return {
        "boxes": _round(det["boxes"]), "scores": _round(det["scores"], 4), "labels": det["labels"].tolist(),
        "roi_index": det["roi_index"].tolist(),
        "mask_logits": _quantised(own, -bound, bound),
        "results": {"boxes": _round(result["boxes"]), "scores": _round(result["scores"], 4),
                    "labels": result["labels"].tolist(), "masks": masks},
    }  # fmt: skip


def explorer_data(
    model, image: torch.Tensor, *, source: str = "", model_name: str = "", target: dict | None = None,
    channels: int = 8, top_anchors: int = 5,
) -> dict:  # fmt: skip
    """Everything the page shows, as JSON-ready Python values, from one ``model.trace([image])``.

    model: an eval-mode :class:`mrcnn_edu.MaskRCNN`; image: float ``[3, H, W]`` in 0-1.
    source, model_name: what the page says the image and the model are.
    target: the image's ground truth (``boxes [G, 4]``, ``labels [G]``) when known, drawn beside the
        detections.
    channels: pooled-feature channels kept (those with the largest spread over the proposals' bins).
    top_anchors: anchors listed per level, by objectness.
    """
    if model.training:
        raise ValueError("model must be in eval mode (call model.eval()): the page shows inference")
    if not (isinstance(channels, int) and channels >= 1):
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    config = model.config
    device = next(model.parameters()).device
    with torch.no_grad():
        trace = model.trace([image.to(device)])
    trace = _to_cpu(trace)
    meta = trace["image_metas"][0]
    molded = trace["molded_images"][0]
    canvas = tuple(molded.shape[-2:])
    shown = denormalize_image(molded.float(), config.pixel_mean, config.pixel_std)
    proposals = _proposals(trace, config, canvas, channels)
    pre = trace["proposals_pre_nms"][0]
    pre_order = pre["scores"].argsort(descending=True)
    names = list(config.class_names) or [str(i) for i in range(config.num_classes)]
    notes = [
        "Objectness, class probabilities and mask logits are stored with 8 bits (256 levels over each "
        "array's range); pooled features with 8 bits per channel.",
        f"Pooled features: {len(proposals['pooled']['channels'])} of the {proposals['pooled']['of']} "
        "channels, those that vary most between the proposals.",
        "Pasted masks: the model's mask probabilities in original-image pixels, thresholded at 0.5.",
    ]
    if image.shape[-1] * image.shape[-2] > PNG_MAX_PIXELS:
        notes.append("The original and molded images are embedded as JPEG (quality 90).")
    frames = {view: {"stage": stage, "frame": TRACE_STAGES[stage].frame,
                     "text": TRACE_FRAMES[TRACE_STAGES[stage].frame]}
              for view, stage in VIEWS.items()}  # fmt: skip
    data = {
        "title": f"Mask R-CNN, one forward pass: {source or 'an image'}",
        "source": source, "model": model_name, "version": __version__,
        "config": {k: getattr(config, k) for k in SHOWN_CONFIG},
        "class_names": names, "class_colors": [_hex(c) for c in instance_colors(max(len(names), 1))],
        "frames": frames, "notes": notes,
        "image": {
            "original": _image_uri(image), "molded": _image_uri(shown),
            "original_size": list(meta.original_size), "resized_size": list(meta.resized_size),
            "molded_size": list(canvas), "scale": meta.scale, "window": list(meta.window),
            "padding": list(meta.padding), "mode": meta.mode,
        },
        "levels": _levels(trace, config, top_anchors),
        "pre_nms": {"boxes": _round(pre["boxes"][pre_order]), "scores": _round(pre["scores"][pre_order], 4)},
        "proposals": proposals,
        "detections": _detections(trace),
        "ground_truth": None if target is None else {
            "boxes": _round(target["boxes"].float()), "labels": target["labels"].tolist()},
    }  # fmt: skip
    return data


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float() if value.is_floating_point() else value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ the page
def render_page(data: dict) -> str:
    """The HTML of the page: the template with its CSS, JavaScript and ``data`` (as JSON) written in."""
    web = resources.files(__package__) / "web"
    html, css, js = (web.joinpath(name).read_text(encoding="utf-8") for name in PAGE_FILES)
    # "</" inside a script element would end it: JSON allows "<\/" for the same two characters
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    fills = {"/*@CSS@*/": css, "/*@JS@*/": js, "@DATA@": payload, "@TITLE@": _escape(data["title"])}
    # one pass over the template, so that nothing filled in is read for markers again
    return re.sub("|".join(re.escape(marker) for marker in fills), lambda m: fills[m.group()], html)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_page(path, model, image: torch.Tensor, **kwargs) -> dict:
    """Write the explorer page of ``model`` on ``image`` to ``path`` (atomically: a whole file or none).

    kwargs: passed to :func:`explorer_data` (``source``, ``model_name``, ``target``, ``channels``, ...).
    Returns ``{"path", "bytes", "proposals", "detections"}``.
    """
    data = explorer_data(model, image, **kwargs)
    page = render_page(data).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(page)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return {"path": str(path), "bytes": len(page), "proposals": len(data["proposals"]["boxes"]),
            "detections": len(data["detections"]["boxes"])}  # fmt: skip
