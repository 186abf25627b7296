"""Aligned face sequences per AFEW clip, cached on disk by content.

One ``.npz`` per clip under ``<cache_dir>/faces/<key[:2]>/<key>.npz``; the key hashes the video bytes, the landmark
bytes (when the source reads them), the face source and the alignment config, so a changed video or setting misses
and a renamed copy hits. Entries are written atomically and hold the key, so a damaged or foreign file is detected,
reported and rebuilt. Clips that yield no face, or fail to decode, are cached too (the result is as deterministic
as a success) and reported.

Sharing between runs and DDP ranks: identical content gives identical files and every write is an atomic rename,
so concurrent builders are safe. The Lightning side lets rank zero build (``prepare_data``) while the others wait at
Lightning's barrier, then every rank reads (all hits).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotiw.artifacts import SPLITS, read_cache_npz, save_json, save_npz
from emotiw.faces.align import FACE_SIZE, AlignConfig, align_clip
from emotiw.faces.detect import FaceSource, NoFaceError, make_face_source, resolve_face_source
from emotiw.forking import fork_context
from emotiw.io.afew import ClipRef, LandmarkFormatError, list_splits
from emotiw.io.video import VideoDecodeError, read_video

log = logging.getLogger(__name__)

__all__ = [
    "CachedFaces",
    "ClipFaces",
    "FaceReport",
    "align_rng",
    "build_entry",
    "cache_key",
    "cache_path",
    "clip_key",
    "load_afew_faces",
]

ON_MISSING = ("skip", "error")


@dataclass(frozen=True)
class ClipFaces:
    """The aligned faces of one clip, in temporal order: ``faces`` (T,48,48) uint8, ``frame_idx`` (T,) int64."""

    clip_id: str
    split: str
    label: int
    faces: np.ndarray  # or CachedFaces: read from the cache file when used (load_afew_faces(in_memory=False))
    frame_idx: np.ndarray


class CachedFaces:
    """One clip's aligned faces, left in its cache file and read each time they are used, so that a list of many
    clips holds no faces (``load_afew_faces(..., in_memory=False)``). Array-like: ``len``, ``shape``, ``dtype``,
    indexing and ``np.asarray`` (each read, of the whole clip: a few hundred KB)."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, path: Path, key: str, length: int) -> None:
        self.path, self.key, self.length = Path(path), key, int(length)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.length, FACE_SIZE, FACE_SIZE)

    def __len__(self) -> int:
        return self.length

    def read(self) -> np.ndarray:
        faces = _read_entry(self.path, self.key)["faces"]
        if len(faces) != self.length:
            raise ValueError(
                f"{self.path}: {len(faces)} faces, expected {self.length}; the cache changed under the run"
            )
        return faces

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        faces = self.read()
        return faces if dtype is None else faces.astype(dtype)

    def __getitem__(self, index) -> np.ndarray:
        return self.read()[index]


@dataclass
class FaceReport:
    """What happened to every clip: counts, and per clip id the reason it has no faces."""

    clips: int = 0
    with_faces: int = 0
    frames: int = 0
    without_faces: dict[str, str] = field(default_factory=dict)
    decode_errors: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0
    cache_built: int = 0
    cache_rebuilt: dict[str, str] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)  # clip ids whose entry this call built (or rebuilt)
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    face_source: str = ""  # where the points came from (``auto`` resolved)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def save(self, path: str | os.PathLike) -> Path:
        return save_json(path, self.as_dict())

    def summary(self) -> str:
        return (
            f"{self.clips} clips ({self.face_source}): {self.with_faces} with faces ({self.frames} frames), "
            f"{len(self.without_faces)} without a face, {len(self.decode_errors)} decode errors; cache "
            f"{self.cache_hits} hits, {self.cache_built} built, {len(self.cache_rebuilt)} rebuilt"
        )


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cache_key(ref: ClipRef, source: FaceSource, config: AlignConfig) -> str:
    """Content key of a clip's entry (raises VideoDecodeError when the video file is missing)."""
    return clip_key(ref.video_path, source, config, ref.landmarks_path)


