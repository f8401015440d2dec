"""A few real photographs to run a COCO-trained model on, with no download.

The pictures are scikit-image's sample images that ship *inside* its wheel (``skimage/data/*.png|jpg``), so
they are on disk as soon as ``scikit-image`` is installed; they are read here straight from the package
folder with Pillow, never through ``skimage.data``'s fetcher (which may try to download images that are not
bundled). Each one's source and licence below are those stated in scikit-image's own docstrings for it
(``help(skimage.data.astronaut)`` etc.); all are public domain or CC0.

They are chosen for what a COCO detector should find in them: a person, a cup with a spoon, a cat, and, as an
out-of-distribution check, a rocket on its launch pad (no COCO category fits).

Shape glossary
    H, W: photo height and width in pixels

:func:`load_photo` returns float32 ``[3, H, W]`` RGB in 0-1, the image format used everywhere in mrcnn_edu.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

__all__ = ["PhotoInfo", "PHOTOS", "photo_names", "photo_path", "load_photo"]


@dataclass(frozen=True)
class PhotoInfo:
    """One bundled photograph: where it is, what it shows, where it comes from and under which licence."""

    name: str
    file: str  # file name inside the ``skimage.data`` package folder
    size: tuple[int, int]  # (height, width)
    description: str
    objects: tuple[str, ...]  # COCO category names of the objects a COCO model should find (may be empty)
    source: str
    licence: str


PHOTOS: dict[str, PhotoInfo] = {
    p.name: p
    for p in (
        PhotoInfo(
            name="astronaut",
            file="astronaut.png",
            size=(512, 512),
            description="NASA portrait of astronaut Eileen Collins in an orange flight suit, with a US flag, "
            "a space-shuttle model and her helmet",
            objects=("person",),
            source="NASA Great Images database (https://flic.kr/p/r9qvLn), via scikit-image",
            licence="public domain (no known copyright restrictions)",
        ),
        PhotoInfo(
            name="coffee",
            file="coffee.png",
            size=(400, 600),
            description="an espresso cup on a saucer with a spoon, on a wooden table",
            objects=("cup", "spoon", "dining table"),
            source="Rachel Michetti, courtesy of Pikolo Espresso Bar, via scikit-image",
            licence="CC0 (no copyright restrictions)",
        ),
        PhotoInfo(
            name="chelsea",
            file="chelsea.png",
            size=(300, 451),
            description="close-up of Chelsea the cat",
            objects=("cat",),
            source="Stefan van der Walt, via scikit-image",
            licence="CC0 (no copyright restrictions)",
        ),
        PhotoInfo(
            name="rocket",
            file="rocket.jpg",
            size=(427, 640),
            description="a SpaceX Falcon 9 carrying DSCOVR on its launch pad at dusk, between lightning "
            "towers: no COCO category fits, so a good model finds little here",
            objects=(),
            source="SpaceX Photos (https://www.flickr.com/photos/spacexphotos/16511594820), via scikit-image",
            licence="public domain (released by SpaceX)",
        ),
    )
}


def photo_names() -> list[str]:
    """The names :func:`load_photo` accepts, in a fixed order."""
    return list(PHOTOS)


def _info(name: str) -> PhotoInfo:
    if name not in PHOTOS:
        raise ValueError(f"name: unknown photo {name!r}; choose one of {photo_names()}")
    return PHOTOS[name]


def photo_path(name: str):
    """The photo's file inside the installed scikit-image package (a ``pathlib``-like resource path).

    Raises ``ValueError`` for an unknown name and ``ImportError`` (saying what to install) without
    scikit-image.
    """
    info = _info(name)
    try:
        folder = resources.files("skimage.data")
    except ModuleNotFoundError:
        raise ImportError(
            "the bundled photos are scikit-image's sample images: pip install scikit-image"
        ) from None
    path = folder / info.file
    if not path.is_file():
        raise FileNotFoundError(f"photo {name!r}: {info.file} is missing from the installed scikit-image")
    return path


def load_photo(name: str) -> torch.Tensor:
    """A bundled photograph as float32 ``[3, H, W]`` RGB in 0-1 (``H, W = PHOTOS[name].size``).

    ``name`` is one of :func:`photo_names`; anything else raises ``ValueError`` listing the valid names.
    """
    from PIL import Image

    with photo_path(name).open("rb") as f, Image.open(f) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
