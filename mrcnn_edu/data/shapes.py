"""The synthetic shapes dataset: squares, circles and triangles on a plain background.

It is the embedded default data set: nothing to download, any image size and count, and every image is a pure
function of ``(seed, index)``, so image 17 is the same whether or not images 0-16 were generated.

Shape glossary
    H, W: image height and width
    N:    objects in one image

Each item is ``(image, target)``:
    image:  float32 ``[3, H, W]`` in 0-1
    target: ``boxes`` float32 ``[N, 4]`` (tight ``x1, y1, x2, y2`` around the visible pixels, exclusive max),
            ``labels`` int64 ``[N]`` (1 square, 2 circle, 3 triangle), ``masks`` uint8 ``[N, H, W]``
            (visible pixels only: a later shape hides the part of an earlier one it covers);
            ``ShapesDataset`` items also carry ``image_id`` (the index).

Placement avoids heavy overlap (box IoU above ``max_overlap`` is re-drawn), and a shape left with fewer than
``min_visible`` visible pixels after occlusion is removed from the target (it can no longer be seen, so it is
not an object of the image); the count of such removals is in ``target["num_hidden"]``.
"""

from __future__ import annotations

import math

import torch

from ..boxes import box_iou, masks_to_boxes

__all__ = ["CLASS_NAMES", "ShapesDataset", "make_shapes_image"]

CLASS_NAMES = ("background", "square", "circle", "triangle")


def _shape_mask(kind: int, cx: float, cy: float, r: float, h: int, w: int) -> torch.Tensor:
    """Binary ``[H, W]`` mask of one shape of "radius" ``r`` centred at ``(cx, cy)``, at pixel centres."""
    y = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    x = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    if kind == 1:  # square
        return ((x - cx).abs() <= r) & ((y - cy).abs() <= r)
    if kind == 2:  # circle
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    # upward triangle: apex above the centre, base below; inside all three edges
    top, base = cy - r, cy + r * math.sin(math.pi / 6)
    half = r * math.cos(math.pi / 6)
    t = ((y - top) / (base - top)).clamp(min=0)  # 0 at the apex, 1 at the base
    return (y >= top) & (y <= base) & ((x - cx).abs() <= half * t)


def make_shapes_image(
    height: int,
    width: int,
    generator: torch.Generator,
    max_objects: int = 4,
    min_radius_frac: float = 0.08,
    max_radius_frac: float = 0.25,
    max_overlap: float = 0.3,
    min_visible: int = 20,
) -> tuple[torch.Tensor, dict]:
    """Draw one random image; see the module docstring for the result's layout.

    Radii are uniform in ``[min_radius_frac, max_radius_frac] * min(height, width)``; 1 to ``max_objects``
    shapes are placed, each fully inside the image.
    """
    if height < 16 or width < 16:
        raise ValueError(f"height and width must be at least 16, got ({height}, {width})")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator).item()

    background = torch.rand(3, generator=generator) * 0.6 + 0.2
    image = background[:, None, None].expand(3, height, width).clone()
    count = int(torch.randint(1, max_objects + 1, (), generator=generator))
    short = min(height, width)
    kinds, masks, boxes = [], [], []
    for _ in range(count):
        for _attempt in range(10):
            kind = int(torch.randint(1, 4, (), generator=generator))
            r = uniform(min_radius_frac * short, max_radius_frac * short)
            cx, cy = uniform(r, width - r), uniform(r, height - r)
            box = torch.tensor([[cx - r, cy - r, cx + r, cy + r]])
            if not boxes or box_iou(box, torch.cat(boxes)).max() <= max_overlap:
                break
        else:
            continue  # no free place found: this image simply has fewer shapes
        colour = torch.rand(3, generator=generator)
        while (colour - background).abs().sum() < 0.5:  # keep shapes distinguishable from the background
            colour = torch.rand(3, generator=generator)
        mask = _shape_mask(kind, cx, cy, r, height, width)
        image[:, mask] = colour[:, None]
        masks = [m & ~mask for m in masks]  # the new shape hides what it covers
        kinds.append(kind)
        masks.append(mask)
        boxes.append(box)

    visible = [i for i, m in enumerate(masks) if int(m.sum()) >= min_visible]
    if visible:
        mask_t = torch.stack([masks[i] for i in visible]).to(torch.uint8)
    else:
        mask_t = torch.zeros((0, height, width), dtype=torch.uint8)
    target = {
        "boxes": masks_to_boxes(mask_t),
        "labels": torch.tensor([kinds[i] for i in visible], dtype=torch.int64),
        "masks": mask_t,
        "num_hidden": len(masks) - len(visible),
    }
    return image, target


class ShapesDataset(torch.utils.data.Dataset):
    """``num_images`` shapes images of ``image_size = (height, width)``, deterministic by ``seed``.

    Item ``i`` is drawn with a generator seeded from ``(seed, i)``; see :func:`make_shapes_image` for the
    remaining keyword arguments.
    """

    def __init__(self, num_images: int, image_size=(128, 128), seed: int = 0, **shape_kwargs):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images = int(num_images)
        self.height, self.width = (int(v) for v in image_size)
        self.seed = int(seed)
        self.shape_kwargs = shape_kwargs
        self.class_names = CLASS_NAMES

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image, target = make_shapes_image(self.height, self.width, g, **self.shape_kwargs)
        target["image_id"] = index
        return image, target
