"""FER2013 readers: the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``) and the image-folder layout
``<root>/{train,test}/<emotion>/*.jpg``.

Images are keyed by their path relative to the root, never by bare file name: the released image folders hold two
different images with the same name under two classes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotiw import labels

SIZE = 48
FER_USAGES = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm")


@dataclass(frozen=True)
class FaceSet:
    """Gray 48x48 faces with canonical labels (``-1`` = unlabelled) and one unique key per image."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64
    keys: np.ndarray  # (N,) str

    def __post_init__(self) -> None:
        n = len(self.keys)
        if self.images.shape != (n, SIZE, SIZE) or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be ({n}, {SIZE}, {SIZE}) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: np.ndarray) -> FaceSet:
        return FaceSet(self.images[index], self.labels[index], self.keys[index])

    @staticmethod
    def concat(sets: list[FaceSet]) -> FaceSet:
        if not sets:
            return FaceSet(np.zeros((0, SIZE, SIZE), np.uint8), np.zeros(0, np.int64), np.zeros(0, str))
        return FaceSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.labels for s in sets]).astype(np.int64),
            np.concatenate([s.keys.astype(str) for s in sets]),
        )


def read_fer_csv(path: str | os.PathLike, usages: tuple[str, ...] = FER_USAGES) -> dict[str, FaceSet]:
    """Read ``fer2013.csv``; returns one :class:`FaceSet` per requested ``Usage`` (keys ``<file>:<line>``).

    A malformed row raises ``ValueError`` naming the file and the 1-based line, e.g.
    ``fer2013.csv line 812: expected 2304 pixels, got 2300``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FER2013 CSV not found (expected columns emotion,pixels,Usage)")
    for usage in usages:
        if usage not in FER_USAGES:
            raise ValueError(f"usages={usages!r}: {usage!r} is not one of {', '.join(FER_USAGES)}")
    rows: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {u: ([], [], []) for u in usages}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
            raise ValueError(f"{path.name} line 1: expected header 'emotion,pixels,Usage', got {header!r}")
        for row in reader:
            line = reader.line_num
            where = f"{path.name} line {line}"
            if len(row) != 3:
                raise ValueError(f"{where}: expected 3 fields (emotion,pixels,Usage), got {len(row)}")
            emotion, pixels, usage = row
            usage = usage.strip()
            if usage not in FER_USAGES:
                raise ValueError(f"{where}: unknown Usage {usage!r}; expected one of {', '.join(FER_USAGES)}")
            if usage not in rows:
                continue
            try:
                label = labels.from_fer2013(int(emotion))
            except ValueError as err:
                raise ValueError(f"{where}: bad emotion {emotion!r} ({err})") from None
            values = pixels.split()
            if len(values) != SIZE * SIZE:
                raise ValueError(f"{where}: expected {SIZE * SIZE} pixels, got {len(values)}")
            try:
                img = np.array(values, dtype=np.int64)
            except ValueError:
                raise ValueError(f"{where}: pixels must be integers 0..255") from None
            if img.min() < 0 or img.max() > 255:
                raise ValueError(f"{where}: pixel values must be in 0..255, got {img.min()}..{img.max()}")
            images, labs, keys = rows[usage]
            images.append(img.astype(np.uint8).reshape(SIZE, SIZE))
            labs.append(label)
            keys.append(f"{path.name}:{line}")
    out = {}
    for usage, (images, labs, keys) in rows.items():
        arr = np.stack(images) if images else np.zeros((0, SIZE, SIZE), np.uint8)
        out[usage] = FaceSet(arr, np.asarray(labs, np.int64), np.asarray(keys, dtype=str))
    return out


def read_fer_images(root: str | os.PathLike, split: str, *, resize: bool = False) -> FaceSet:
    """Read ``<root>/<split>/<emotion>/*`` (gray); keys are paths relative to ``root``.

    An unknown label folder or an image that is not 48x48 (unless ``resize``) raises ``ValueError`` naming it.
    """
    import cv2

    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir}: FER image folder not found (expected <root>/{split}/<emotion>/*.jpg)"
        )
    images, labs, keys = [], [], []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            label = labels.from_name(folder.name)
        except ValueError:
            raise ValueError(
                f"{folder}: unknown emotion folder {folder.name!r}; expected one of {', '.join(labels.EMOTIONS)}"
            ) from None
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError(f"{file}: cannot decode image")
            if img.shape != (SIZE, SIZE):
                if not resize:
                    raise ValueError(
                        f"{file}: image is {img.shape[1]}x{img.shape[0]}, expected {SIZE}x{SIZE} (set resize=true to resize)"
                    )
                img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            images.append(img)
            labs.append(label)
            keys.append(file.relative_to(root).as_posix())
    if not images:
        raise ValueError(f"{split_dir}: no images found under <emotion>/ folders")
    return FaceSet(np.stack(images).astype(np.uint8), np.asarray(labs, np.int64), np.asarray(keys, dtype=str))
