"""Stills for prediction: the pixel limit, downscaling before detection, truncation, odd pixel formats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from emotiw.io.image import ImageReadError, read_image
from tests.predict_media import head


def test_large_jpeg_is_decoded_reduced_and_noted(tmp_path):
    big = cv2.resize(head(400), (8000, 8000), interpolation=cv2.INTER_NEAREST)
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=70)
    image = read_image(path)
    assert image.size == (8000, 8000)
    assert max(image.rgb.shape[:2]) <= 2048 and image.rgb.dtype == np.uint8
    assert image.notes == ("downscaled from 8000x8000 to 2048x2048 before detection",)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(ImageReadError, match=r"wide.png: 3000x2000 is 6 MP, over the limit of 5 MP"):
        read_image(path, max_pixels=5_000_000)
    assert read_image(path, max_pixels=6_000_000).rgb.shape == (1365, 2048, 3)  # PNG: decoded, then resized


def test_truncated_jpeg_is_flagged(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(head(300)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    image = read_image(path)
    assert image.notes == ("truncated image: scored on the part that decodes",)
    assert image.rgb.shape[:2] == Image.open(path).size[::-1]


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "L", "CMYK"])
def test_pixel_formats_become_rgb_uint8(tmp_path, mode):
    rgb = head(64)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = read_image(path).rgb
    assert out.dtype == np.uint8 and out.shape == (*rgb.shape[:2], 3)
    if mode == "I;16":  # stretched to 8 bits, not clipped: the darkest pixel 0, the brightest 255
        assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "image file not found"),
        (b"", r"empty file \(0 bytes\)"),
        (b"hello" * 20, "not a readable image"),
    ],
)
def test_bad_files_name_themselves(tmp_path, content, match):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"bad.png: {match}"):
        read_image(path)
