"""The AFEW clip tree (real and generated) and the per-frame 5-point landmark sidecars.

Layout: ``<root>/Train/<Emotion>/*.avi``, ``<root>/Val/<Emotion>/*.avi``, ``<root>/Test/*.avi`` (flat, labels
withheld) or ``<root>/Test/<Emotion>/*.avi``; optional ``<root>/Test_labels.csv`` (``clip_id,emotion``) and
``<root>/landmarks/<clip_id>.csv``. Split and emotion folders match in any capitalisation.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotiw import labels
from emotiw.artifacts import SPLITS

__all__ = [
    "LANDMARK_COLUMNS",
    "VIDEO_SUFFIXES",
    "AfewLayoutError",
    "ClipRef",
    "LandmarkFormatError",
    "Landmarks",
    "find_landmarks",
    "list_clips",
    "list_splits",
    "read_landmarks",
]

VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".mov", ".mkv")
LANDMARK_COLUMNS: tuple[str, ...] = (
    "frame",
    "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
    "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y",
)  # fmt: skip
_LAYOUT = (
    "expected <root>/Train/<Emotion>/*.avi, <root>/Val/<Emotion>/*.avi and <root>/Test/*.avi "
    "(Emotion in Angry Disgust Fear Happy Sad Surprise Neutral)"
)


class AfewLayoutError(ValueError):
    """The directory tree is not an AFEW tree; the message names the path and the expected layout."""


class LandmarkFormatError(ValueError):
    """A landmark CSV that does not follow the format; the message names the file and line."""


@dataclass(frozen=True)
class ClipRef:
    clip_id: str
    split: str
    label: int  # canonical index, -1 where withheld
    video_path: Path
    landmarks_path: Path | None


@dataclass(frozen=True)
class Landmarks:
    """5 points per frame where a face is visible: ``frame_idx`` (K,) int64 increasing, ``points`` (K,5,2)."""

    frame_idx: np.ndarray
    points: np.ndarray


def _child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any capitalisation (None if absent)."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    if len(matches) > 1:
        raise AfewLayoutError(f"{parent}: several folders match {name!r}: {sorted(p.name for p in matches)}")
    return matches[0] if matches else None


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def list_clips(root: str | os.PathLike, split: str, *, test_labels: bool = True) -> list[ClipRef]:
    """Every clip of one split, sorted by clip id.

    Args:
        root: the AFEW root (holding ``Train/ Val/ Test/``).
        split: ``Train``, ``Val`` or ``Test`` (any case).
        test_labels: read ``Test_labels.csv`` when present; otherwise flat Test clips get label -1.
    """
    root = Path(root)
    canonical = {s.lower(): s for s in SPLITS}
    if split.lower() not in canonical:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    split = canonical[split.lower()]
    if not root.is_dir():
        raise AfewLayoutError(f"{root}: AFEW root not found; {_LAYOUT}")
    split_dir = _child_dir(root, split)
    if split_dir is None:
        raise AfewLayoutError(f"{root}: no {split}/ folder; {_LAYOUT}")

    found: list[tuple[str, int, Path]] = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            try:
                label = labels.from_name(entry.name)
            except ValueError:
                raise AfewLayoutError(
                    f"{entry}: unknown emotion folder {entry.name!r}; expected one of {', '.join(labels.AFEW_FOLDERS)}"
                ) from None
            found += [(p.stem, label, p) for p in sorted(entry.iterdir()) if _is_video(p)]
        elif _is_video(entry):
            if split != "Test":
                raise AfewLayoutError(f"{entry}: {split} clips must sit in emotion folders; {_LAYOUT}")
            found.append((entry.stem, labels.UNLABELLED, entry))

    if split == "Test" and test_labels:
        csv_path = root / "Test_labels.csv"
        if csv_path.is_file():
            known = read_test_labels(csv_path)
            found = [
                (cid, known.get(cid, lab) if lab == labels.UNLABELLED else lab, p) for cid, lab, p in found
            ]

    seen: dict[str, Path] = {}
    for cid, _, path in found:
        if cid in seen:
            raise AfewLayoutError(f"duplicate clip id {cid!r}: {seen[cid]} and {path}")
        seen[cid] = path
    lm_dir = _child_dir(root, "landmarks")
    refs = []
    for cid, label, path in sorted(found):
        lm = lm_dir / f"{cid}.csv" if lm_dir is not None else None
        refs.append(ClipRef(cid, split, label, path, lm if lm is not None and lm.is_file() else None))
    return refs


def find_landmarks(video_path: str | os.PathLike) -> Path | None:
    """The landmark sidecar :func:`list_clips` pairs with a video inside an AFEW tree
    (``<root>/<Split>/<Emotion>/<clip_id>.avi`` or ``<root>/Test/<clip_id>.avi`` -> ``<root>/landmarks/<clip_id>.csv``),
    or None for a video outside such a tree or without one."""
    video = Path(video_path)
    splits = {s.lower() for s in SPLITS}
    for root in video.parents[1:3]:
        if video.relative_to(root).parts[0].lower() not in splits or not root.is_dir():
            continue
        lm_dir = _child_dir(root, "landmarks")
        lm = lm_dir / f"{video.stem}.csv" if lm_dir is not None else None
        if lm is not None and lm.is_file():
            return lm
    return None


def list_splits(root: str | os.PathLike, splits: Iterable[str] = SPLITS, **kw) -> list[ClipRef]:
    """Clips of several splits; a clip id that occurs in two splits is an error (ids key every artifact)."""
    refs: list[ClipRef] = []
    where: dict[str, ClipRef] = {}
    for split in splits:
        for ref in list_clips(root, split, **kw):
            if ref.clip_id in where:
                other = where[ref.clip_id]
                raise AfewLayoutError(
                    f"duplicate clip id {ref.clip_id!r} in {other.split} and {ref.split}: {other.video_path}, {ref.video_path}"
                )
            where[ref.clip_id] = ref
            refs.append(ref)
    return refs


def read_test_labels(path: str | os.PathLike) -> dict[str, int]:
    """``clip_id,emotion`` rows -> {clip_id: canonical index}."""
    path = Path(path)
    out: dict[str, int] = {}
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip().lower() for h in header] != ["clip_id", "emotion"]:
            raise ValueError(f"{path} line 1: expected header 'clip_id,emotion', got {header!r}")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path} line {line}: expected 2 fields (clip_id,emotion), got {len(row)}")
            try:
                out[row[0].strip()] = labels.from_name(row[1])
            except ValueError as err:
                raise ValueError(f"{path} line {line}: {err}") from None
    return out


def read_landmarks(path: str | os.PathLike) -> Landmarks:
    """Read a landmark sidecar (header ``frame,left_eye_x,...,mouth_right_y``), validating every row."""
    path = Path(path)
    frames: list[int] = []
    points: list[list[float]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: landmark file not found") from None
    except UnicodeDecodeError:
        raise LandmarkFormatError(f"{path}: not a text CSV file") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != LANDMARK_COLUMNS:
        raise LandmarkFormatError(
            f"{path} line 1: expected header {','.join(LANDMARK_COLUMNS)!r}, got {header!r}"
        )
    for line, row in enumerate(rows, start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) != len(LANDMARK_COLUMNS):
            raise LandmarkFormatError(
                f"{path} line {line}: expected {len(LANDMARK_COLUMNS)} fields, got {len(row)}"
            )
        try:
            frame = int(row[0])
        except ValueError:
            raise LandmarkFormatError(f"{path} line {line}: frame {row[0]!r} is not an integer") from None
        if frame < 0 or (frames and frame <= frames[-1]):
            raise LandmarkFormatError(
                f"{path} line {line}: frame {frame} must be >= 0 and greater than the previous row's frame"
            )
        try:
            coords = [float(v) for v in row[1:]]
        except ValueError:
            raise LandmarkFormatError(
                f"{path} line {line}: a coordinate is not a number: {row[1:]!r}"
            ) from None
        if not all(np.isfinite(coords)):
            raise LandmarkFormatError(f"{path} line {line}: coordinates must be finite, got {row[1:]!r}")
        frames.append(frame)
        points.append(coords)
    return Landmarks(
        frame_idx=np.asarray(frames, dtype=np.int64),
        points=np.asarray(points, dtype=np.float64).reshape(-1, 5, 2),
    )
