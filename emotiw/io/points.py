"""5-point face landmarks of still images: the ``face_points.csv`` sidecar beside a still data set.

Header ``key,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,mouth_left_x,mouth_left_y,mouth_right_x,
mouth_right_y``; ``key`` is the image's :class:`~emotiw.io.fer.FaceSet` key (``fer2013.csv:<line>``, ``train/<emotion>/
<file>``, ``TFD_48x48.mat:<row>``), coordinates are 0-based pixels, "left" is image-left. The generator writes one
beside each still set it makes (the organisers' points of real data would fit the same file); without it the points
come from a face detector (:mod:`emotiw.faces.register`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emotiw.artifacts import atomic_path
from emotiw.io.afew import LANDMARK_COLUMNS

POINTS_FILE = "face_points.csv"
POINT_COLUMNS: tuple[str, ...] = ("key", *LANDMARK_COLUMNS[1:])

__all__ = ["POINTS_FILE", "POINT_COLUMNS", "read_face_points", "write_face_points"]


def read_face_points(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: (5, 2) float64}`` from a ``face_points.csv``; a malformed row raises ValueError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: face points file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text CSV file") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != POINT_COLUMNS:
        raise ValueError(f"{path} line 1: expected header {','.join(POINT_COLUMNS)!r}, got {header!r}")
    out: dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) != len(POINT_COLUMNS):
            raise ValueError(f"{path} line {line}: expected {len(POINT_COLUMNS)} fields, got {len(row)}")
        try:
            coords = np.array([float(v) for v in row[1:]], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{path} line {line}: a coordinate is not a number: {row[1:]!r}") from None
        if not np.all(np.isfinite(coords)):
            raise ValueError(f"{path} line {line}: coordinates must be finite, got {row[1:]!r}")
        key = row[0].strip()
        if key in out:
            raise ValueError(f"{path} line {line}: key {key!r} occurs twice")
        out[key] = coords.reshape(5, 2)
    return out


def write_face_points(path: str | os.PathLike, keys: Sequence[str], points: np.ndarray) -> Path:
    """Write ``face_points.csv`` atomically (two decimals, as the AFEW landmark sidecars)."""
    points = np.asarray(points, dtype=np.float64).reshape(len(keys), 10)
    buf = io.StringIO()
    buf.write(",".join(POINT_COLUMNS) + "\n")
    for key, row in zip(keys, points, strict=True):
        buf.write(f"{key}," + ",".join(f"{v:.2f}" for v in row) + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return Path(path)
