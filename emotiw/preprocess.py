"""Input normalisation of the face CNN: the per-pixel mean image and std image of the training faces.

The authors z-score every 48x48 input by the mean and std *image* of the training set (paper-spec §1), before the
random crop. Fitted on the train split only; the CNN stores the result in its buffers.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class MeanStdImage(TransformerMixin, BaseEstimator):
    """Per-pixel standardiser ``x -> (x - mean_) / std_`` over a stack of images.

    Parameters
    ----------
    min_std : float
        Floor for ``std_``: a pixel that is constant over the training set (e.g. a blank corner) would otherwise
        divide by zero.
    """

    def __init__(self, *, min_std: float = 1.0) -> None:
        self.min_std = min_std

    def fit(self, images: np.ndarray, y: object = None) -> MeanStdImage:
        if not self.min_std > 0:
            raise ValueError(f"min_std must be > 0, got {self.min_std}")
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 3 or len(x) == 0:
            raise ValueError(f"images must be a non-empty (N, H, W) stack, got shape {x.shape}")
        self.mean_ = x.mean(axis=0).astype(np.float32)
        self.std_ = np.maximum(x.std(axis=0), self.min_std).astype(np.float32)
        self.n_samples_seen_ = len(x)
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mean_")
        x = np.asarray(images, dtype=np.float32)
        if x.shape[-2:] != self.mean_.shape:
            raise ValueError(
                f"images are {x.shape[-2:]}, but the normaliser was fitted on {self.mean_.shape}"
            )
        return (x - self.mean_) / self.std_
