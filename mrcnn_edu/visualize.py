"""Pictures and one-line summaries of what the model sees and produces.

Every drawing function takes plain tensors (the model's inputs, targets, results or any traced stage) and
draws with matplotlib's object API (:class:`matplotlib.figure.Figure`, never ``pyplot``), so it runs headless
(the CLI writes PNGs) and in notebooks alike. A function given ``ax`` draws into it (a notebook's
``plt.subplots`` grid); without ``ax`` it makes its own figure, reached as ``ax.figure``. The CLI's outputs
are :func:`save_detections` (``mrcnn-edu predict``) and :func:`compare_figure` (``mrcnn-edu demo``); notebooks
use :func:`draw_instances`, :func:`show_boxes`, :func:`overlay_boxes`, :func:`show_anchors`,
:func:`show_suppression`, :func:`feature_grid`, :func:`heatmap`, :func:`legend_outside`, :func:`log` and
:func:`summarize_trace` rather than drawing by hand; :func:`architecture_figure` maps the stages of
:meth:`mrcnn_edu.model.MaskRCNN.trace` onto matterport's layer names (:data:`MATTERPORT_NAMES`).

Shape glossary
    H, W: image (or feature map) height and width in pixels
    N:    instances (boxes) to draw
    A:    anchors
    C:    channels of a feature map

Pixel geometry: a box ``(x1, y1, x2, y2)`` covers pixel edges (pixel ``(r, c)`` is ``[c, c+1) x [r, r+1)``,
see :mod:`mrcnn_edu.boxes`), while ``imshow`` puts pixel ``(r, c)``'s *centre* at ``(c, r)``; boxes are
therefore drawn from ``(x1 - 0.5, y1 - 0.5)``, and mask outlines follow the edges of the mask's pixels.

Matterport's ``visualize.py`` (``display_instances``, ``log``, ``draw_boxes``) is the model for these helpers;
unlike it, colours are deterministic (the same instance index always gets the same colour, or with
:func:`class_colors` the same class) and masks may be the model's probabilities (thresholded at
``mask_threshold``, 0.5 as in both matterport and torchvision).
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.patheffects import Normal, Stroke
from matplotlib.ticker import MaxNLocator

from ._checks import check_boxes, check_tensor
from .losses import LOSS_NAMES

__all__ = [
    "MATTERPORT_NAMES",
    "instance_colors",
    "class_colors",
    "draw_instances",
    "show_boxes",
    "overlay_boxes",
    "show_anchors",
    "show_suppression",
    "architecture_figure",
    "legend_outside",
    "compare_figure",
    "save_detections",
    "plot_losses",
    "feature_grid",
    "heatmap",
    "show_roi_sampling",
    "log",
    "summarize_trace",
]

_GOLDEN = (math.sqrt(5) - 1) / 2  # hue step that keeps consecutive colours far apart on the colour wheel


# ---------------------------------------------------------------------------------------------- colours
def instance_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct RGB colours (0-1 floats), the same ones on every call.

    Hue ``i`` is ``i * 0.618... mod 1`` (the golden ratio's fraction), so any few consecutive colours are far
    apart on the colour wheel; saturation and value alternate slightly so that colours ``i`` and ``i + 8``,
    whose hues are close, still differ.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return [colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, 0.85 if i % 2 == 0 else 0.65, 0.95 - 0.2 * (i // 8 % 2))
            for i in range(n)]  # fmt: skip


def class_colors(labels) -> list[tuple[float, float, float]]:
    """One colour per entry of ``labels`` (``[N]`` integer class indices, a tensor or a sequence), the same
    for every instance of a class: class ``k`` gets ``instance_colors(k + 1)[k]``, whatever the other labels
    are, so ground truth and detections drawn with it agree in colour when they agree in class."""
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if any(not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"labels must be non-negative integer class indices, got {values}")
    palette = instance_colors(max(values, default=-1) + 1)
    return [palette[v] for v in values]


def _text_color(rgb) -> str:
    """Black or white, whichever reads better on ``rgb`` (relative luminance, ITU-R BT.709 weights)."""
    r, g, b = rgb[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 else "white"


# ---------------------------------------------------------------------------------------------- inputs
def _image_to_numpy(image, name: str = "image") -> np.ndarray:
    """``[3, H, W]`` float 0-1 (or uint8 0-255) tensor -> ``[H, W, 3]`` float numpy array in 0-1."""
    check_tensor(name, image, ndim=3)
    if image.shape[0] != 3:
        raise ValueError(f"{name} must be [3, H, W] (channels first), got shape {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255
    elif not image.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in 0-1 or uint8 in 0-255, got dtype {image.dtype}")
    image = image.float()
    if image.numel() and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
        raise ValueError(
            f"{name} values must be in 0-1, got {image.min().item():.3g}..{image.max().item():.3g}"
            " (a molded image is normalised: draw the original image, or undo the normalisation first)"
        )
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def _boxes_to_numpy(boxes, name: str = "boxes") -> np.ndarray:
    check_boxes(name, boxes)
    return boxes.detach().cpu().double().numpy()


def _vector(name: str, values, n: int, kind: str) -> torch.Tensor | None:
    """Optional per-instance values ``[N]`` (labels or scores), checked against the box count."""
    if values is None:
        return None
    check_tensor(name, values, ndim=1, kind=kind, length=n)
    return values.detach().cpu()


def _masks_to_numpy(masks, n: int, size: tuple[int, int], threshold: float) -> np.ndarray | None:
    """``[N, H, W]`` or ``[N, 1, H, W]`` probabilities / binary masks -> ``[N, H, W]`` bool numpy array."""
    if masks is None:
        return None
    check_tensor("masks", masks, ndim=(3, 4))
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be [N, H, W] or [N, 1, H, W], got shape {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.shape[0] != n or tuple(masks.shape[1:]) != size:
        raise ValueError(
            f"masks must be [N, H, W] with N = {n} boxes and (H, W) = {size} of the image, "
            f"got shape {tuple(masks.shape)}"
        )
    masks = masks.detach().cpu()
    return (masks if masks.dtype == torch.bool else masks >= threshold).numpy()


def _captions(labels: torch.Tensor | None, scores: torch.Tensor | None, class_names, n: int) -> list[str]:
    """Each instance's caption, ``"label score"``: the class name when known (else the label number), the
    score with two decimals; ``""`` when there are neither labels nor scores."""
    names = [""] * n
    if labels is not None:
        known = len(class_names) if class_names is not None else 0
        names = [str(class_names[v]) if 0 <= v < known else str(v) for v in labels.tolist()]
    if scores is None:
        return names
    return [f"{name} {s:.2f}".strip() for name, s in zip(names, scores.tolist(), strict=True)]


def _new_axes(height: int, width: int, ax: Axes | None, inches: float = 5.0) -> Axes:
    """``ax``, or the single axes of a new figure whose long side is ``inches`` long."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise ValueError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    long = max(height, width, 1)
    size = (inches * max(width, 1) / long, inches * max(height, 1) / long)
    fig = Figure(figsize=size, layout="constrained")
    return fig.add_subplot()


