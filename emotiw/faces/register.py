"""One still data set registered to another's frame by the similarity between their mean 5-point shapes.

The authors (paper §2.1.2, paper-spec §1) detect the 5 points on every FER2013 and TFD image, average them per data
set, fit one similarity transform from TFD's mean shape to FER2013's (``cp2tform(..., 'similarity')``) and warp
every histogram-equalised TFD face with it into the 48x48 FER frame, over a canvas of uniform noise 0..255 so that
what the window takes from outside the face is noise. Both mean shapes come from the same point source here (the
``face_points.csv`` sidecars the generator writes, or CenterFace), so a source's own bias cancels between them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotiw.faces.align import similarity_transform, warp_to_face
from emotiw.io.fer import FaceSet
from emotiw.io.points import read_face_points

log = logging.getLogger(__name__)

__all__ = [
    "POINT_SOURCES",
    "Registration",
    "detect_still_points",
    "fit_registration",
    "mean_shape",
    "register_faces",
    "resolve_point_source",
]

POINT_SOURCES = ("auto", "sidecar", "centerface")
# CenterFace on a 48x48 still: padded with mid-grey, then at twice the size. On 300 real FER2013 Training faces and
# 300 others zoomed 1.12x (a TFD-like crop), the fitted registration put the mean points back within 0.6 px this way,
# 0.9 px without the border (x2 also finds more faces than x1: 287 vs 256 of 300).
DETECT_PAD = 8
DETECT_UPSCALE = 2


@dataclass(frozen=True)
class Registration:
    """The fitted registration: ``matrix`` (2, 3) maps source pixels to target pixels."""

    source_mean: np.ndarray  # (5, 2)
    target_mean: np.ndarray  # (5, 2)
    matrix: np.ndarray  # (2, 3)
    source_points: int  # faces whose points made each mean
    target_points: int
    point_source: str

    @property
    def scale(self) -> float:
        return float(np.hypot(*self.matrix[:, 0]))

    @property
    def rotation_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    @property
    def residual_rms(self) -> float:
        mapped = self.source_mean @ self.matrix[:, :2].T + self.matrix[:, 2]
        return float(np.sqrt(np.mean(np.sum((mapped - self.target_mean) ** 2, axis=1))))

    def summary(self) -> str:
        tx, ty = self.matrix[:, 2]
        return (
            f"similarity from {self.point_source} mean shapes ({self.source_points} / {self.target_points} faces): "
            f"scale {self.scale:.3f}, rotation {self.rotation_deg:.2f} deg, translation ({tx:.2f}, {ty:.2f}), "
            f"residual RMS {self.residual_rms:.2f} px"
        )


def detect_still_points(images: np.ndarray, detector=None) -> tuple[np.ndarray, np.ndarray]:
    """CenterFace's 5 points of the largest face in each grey still: (indices with a face (K,), points (K, 5, 2))."""
    from emotiw.faces.detect import CenterFaceSource

    detector = detector or CenterFaceSource()
    found, points = [], []
    pad, up = DETECT_PAD, DETECT_UPSCALE
    for i, img in enumerate(images):
        framed = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        faces = detector.detect(cv2.resize(framed, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR))
        if faces:
            best = max(faces, key=lambda f: f.area)
            found.append(i)  # pixel centres of the enlarged, framed image back to the still's
            points.append((best.points5 + 0.5) / up - 0.5 - pad)
    return np.asarray(found, np.int64), np.asarray(points, np.float64).reshape(-1, 5, 2)


def _sidecar(faces_dir: Path | None) -> Path | None:
    from emotiw.io.points import POINTS_FILE

    path = Path(faces_dir) / POINTS_FILE if faces_dir is not None else None
    return path if path is not None and path.is_file() else None


def resolve_point_source(spec: str, faces_dir: str | os.PathLike | None) -> str:
    """``auto``: ``sidecar`` when ``<faces_dir>/face_points.csv`` exists, else ``centerface``."""
    if spec not in POINT_SOURCES:
        raise ValueError(f"still_points={spec!r}: expected one of {', '.join(POINT_SOURCES)}")
    if spec != "auto":
        return spec
    return "sidecar" if _sidecar(Path(faces_dir) if faces_dir is not None else None) else "centerface"


def mean_shape(
    faces: FaceSet,
    faces_dir: str | os.PathLike | None,
    source: str = "auto",
    *,
    sample: int | None = 2000,
    seed: int = 0,
    detector=None,
) -> tuple[np.ndarray, int]:
    """The mean 5-point shape of ``faces`` and how many faces it averages.

    Args:
        faces: the still set (its keys look up the sidecar rows).
        faces_dir: the folder holding the set's ``face_points.csv`` (the CSV's or ``.mat``'s folder, the image root).
        source: ``sidecar``, ``centerface`` or ``auto`` (:func:`resolve_point_source`).
        sample: detect on at most this many faces (a seeded sample; None: all); the sidecar is read whole.
    """
    source = resolve_point_source(source, faces_dir)
    if source == "sidecar":
        path = _sidecar(Path(faces_dir) if faces_dir is not None else None)
        if path is None:
            raise FileNotFoundError(f"{faces_dir}: no face_points.csv for still_points=sidecar")
        table = read_face_points(path)
        pts = [table[k] for k in faces.keys if k in table]
        if not pts:
            raise ValueError(
                f"{path}: holds no points for any of the {len(faces)} faces (keys like {faces.keys[0]!r})"
            )
        return np.mean(pts, axis=0), len(pts)
    idx = np.arange(len(faces))
    if sample is not None and len(idx) > sample:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=sample, replace=False))
    found, pts = detect_still_points(faces.images[idx], detector)
    if len(found) == 0:
        raise ValueError(
            f"{faces_dir}: CenterFace found no face in {len(idx)} stills; cannot estimate a mean shape"
        )
    return pts.mean(axis=0), len(found)


def register_faces(images: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Warp every (already equalised) face with ``matrix`` into the 48x48 frame, noise where it leaves the face."""
    out = np.empty((len(images), 48, 48), np.uint8)
    for i, img in enumerate(images):
        out[i] = warp_to_face(img, matrix, rng, levels=None)
    return out


def fit_registration(
    source: FaceSet,
    source_dir: str | os.PathLike | None,
    target: FaceSet,
    target_dir: str | os.PathLike | None,
    point_source: str = "auto",
    *,
    sample: int | None = 2000,
    seed: int = 0,
) -> Registration:
    """The similarity from ``source``'s mean shape to ``target``'s, both from the same point source."""
    kinds = {resolve_point_source(point_source, d) for d in (source_dir, target_dir)}
    # one source for both means, or their biases would not cancel: the detector unless both have sidecars
    kind = "sidecar" if kinds == {"sidecar"} else "centerface" if point_source == "auto" else point_source
    detector = None
    if kind == "centerface":
        from emotiw.faces.detect import CenterFaceSource

        detector = CenterFaceSource()
    src_mean, n_src = mean_shape(source, source_dir, kind, sample=sample, seed=seed, detector=detector)
    dst_mean, n_dst = mean_shape(target, target_dir, kind, sample=sample, seed=seed, detector=detector)
    return Registration(src_mean, dst_mean, similarity_transform(src_mean, dst_mean), n_src, n_dst, kind)