def clip_key(
    video_path: Path, source: FaceSource, config: AlignConfig, landmarks_path: Path | None = None
) -> str:
    """The key of a video's faces under a face source and alignment: the face cache's entry name, and the seed of
    the alignment's padding noise (:func:`align_rng`) wherever the video is aligned (prediction included)."""
    if not Path(video_path).is_file():
        raise VideoDecodeError(f"{video_path}: video file not found")
    parts = [_file_digest(Path(video_path)), source.cache_id(), config.key()]
    if source.reads_landmarks:
        parts.append(_file_digest(landmarks_path) if landmarks_path is not None else "no-landmarks")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def align_rng(config: AlignConfig, key: str) -> np.random.Generator:
    """The noise stream of a clip's alignment (padding where the face window leaves the frame), seeded by its key,
    so the stage and the prediction pipeline pad a clip identically."""
    return np.random.default_rng([config.seed, int(key[:15], 16)])


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / "faces" / key[:2] / f"{key}.npz"


def build_entry(ref: ClipRef, source: FaceSource, config: AlignConfig, key: str) -> dict[str, np.ndarray]:
    """Decode, find and align one clip. Never raises for bad data: the status says what went wrong."""
    faces = np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    frame_idx = np.zeros(0, np.int64)
    n_frames, status, message = 0, "ok", ""
    try:
        video = read_video(ref.video_path, rgb=source.needs_rgb)
        n_frames = video.num_frames
        idx, points = source.clip_points(ref, video.rgb if source.needs_rgb else video.gray)
        rng = align_rng(config, key)
        faces, frame_idx = align_clip(video.gray, idx, points, rng, levels=config.levels)
        if len(faces) == 0:
            status, message = "no_face", f"{ref.video_path}: no frame with a face ({n_frames} frames decoded)"
    except VideoDecodeError as err:
        status, message = "decode_error", str(err)
    except (NoFaceError, LandmarkFormatError) as err:
        status, message = "no_face", str(err)
    return {
        "key": np.asarray(key),
        "faces": faces,
        "frame_idx": frame_idx.astype(np.int64),
        "n_frames": np.asarray(n_frames, np.int64),
        "status": np.asarray(status),
        "message": np.asarray(message),
    }


def _build_and_save(
    ref: ClipRef, source: FaceSource, config: AlignConfig, key: str, path: Path, in_memory: bool = True
) -> dict:
    import cv2

    cv2.setNumThreads(1)  # one clip per process; threads inside would oversubscribe the pool
    entry = build_entry(ref, source, config, key)
    save_npz(path, **entry)
    return entry if in_memory else _faces_left_in_file(entry, path, key)


def _faces_left_in_file(entry: dict, path: Path, key: str) -> dict:
    return {**entry, "faces": CachedFaces(path, key, len(entry["faces"]))}


def _read_entry(path: Path, key: str) -> dict[str, np.ndarray]:
    """A cached entry, validated; raises ValueError when the file is damaged or belongs to another key."""
    entry = read_cache_npz(path, key, ("faces", "frame_idx", "n_frames", "status", "message"))
    faces, idx = entry["faces"], entry["frame_idx"]
    if (
        faces.dtype != np.uint8
        or faces.ndim != 3
        or faces.shape[1:] != (FACE_SIZE, FACE_SIZE)
        or len(idx) != len(faces)
    ):
        raise ValueError(
            f"{path}: cache file has faces {faces.dtype} {faces.shape} and {len(idx)} frame indices"
        )
    return entry