def _bare_axes(ax: Axes, title: str | None) -> None:
    """Pictures carry no axis ticks; titles are small."""
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


def _show_image(ax: Axes, pixels: np.ndarray, title: str | None) -> None:
    """Draw ``pixels`` ``[H, W, 3]`` with pixel centres at integer coordinates, no ticks."""
    h, w = pixels.shape[:2]
    ax.imshow(pixels, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    _bare_axes(ax, title)


# ---------------------------------------------------------------------------------------------- drawing
def _draw_boxes(ax: Axes, boxes: np.ndarray, colors, captions=None, *, linewidth: float = 1.5,
                linestyle: str = "-", image_height: int | None = None,
                halo: bool = False) -> None:  # fmt: skip
    """Rectangles (and captions, where not empty) for ``boxes`` ``[N, 4]`` pixel xyxy; the one box-drawing
    routine. A caption sits just above its box, or inside the box's top when the box touches the image's top.
    ``halo`` draws a thin black line under each rectangle, so that a box stays visible on an object of its
    own colour.
    """
    effects = [Stroke(linewidth=linewidth + 1.6, foreground="black"), Normal()] if halo else None
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        color = to_rgb(colors[i])
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=linewidth, linestyle=linestyle, path_effects=effects))  # fmt: skip
        if captions is not None and captions[i]:
            above = image_height is None or y1 > 0.06 * image_height
            ax.text(x1 - 0.5, y1 - 0.5, captions[i], fontsize=7, color=_text_color(color),
                    va="bottom" if above else "top", ha="left", clip_on=True,
                    bbox={"facecolor": color, "alpha": 0.75, "pad": 1.0, "edgecolor": "none"})  # fmt: skip


def _mask_bounds(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of a bool ``[H, W]`` mask's bounding box (None when the mask is empty)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(rows) == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _blend_masks(pixels: np.ndarray, masks: np.ndarray, colors, alpha: float) -> np.ndarray:
    """``pixels`` ``[H, W, 3]`` with each mask's pixels moved ``alpha`` of the way to its colour, in order."""
    out = pixels.copy()
    for mask, color in zip(masks, colors, strict=True):
        bounds = _mask_bounds(mask)
        if bounds is not None:  # work inside the mask's box: masks are small next to the image
            region, inside = out[bounds], mask[bounds]
            region[inside] = (1 - alpha) * region[inside] + alpha * np.asarray(color[:3])
    return out


def _mask_outline(mask: np.ndarray) -> np.ndarray:
    """The exact staircase outline of a bool ``[H, W]`` mask: segments ``[S, 2, 2]`` (two ``(x, y)`` ends in
    imshow coordinates), one per edge between a mask pixel and a pixel (or the image border) outside it.

    Only the mask's bounding rows and columns are searched; the zero border added around them closes outlines
    that touch the image edge.
    """
    bounds = _mask_bounds(mask)
    if bounds is None:
        return np.zeros((0, 2, 2))
    r0, c0 = bounds[0].start, bounds[1].start
    m = np.pad(mask[bounds], 1)
    # a vertical edge where a pixel and its left neighbour differ: at x = c - 0.5 for the pixel in column c
    r, c = np.nonzero(m[1:-1, 1:] != m[1:-1, :-1])
    x, y = c + c0 - 0.5, r + r0
    vertical = np.stack([np.stack([x, y - 0.5], -1), np.stack([x, y + 0.5], -1)], 1)
    # a horizontal edge where a pixel and the one above differ: at y = r - 0.5 for the pixel in row r
    r, c = np.nonzero(m[1:, 1:-1] != m[:-1, 1:-1])
    x, y = c + c0, r + r0 - 0.5
    horizontal = np.stack([np.stack([x - 0.5, y], -1), np.stack([x + 0.5, y], -1)], 1)
    return np.concatenate([vertical, horizontal]).astype(np.float64)


def draw_instances(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    mask_alpha: float = 0.45,
    colors: Sequence | None = None,
    mask_threshold: float = 0.5,
) -> Axes:
    """Draw detections or ground truth on an image (matterport's ``display_instances``).

    image: ``[3, H, W]`` float in 0-1 (or uint8 0-255).
    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` pixels of ``image``.
    labels: ``[N]`` integer class indices (captioned with ``class_names[label]`` when given), or None.
    scores: ``[N]`` float, appended to the captions with two decimals, or None (ground truth).
    masks: ``[N, H, W]`` or ``[N, 1, H, W]`` (the model's layout), probabilities or binary, or None. A pixel
        is in the mask when its value is ``>= mask_threshold``; masks are blended into the image with
        ``mask_alpha`` of their colour and outlined.
    colors: N colours (anything matplotlib accepts as RGB tuples); default :func:`instance_colors`.
    Returns the axes drawn into (``ax``, or a new figure's axes: ``ax.figure.savefig(...)`` to save it).
    Every instance is drawn: filter by score first (as :func:`save_detections` does).
    """
    pixels = _image_to_numpy(image)
    h, w = pixels.shape[:2]
    box_array = _boxes_to_numpy(boxes)
    n = len(box_array)
    labels = _vector("labels", labels, n, "int")
    scores = _vector("scores", scores, n, "float")
    mask_array = _masks_to_numpy(masks, n, (h, w), mask_threshold)
    if not 0 <= mask_alpha <= 1:
        raise ValueError(f"mask_alpha must be in 0-1, got {mask_alpha}")
    if colors is None:
        colors = instance_colors(n)
    elif len(colors) != n:
        raise ValueError(f"colors must have one colour per box ({n}), got {len(colors)}")
    colors = [to_rgb(c) for c in colors]

    ax = _new_axes(h, w, ax)
    if mask_array is not None:
        pixels = _blend_masks(pixels, mask_array, colors, mask_alpha)
    _show_image(ax, pixels, title)
    if mask_array is not None:
        for mask, color in zip(mask_array, colors, strict=True):
            segments = _mask_outline(mask)
            # one path of move-to / line-to pairs per mask, so thousands of edges stay one artist; add_artist,
            # as add_patch would walk every edge in Python to update data limits the view does not use
            codes = np.tile([MplPath.MOVETO, MplPath.LINETO], len(segments))
            ax.add_artist(PathPatch(MplPath(segments.reshape(-1, 2), codes), fill=False, edgecolor=color,
                                   linewidth=1.0, capstyle="projecting"))  # fmt: skip
    _draw_boxes(ax, box_array, colors, _captions(labels, scores, class_names, n), image_height=h)
    return ax


def show_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    ax: Axes | None = None,
    labels: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    color=None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    linestyle: str = "-",
) -> Axes:
    """Boxes on an image, without masks: proposals, ROIs, matched ground truth, ...

    image: ``[3, H, W]`` float in 0-1; boxes: ``[N, 4]`` float pixel xyxy (boxes may extend past the image;
    the view stays on the image). labels ``[N]`` int and scores ``[N]`` float are optional captions.
    color: one colour for every box, or None for :func:`instance_colors`. Returns the axes.
    """
    pixels = _image_to_numpy(image)
    box_array = _boxes_to_numpy(boxes)
    n = len(box_array)
    labels = _vector("labels", labels, n, "int")
    scores = _vector("scores", scores, n, "float")
    colors = instance_colors(n) if color is None else [color] * n
    ax = _new_axes(*pixels.shape[:2], ax)
    _show_image(ax, pixels, title)
    captions = _captions(labels, scores, class_names, n)
    _draw_boxes(ax, box_array, colors, captions, linestyle=linestyle, image_height=pixels.shape[0])
    return ax


