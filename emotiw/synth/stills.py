"""FER2013 and TFD look-alikes: 48x48 grey stills written in the real files' formats.

- ``write_fer_csv``: the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``; 2304 space-separated grey levels;
  Usage in Training / PublicTest / PrivateTest).
- ``write_fer_images``: the Kaggle image-folder copy, ``train/<emotion>/Training_<id>.jpg`` and
  ``test/<emotion>/PublicTest_<id>.jpg``: the same faces as the CSV's Training and PublicTest rows.
- ``write_tfd_mat``: ``TFD_48x48.mat`` with ``images`` (N,48,48) uint8, ``labs_ex`` (N,1) 1..7 or -1,
  ``labs_id`` (N,1) subject, ``folds`` (N,5) 0 unlabelled / 1 train / 2 valid / 3 test (subject-disjoint).

Each writer also leaves ``face_points.csv`` beside the faces (:mod:`emotiw.io.points`): the 5 points of every still,
as the generated AFEW clips have landmark sidecars; the registration of TFD to the FER frame averages them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from emotiw.artifacts import atomic_path
from emotiw.io.points import POINTS_FILE, write_face_points
from emotiw.labels import EMOTIONS, NUM_CLASSES, UNLABELLED, to_tfd
from emotiw.synth import _items
from emotiw.synth.faces import FER_MEAN_SHAPE, StillStyle, expression_aus, render_still, sample_identity
from emotiw.synth.presets import FER_BALANCE, TFD_BALANCE, Difficulty, apportion, get_difficulty

FER_USAGES = ("Training", "PublicTest", "PrivateTest")
# TFD's 48x48 crops are tighter than FER's: the same shape, 12% larger about its centre.
TFD_MEAN_SHAPE = (FER_MEAN_SHAPE - FER_MEAN_SHAPE.mean(0)) * 1.12 + FER_MEAN_SHAPE.mean(0) + [0.0, -0.5]
TFD_FOLDS = 5


@dataclass(frozen=True)
class StillSet:
    """Generated stills with their labels. ``usage`` is the FER Usage column (empty for TFD)."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64 canonical, -1 unlabelled
    usage: np.ndarray  # (N,) str
    ids: np.ndarray  # (N,) str: FER image ids, TFD subject ids
    points: np.ndarray | None = None  # (N, 5, 2) the drawn faces' 5 points, 0-based pixels