def load_afew_faces(
    afew_root: str | os.PathLike,
    splits: Iterable[str] = SPLITS,
    cache_dir: str | os.PathLike = "cache",
    *,
    face_source: str | FaceSource = "auto",
    on_missing: str = "skip",
    min_frames: int = 1,
    num_workers: int | None = None,
    config: AlignConfig | None = None,
    refs: Sequence[ClipRef] | None = None,
    in_memory: bool = True,
) -> tuple[list[ClipFaces], FaceReport]:
    """Aligned faces of every clip of ``splits`` (sorted by split, then clip id), building missing cache entries.

    Args:
        afew_root: AFEW tree (see :mod:`emotiw.io.afew`).
        splits: which of Train, Val, Test.
        cache_dir: root of the content-keyed cache (``paths.cache_dir``).
        face_source: ``"landmarks"`` (sidecar CSVs), ``"centerface"`` (detector), ``"auto"`` (the sidecars when
            ``afew_root`` has a ``landmarks/`` folder, else the detector) or a FaceSource object.
        on_missing: ``"skip"``: clips without a usable face (none found, fewer than ``min_frames``, decode
            error) are left out and reported; ``"error"``: the same clips raise one ValueError naming them.
        min_frames: fewest aligned frames a clip needs.
        num_workers: processes building entries (default: up to 4 cores); 0 or 1 builds in this process.
        config: alignment settings (default :class:`AlignConfig`).
        refs: the clips to load, instead of listing ``afew_root``.
        in_memory: ``False`` leaves each clip's faces in its cache file (:class:`CachedFaces`, read when used), so
            memory does not grow with the number of clips.

    Returns:
        The clips with faces, and the report.
    """
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing={on_missing!r}: expected one of {ON_MISSING}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    resolved = resolve_face_source(face_source, afew_root)
    source = make_face_source(resolved)
    config = config or AlignConfig()
    splits = list(splits)
    refs = list(refs) if refs is not None else list_splits(afew_root, splits)
    report = FaceReport(
        clips=len(refs), face_source=resolved if isinstance(resolved, str) else type(source).__name__
    )
    entries: dict[int, dict[str, np.ndarray]] = {}
    todo: list[tuple[int, str, Path]] = []
    for i, ref in enumerate(refs):
        try:
            key = cache_key(ref, source, config)
        except VideoDecodeError as err:
            report.decode_errors[ref.clip_id] = str(err)
            continue
        path = cache_path(cache_dir, key)
        if path.is_file():
            try:
                entry = _read_entry(path, key)
                entries[i] = entry if in_memory else _faces_left_in_file(entry, path, key)
                report.cache_hits += 1
                continue
            except ValueError as err:
                log.warning("rebuilding %s", err)
                report.cache_rebuilt[ref.clip_id] = str(err)
        todo.append((i, key, path))

    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    if workers > 1 and len(todo) > 1:
        # fork (emotiw.forking): the children only run numpy/cv2/PyAV (cv2 threads off)
        try:
            with (
                fork_context() as ctx,
                ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool,
            ):
                futures = {
                    i: pool.submit(_build_and_save, refs[i], source, config, key, path, in_memory)
                    for i, key, path in todo
                }
                for i, fut in futures.items():
                    entries[i] = fut.result()
        except BrokenProcessPool as err:
            log.warning(
                "face workers died (%s); building the remaining %d clips in this process", err, len(todo)
            )
    for i, key, path in todo:
        if i not in entries:
            entries[i] = _build_and_save(refs[i], source, config, key, path, in_memory)
    report.cache_built = len(todo) - len(report.cache_rebuilt)
    report.built = [refs[i].clip_id for i, _, _ in todo]

    clips: list[ClipFaces] = []
    for i, ref in enumerate(refs):
        counts = report.per_split.setdefault(ref.split, {"clips": 0, "with_faces": 0, "frames": 0})
        counts["clips"] += 1
        if i not in entries:
            continue
        entry = entries[i]
        status, message = str(entry["status"]), str(entry["message"])
        if status == "decode_error":
            report.decode_errors[ref.clip_id] = message
            continue
        if status == "ok" and len(entry["faces"]) < min_frames:
            status = "no_face"
            message = f"{ref.video_path}: {len(entry['faces'])} aligned frame(s), fewer than min_frames={min_frames}"
        if status != "ok":
            report.without_faces[ref.clip_id] = message
            continue
        clips.append(ClipFaces(ref.clip_id, ref.split, ref.label, entry["faces"], entry["frame_idx"]))
        counts["with_faces"] += 1
        counts["frames"] += len(entry["faces"])
    report.with_faces = len(clips)
    report.frames = sum(len(c.faces) for c in clips)

    if on_missing == "error" and (report.without_faces or report.decode_errors):
        problems = [*report.decode_errors.values(), *report.without_faces.values()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(
            f"{len(problems)} clip(s) without a usable face (on_missing='error'): {'; '.join(problems[:3])}{more}"
        )
    return clips, report