def overlay_boxes(
    ax: Axes,
    boxes: torch.Tensor,
    color=None,
    colors: Sequence | None = None,
    labels: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    linestyle: str = "-",
    linewidth: float = 1.5,
    scale: float = 1.0,
    pixel_edges: bool = True,
    halo: bool = False,
) -> Axes:
    """Boxes drawn over what ``ax`` already shows (an image from :func:`draw_instances` or :func:`show_boxes`,
    a :func:`heatmap`), without drawing the picture again: masks and earlier boxes stay visible.

    boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)``, multiplied by ``scale`` first (``1 / stride`` puts image
    boxes on a feature map). pixel_edges: True (the default, as every drawing here) when the coordinates are
    pixel edges, pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``, so edge ``x1`` is drawn at
    ``x1 - 0.5``; False when they are positions on the map's own grid, whose cell ``(r, c)`` is centred at
    ``(c, r)``: e.g. ground-truth boxes over an objectness map with ``scale = 1 / stride``, where cell ``j``
    holds the anchors centred at pixel ``j * stride`` (offset 0), so that the drawn box encloses exactly the
    cells whose anchors are centred inside the object.
    color: one colour for every box; colors: one per box; neither: :func:`instance_colors`.
    labels ``[N]`` int and scores ``[N]`` float are optional captions (with ``class_names``).
    halo: a thin black line under each box. The view (axis limits) is left as it was. Returns ``ax``.
    """
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    box_array = _boxes_to_numpy(boxes) * float(scale) + (0.0 if pixel_edges else 0.5)
    n = len(box_array)
    labels = _vector("labels", labels, n, "int")
    scores = _vector("scores", scores, n, "float")
    if colors is not None and color is not None:
        raise ValueError("give color (one for all boxes) or colors (one per box), not both")
    if colors is None:
        colors = instance_colors(n) if color is None else [color] * n
    elif len(colors) != n:
        raise ValueError(f"colors must have one colour per box ({n}), got {len(colors)}")
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    _draw_boxes(ax, box_array, colors, _captions(labels, scores, class_names, n), linewidth=linewidth,
                linestyle=linestyle, image_height=abs(ylim[0] - ylim[1]), halo=halo)  # fmt: skip
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return ax


def show_anchors(
    image: torch.Tensor,
    anchors: torch.Tensor,
    ax: Axes | None = None,
    max_anchors: int = 64,
    color=None,
    indices: torch.Tensor | None = None,
    title: str | None = None,
    halo: bool = False,
) -> Axes:
    """Some anchors over an image, dashed; the view grows to show anchors that reach past the image.

    anchors: ``[A, 4]`` float pixel xyxy (e.g. :func:`mrcnn_edu.anchors.pyramid_anchors`'s). Drawn: the
    anchors at ``indices`` (``[k]`` integer or ``[A]`` bool, e.g. the positive anchors of the RPN targets)
    when given, else ``max_anchors`` anchors evenly spaced through the list (all when ``A <= max_anchors``).
    color: one colour for all, or None for :func:`instance_colors`. halo: a black line under each anchor,
    so it stays visible on an object of its own colour. Returns the axes.
    """
    pixels = _image_to_numpy(image)
    check_boxes("anchors", anchors)
    if indices is not None:
        check_tensor("indices", indices, ndim=1, kind="index")
        chosen = anchors.detach().cpu()[indices.cpu()]
    else:
        if max_anchors < 0:
            raise ValueError(f"max_anchors must be non-negative, got {max_anchors}")
        step = max(1, math.ceil(len(anchors) / max(max_anchors, 1)))
        chosen = anchors.detach().cpu()[::step][:max_anchors]
    box_array = chosen.double().numpy()
    h, w = pixels.shape[:2]
    colors = instance_colors(len(box_array)) if color is None else [color] * len(box_array)
    ax = _new_axes(h, w, ax)
    _show_image(ax, pixels, title)
    _draw_boxes(ax, box_array, colors, linewidth=1.0, linestyle="--", halo=halo)
    if len(box_array):
        x0 = min(-0.5, box_array[:, 0].min() - 0.5)
        y0 = min(-0.5, box_array[:, 1].min() - 0.5)
        ax.set_xlim(x0, max(w - 0.5, box_array[:, 2].max() - 0.5))
        ax.set_ylim(max(h - 0.5, box_array[:, 3].max() - 0.5), y0)
    return ax


