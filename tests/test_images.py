"""Tests of mrcnn_edu.data.images: image files as users have them (8/16-bit, float TIFF, NaN, odd modes).

References: the pixel arrays the tests write, read back through numpy; a 16-bit PNG written byte by byte (PIL
cannot write 16-bit RGB), so the reader is checked against the values in the file, not against PIL's reading.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_edu.data import DataError, read_image


def _png16(path, pixels: np.ndarray) -> None:
    """A 16-bit PNG of ``pixels`` (uint16 ``[H, W]`` gray or ``[H, W, 3]`` RGB), encoded by hand."""
    h, w = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))  # fmt: skip


RNG = np.random.default_rng(0)


def test_8_bit_rgb_gray_palette_and_alpha(tmp_path):
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert image.dtype == torch.float32 and image.shape == (3, 6, 7)
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    gray = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    expected = torch.from_numpy(gray).float().div(255).expand(3, 6, 7)
    assert torch.equal(read_image(tmp_path / "gray.png"), expected)
    rgba = np.dstack([rgb, np.full((6, 7), 9, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert torch.equal(read_image(tmp_path / "rgba.png"), image)  # the alpha channel is not used
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (3, 6, 7)


def test_16_bit_gray_png_keeps_its_values(tmp_path):
    # convert("RGB") clips 16-bit values to 255: every pixel above 255 / 65535 became white.
    pixels = np.array([[0, 1000, 30000], [40000, 65535, 200]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "g16.png")  # PIL writes 16-bit gray
    image = read_image(tmp_path / "g16.png")
    expected = torch.from_numpy(pixels.astype(np.float32) / 65535)
    assert image.shape == (3, 2, 3)
    torch.testing.assert_close(image, expected.expand(3, 2, 3), rtol=0, atol=1e-7)
    _png16(tmp_path / "g16_by_hand.png", pixels)
    torch.testing.assert_close(read_image(tmp_path / "g16_by_hand.png"), image, rtol=0, atol=1e-7)


def test_16_bit_rgb_png_within_8_bit_precision(tmp_path):
    pixels = RNG.integers(0, 65536, (5, 4, 3)).astype(np.uint16)
    _png16(tmp_path / "rgb16.png", pixels)
    image = read_image(tmp_path / "rgb16.png")
    expected = torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1)
    assert (image - expected).abs().max() <= 1 / 255  # PIL reads the high byte of each sample


def test_float_tiff_in_0_1_is_read_as_is(tmp_path):
    pixels = RNG.random((5, 6)).astype(np.float32)
    Image.fromarray(pixels).save(tmp_path / "f.tif")  # mode F
    image = read_image(tmp_path / "f.tif")
    assert torch.equal(image, torch.from_numpy(pixels).expand(3, 5, 6))


def test_float_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile", reason="PIL cannot read multi-channel float TIFFs")
    pixels = RNG.random((5, 6, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgb.tif", pixels, photometric="rgb")
    assert torch.equal(read_image(tmp_path / "rgb.tif"), torch.from_numpy(pixels).permute(2, 0, 1))
    tifffile.imwrite(tmp_path / "rgb64.tif", pixels.astype(np.float64), photometric="rgb")
    assert torch.equal(read_image(tmp_path / "rgb64.tif"), torch.from_numpy(pixels).permute(2, 0, 1))
    tifffile.imwrite(tmp_path / "u16.tif", (pixels * 65535).astype(np.uint16))
    assert (read_image(tmp_path / "u16.tif") - torch.from_numpy(pixels).permute(2, 0, 1)).abs().max() < 2e-5
    tifffile.imwrite(tmp_path / "two.tif", pixels[..., :2])
    with pytest.raises(DataError, match=r"two\.tif.*channels"):
        read_image(tmp_path / "two.tif")


def test_nan_and_out_of_range_float_pixels_name_the_file(tmp_path):
    pixels = RNG.random((12, 12)).astype(np.float32)
    pixels[1:11, 1:11] = np.nan
    Image.fromarray(pixels).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"nan\.tif.*100 NaN"):
        read_image(tmp_path / "nan.tif")
    Image.fromarray(np.full((4, 4), 480, dtype=np.float32)).save(tmp_path / "big.tif")
    with pytest.raises(DataError, match=r"big\.tif.*0-1.*480"):
        read_image(tmp_path / "big.tif")


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "not.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"not\.png.*could not be read"):
        read_image(tmp_path / "not.png")
    with pytest.raises(DataError, match=r"missing\.png.*not found"):
        read_image(tmp_path / "missing.png")
    Image.fromarray(np.array([[1, 70000]], dtype=np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(DataError, match=r"i32\.tif.*32-bit"):
        read_image(tmp_path / "i32.tif")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)
