"""Scaling and contrast-normalised PCA-whitening, after the authors' ``Audio/pca.py`` (paper-spec §5, §6.2).

``ContrastPCAWhitener`` does, in order: (a) per-row contrast normalisation, (x - row mean) / (row std + c), with the
constant c = mean row std (+ ``row_offset``) computed once on the fitting set (the authors recompute it per batch,
which makes train and test transforms differ: paper-spec §12.6); (b) per-column normalisation with fitting-set
statistics; (c) PCA by ``sklearn.decomposition.PCA`` (``svd_solver="covariance_eigh"``: the eigendecomposition of the
covariance that the authors compute, and for thousands of blocks x 2560 pixels several times cheaper than an SVD; its
eigenvectors are those of the covariance the
authors decompose, its eigenvalues use 1/(n-1) rather than 1/n, a global scale the SVM grid absorbs), dropping the
tail beyond ``max_variance`` of the variance and keeping at most ``n_components``; (d) projection on the kept
components scaled by eigenvalue^(-1/2), which is exactly ``PCA(whiten=True).transform`` restricted to them.
Steps (b)-(d) are affine, so ``affine_map()`` returns (A, b) with transform(X) = rownorm(X) @ A + b: the activity
model folds it into its encoder.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

COLUMN_FILTERS = ("constant_on_fit", "zero_sum_on_tune")


class FeatureScaler(TransformerMixin, BaseEstimator):
    """Drop uninformative columns, z-score with fitting-set statistics, impute NaN with the fitting mean (0).

    ``column_filter="zero_sum_on_tune"`` is the authors' rule and the audio stage's default (drop columns whose sum
    over the tuning set is 0; pass that set as ``X_tune``; columns constant on the fitting set are dropped too, since
    z-scoring them would divide by zero); ``"constant_on_fit"`` (this estimator's default, as it needs no tuning
    data) drops only the columns with zero variance on the fitting set, the columns a z-score cannot scale.
    """

    def __init__(self, *, column_filter: str = "constant_on_fit"):
        self.column_filter = column_filter

    def fit(self, X, y=None, *, X_tune=None):
        if self.column_filter not in COLUMN_FILTERS:
            raise ValueError(f"column_filter={self.column_filter!r}; expected one of {COLUMN_FILTERS}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"FeatureScaler needs a 2-D array with at least 2 rows, got shape {X.shape}")
        mean = np.nanmean(X, axis=0)
        std = np.nanstd(X, axis=0)
        if self.column_filter == "constant_on_fit":
            keep = np.isfinite(std) & (std > 0)
        else:
            if X_tune is None or len(X_tune) == 0:
                raise ValueError(
                    "column_filter='zero_sum_on_tune' needs X_tune (the tuning-set features, at least one row); "
                    "use column_filter='constant_on_fit' without tuning data"
                )
            keep = (np.nansum(np.asarray(X_tune, dtype=np.float64), axis=0) != 0) & (std > 0)
        if not keep.any():
            raise ValueError(f"column_filter={self.column_filter!r} dropped all {X.shape[1]} columns")
        self.n_features_in_ = X.shape[1]
        self.keep_ = keep
        self.mean_ = mean[keep]
        self.scale_ = std[keep]
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, but FeatureScaler is expecting {self.n_features_in_} features"
            )
        Z = (X[:, self.keep_] - self.mean_) / self.scale_
        return np.nan_to_num(Z, nan=0.0, posinf=0.0, neginf=0.0)


class ContrastPCAWhitener(TransformerMixin, BaseEstimator):
    """Row contrast normalisation, column normalisation, PCA-whitening (see the module docstring).

    Parameters
    ----------
    n_components : int
        Most whitened components kept (10 for audio, paper-spec §5; 500 for activity blocks, §6.2).
    max_variance : float in (0, 1]
        Components beyond this fraction of the variance are dropped first (0.99999 audio, 0.99 activity).
    row_offset : float
        Added to the contrast constant (0 for audio; 0.001 for activity blocks, §6.2).
    column_offset : {"mean_std", "none"}
        Column std offset: the authors' audio code divides by (std + mean std); the activity blocks by the std.
    svd_solver : str
        Passed to ``sklearn.decomposition.PCA``.
    """

    def __init__(
        self,
        *,
        n_components: int = 10,
        max_variance: float = 0.99999,
        row_offset: float = 0.0,
        column_offset: str = "mean_std",
        svd_solver: str = "covariance_eigh",
    ):
        self.n_components = n_components
        self.max_variance = max_variance
        self.row_offset = row_offset
        self.column_offset = column_offset
        self.svd_solver = svd_solver

    def _check_params(self) -> None:
        if not (isinstance(self.n_components, (int, np.integer)) and self.n_components >= 1):
            raise ValueError(f"n_components={self.n_components!r} must be a positive integer")
        if not 0 < self.max_variance <= 1:
            raise ValueError(f"max_variance={self.max_variance!r} must be in (0, 1]")
        if self.row_offset < 0:
            raise ValueError(f"row_offset={self.row_offset!r} must be >= 0")
        if self.column_offset not in ("mean_std", "none"):
            raise ValueError(f"column_offset={self.column_offset!r}; expected 'mean_std' or 'none'")

    def _row_normalise(self, X: np.ndarray, constant: float) -> np.ndarray:
        X = X - X.mean(axis=1, keepdims=True)
        return X / (X.std(axis=1, keepdims=True) + constant)

    def fit(self, X, y=None):
        self._check_params()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(
                f"ContrastPCAWhitener needs a 2-D array with at least 2 rows, got shape {X.shape}"
            )
        if not np.isfinite(X).all():
            raise ValueError("ContrastPCAWhitener got NaN or inf in X; impute first (FeatureScaler does)")
        self.n_features_in_ = X.shape[1]
        self.row_constant_ = float(X.std(axis=1).mean()) + float(self.row_offset)
        if self.row_constant_ <= 0:
            raise ValueError("every row of X is constant: contrast normalisation is undefined")
        R = self._row_normalise(X, self.row_constant_)
        col_std = R.std(axis=0)
        offset = col_std.mean() if self.column_offset == "mean_std" else 0.0
        self.column_mean_ = R.mean(axis=0)
        self.column_scale_ = col_std + offset
        # A column that is constant after (a) carries nothing; scale 1 keeps it at 0 instead of dividing by 0.
        self.column_scale_[self.column_scale_ <= 1e-12] = 1.0
        C = (R - self.column_mean_) / self.column_scale_
        pca = PCA(whiten=True, svd_solver=self.svd_solver).fit(C)
        ratio = np.cumsum(pca.explained_variance_ratio_)
        within = int(np.searchsorted(ratio, self.max_variance - 1e-12) + 1)
        nonzero = int((pca.explained_variance_ > 1e-10 * pca.explained_variance_[0]).sum())
        k = max(1, min(self.n_components, within, nonzero))
        self.n_components_ = k
        self.pca_mean_ = pca.mean_
        self.components_ = pca.components_[:k]
        self.explained_variance_ = pca.explained_variance_[:k]
        self.explained_variance_ratio_ = pca.explained_variance_ratio_[:k]
        return self

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with ``transform(X) == rownorm(X) @ A + b`` (A: n_features x n_components)."""
        check_is_fitted(self)
        P = self.components_.T / np.sqrt(self.explained_variance_)
        A = P / self.column_scale_[:, None]
        b = -(self.column_mean_ / self.column_scale_ + self.pca_mean_) @ P
        return A, b

    def row_normalise(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self._row_normalise(np.asarray(X, dtype=np.float64), self.row_constant_)

    def transform(self, X):
        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, but ContrastPCAWhitener is expecting {self.n_features_in_} features"
            )
        C = (self.row_normalise(X) - self.column_mean_) / self.column_scale_
        return (C - self.pca_mean_) @ self.components_.T / np.sqrt(self.explained_variance_)


def whiten_clips(scaler: FeatureScaler, whitener: ContrastPCAWhitener, X: np.ndarray) -> np.ndarray:
    """IS10 features (N, 1582) -> the audio model's (N, n_components) float32 input: the fitted column filter and
    z-score, then the PCA-whitening (``stage=audio`` and prediction)."""
    return whitener.transform(scaler.transform(X)).astype(np.float32)


def save_fitted(path, **estimators) -> None:
    """Persist fitted scaler/whitener objects (a dict of them) with skops, atomically."""
    from emotiw.artifacts import save_skops

    save_skops(path, dict(estimators))


def load_fitted(path) -> dict:
    """Read what ``save_fitted`` wrote; only this module's estimators (and skops' defaults: numpy arrays) are trusted."""
    from emotiw.artifacts import load_skops

    return load_skops(path, (FeatureScaler, ContrastPCAWhitener))