def show_suppression(
    image: torch.Tensor,
    boxes: torch.Tensor,
    kept: int,
    suppressed: torch.Tensor,
    ax: Axes | None = None,
    scores: torch.Tensor | None = None,
    earlier: torch.Tensor | None = None,
    color="tab:red",
    title: str | None = None,
) -> Axes:
    """One decision of greedy NMS (:func:`mrcnn_edu.nms.nms_steps` yields them): the box kept, solid in
    ``color``, and the boxes it suppressed, dashed light grey on top of it.

    boxes: ``[N, 4]`` float pixel xyxy, all the candidates; kept: the index of the kept box; suppressed:
    ``[S]`` integer indices of the boxes it removed; scores: ``[N]`` float, captions the kept box and, in the
    default title, gives the best suppressed score; earlier: ``[E]`` integer indices of boxes kept at earlier
    steps, drawn thin and white (they had their turn first). The default title counts the suppressed boxes.
    Returns the axes.
    """
    pixels = _image_to_numpy(image)
    box_array = _boxes_to_numpy(boxes)
    n = len(box_array)
    if not 0 <= int(kept) < n:
        raise ValueError(f"kept must index one of the {n} boxes, got {kept}")
    check_tensor("suppressed", suppressed, ndim=1, kind="index")
    scores = _vector("scores", scores, n, "float")
    suppressed = suppressed.detach().cpu()
    if title is None:
        title = f"box {int(kept)} kept, {len(suppressed)} suppressed"
        if scores is not None and len(suppressed):
            title += f" (best {scores[suppressed].max().item():.2f})"
    ax = _new_axes(*pixels.shape[:2], ax)
    _show_image(ax, pixels, title)
    if earlier is not None:
        check_tensor("earlier", earlier, ndim=1, kind="index")
        done = box_array[earlier.detach().cpu().numpy()]
        _draw_boxes(ax, done, ["white"] * len(done), linewidth=0.8, linestyle=":")
    caption = None if scores is None else [f"{scores[int(kept)].item():.2f}"]
    _draw_boxes(ax, box_array[[int(kept)]], [color], caption, linewidth=2.0, image_height=pixels.shape[0],
                halo=True)  # fmt: skip
    # on top of the kept box, which they often nearly coincide with; the halo keeps them visible on any colour
    gone = box_array[suppressed.numpy()]
    _draw_boxes(ax, gone, ["0.85"] * len(gone), linewidth=1.0, linestyle="--", halo=True)
    return ax


# ---------------------------------------------------------------------------------------------- architecture
#: For each stage name of :meth:`mrcnn_edu.model.MaskRCNN.trace` (:data:`mrcnn_edu.model.TRACE_STAGES`),
#: where matterport's Mask R-CNN (github.com/matterport/Mask_RCNN, ``mrcnn/model.py`` and ``utils.py``)
#: computes the same thing: its layer, graph function or method, and the tensor's name where it has one.
MATTERPORT_NAMES = {
    "image_metas": "compose_image_meta (in mold_inputs)",
    "molded_images": "mold_inputs: utils.resize_image, mold_image",
    "backbone": "resnet_graph: C2..C5",
    "fpn": "fpn_c5p5 ... fpn_p2 (top-down adds), fpn_p6",
    "anchors": "get_anchors: utils.generate_pyramid_anchors",
    "anchors_per_level": "utils.generate_anchors, once per level",
    "rpn_objectness": "build_rpn_model / rpn_graph: rpn_class_logits",
    "rpn_deltas": "build_rpn_model / rpn_graph: rpn_bbox",
    "proposals_pre_nms": "ProposalLayer: top-k, apply_box_deltas_graph, clip_boxes_graph",
    "proposals": "ProposalLayer: non_max_suppression",
    "rpn_targets": "build_rpn_targets (in data_generator)",
    "roi_targets": "DetectionTargetLayer: detection_targets_graph",
    "box_features": "PyramidROIAlign (in fpn_classifier_graph)",
    "class_logits": "fpn_classifier_graph: mrcnn_class_logits",
    "box_deltas": "fpn_classifier_graph: mrcnn_bbox",
    "detections_pre_nms": "DetectionLayer: refine_detections_graph, before its NMS",
    "detections": "DetectionLayer: refine_detections_graph",
    "mask_features": "PyramidROIAlign (in build_fpn_mask_graph)",
    "mask_logits": "build_fpn_mask_graph: mrcnn_mask",
    "losses": "rpn_{class,bbox}_loss_graph, mrcnn_{class,bbox,mask}_loss_graph",
    "results": "unmold_detections: utils.unmold_mask",
}

# The drawing's boxes: (trace stages, notebook) from top to bottom; both paths share the first column.
_SHARED_PATH = [
    (("image_metas", "molded_images"), "01"),
    (("backbone",), "02"),
    (("fpn",), "02"),
    (("anchors", "anchors_per_level"), "03"),
    (("rpn_objectness", "rpn_deltas"), "04"),
    (("proposals_pre_nms", "proposals"), "05"),
]
_TRAIN_PATH = [
    (("rpn_targets",), "04"),
    (("roi_targets",), "06"),
    (("box_features", "mask_features"), "07"),
    (("class_logits", "box_deltas", "mask_logits"), "08"),
    (("losses",), "08"),
]
_EVAL_PATH = [
    (("box_features",), "07"),
    (("class_logits", "box_deltas"), "08"),
    (("detections_pre_nms", "detections"), "09"),
    (("mask_features",), "07"),
    (("mask_logits",), "08"),
    (("results",), "10"),
]


