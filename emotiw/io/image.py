"""Read a still image for prediction: RGB uint8, upright, bounded in pixels, truncation noticed.

Pillow reads the header first, so an image over ``max_pixels`` is refused before any pixel is decoded; JPEGs are
decoded directly at a reduced scale (DCT scaling) when larger than ``work_side``, other formats are decoded and then
resized, so the detector and the alignment always work on at most ``work_side`` pixels a side. A truncated file is
decoded as far as it goes and reported (the caller flags it), never passed off as whole.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "LoadedImage", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image that cannot be used: the message names the file and the reason, on one line."""


@dataclass(frozen=True)
class LoadedImage:
    """``rgb`` (H,W,3) uint8; ``size`` the file's (width, height); ``notes`` what was done to it (downscaled,
    truncated), one phrase each."""

    rgb: np.ndarray
    size: tuple[int, int]
    notes: tuple[str, ...]


def read_image(
    path: str | os.PathLike, *, max_pixels: int = 100_000_000, work_side: int = 2048
) -> LoadedImage:
    """Decode ``path`` to upright RGB uint8, at most ``work_side`` pixels on its longer side.

    Raises:
        ImageReadError: missing, empty, not an image, or more than ``max_pixels`` pixels.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    if max_pixels < 1 or work_side < 48:
        raise ValueError(f"max_pixels must be >= 1 and work_side >= 48, got {max_pixels}, {work_side}")
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes), not an image")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: too large ({err}); the limit is {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageReadError(
                f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, over the limit of "
                f"{max_pixels / 1e6:.0f} MP (--max-pixels); downscale it first"
            )
        # JPEG: decode at 1/2, 1/4 or 1/8 scale straight away (no full-size buffer); other formats ignore it.
        factor = min(1.0, work_side / max(width, height))
        reduced = (max(1, int(width * factor)), max(1, int(height * factor)))
        if factor < 1:
            image.draft("RGB", reduced)
        try:
            image.load()
        except OSError as err:
            if "truncated" not in str(err):
                raise ImageReadError(f"{path}: cannot decode the image ({err})") from None
            notes.append("truncated image: scored on the part that decodes")
            ImageFile.LOAD_TRUNCATED_IMAGES = True
            try:
                image = Image.open(path)
                if factor < 1:
                    image.draft("RGB", reduced)
                image.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = False
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "L"):
            if image.mode.startswith("I;16") or image.mode in ("I", "F"):
                # 16-bit and float greys: stretch to 8 bits rather than clip
                arr = np.asarray(image, dtype=np.float64)
                arr = (arr - arr.min()) * (255.0 / max(1e-12, float(arr.max() - arr.min())))
                image = Image.fromarray(np.rint(arr).astype(np.uint8))
            else:
                image = image.convert("RGB")  # palette, RGBA (alpha dropped), CMYK, LA, ...
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if max(rgb.shape[:2]) > work_side:
        factor = work_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] != (height, width) and rgb.shape[:2] != (width, height):
        notes.append(f"downscaled from {width}x{height} to {rgb.shape[1]}x{rgb.shape[0]} before detection")
    return LoadedImage(rgb=np.ascontiguousarray(rgb), size=(width, height), notes=tuple(notes))
