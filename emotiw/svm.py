"""Kernel SVMs of the paper's SVM stages: aggregated CNN features and audio (RBF), activity bag-of-words (chi-squared).

One estimator, :class:`GridSearchSVM`, serves all three (paper-spec §4, §5, §6.3):

- ``kernel="rbf"``: grid over C x gamma. The authors' audio grid is C in {1, 10, 100, 1000, 10000} x gamma in
  {1e-3, 1e-4, 1e-5}; ``gamma_per_dim_grid`` adds gamma = m / n_features for m in {0.01, 0.1, 1, 10}, because on
  z-scored inputs of ~100 dims every gamma <= 1e-3 is nearly linear (paper-spec §4 [gap]).
- ``kernel="chi2"``: K(a, b) = exp(-chi2(a, b) / A), chi2(a, b) = 1/2 sum_i (a_i - b_i)^2 / (a_i + b_i), with A the
  mean chi2 distance over distinct training pairs (paper-spec §6.3); gamma is not used, C defaults to the 2013
  code's 100 through the stage config (``C_grid=[100]``).

Hyperparameters are chosen by accuracy on an explicit tune set when one is given (the paper tunes on the other AFEW
partition), else by stratified ``cv``-fold cross-validation on the fitting data; the winner is then refitted on all
fitting data. Probabilities come from ``CalibratedClassifierCV(SVC(...), ensemble=False)`` (Platt scaling on
cross-validated decision values, like libsvm's ``-b 1``), never from the deprecated ``SVC(probability=True)``.
``classes_`` is always the 7 emotions: a class absent from the fitting data gets probability 0.

Example
-------
>>> import numpy as np
>>> from emotiw.svm import GridSearchSVM
>>> rng = np.random.default_rng(0)
>>> y = np.repeat(np.arange(7), 6)
>>> X = rng.normal(size=(42, 5)) + 3 * np.eye(7, 5)[y]
>>> svm = GridSearchSVM(kernel="rbf", C_grid=(1, 10), gamma_grid=(1e-3,), gamma_per_dim_grid=(0.1, 1.0))
>>> svm = svm.fit(X[::2], y[::2], X_tune=X[1::2], y_tune=y[1::2])   # pick (C, gamma) on the tune half
>>> sorted(svm.best_params_)
['C', 'gamma']
>>> svm.predict_proba(X).shape
(42, 7)
>>> frozen = GridSearchSVM(kernel="rbf").fit_fixed(X, y, **svm.best_params_)  # retrain: no tuning
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics.pairwise import additive_chi2_kernel
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from emotiw.labels import NUM_CLASSES

PAPER_C_GRID: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
PAPER_GAMMA_GRID: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
GAMMA_PER_DIM_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
KERNELS = ("rbf", "chi2")


def chi2_distance_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """chi2(a, b) = 1/2 sum_i (a_i - b_i)^2 / (a_i + b_i) for every row pair; 0/0 terms count as 0.

    Inputs must be non-negative (histograms). Uses sklearn's additive chi2 kernel, which is -sum (a-b)^2/(a+b).
    """
    return -0.5 * additive_chi2_kernel(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64))


def chi2_mean_distance(X: np.ndarray) -> float:
    """Mean chi2 distance over distinct pairs of rows (the kernel's scale A)."""
    n = len(X)
    if n < 2:
        raise ValueError(f"the chi2 kernel scale needs at least 2 training rows, got {n}")
    d = chi2_distance_matrix(X, X)
    return float(d[np.triu_indices(n, k=1)].mean())


def chi2_kernel_matrix(A: np.ndarray, B: np.ndarray, scale: float) -> np.ndarray:
    """K = exp(-chi2(a, b) / scale), the activity SVM's kernel (paper-spec §6.3)."""
    if not scale > 0:
        raise ValueError(f"chi2 kernel scale must be > 0, got {scale}")
    return np.exp(-chi2_distance_matrix(A, B) / scale)


class Chi2Kernel:
    """Picklable callable kernel for ``SVC(kernel=...)`` with a fixed scale (so CV folds slice raw features)."""

    def __init__(self, scale: float) -> None:
        self.scale = float(scale)

    def __call__(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return chi2_kernel_matrix(A, B, self.scale)

    def __repr__(self) -> str:
        return f"Chi2Kernel(scale={self.scale!r})"


def check_finite_rows(X: np.ndarray, *, name: str = "X", clip_ids: Sequence[str] | None = None) -> None:
    """Raise one ValueError naming how many rows (and which clips) hold NaN or inf."""
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        where = ""
        if clip_ids is not None:
            ids = [str(c) for c in np.asarray(clip_ids)[bad]]
            where = f" (clip ids: {', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''})"
        raise ValueError(f"{name}: {int(bad.sum())} of {len(X)} rows contain NaN or inf{where}")


def _validate_xy(X: Any, y: Any, *, name: str, clip_ids: Sequence[str] | None, n_features: int | None = None):
    # sklearn's checks give the standard messages for sparse, complex, object, 1-D and empty input.
    X = check_array(X, dtype=np.float64, ensure_all_finite=False, input_name=name)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but GridSearchSVM is expecting {n_features} features as input"
        )
    check_finite_rows(X, name=name, clip_ids=clip_ids)
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.shape != (len(X),):
        raise ValueError(f"{name} has {len(X)} rows, but its labels have shape {y.shape}")
    check_classification_targets(y)  # "Unknown label type" for continuous or object targets
    if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels for {name} must be integers in 0..{NUM_CLASSES - 1}, got dtype {y.dtype}")
    bad = (y < 0) | (y >= NUM_CLASSES)
    if bad.any():
        raise ValueError(
            f"labels for {name} must be in 0..{NUM_CLASSES - 1} (unlabelled clips cannot fit or tune), "
            f"got {sorted(set(y[bad].tolist()))}"
        )
    return X, y.astype(np.int64)


class GridSearchSVM(ClassifierMixin, BaseEstimator):
    """Kernel SVM with (C, gamma) picked on a tune set or by CV, and calibrated 7-class probabilities.

    Parameters
    ----------
    kernel : {"rbf", "chi2"}
    C_grid : sequence of float > 0
    gamma_grid : sequence of float > 0, absolute RBF gammas (ignored for chi2)
    gamma_per_dim_grid : sequence of float > 0, RBF gammas as multiples of 1 / n_features (ignored for chi2)
    standardize : bool, z-score features with the fitting data's mean and std (RBF inputs; off for histograms)
    cv : int >= 2, stratified folds for the grid when no tune set is given, and for probability calibration
    random_state : int, RandomState or None, shuffles the CV folds
    probability : {"calibrated", "softmax"}, how decision values become probabilities: Platt scaling on
        cross-validated decision values (libsvm's ``-b 1``), or a softmax of the one-vs-rest decision values, whose
        argmax is the SVM's own decision (Platt scaling fitted on a few clips per class can move the argmax away
        from it: measured on the generated demo audio, tune accuracy 0.49 vs 0.35 from calibrated probabilities)

    Attributes
    ----------
    classes_ : (7,) int, always ``0..6``
    best_params_ : dict, ``{"C": float, "gamma": float | None}``
    tune_score_ : float, accuracy of the best params on the tune set (or mean CV accuracy); NaN for ``fit_fixed``
    grid_scores_ : list of dicts ``{"C", "gamma", "score"}`` in grid order
    n_features_in_ : int
    chi2_scale_ : float (chi2 kernel only), the mean training chi2 distance A
    """

    def __init__(
        self,
        *,
        kernel: str = "rbf",
        C_grid: Sequence[float] = PAPER_C_GRID,
        gamma_grid: Sequence[float] = PAPER_GAMMA_GRID,
        gamma_per_dim_grid: Sequence[float] = GAMMA_PER_DIM_GRID,
        standardize: bool = True,
        cv: int = 3,
        random_state: int | np.random.RandomState | None = 0,
        probability: str = "calibrated",
    ) -> None:
        self.kernel = kernel
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.gamma_per_dim_grid = gamma_per_dim_grid
        self.standardize = standardize
        self.cv = cv
        self.random_state = random_state
        self.probability = probability

    # ----------------------------------------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel={self.kernel!r} must be one of {KERNELS}")
        for name in ("C_grid", "gamma_grid", "gamma_per_dim_grid"):
            values = list(getattr(self, name) or ())
            if any(not isinstance(v, Real) or not v > 0 for v in values):
                raise ValueError(f"{name}={values!r} must hold numbers > 0")
        if not list(self.C_grid or ()):
            raise ValueError(f"C_grid={self.C_grid!r} must name at least one C")
        if self.kernel == "rbf" and not (list(self.gamma_grid or ()) or list(self.gamma_per_dim_grid or ())):
            raise ValueError("kernel='rbf' needs at least one gamma in gamma_grid or gamma_per_dim_grid")
        if self.probability not in ("calibrated", "softmax"):
            raise ValueError(f"probability={self.probability!r} must be 'calibrated' or 'softmax'")
        if not isinstance(self.cv, Integral) or self.cv < 2:
            raise ValueError(f"cv={self.cv!r} must be an integer >= 2")

    def _gammas(self, n_features: int) -> list[float | None]:
        if self.kernel == "chi2":
            return [None]
        gammas = [float(g) for g in self.gamma_grid or ()]
        gammas += [float(m) / n_features for m in self.gamma_per_dim_grid or ()]
        return list(dict.fromkeys(gammas))  # drop duplicates, keep grid order

    # ---------------------------------------------------------------------------------------------- helpers
    def _prepare_fit_data(self, X: np.ndarray) -> np.ndarray:
        """Learn the scaler / chi2 scale on the fitting data; return the transformed fitting data."""
        self.n_features_in_ = X.shape[1]
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        Xt = self._transform(X)
        if self.kernel == "chi2":
            if (Xt < 0).any():
                raise ValueError(
                    "kernel='chi2' needs non-negative features (histograms); set standardize=False"
                )
            self.chi2_scale_ = chi2_mean_distance(Xt)
            if not self.chi2_scale_ > 0:
                raise ValueError("kernel='chi2': all training rows are identical (mean chi2 distance 0)")
        return Xt

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    def _svc(self, C: float, gamma: float | None) -> SVC:
        if self.kernel == "chi2":
            return SVC(C=C, kernel=Chi2Kernel(self.chi2_scale_))
        return SVC(C=C, kernel="rbf", gamma=gamma)

    def _folds(self, y: np.ndarray) -> StratifiedKFold:
        counts = np.bincount(y, minlength=NUM_CLASSES)
        n_splits = int(min(self.cv, counts.max()))
        if n_splits < 2:
            raise ValueError(
                f"cross-validation needs a class with at least 2 clips; class counts are {counts.tolist()}"
            )
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)

    def _score_grid(self, X, y, X_tune, y_tune) -> list[dict[str, Any]]:
        scores = []
        for C in self.C_grid:
            for gamma in self._gammas(X.shape[1]):
                if X_tune is not None:
                    score = self._fit_svc(self._svc(float(C), gamma), X, y).score(X_tune, y_tune)
                else:
                    fold_scores = []
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="The least populated class")
                        for tr, te in self._folds(y).split(X, y):
                            fold_scores.append(
                                self._fit_svc(self._svc(float(C), gamma), X[tr], y[tr]).score(X[te], y[te])
                            )
                    score = float(np.mean(fold_scores))
                scores.append({"C": float(C), "gamma": gamma, "score": float(score)})
        return scores

    @staticmethod
    def _fit_svc(svc: SVC, X: np.ndarray, y: np.ndarray):
        """SVC needs two classes; with one, predict it (a constant classifier with the same interface)."""
        if len(np.unique(y)) < 2:
            return _Constant(int(y[0]))
        return svc.fit(X, y)

    def _fit_final(self, X: np.ndarray, y: np.ndarray, C: float, gamma: float | None) -> None:
        present = np.unique(y)
        self.fit_classes_ = present
        if len(present) < 2:
            self.model_ = _Constant(int(present[0]))
            self.prob_method_ = "constant"
            return
        counts = np.bincount(y)[present]
        # Platt calibration on cross-validated decision values needs every class in every fold's training part.
        n_splits = int(min(self.cv, counts.min()))
        if n_splits >= 2 and self.probability == "calibrated":
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            self.model_ = CalibratedClassifierCV(
                self._svc(C, gamma), method="sigmoid", cv=folds, ensemble=False
            )
            self.prob_method_ = "calibrated"
        else:
            # Asked for, or a class with a single clip (no calibration folds): softmax of the one-vs-rest decisions.
            self.model_ = self._svc(C, gamma)
            self.prob_method_ = "decision_softmax"
        self.model_.fit(X, y)

    # ------------------------------------------------------------------------------------------------ API
    def fit(self, X, y, X_tune=None, y_tune=None, *, clip_ids=None, tune_clip_ids=None) -> GridSearchSVM:
        """Pick (C, gamma) by accuracy on ``(X_tune, y_tune)`` (or by stratified CV when absent); refit on X."""
        self._check_params()
        if y is None:
            raise ValueError("GridSearchSVM requires y to be passed, but the target y is None")
        X, y = _validate_xy(X, y, name="X", clip_ids=clip_ids)
        if (X_tune is None) != (y_tune is None):
            raise ValueError("give both X_tune and y_tune, or neither")
        if len(X) < 2:
            raise ValueError(f"GridSearchSVM needs at least 2 clips to fit, got n_samples={len(X)}")
        Xt = self._prepare_fit_data(X)
        Xtune = None
        if X_tune is not None:
            X_tune, y_tune = _validate_xy(
                X_tune, y_tune, name="X_tune", clip_ids=tune_clip_ids, n_features=X.shape[1]
            )
            Xtune = self._transform(X_tune)
        self.grid_scores_ = self._score_grid(Xt, y, Xtune, y_tune)
        best = max(self.grid_scores_, key=lambda s: s["score"])  # max keeps the first of equal scores
        self.best_params_ = {"C": best["C"], "gamma": best["gamma"]}
        self.tune_score_ = best["score"]
        self._fit_final(Xt, y, best["C"], best["gamma"])
        return self

    def fit_fixed(self, X, y, *, C: float, gamma: float | None = None, clip_ids=None) -> GridSearchSVM:
        """Fit with frozen hyperparameters (retraining on Train+Val with the choices of a tuned run)."""
        self._check_params()
        if not isinstance(C, Real) or not C > 0:
            raise ValueError(f"C={C!r} must be a number > 0")
        if self.kernel == "rbf" and (gamma is None or not isinstance(gamma, Real) or not gamma > 0):
            raise ValueError(f"kernel='rbf' needs gamma > 0, got gamma={gamma!r}")
        X, y = _validate_xy(X, y, name="X", clip_ids=clip_ids)
        Xt = self._prepare_fit_data(X)
        gamma = None if self.kernel == "chi2" else float(gamma)
        self.grid_scores_ = []
        self.best_params_ = {"C": float(C), "gamma": gamma}
        self.tune_score_ = math.nan
        self._fit_final(Xt, y, float(C), gamma)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(NUM_CLASSES)

    def _validate_for_predict(self, X, clip_ids=None) -> np.ndarray:
        check_is_fitted(self, "model_")
        X, _ = _validate_xy(X, None, name="X", clip_ids=clip_ids, n_features=self.n_features_in_)
        return self._transform(X)

    def predict_proba(self, X, *, clip_ids=None) -> np.ndarray:
        """(n, 7) probabilities in canonical class order; classes absent from the fitting data get 0."""
        Xt = self._validate_for_predict(X, clip_ids)
        out = np.zeros((len(Xt), NUM_CLASSES))
        if self.prob_method_ == "decision_softmax":
            d = self.model_.decision_function(Xt)
            d = d - d.max(axis=1, keepdims=True)
            p = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
        else:
            p = self.model_.predict_proba(Xt)
        out[:, self.fit_classes_] = p
        return out

    def predict(self, X, *, clip_ids=None) -> np.ndarray:
        return self.predict_proba(X, clip_ids=clip_ids).argmax(axis=1)

    def decision_summary(self) -> dict[str, Any]:
        """What a stage writes to ``chosen.json``."""
        check_is_fitted(self, "model_")
        out = {
            "C": self.best_params_["C"],
            "gamma": self.best_params_["gamma"],
            "kernel": self.kernel,
            "tune_score": None if math.isnan(self.tune_score_) else self.tune_score_,
        }
        if self.kernel == "chi2":
            out["chi2_scale"] = self.chi2_scale_
        return out


class _Constant:
    """A one-class 'classifier' (all fitting clips share a label)."""

    def __init__(self, label: int) -> None:
        self.label = label

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.full(len(X), self.label)

    def predict_proba(self, X):
        return np.ones((len(X), 1))

    def score(self, X, y):
        return float(np.mean(np.asarray(y) == self.label))


def save_svm(est: GridSearchSVM, path) -> None:
    """Persist with skops (never pickle), atomically."""
    from emotiw.artifacts import save_skops

    save_skops(path, est)


def load_svm(path) -> GridSearchSVM:
    """Load a skops file written by :func:`save_svm`, trusting exactly the types a fitted GridSearchSVM holds."""
    from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration

    from emotiw.artifacts import load_skops

    trusted = (
        GridSearchSVM,
        Chi2Kernel,
        _Constant,
        _CalibratedClassifier,
        _SigmoidCalibration,
        StratifiedKFold,
    )
    return load_skops(path, trusted)