def architecture_figure() -> Figure:
    """Mask R-CNN as :meth:`mrcnn_edu.model.MaskRCNN.trace` records it, mapped onto matterport's names.

    Each box is one step of the forward pass: the notebook that takes it apart (left), its trace stage names
    (monospace, bold) and the layer or function of matterport's implementation that computes the same tensor
    (italic, :data:`MATTERPORT_NAMES`). The shared steps run in one column; below them the training
    path (``model(images, targets)``: targets sampled, box and mask heads in parallel, five losses) and the
    inference path (``model(images)``: detection layer, then the mask head on the detections) run side by
    side. Returns the figure (``fig.savefig(path)`` to keep it).
    """
    line = 1.0  # vertical unit: one text line
    gap = 1.1  # between boxes (room for an arrow)

    def height(stages) -> float:
        return line * (len(stages) + 0.9)

    shared_h = sum(height(st) + gap for st, _ in _SHARED_PATH)
    branch_h = max(sum(height(st) + gap for st, _ in path) for path in (_TRAIN_PATH, _EVAL_PATH))
    total = shared_h + branch_h + 2.5 * line
    fig = Figure(figsize=(13.0, 0.2 * total))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(total, 0)
    ax.set_axis_off()

    def draw_box(stages, notebook, x_mid, top, width, color) -> tuple[float, float]:
        h, left = height(stages), x_mid - width / 2
        # rounded corners of equal size in x and y: the y unit is 0.2 inch, the x unit the 13-inch width
        ax.add_patch(FancyBboxPatch((left, top), width, h, boxstyle="round,pad=0,rounding_size=0.005",
                                    mutation_aspect=13.0 / 0.2, facecolor=(*to_rgb(color), 0.12),
                                    edgecolor=color, linewidth=1.2))  # fmt: skip
        ax.text(left + 0.006, top + line * 0.95, notebook, fontsize=8, weight="bold", color=color,
                va="baseline")  # fmt: skip
        for k, stage in enumerate(stages):
            y = top + line * (k + 0.95)
            ax.text(left + 0.04, y, stage, fontsize=8, family="monospace", weight="bold", va="baseline")
            ax.text(left + 0.19, y, MATTERPORT_NAMES[stage], fontsize=7.5, style="italic", color="0.2",
                    va="baseline")  # fmt: skip
        return top, top + h

    def arrow(x0, y0, x1, y1) -> None:
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "-|>", "color": "0.35", "lw": 1.0, "shrinkA": 0, "shrinkB": 0})

    ax.text(0.5, 0.9 * line, "notebook   stage of model.trace()   matterport's layer or function",
            ha="center", fontsize=9, weight="bold")  # fmt: skip
    y, previous = 1.6 * line, None
    for stages, notebook in _SHARED_PATH:
        top, bottom = draw_box(stages, notebook, 0.5, y, 0.56, "tab:gray")
        if previous is not None:
            arrow(0.5, previous, 0.5, top)
        previous, y = bottom, bottom + gap
    columns = ((0.25, _TRAIN_PATH, "tab:orange", "training: model(images, targets)"),
               (0.75, _EVAL_PATH, "tab:blue", "inference: model(images)"))  # fmt: skip
    for x_mid, path, color, name in columns:
        ax.text(x_mid, y + 0.2 * line, name, ha="center", fontsize=8.5, weight="bold", color=color)
        branch_y, last = y + 0.9 * line, previous
        for i, (stages, notebook) in enumerate(path):
            top, bottom = draw_box(stages, notebook, x_mid, branch_y, 0.48, color)
            arrow(0.5 if i == 0 else x_mid, last, x_mid, top)
            last, branch_y = bottom, bottom + gap
    return fig


# ---------------------------------------------------------------------------------------------- results
def _keep_scores(result: Mapping, score_threshold: float) -> dict:
    """The entries of a model result (boxes, labels, scores, masks) whose score is ``>= score_threshold``."""
    for key in ("boxes", "labels", "scores"):
        if key not in result:
            raise ValueError(f"result must be a model result with boxes, labels and scores, missing {key!r}")
    check_tensor("result['scores']", result["scores"], ndim=1, kind="float")
    keep = result["scores"].detach().cpu() >= score_threshold
    if keep.all():  # no copy of the (possibly large) masks
        return {k: result[k].detach().cpu() for k in ("boxes", "labels", "scores", "masks") if k in result}
    return {k: result[k].detach().cpu()[keep] for k in ("boxes", "labels", "scores", "masks") if k in result}


