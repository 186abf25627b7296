"""The aggregated CNN's clip feature (Kahou et al. 2015, §2.3; paper-spec §4): k-average pooling of per-frame vectors
into one fixed-length clip vector. The model is this feature over the face CNN's per-frame logits, classified by the
RBF SVM of :mod:`emotiw.svm` (``stage=aggcnn``, ``stages/aggcnn.py``).

A clip of N frames with D-dim features becomes k bins in time order, concatenated: a (k*D,) vector (k=15 and the
7 CNN logits give the paper's 105-d aggregated feature). The binning reproduces the 2013 group's stored vectors
(paper-spec §4):

- N >= k (shrink): walk left to right; with R frames and S bins left, the next bin averages the next
  ``round_half_up(R / S)`` frames (N=25, k=10 -> bin sizes 3,2,3,2,...);
- N < k (expand, "locally repeated"): walk over the frames; with S slots and F frames left, the next frame fills
  ``round_half_up(S / F)`` slots (N=7, k=10 -> frames 0,1,1,2,3,3,4,5,5,6);

where ``round_half_up(x) = floor(x + 0.5)`` (MATLAB ``round`` for positive x, unlike numpy's round-half-even).

Example
-------
>>> import numpy as np
>>> k_average_pool(np.arange(4.0)[:, None], k=2)
array([0.5, 2.5])
>>> bin_sizes(25, 10)
[3, 2, 3, 2, 3, 2, 3, 2, 3, 2]
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

PAPER_K = 15


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _check_sizes(n_frames: int, k: int) -> None:
    if not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k={k!r} must be an integer >= 1")
    if n_frames < 1:
        raise ValueError(f"cannot pool a clip with {n_frames} frames; it needs at least 1")


def bin_sizes(n_frames: int, k: int = PAPER_K) -> list[int]:
    """Frames per bin when ``n_frames >= k`` (shrink); sums to ``n_frames``."""
    _check_sizes(n_frames, k)
    if n_frames < k:
        raise ValueError(f"bin_sizes needs n_frames >= k, got n_frames={n_frames}, k={k}; use expand_index")
    sizes, left = [], n_frames
    for bins_left in range(k, 0, -1):
        size = round_half_up(left / bins_left)
        sizes.append(size)
        left -= size
    return sizes


def expand_index(n_frames: int, k: int = PAPER_K) -> list[int]:
    """The frame filling each of the k slots when ``n_frames < k`` (expand)."""
    _check_sizes(n_frames, k)
    if n_frames >= k:
        raise ValueError(f"expand_index needs n_frames < k, got n_frames={n_frames}, k={k}; use bin_sizes")
    index, slots_left = [], k
    for frame in range(n_frames):
        reps = round_half_up(slots_left / (n_frames - frame))
        index.extend([frame] * reps)
        slots_left -= reps
    return index


def k_average_pool(frames: np.ndarray, k: int = PAPER_K) -> np.ndarray:
    """(N, D) per-frame vectors -> (k*D,) bins concatenated in time order."""
    frames = np.asarray(frames)
    if frames.ndim != 2:
        raise ValueError(f"frames must be 2-D (n_frames, dim), got shape {frames.shape}")
    n = len(frames)
    _check_sizes(n, k)
    out_dtype = frames.dtype if frames.dtype.kind == "f" else np.float64
    if n < k:
        return frames[expand_index(n, k)].astype(out_dtype).reshape(-1)
    sizes = bin_sizes(n, k)
    starts = np.cumsum([0, *sizes[:-1]])
    # Bins are contiguous, so one reduceat gives every bin's sum in a single pass.
    sums = np.add.reduceat(frames.astype(np.float64), starts, axis=0)
    return (sums / np.asarray(sizes)[:, None]).astype(out_dtype).reshape(-1)


class KAveragePooling(TransformerMixin, BaseEstimator):
    """sklearn transformer: a list of (N_i, D) clips -> (n_clips, k*D). Stateless apart from the input dim check."""

    def __init__(self, *, k: int = PAPER_K) -> None:
        self.k = k

    def fit(self, clips, y=None) -> KAveragePooling:
        dims = {np.asarray(c).shape[-1] for c in clips}
        if len(dims) != 1:
            raise ValueError(f"every clip must have the same feature dim, got {sorted(dims)}")
        self.n_features_in_ = dims.pop()
        _check_sizes(1, self.k)
        return self

    def transform(self, clips) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_features_in_")
        out = []
        for i, clip in enumerate(clips):
            clip = np.asarray(clip)
            if clip.ndim != 2 or clip.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"clip {i} has shape {clip.shape}, expected (n_frames, {self.n_features_in_})"
                )
            out.append(k_average_pool(clip, self.k))
        return np.stack(out) if out else np.zeros((0, self.k * self.n_features_in_))
