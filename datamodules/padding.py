"""The authors' epoch composition (paper-spec §12.9): every training item once, then random duplicates up to a
multiple of the batch size, so that every minibatch is full. Shared by the CNN, IRNN and fusion data modules."""

from __future__ import annotations

import numpy as np


def padded_index(n: int, multiple: int, seed: int) -> np.ndarray:
    """``0..n-1`` followed by ``(-n) % multiple`` random duplicates (distinct while there are enough items), drawn
    once from ``seed``, so every rank and every run with that seed pads alike."""
    if n <= 0 or multiple <= 0:
        raise ValueError(f"padded_index: n={n} and multiple={multiple} must be positive")
    extra = (-n) % multiple
    duplicates = np.random.default_rng(seed).choice(n, size=extra, replace=extra > n)
    return np.concatenate([np.arange(n), duplicates]).astype(np.int64)