def save_detections(
    image: torch.Tensor,
    result: Mapping,
    class_names: Sequence[str] | None,
    path,
    score_threshold: float = 0.5,
    scale: int | None = None,
) -> Path:
    """Write a PNG of one image's detections (the ``mrcnn-edu predict`` output) and return its path.

    image: ``[3, H, W]`` float in 0-1; result: one model result, ``boxes [N, 4]``, ``labels [N]``,
    ``scores [N]`` and optional ``masks [N, 1, H, W]`` (probabilities) in that image's pixels.
    Only detections scoring ``>= score_threshold`` are drawn. The PNG is the image alone (no margins),
    enlarged ``scale`` times (default: the smallest integer making the long side at least 512 pixels) so
    captions stay readable on small images: it is exactly ``H * scale`` by ``W * scale`` pixels.
    """
    pixels_hw = _image_to_numpy(image).shape[:2]
    h, w = pixels_hw
    if scale is None:
        scale = max(1, math.ceil(512 / max(h, w, 1)))
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    kept = _keep_scores(result, score_threshold)
    dpi = 128  # a power of two: W * scale / dpi inches * dpi is exactly W * scale pixels
    fig = Figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    draw_instances(image, kept["boxes"], kept["labels"], kept["scores"], kept.get("masks"), class_names,
                   ax=ax)  # fmt: skip
    ax.set_axis_off()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def compare_figure(
    images,
    targets: Sequence[Mapping],
    predictions: Sequence[Mapping],
    class_names: Sequence[str] | None,
    path=None,
    max_images: int = 8,
    score_threshold: float = 0.5,
) -> Figure:
    """Ground truth (top row) against predictions (bottom row), one column per image.

    images: list of ``[3, H, W]`` float in 0-1 (or a ``[B, 3, H, W]`` tensor); targets: per image ``boxes
    [G, 4]``, ``labels [G]``, optional ``masks [G, H, W]``; predictions: model results (``boxes``, ``labels``,
    ``scores``, optional ``masks [N, 1, H, W]``), drawn when scoring ``>= score_threshold``. The first
    ``max_images`` images are shown. Colours follow the class, so a correct detection has its ground truth's
    colour. Saves a PNG at ``path`` when given; returns the figure.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    if not isinstance(images, Sequence) or not len(images):
        raise ValueError("images must be a non-empty list of [3, H, W] tensors")
    if len(targets) != len(images) or len(predictions) != len(images):
        raise ValueError(
            f"targets and predictions must have one entry per image ({len(images)}), "
            f"got {len(targets)} targets and {len(predictions)} predictions"
        )
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    count = min(len(images), max_images)
    kept = [_keep_scores(p, score_threshold) for p in predictions[:count]]
    fig = Figure(figsize=(2.6 * count, 5.4), layout="constrained")
    axes = fig.subplots(2, count, squeeze=False)
    for j in range(count):
        image, gt, pred = images[j], targets[j], kept[j]
        draw_instances(image, gt["boxes"], gt["labels"], None, gt.get("masks"), class_names, ax=axes[0, j],
                       title=f"image {j}: ground truth ({len(gt['labels'])})",
                       colors=class_colors(gt["labels"]))  # fmt: skip
        draw_instances(image, pred["boxes"], pred["labels"], pred["scores"], pred.get("masks"), class_names,
                       ax=axes[1, j], title=f"prediction ({len(pred['labels'])} >= {score_threshold:g})",
                       colors=class_colors(pred["labels"]))  # fmt: skip
    if path is not None:
        fig.savefig(Path(path))
    return fig


# ---------------------------------------------------------------------------------------------- training
def _read_metrics(metrics) -> list[dict]:
    if isinstance(metrics, (str, Path)):
        lines = Path(metrics).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if isinstance(metrics, Sequence) and all(isinstance(m, Mapping) for m in metrics):
        return [dict(m) for m in metrics]
    raise ValueError(f"metrics must be a JSONL path or a list of dicts, got {type(metrics).__name__}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_loss_key(key: str) -> bool:
    return key in LOSS_NAMES or key in ("total", "loss") or key.endswith("_loss") or key.startswith("loss_")


def plot_losses(
    metrics,
    path=None,
    log_scale: bool = True,
    keys: Sequence[str] | None = None,
    smoothing: float = 0.0,
    ax: Axes | None = None,
) -> Figure:
    """Training loss curves, and validation AP on a second y axis when the log has it.

    metrics: a JSONL file (one JSON object per line) or a list of dicts. Training lines have no ``"split"``
    (or ``"split": "train"``) and hold ``"step"`` and the losses, e.g. ``{"step": 10, "rpn_box": 0.1, ...,
    "total": 1.2}``; validation lines have ``"split": "val"``, ``"step"`` and metrics such as ``"segm_AP"``.
    keys: the losses to plot; default every key that is one of the model's five losses, ``"total"``,
    ``"loss"``, or ends in ``"_loss"``, in order of first appearance. Validation lines' losses are drawn
    dashed in the same colour; their keys containing ``"AP"`` are drawn against the right axis.
    smoothing: exponential moving average factor in 0-1 applied to the training curves (0: raw values).
    log_scale: log y axis for the losses (values <= 0 are then left out by matplotlib).
    Returns the figure (``ax.figure`` when ``ax`` is given); saved as PNG at ``path`` when given.
    """
    rows = _read_metrics(metrics)
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    train = [r for r in rows if r.get("split", "train") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    if keys is None:
        keys = list(dict.fromkeys(k for r in train + val for k, v in r.items()
                                  if _is_loss_key(k) and _is_number(v)))  # fmt: skip
    ap_keys = list(dict.fromkeys(k for r in val for k, v in r.items() if "AP" in k and _is_number(v)))

    if ax is None:
        fig = Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
    palette = instance_colors(len(keys))
    for key, color in zip(keys, palette, strict=True):
        for split_rows, style, suffix in ((train, "-", ""), (val, "--", " (val)")):
            points = [(r.get("step", i), r[key]) for i, r in enumerate(split_rows) if _is_number(r.get(key))]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            if suffix == "" and smoothing:
                values = _ema(values, smoothing)
            ax.plot(steps, values, style, color=color, label=key + suffix,
                    linewidth=2.0 if key in ("total", "loss") else 1.2)  # fmt: skip
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if ap_keys:
        twin = ax.twinx()
        grays = ["black", "dimgray", "darkgray", "silver"] * len(ap_keys)
        for key, color in zip(ap_keys, grays[: len(ap_keys)], strict=True):
            points = [(r.get("step", i), r[key]) for i, r in enumerate(val) if _is_number(r.get(key))]
            steps, values = zip(*points, strict=True)
            twin.plot(steps, values, "o-", color=color, label=key, markersize=3, linewidth=1.2)
        twin.set_ylabel("validation AP")
        twin.set_ylim(0, 1)
        more_handles, more_names = twin.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    if handles:  # below the plot, where no curve can hide it
        legend_outside(ax, handles, names, ncol=min(4, len(handles)))
    fig = ax.figure
    if path is not None:
        fig.savefig(Path(path))
    return fig


def legend_outside(ax: Axes, handles=None, labels=None, where: str = "below", ncol: int | None = None,
                   fontsize: float = 7):  # fmt: skip
    """A legend beside the axes instead of on them, so that it never covers data; returns the legend.

    handles / labels: as ``ax.legend`` (default: the axes' labelled artists). where: ``"below"`` (under the
    x axis label, in ``ncol`` columns, default up to 4) or ``"right"`` (one column right of the axes).
    Figures made with ``layout="constrained"`` make room for it.
    """
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if where == "below":
        ncol = ncol if ncol is not None else max(1, min(4, len(handles)))
        return ax.legend(handles, labels, fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                         ncol=ncol, frameon=False)  # fmt: skip
    if where == "right":
        return ax.legend(handles, labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                         ncol=ncol or 1, frameon=False)  # fmt: skip
    raise ValueError(f"where must be 'below' or 'right', got {where!r}")


def _ema(values, factor: float) -> list[float]:
    out, running = [], values[0]
    for v in values:
        running = factor * running + (1 - factor) * v
        out.append(running)
    return out


# ---------------------------------------------------------------------------------------------- features
def _as_2d_or_3d(name: str, tensor, ndims) -> torch.Tensor:
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(tensor)
    check_tensor(name, tensor, ndim=ndims)
    return tensor.detach().cpu().float()


def heatmap(
    tensor: torch.Tensor,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    values: str | None = None,
    cell_ticks: bool = False,
    aspect: str = "equal",
) -> Axes:
    """One ``[H, W]`` map (objectness of one anchor shape, a feature channel, a mask) as a colour image.

    Pixel ``(r, c)`` is centred at ``(c, r)`` as in the image drawings. ``vmin`` / ``vmax`` fix the colour
    scale (e.g. 0 and 1 for probabilities, or one scale shared by several maps, so that equal colours mean
    equal numbers); ``colorbar`` draws the scale beside the map.
    values: a format such as ``".2f"``: every cell's number is written in it (for small maps, e.g. a
        ``2 x 2`` RoIAlign output), in black or white, whichever reads better on the cell's colour.
    cell_ticks: integer ticks (row and column indices of the cells) instead of none.
    aspect: ``"equal"`` (square cells) or ``"auto"`` (fill the axes, e.g. a tall ``[ROIs, classes]`` table).
    Returns the axes.
    """
    data = _as_2d_or_3d("tensor", tensor, 2)
    ax = _new_axes(data.shape[0], data.shape[1], ax, inches=4.0)
    image = ax.imshow(data.numpy(), cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax, aspect=aspect)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    _bare_axes(ax, title)
    if cell_ticks:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    if values is not None:
        for (r, c), v in np.ndenumerate(data.numpy()):
            rgb = image.cmap(image.norm(v))
            ax.text(c, r, format(v, values), ha="center", va="center", fontsize=7, color=_text_color(rgb))
    return ax


def show_roi_sampling(
    feature: torch.Tensor,
    ax: Axes | None = None,
    box=None,
    points: torch.Tensor | None = None,
    bins: torch.Tensor | None = None,
    title: str | None = None,
    cmap: str = "Greys",
    color="tab:blue",
    box_color="red",
    marker: str = "o",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
) -> Axes:
    """Where an RoI sampler reads a feature map: the map's cells, the box, the sample points and/or the bins.

    feature: ``[H, W]`` map drawn as an image with a line around every cell (cell ``(r, c)`` centred at
    ``(c, r)``, as in the other drawings); the view shows one cell of margin around the map.
    box: ``(x1, y1, x2, y2)`` in feature cells (input pixels times ``spatial_scale``; a ``[4]`` tensor or 4
    numbers), drawn in ``box_color`` with the pixel convention (edge ``x1`` at ``x1 - 0.5``).
    points: float ``[..., 2]`` ``(y, x)`` sample coordinates, e.g. from
        :func:`mrcnn_edu.roi_align.roi_align_sample_points` or ``crop_and_resize_sample_points``; drawn as
        one marker each.
    bins: ``[..., 4]`` ``(y1, x1, y2, x2)``: int64 cell ranges with exclusive ends
        (:func:`mrcnn_edu.roi_align.roi_pool_bins`), drawn as filled cells, one colour per bin (empty bins are
        skipped); or float coordinates (:func:`mrcnn_edu.roi_align.roi_align_bins`), drawn as dashed outlines
        in ``color``.
    vmin / vmax: the colour scale of the map (e.g. shared with :func:`heatmap` drawings of the pooled
    outputs); colorbar: draw it beside the map. Returns the axes.
    """
    values = _as_2d_or_3d("feature", feature, 2)
    h, w = values.shape
    if box is not None:
        box_tensor = torch.as_tensor(box, dtype=torch.float64) if not isinstance(box, torch.Tensor) else box
        check_tensor("box", box_tensor, ndim=1, last_dim=4)
        box = box_tensor.detach().cpu().double().numpy()
    if points is not None:
        check_tensor("points", points, last_dim=2, kind="float")
        points = points.detach().cpu().double().reshape(-1, 2).numpy()
    if bins is not None:
        check_tensor("bins", bins, last_dim=4)
        filled = not bins.is_floating_point()
        bins = bins.detach().cpu().double().reshape(-1, 4).numpy()
    ax = _new_axes(h + 2, w + 2, ax, inches=4.0)
    image = ax.imshow(values.numpy(), cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    for k in range(w + 1):
        ax.axvline(k - 0.5, color="0.6", linewidth=0.5)
    for k in range(h + 1):
        ax.axhline(k - 0.5, color="0.6", linewidth=0.5)
    if bins is not None and filled:
        colors = instance_colors(len(bins))
        kept = [(b, c) for b, c in zip(bins, colors, strict=True) if b[2] > b[0] and b[3] > b[1]]
        for (y1, x1, y2, x2), c in kept:
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, facecolor=(*c, 0.3), edgecolor=c,
                                   linewidth=1.5))  # fmt: skip
    elif bins is not None:
        for y1, x1, y2, x2 in bins:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linestyle="--",
                                   linewidth=1.0))  # fmt: skip
    if box is not None:
        _draw_boxes(ax, box[None], [box_color], linewidth=2.0)
    if points is not None:
        ax.plot(points[:, 1], points[:, 0], marker, linestyle="none", color=color, markersize=3)
    ax.set_xlim(-1.5, w + 0.5)
    ax.set_ylim(h + 0.5, -1.5)
    _bare_axes(ax, title)
    return ax


def feature_grid(
    feature: torch.Tensor,
    ax: Axes | None = None,
    max_channels: int = 16,
    channels: Sequence[int] | None = None,
    title: str | None = None,
    cmap: str = "viridis",
) -> Axes:
    """Channels of a feature map side by side in one image (an FPN level, a backbone stage, a pooled ROI).

    feature: ``[C, H, W]`` (or ``[H, W]``, one channel; take ``[0]`` of a batch). Shown: ``channels`` when
    given, else the first ``max_channels``, in a near-square grid with one-pixel gaps, each channel scaled to
    its own min-max range (channels differ in scale by orders of magnitude) and numbered in its corner.
    Returns the axes (one axes, so a figure can hold one grid per FPN level).
    """
    values = _as_2d_or_3d("feature", feature, (2, 3))
    if values.dim() == 2:
        values = values[None]
    c, h, w = values.shape
    if channels is None:
        if max_channels < 1:
            raise ValueError(f"max_channels must be >= 1, got {max_channels}")
        channels = list(range(min(c, max_channels)))
    channels = list(channels)
    if any(not 0 <= k < c for k in channels):
        raise ValueError(f"channels must be indices into the {c} channels of feature, got {channels}")
    cols = max(1, math.ceil(math.sqrt(len(channels))))
    rows = max(1, math.ceil(len(channels) / cols))
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    for i, k in enumerate(channels):
        m = values[k]
        lo, hi = m.min(), m.max()
        scaled = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
        r, col = divmod(i, cols)
        mosaic[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = scaled.numpy()
    ax = _new_axes(*mosaic.shape, ax, inches=5.0)
    ax.imshow(mosaic, cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
    for i, k in enumerate(channels):
        r, col = divmod(i, cols)
        ax.text(col * (w + 1) - 0.5, r * (h + 1) - 0.5, str(k), fontsize=6, color="white", va="top",
                ha="left", bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "edgecolor": "none"})
    _bare_axes(ax, title if title is not None else f"channels {len(channels)} of {c}, {h}x{w}")
    return ax


# ---------------------------------------------------------------------------------------------- summaries
def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _number(v: float, integral: bool) -> str:
    return f"{int(v)}" if integral else f"{v:.5g}"


def _tensor_line(name: str, t: torch.Tensor, dtype_name: str, shape_text: str | None = None) -> str:
    """``name  shape: (...)  min: ...  max: ...  dtype: ...`` of one tensor (min / max ``-`` when empty)."""
    t = t.detach()
    shape_text = f"shape: {str(tuple(t.shape)):<20}" if shape_text is None else shape_text
    integral = not (t.is_floating_point() or t.is_complex())
    if t.numel() == 0:
        lo = hi = "-"
        extra = ""
    else:
        values = t.float() if t.dtype == torch.bool else t
        finite = torch.isfinite(values) if not integral else None
        bad = 0 if finite is None else int((~finite).sum())
        shown = values if not bad else values[finite]
        lo = _number(shown.min().item(), integral) if shown.numel() else "-"
        hi = _number(shown.max().item(), integral) if shown.numel() else "-"
        extra = f"  non-finite: {bad}" if bad else ""
    return f"{name:<24}  {shape_text}  min: {lo:>10}  max: {hi:>10}  dtype: {dtype_name}{extra}"


def _log_lines(name: str, value) -> list[str]:
    if value is None:
        return [f"{name:<24}  None"]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return [_tensor_line(name, torch.from_numpy(np.ascontiguousarray(value)), str(value.dtype))]
        return [f"{name:<24}  array shape: {value.shape}  dtype: {value.dtype}"]
    if isinstance(value, torch.Tensor):
        return [_tensor_line(name, value, _dtype_name(value.dtype))]
    if isinstance(value, Mapping):
        if not value:
            return [f"{name:<24}  empty dict"]
        return [line for k, v in value.items() for line in _log_lines(f"{name}[{k!r}]", v)]
    if isinstance(value, (list, tuple)):
        if not value:
            return [f"{name:<24}  empty {type(value).__name__}"]
        if all(isinstance(v, torch.Tensor) for v in value):
            return [_list_line(name, value)]
        if all(_is_number(v) for v in value):
            return [f"{name:<24}  {type(value).__name__}: {list(value)}"]
        return [line for i, v in enumerate(value) for line in _log_lines(f"{name}[{i}]", v)]
    if _is_number(value) or isinstance(value, bool):
        return [f"{name:<24}  value: {value}"]
    text = repr(value)
    return [f"{name:<24}  {text if len(text) <= 100 else text[:97] + '...'}"]


def _list_line(name: str, tensors: Sequence[torch.Tensor]) -> str:
    """One line for a list of tensors (a per-image list): their shapes, and min / max over all of them."""
    shapes = _shapes_text([tuple(t.shape) for t in tensors])
    dtypes = sorted({_dtype_name(t.dtype) for t in tensors})
    if len(dtypes) == 1:
        flat = torch.cat([t.detach().reshape(-1).to(tensors[0].device) for t in tensors])
        return _tensor_line(name, flat, dtypes[0], shape_text=f"{len(tensors)} tensors: {shapes}")
    return f"{name:<24}  {len(tensors)} tensors: {shapes}  dtype: {', '.join(dtypes)}"


def _shapes_text(shapes: list[tuple], limit: int = 4) -> str:
    if len(set(shapes)) == 1:
        return f"{len(shapes)} x {shapes[0]}" if len(shapes) > 1 else str(shapes[0])
    text = ", ".join(str(s) for s in shapes[:limit])
    return text + (f", ... ({len(shapes)} in all)" if len(shapes) > limit else "")


def log(name: str, value, print_fn=print) -> str:
    """Print and return a summary of a tensor, as matterport's ``visualize.log``.

    A tensor (or numeric numpy array) gives one line: ``name  shape: (2, 3, 128, 128)  min: -2.1  max: 2.6
    dtype: float32`` (min and max over the finite values, ``-`` for an empty tensor; ``non-finite: k`` is
    appended when ``k`` values are NaN or infinite). A list of tensors (one per image) gives one line with the
    shapes and the min / max over all of them; dicts and other lists give one line per entry, named
    ``name[key]`` / ``name[i]``; None, numbers and other objects are printed as such.
    ``print_fn`` receives the text (``print`` by default; ``None`` to only return it).
    """
    text = "\n".join(_log_lines(name, value))
    if print_fn is not None:
        print_fn(text)
    return text


def _describe_value(value) -> tuple[str, str]:
    """(shape text, dtype text) of a traced value that is not a dict or a per-image list of dicts."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape)), _dtype_name(value.dtype)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        dtypes = sorted({_dtype_name(v.dtype) for v in value})
        return _shapes_text([tuple(v.shape) for v in value]), ", ".join(dtypes)
    if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
        return f"{type(value).__name__} {list(value)}", type(value[0]).__name__
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__} of {len(value)}", ", ".join(kinds) or "-"
    if value is None:
        return "None", "-"
    return "-", type(value).__name__


