"""Bag of words over encoded blocks: a k-means codebook, hard assignment, motion-weighted L1-normalised
histograms (paper-spec §6.3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import MiniBatchKMeans
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted


def motion_weights(features: np.ndarray) -> np.ndarray:
    """m = mean_k(2 f_k - 1) per block: 0 for a block no filter responds to (f_k = sigmoid(0) = 0.5), -> 1 for
    strong responses, so static background contributes little to a histogram."""
    features = np.asarray(features, dtype=np.float64)
    return np.mean(2.0 * features - 1.0, axis=1)


class BagOfWords(BaseEstimator):
    """Codebook of ``n_words`` centroids (``MiniBatchKMeans``) and per-clip histograms.

    ``fit(X)`` takes stacked block features (n_blocks, K); ``histograms(clips)`` takes one (n_i, K) array per clip
    and returns (n_clips, n_words) rows summing to 1 (all zero for a clip without blocks or without motion).
    """

    def __init__(
        self, *, n_words: int = 3000, batch_size: int = 4096, max_iter: int = 100, random_state=None
    ):
        self.n_words = n_words
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None):
        if not (isinstance(self.n_words, (int, np.integer)) and self.n_words >= 2):
            raise ValueError(f"n_words={self.n_words!r} must be an integer >= 2")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be (n_blocks, n_features), got shape {X.shape}")
        if X.shape[0] < self.n_words:
            raise ValueError(
                f"n_words={self.n_words} exceeds the {X.shape[0]} blocks given to fit the codebook"
            )
        rng = check_random_state(self.random_state)
        km = MiniBatchKMeans(
            n_clusters=self.n_words,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            n_init=3,
            random_state=rng.randint(np.iinfo(np.int32).max),
        ).fit(X)
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
        self.n_features_in_ = X.shape[1]
        return self

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid (Euclidean) of each block."""
        check_is_fitted(self)
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features have shape {f.shape}, but the codebook expects {self.n_features_in_} columns"
            )
        c = self.cluster_centers_
        d2 = (f * f).sum(1, keepdims=True) - 2.0 * f @ c.T + (c * c).sum(1)[None, :]
        return np.argmin(d2, axis=1)

    def histogram(self, features: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        hist = np.zeros(self.n_words, dtype=np.float64)
        if len(features) == 0:
            return hist
        np.add.at(hist, self.assign(features), np.clip(motion_weights(features), 0.0, None))
        total = hist.sum()
        return hist / total if total > 0 else hist

    def histograms(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.histogram(f) for f in clips]) if len(clips) else np.zeros((0, self.n_words))


def save_codebook(path, bow: BagOfWords) -> None:
    """The codebook as arrays (centroids and the constructor params), written atomically."""
    from emotiw.artifacts import save_npz

    check_is_fitted(bow)
    save_npz(path, cluster_centers=bow.cluster_centers_, n_words=np.array(bow.n_words))


def load_codebook(path) -> BagOfWords:
    with np.load(path, allow_pickle=False) as z:
        bow = BagOfWords(n_words=int(z["n_words"]))
        bow.cluster_centers_ = z["cluster_centers"].astype(np.float32)
    bow.n_features_in_ = bow.cluster_centers_.shape[1]
    return bow
