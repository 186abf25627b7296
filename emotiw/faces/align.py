"""Register a face to the FER2013 48x48 frame from its 5 landmarks (paper-spec §1).

One similarity transform per frame, fitted by least squares from the frame's 5 points (left eye, right eye, nose,
left mouth corner, right mouth corner; image-left first) to the FER mean shape, then a bilinear warp into 48x48.
The source is the grey frame histogram-equalised (MATLAB ``histeq`` default, 64 levels) over the region the 48x48
window samples, i.e. over the face and its surroundings rather than the whole movie frame: the authors equalised the
organisers' face crops. Where the window leaves the frame, it samples i.i.d. uniform noise 0..255 (not equalised),
as the authors padded their crops with a noise border.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from emotiw.faces.histeq import equalize_hist

__all__ = [
    "FACE_SIZE",
    "FER_MEAN_SHAPE_48",
    "AlignConfig",
    "align_clip",
    "align_face",
    "similarity_transform",
    "warp_to_face",
]

FACE_SIZE = 48
# Mean 5-point shape of FER2013 (the authors' FER_48x48_points_avg.mat), MATLAB 1-based values minus 1.
FER_MEAN_SHAPE_48 = (
    np.array(
        [[14.99, 17.41], [34.20, 17.17], [24.56, 28.36], [16.80, 38.15], [32.73, 38.01]], dtype=np.float64
    )
    - 1.0
)


@dataclass(frozen=True)
class AlignConfig:
    """What the aligned faces depend on; part of the face-cache key (bump ``version`` when the code changes)."""

    levels: int = 64
    seed: int = 0
    version: int = 3

    def key(self) -> str:
        payload = json.dumps(
            {**asdict(self), "mean_shape": FER_MEAN_SHAPE_48.round(4).tolist(), "size": FACE_SIZE},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scale, rotation, translation; no reflection) mapping ``src`` points onto ``dst``.

    Solves ``u = a x - b y + tx``, ``v = b x + a y + ty`` for (a, b, tx, ty) in the least-squares sense; the
    problem is linear in the unknowns, so the solution is unique (MATLAB ``cp2tform(..., 'similarity')`` fits the same model).

    Returns:
        (2, 3) float64 matrix ``[[a, -b, tx], [b, a, ty]]`` for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"points must be matching (N>=2, 2) arrays, got src {src.shape} and dst {dst.shape}")
    if not np.all(np.isfinite(src)):
        raise ValueError(f"source points must be finite, got {src.tolist()}")
    if np.ptp(src, axis=0).max() < 1e-6:
        raise ValueError(f"degenerate source points (all at one place): {src.tolist()}")
    # Closed form of that least-squares problem: centre both point sets, then a and b are the normalised dot and
    # cross products (numerically the same as lstsq on the 2N x 4 system, and cheaper per frame).
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    (x, y), (u, v) = (src - src_mean).T, (dst - dst_mean).T
    norm = np.sum(x * x + y * y)
    a = np.sum(x * u + y * v) / norm
    b = np.sum(x * v - y * u) / norm
    tx, ty = dst_mean - np.array([[a, -b], [b, a]]) @ src_mean
    if a * a + b * b < 1e-12:
        raise ValueError(f"degenerate fit: the points map to a zero scale: {src.tolist()}")
    return np.array([[a, -b, tx], [b, a, ty]])


def align_face(
    gray_frame: np.ndarray, points5: np.ndarray, rng: np.random.Generator, *, levels: int = 64
) -> np.ndarray:
    """One aligned, equalised (48, 48) uint8 face from a grey frame and its 5 points (pixel coordinates)."""
    return warp_to_face(gray_frame, similarity_transform(points5, FER_MEAN_SHAPE_48), rng, levels=levels)


def warp_to_face(
    gray_frame: np.ndarray, m: np.ndarray, rng: np.random.Generator, *, levels: int | None = 64
) -> np.ndarray:
    """The (48, 48) uint8 window of ``gray_frame`` under the similarity ``m`` (source pixel -> face pixel, ``(2, 3)``).

    With ``levels`` the sampled region is histogram-equalised first (None: pixels as they are); where the window
    leaves the image it samples i.i.d. uniform noise 0..255 (drawn from ``rng`` only then), the authors' border.
    """
    gray_frame = np.asarray(gray_frame)
    if gray_frame.dtype != np.uint8 or gray_frame.ndim != 2:
        raise ValueError(f"gray_frame must be a 2-D uint8 array, got {gray_frame.dtype} {gray_frame.shape}")
    lin, shift = m[:, :2], m[:, 2]
    # Source region sampled by the output window (one pixel of slack for the bilinear neighbours).
    corners = np.array([[-1, -1], [FACE_SIZE, -1], [-1, FACE_SIZE], [FACE_SIZE, FACE_SIZE]], dtype=np.float64)
    src = (corners - shift) @ np.linalg.inv(lin).T
    x0, y0 = np.floor(src.min(0)).astype(int) - 1
    x1, y1 = np.ceil(src.max(0)).astype(int) + 1
    h, w = gray_frame.shape
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)

    def equalise(patch: np.ndarray) -> np.ndarray:
        return equalize_hist(patch, levels) if levels else patch

    if (fx0, fy0, fx1, fy1) == (x0, y0, x1, y1):
        canvas = equalise(gray_frame[y0 : y1 + 1, x0 : x1 + 1])
    else:  # noise only where the window leaves the frame; the rng is drawn only then
        canvas = rng.integers(0, 256, size=(y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
        if fx0 <= fx1 and fy0 <= fy1:
            patch = gray_frame[fy0 : fy1 + 1, fx0 : fx1 + 1]
            canvas[fy0 - y0 : fy1 - y0 + 1, fx0 - x0 : fx1 - x0 + 1] = equalise(patch)
    local = m.copy()
    local[:, 2] = shift + lin @ np.array([x0, y0], dtype=np.float64)
    return cv2.warpAffine(
        canvas, local, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def align_clip(
    gray: np.ndarray, frame_idx: np.ndarray, points: np.ndarray, rng: np.random.Generator, *, levels: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Align every frame that has landmarks, in temporal order; frames without landmarks are dropped.

    Args:
        gray: (T, H, W) uint8 decoded frames.
        frame_idx: (K,) increasing frame indices that have landmarks (indices >= T are ignored).
        points: (K, 5, 2) landmarks.

    Returns:
        faces (K', 48, 48) uint8 and their frame indices (K',) int64.
    """
    frame_idx = np.asarray(frame_idx, dtype=np.int64)
    keep = (frame_idx >= 0) & (frame_idx < len(gray))
    frame_idx, points = frame_idx[keep], np.asarray(points)[keep]
    faces = np.empty((len(frame_idx), FACE_SIZE, FACE_SIZE), np.uint8)
    for i, (t, pts) in enumerate(zip(frame_idx, points, strict=True)):
        faces[i] = align_face(gray[t], pts, rng, levels=levels)
    return faces, frame_idx