def _trace_rows(name: str, value) -> list[tuple[str, str, str]]:
    if isinstance(value, Mapping):
        return [row for k, v in value.items() for row in _trace_rows(f"{name}.{k}", v)] or [(name, "{}", "-")]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        rows = []
        for k in keys:
            items = [v.get(k) for v in value]
            if all(isinstance(t, torch.Tensor) for t in items):
                shape, dtype = _describe_value(items)
                rows.append((f"{name}[*].{k}", f"per image: {shape}", dtype))
            else:
                rows += _trace_rows(f"{name}[*].{k}", items)
        return rows
    return [(name, *_describe_value(value))]


def summarize_trace(trace: Mapping) -> str:
    """A table of every traced stage's shape(s) and dtype, for :meth:`mrcnn_edu.model.MaskRCNN.trace`.

    trace: ``{stage name: value}``. A tensor gives one row; a dict (the backbone's C2..C5, the FPN's P2..P6)
    one row per key, ``stage.key``; a per-image list of dicts (proposals, detections, results) one row per
    key, ``stage[*].key``, listing the images' shapes (``2 x (1000, 4)`` when they agree). Rows keep the
    trace's order. Returns the table as text (print it).
    """
    if not isinstance(trace, Mapping):
        raise ValueError(f"trace must be a dict of stage name -> value, got {type(trace).__name__}")
    rows = [row for name, value in trace.items() for row in _trace_rows(str(name), value)]
    header = ("stage", "shape", "dtype")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(cell.ljust(wd) for cell, wd in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)
