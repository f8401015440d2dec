"""The bundled photographs: present in the installed scikit-image, loaded as [3, H, W] float 0-1 RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("skimage", reason="the bundled photos are scikit-image's sample images")

from mrcnn_edu.data.photos import PHOTOS, load_photo, photo_names, photo_path  # noqa: E402


def test_names_and_metadata():
    names = photo_names()
    assert names == list(PHOTOS) and len(names) >= 3
    assert {"astronaut", "coffee", "chelsea"} <= set(names)
    for name, info in PHOTOS.items():
        assert info.name == name
        assert info.source and info.description
        assert any(word in info.licence for word in ("public domain", "CC0")), info.licence


def test_coco_objects_are_coco_category_names():
    from mrcnn_edu.data.coco_names import COCO_CATEGORY_NAMES

    for info in PHOTOS.values():
        assert set(info.objects) <= set(COCO_CATEGORY_NAMES), info.objects


@pytest.mark.parametrize("name", list(PHOTOS))
def test_load_photo_shape_dtype_range(name):
    image = load_photo(name)
    assert image.dtype == torch.float32 and image.is_contiguous()
    assert tuple(image.shape) == (3, *PHOTOS[name].size)
    assert 0.0 <= image.min() and image.max() <= 1.0
    # A real photograph: many distinct values, not a blank or constant image, and colour channels differ.
    assert image.std() > 0.05
    assert len(torch.unique((image * 255).round())) > 100
    assert not torch.equal(image[0], image[1])


def test_load_photo_matches_the_file_and_skimage():
    from PIL import Image
    from skimage import data

    with photo_path("chelsea").open("rb") as f:
        pixels = np.array(Image.open(f).convert("RGB"))
    image = load_photo("chelsea")
    assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(pixels).permute(2, 0, 1))
    # scikit-image's own loader reads the same file from its package folder (no download).
    assert np.array_equal(data.chelsea(), pixels)


def test_unknown_photo_lists_the_valid_names():
    with pytest.raises(ValueError, match="name") as err:
        load_photo("no_such_photo")
    message = str(err.value)
    assert "no_such_photo" in message
    for name in photo_names():
        assert name in message