def _still(
    seed: int,
    tag: int,
    index: int,
    label: int,
    diff: Difficulty,
    target: np.ndarray,
    style: StillStyle,
    subject_seed: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    rng = _items.item_rng(seed, tag, index)
    if subject_seed is None:
        idn = sample_identity(rng, resting_scale=diff.resting)
    else:
        idn = sample_identity(
            _items.item_rng(seed, _items.TFD_SUBJECT, subject_seed), resting_scale=diff.resting
        )
    if label == UNLABELLED:  # unlabelled TFD images still show some emotion
        label = int(rng.integers(NUM_CLASSES))
    shown, intensity = _items.shown_expression(rng, label, diff)
    aus = expression_aus(shown, intensity, rng=rng, jitter=diff.au_jitter, resting=idn.resting)
    return render_still(idn, aus, rng, target=target, style=style)


def make_fer(
    per_class: int | list[int] = 30,
    *,
    seed: int = 0,
    difficulty: str | Difficulty = "paper",
    workers: int | None = 1,
) -> StillSet:
    """FER-like stills: class counts like FER2013 (disgust rare), Usage 80/10/10 stratified per class."""
    diff = get_difficulty(difficulty)
    counts = (
        per_class if isinstance(per_class, list) else apportion(int(per_class) * NUM_CLASSES, FER_BALANCE)
    )
    labels, usage = [], []
    for c, n in enumerate(counts):
        n_pub = n_priv = max(1, round(0.1 * n)) if n >= 3 else 0
        labels += [c] * n
        usage += ["Training"] * (n - n_pub - n_priv) + ["PublicTest"] * n_pub + ["PrivateTest"] * n_priv
    order = np.random.default_rng([int(seed), _items.FER_ORDER]).permutation(len(labels))
    labels_arr = np.asarray(labels, dtype=np.int64)[order]
    usage_arr = np.asarray(usage)[order]
    ids = np.random.default_rng([int(seed), _items.FER_IDS]).choice(10**8, size=len(labels), replace=False)
    args = [
        (seed, _items.FER_ITEM, i, int(lab), diff, FER_MEAN_SHAPE, diff.still, None)
        for i, lab in enumerate(labels_arr)
    ]
    images, points = _stack_stills(_items.map_items(_still, args, workers))
    return StillSet(images, labels_arr, usage_arr, np.asarray([str(int(i)) for i in ids]), points)


def _stack_stills(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        return np.zeros((0, 48, 48), np.uint8), np.zeros((0, 5, 2))
    return np.stack([img for img, _ in items]), np.stack([pts for _, pts in items]).astype(np.float64)


_DECIMAL = np.array([str(i) for i in range(256)], dtype=object)  # grey level -> text, looked up in one go


def _pixels_line(img: np.ndarray) -> str:
    return " ".join(_DECIMAL[img.ravel()].tolist())


def _csv_lines(images: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> str:
    return "".join(
        f"{lab},{_pixels_line(img)},{use}\n" for img, lab, use in zip(images, labels, usage, strict=True)
    )


def _chunks(n: int, size: int = 500) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def write_fer_csv(
    path: str | os.PathLike, data: StillSet | None = None, *, workers: int | None = 1, **make_kwargs
) -> StillSet:
    """Write ``fer2013.csv``; generates the stills with ``make_fer(**make_kwargs)`` unless ``data`` is given."""
    data = make_fer(workers=workers, **make_kwargs) if data is None else data
    parts = _items.map_items(
        _csv_lines,
        [(data.images[s], data.labels[s], data.usage[s]) for s in _chunks(len(data.images))],
        workers,
        min_items=4,
    )
    with atomic_path(path) as tmp:
        tmp.write_text("emotion,pixels,Usage\n" + "".join(parts))
    if data.points is not None:  # keyed as read_fer_csv keys the rows: <file>:<line>, the header on line 1
        keys = [f"{Path(path).name}:{i + 2}" for i in range(len(data.images))]
        write_face_points(Path(path).parent / POINTS_FILE, keys, data.points)
    return data


def _write_jpegs(paths: list[str], images: np.ndarray) -> None:
    for path, img in zip(paths, images, strict=True):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"{path}: JPEG encoding failed")
        Path(path).write_bytes(buf.tobytes())


def write_fer_images(
    root: str | os.PathLike, data: StillSet | None = None, *, workers: int | None = 1, **make_kwargs
) -> StillSet:
    """Write the Kaggle image-folder layout (Training and PublicTest rows only, as in the real copy)."""
    data = make_fer(workers=workers, **make_kwargs) if data is None else data
    root = Path(root)
    for folder in ("train", "test"):
        for emotion in EMOTIONS:
            (root / folder / emotion).mkdir(parents=True, exist_ok=True)
    keep = np.flatnonzero(data.usage != "PrivateTest")
    paths = [
        str(
            root
            / ("train" if data.usage[i] == "Training" else "test")
            / EMOTIONS[int(data.labels[i])]
            / f"{data.usage[i]}_{data.ids[i]}.jpg"
        )
        for i in keep
    ]
    jobs = [(paths[s], data.images[keep[s]]) for s in _chunks(len(keep))]
    _items.map_items(_write_jpegs, jobs, workers, min_items=4)
    if data.points is not None:  # keyed as read_fer_images keys the files: paths relative to the root
        keys = [Path(p).relative_to(root).as_posix() for p in paths]
        write_face_points(root / POINTS_FILE, keys, data.points[keep])
    return data


def make_tfd(
    n: int = 100,
    *,
    labelled: float = 0.7,
    seed: int = 0,
    difficulty: str | Difficulty = "paper",
    workers: int | None = 1,
) -> tuple[StillSet, np.ndarray]:
    """TFD-like stills of repeated subjects; returns the set and the (N, 5) folds (subject-disjoint splits)."""
    diff = get_difficulty(difficulty)
    rng = np.random.default_rng([int(seed), _items.TFD_PLAN])
    n_lab = int(round(n * labelled))
    labels = np.full(n, UNLABELLED, dtype=np.int64)
    labels[:n_lab] = np.repeat(np.arange(NUM_CLASSES), apportion(n_lab, TFD_BALANCE))
    n_subjects = max(TFD_FOLDS * 2, n // 8)
    subjects = rng.integers(0, n_subjects, size=n)
    perm = rng.permutation(n)
    labels, subjects = labels[perm], subjects[perm]
    # Folds: subjects go to 5 groups; fold k tests on group k, validates on group k+1, trains on the rest.
    group = rng.permutation(n_subjects) % TFD_FOLDS
    folds = np.zeros((n, TFD_FOLDS), dtype=np.int64)
    for k in range(TFD_FOLDS):
        g = group[subjects]
        col = np.where(g == k, 3, np.where(g == (k + 1) % TFD_FOLDS, 2, 1))
        folds[:, k] = np.where(labels == UNLABELLED, 0, col)
    style = StillStyle(
        shift=0.5 * diff.still.shift,
        roll=0.5 * diff.still.roll,
        yaw=0.5 * diff.still.yaw,
        scale=0.5 * diff.still.scale,
        blur=diff.still.blur,
        noise=diff.still.noise,
        light=diff.still.light,
    )
    args = [
        (seed, _items.TFD_ITEM, i, int(lab), diff, TFD_MEAN_SHAPE, style, int(s))
        for i, (lab, s) in enumerate(zip(labels, subjects, strict=True))
    ]
    images, points = _stack_stills(_items.map_items(_still, args, workers))
    ids = np.asarray([str(s + 1) for s in subjects])
    return StillSet(images, labels, np.asarray([""] * n), ids, points), folds


def write_tfd_mat(
    path: str | os.PathLike, data: tuple[StillSet, np.ndarray] | None = None, **make_kwargs
) -> tuple[StillSet, np.ndarray]:
    """Write ``TFD_48x48.mat`` (MAT v5, byte-identical for identical content)."""
    stills, folds = make_tfd(**make_kwargs) if data is None else data
    mdict = {
        "images": np.ascontiguousarray(stills.images, dtype=np.uint8),
        "labs_ex": np.asarray([to_tfd(int(x)) for x in stills.labels], dtype=np.int64).reshape(-1, 1),
        "labs_id": stills.ids.astype(np.int64).reshape(-1, 1),
        "folds": folds.astype(np.int64),
    }
    buf = io.BytesIO()
    scipy.io.savemat(buf, mdict, do_compression=False, oned_as="column")
    raw = bytearray(buf.getvalue())
    # savemat stamps the creation time into the 116-byte text header; a fixed header keeps the bytes reproducible.
    raw[:116] = b"MATLAB 5.0 MAT-file, written by emotiw.synth".ljust(116, b" ")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(raw))
    if stills.points is not None:  # keyed as read_tfd_mat keys the rows: <file>:<row>
        keys = [f"{Path(path).name}:{i}" for i in range(len(stills.images))]
        write_face_points(Path(path).parent / POINTS_FILE, keys, stills.points)
    return stills, folds
