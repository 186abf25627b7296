"""Toronto Face Database reader: ``TFD_48x48.mat`` with ``images`` (N,48,48) uint8, ``labs_ex`` (N,1) in 1..7 or
-1/0 (unlabelled), ``labs_id`` and ``folds`` (N,5)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emotiw import labels
from emotiw.io.fer import SIZE, FaceSet


def read_tfd_mat(path: str | os.PathLike, *, labelled_only: bool = True) -> FaceSet:
    """Read the TFD ``.mat``; keys are ``TFD_48x48.mat:<row>``; unlabelled rows are dropped unless asked for."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: TFD .mat file not found")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({err})") from None
    for key in ("images", "labs_ex"):
        if key not in mat:
            raise ValueError(
                f"{path}: missing variable {key!r} (found {sorted(k for k in mat if not k.startswith('__'))})"
            )
    images = np.asarray(mat["images"])
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"{path}: 'images' must be (N, {SIZE}, {SIZE}), got {images.shape}")
    labs_ex = np.asarray(mat["labs_ex"]).reshape(-1)
    if len(labs_ex) != len(images):
        raise ValueError(f"{path}: 'labs_ex' has {len(labs_ex)} rows but 'images' has {len(images)}")
    try:
        canon = np.array([labels.from_tfd(int(c)) for c in labs_ex], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{path}: 'images' values must be in 0..255")
        images = images.astype(np.uint8)
    keys = np.array([f"{path.name}:{i}" for i in range(len(images))], dtype=str)
    faces = FaceSet(np.ascontiguousarray(images), canon, keys)
    if labelled_only:
        faces = faces.subset(np.flatnonzero(canon != labels.UNLABELLED))
    return faces
