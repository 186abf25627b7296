"""Histogram equalisation with MATLAB ``histeq`` semantics (the paper's preprocessing used MATLAB's default)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["equalize_hist"]


def equalize_hist(img: np.ndarray, levels: int = 64) -> np.ndarray:
    """Equalise the histogram of a grey uint8 image onto ``levels`` output values spread over 0..255.

    ``levels=64`` reproduces MATLAB ``histeq(img)`` (its default target: a flat histogram with 64 bins).
    The mapping, in our words: let ``N`` be the pixel count, ``C[j]`` the count of pixels ``<= j`` (256 source
    bins) and ``D[k] = (k + 1) * N / levels`` the cumulative target. Each source value ``j`` goes to the
    smallest target level ``k`` with ``D[k] >= C[j] - t[j]``, where the tolerance ``t[j]`` is half the count of
    value ``j`` itself (0 for values 0 and 255), i.e. a value is assigned by the middle of its own pixel mass.
    Level ``k`` is written as ``round(k * 255 / (levels - 1))`` (MATLAB's ``im2uint8`` of ``k / (levels-1)``),
    so 64 levels use the grey values 0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 45, ... 255.

    ``levels=256`` is delegated to :func:`cv2.equalizeHist` (the OpenCV convention, first occupied value -> 0),
    so that "256 levels" means what the rest of the Python world means by histogram equalisation.

    Args:
        img: 2-D uint8 image.
        levels: number of output grey levels, 2..256.

    Returns:
        uint8 image of the same shape.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(
            f"equalize_hist: img must be a 2-D uint8 array, got dtype={img.dtype} shape={img.shape}"
        )
    if not isinstance(levels, (int, np.integer)) or not 2 <= levels <= 256:
        raise ValueError(f"equalize_hist: levels must be an int in 2..256, got {levels!r}")
    if img.size == 0:
        raise ValueError("equalize_hist: img is empty")
    if levels == 256:
        return cv2.equalizeHist(np.ascontiguousarray(img))
    return cv2.LUT(img, _matlab_lut(img, int(levels)))


def _matlab_lut(img: np.ndarray, levels: int) -> np.ndarray:
    """The 256-entry lookup table of MATLAB ``histeq(img, levels)``."""
    n = float(img.size)
    hist = cv2.calcHist([img], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    cum_src = np.cumsum(hist)
    tol = hist / 2.0
    tol[0] = tol[-1] = 0.0
    cum_target = np.arange(1, levels + 1, dtype=np.float64) * (n / levels)
    # Tiny slack so that float rounding of cum_target never pushes a value up one level.
    need = cum_src - tol - n * np.sqrt(np.finfo(np.float64).eps)
    level = np.searchsorted(cum_target, need, side="left").clip(0, levels - 1)
    return np.round(level * (255.0 / (levels - 1))).astype(np.uint8)
