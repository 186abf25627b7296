"""Run-directory contracts shared by every stage: atomic writes and the per-clip probabilities format.

Per-clip probabilities, the input of fusion and of the report, live at ``<run_dir>/probs/<model>_<split>.npz``
with these arrays:

- ``clip_ids``: (N,) unicode, unique, sorted;
- ``labels``: (N,) int64 in canonical order, ``-1`` where the label is withheld (AFEW Test);
- ``probs``: (N, 7) float32, rows sum to 1;
- ``features`` (optional): (N, D) float32, the model's clip-level feature for the fusion network.

Each stage also records the hyperparameters it chose (best epoch, SVM C and gamma, ...) in
``<run_dir>/<stage>/chosen.json`` so that a retraining run can freeze them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotiw.labels import NUM_CLASSES

SPLITS: tuple[str, ...] = ("Train", "Val", "Test")
# Per-frame CNN features are stored in half precision (``<run_dir>/features/<Split>.npz``, docs/pipeline.md): the IRNN
# trains and predicts on these rounded values, so prediction rounds its features the same way.
FRAME_FEATURE_DTYPE = np.float16


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash mid-write leaves the old file (or none), never a truncated one. The file gets the permissions of any
    new file under the process umask (``tempfile.mkstemp`` would make it 0600, unreadable to a group).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_copy(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``source`` to ``dest`` so that ``dest`` is the old file or the whole new one, never a partial copy."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return Path(dest)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write an uncompressed ``.npz`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def npz_memmap(path: str | os.PathLike, name: str) -> np.ndarray:
    """Array ``name`` of an uncompressed ``.npz`` (what :func:`save_npz` writes) as a read-only memory map: rows are
    read from the file when used, so a large per-frame array is never copied whole into memory. A compressed
    member is read whole."""
    import struct
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with np.load(path, allow_pickle=False) as z:
                return z[name]
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(
            30
        )  # the member's local header: its name and extra field lengths are its last 4 bytes
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: damaged zip header for member {name!r}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: member {name!r} holds Python objects; refusing to load it")
    if 0 in shape:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def read_cache_npz(path: str | os.PathLike, key: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of a cache entry that :func:`save_npz` wrote with ``key=key`` beside them.

    Raises ``ValueError`` naming the file when it is unreadable (truncated, not a zip), lacks an array or holds
    another key; the cache then rebuilds the entry and logs why (see ``emotiw.faces.cache``).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            entry = {k: z[k] for k in ("key", *names)}
    except Exception as err:  # zip, header, pickled-object and missing-array errors all mean "rebuild"
        raise ValueError(f"{path}: unreadable cache file ({type(err).__name__}: {err})") from None
    if str(entry["key"]) != key:
        raise ValueError(f"{path}: cache file holds key {str(entry['key'])[:12]}..., expected {key[:12]}...")
    return entry


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return path


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_skops(path: str | os.PathLike, obj: Any) -> Path:
    """Persist a fitted estimator (or a dict of them) with skops, never pickle, atomically."""
    import skops.io as sio

    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(obj, tmp)
    return path


def load_skops(path: str | os.PathLike, trusted: Iterable[type | str]) -> Any:
    """Load a skops file, trusting skops' defaults plus exactly the ``trusted`` types (classes or full names).

    Exact names, never prefixes: ``numpy.`` alone would admit ``numpy.testing``'s ``exec`` wrappers.
    """
    import skops.io as sio

    names = {t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in trusted}
    unexpected = sorted(set(sio.get_untrusted_types(file=path)) - names)
    if unexpected:
        raise ValueError(
            f"{path}: refusing to load types this project never writes: {', '.join(unexpected)} "
            "(the file was tampered with or written by other code; rerun the stage that writes it)"
        )
    return sio.load(path, trusted=sorted(names))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass(frozen=True)
class ClipProbs:
    """Per-clip class probabilities of one model on one split."""

    clip_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.clip_ids)
        if self.probs.shape != (n, NUM_CLASSES):
            raise ValueError(f"probs must have shape ({n}, {NUM_CLASSES}), got {self.probs.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if len(set(self.clip_ids.tolist())) != n:
            raise ValueError("clip_ids must be unique")
        if self.features is not None and self.features.shape[0] != n:
            raise ValueError(f"features must have {n} rows, got {self.features.shape[0]}")
        if not np.all(np.isfinite(self.probs)):
            raise ValueError("probs contain NaN or inf")

    def sorted(self) -> ClipProbs:
        order = np.argsort(self.clip_ids)
        feats = None if self.features is None else self.features[order]
        return ClipProbs(self.clip_ids[order], self.labels[order], self.probs[order], feats)


def best_ckpt_path(run_dir: str | os.PathLike, stage: str) -> Path:
    """``<run_dir>/<stage>/best.ckpt``: the weights a trained stage (``cnn``, ``irnn``, ``fusion``) kept and predicts
    with, at a path that does not move (later stages and ``EmotionPipeline.from_run`` read them from here)."""
    return Path(run_dir) / stage / "best.ckpt"


def probs_path(run_dir: str | os.PathLike, model: str, split: str) -> Path:
    return Path(run_dir) / "probs" / f"{model}_{split}.npz"


def save_probs(run_dir: str | os.PathLike, model: str, split: str, probs: ClipProbs) -> Path:
    p = probs.sorted()
    arrays = {
        "clip_ids": np.asarray(p.clip_ids, dtype=str),
        "labels": np.asarray(p.labels, dtype=np.int64),
        "probs": np.asarray(p.probs, dtype=np.float32),
    }
    if p.features is not None:
        arrays["features"] = np.asarray(p.features, dtype=np.float32)
    return save_npz(probs_path(run_dir, model, split), **arrays)


def load_probs(run_dir: str | os.PathLike, model: str, split: str) -> ClipProbs:
    path = probs_path(run_dir, model, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no probabilities for model {model!r} on split {split!r}; run stage={model} first"
        )
    with np.load(path, allow_pickle=False) as z:
        feats = z["features"] if "features" in z.files else None
        return ClipProbs(z["clip_ids"], z["labels"], z["probs"], feats)
