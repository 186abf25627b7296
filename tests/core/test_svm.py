"""GridSearchSVM: grid choice, 7-class probabilities, chi2 kernel, retrain, input checks, persistence."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from emotiw.svm import (
    PAPER_C_GRID,
    PAPER_GAMMA_GRID,
    GridSearchSVM,
    chi2_distance_matrix,
    chi2_kernel_matrix,
    chi2_mean_distance,
    load_svm,
    save_svm,
)


def blobs(n_per_class: int, classes=range(7), dim: int = 6, sep: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(list(classes)), n_per_class)
    centres = rng.normal(size=(7, dim)) * sep
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_paper_grid_constants():
    assert PAPER_C_GRID == (1, 10, 100, 1000, 10000)
    assert PAPER_GAMMA_GRID == (1e-3, 1e-4, 1e-5)


def test_tune_set_picks_the_better_C():
    # Two overlapping classes in 1-D, the tune set labelled by the true boundary x > 0. A tiny C underfits (the
    # margin swallows everything: constant prediction), a moderate C recovers the boundary.
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(-1, 1, 200), rng.normal(1, 1, 40)][:, None]
    y = np.r_[np.zeros(200, int), np.ones(40, int)]
    Xt = np.linspace(-3, 3, 101)[:, None]
    yt = (Xt[:, 0] > 0.5).astype(int)
    svm = GridSearchSVM(C_grid=(1e-4, 10.0), gamma_grid=(1.0,), gamma_per_dim_grid=()).fit(X, y, Xt, yt)
    scores = {s["C"]: s["score"] for s in svm.grid_scores_}
    assert scores[10.0] > scores[1e-4]
    assert svm.best_params_ == {"C": 10.0, "gamma": 1.0}
    assert svm.tune_score_ == pytest.approx(scores[10.0])


def test_rbf_grid_includes_per_dim_gammas():
    X, y = blobs(4, dim=5)
    svm = GridSearchSVM(C_grid=(1,), gamma_grid=(1e-3,), gamma_per_dim_grid=(1.0, 10.0)).fit(X, y)
    assert [s["gamma"] for s in svm.grid_scores_] == pytest.approx([1e-3, 0.2, 2.0])


def test_cv_without_tune_set_learns():
    X, y = blobs(9)
    svm = GridSearchSVM(C_grid=(1, 100), gamma_grid=(1e-3,)).fit(X, y)
    assert svm.tune_score_ > 0.6  # chance is 1/7
    assert svm.score(*blobs(9, seed=0)) > 0.6


def test_probabilities_keep_seven_columns_with_a_missing_class():
    X, y = blobs(6, classes=[0, 1, 2, 4, 5, 6])  # no "happy"
    svm = GridSearchSVM(C_grid=(10,), gamma_grid=(), gamma_per_dim_grid=(1.0,)).fit(X, y)
    p = svm.predict_proba(X)
    assert p.shape == (len(X), 7)
    assert np.allclose(p[:, 3], 0.0)
    assert np.allclose(p.sum(1), 1.0)
    assert list(svm.classes_) == list(range(7))
    assert svm.prob_method_ == "calibrated"
    assert (svm.predict(X) == y).mean() > 0.8


def test_single_clip_class_falls_back_to_decision_softmax():
    X, y = blobs(5, classes=[0, 1, 2])
    X, y = np.r_[X, [[9.0] * 6]], np.r_[y, 6]
    svm = GridSearchSVM(C_grid=(10,), gamma_grid=(0.1,), gamma_per_dim_grid=()).fit(X, y)
    p = svm.predict_proba(X)
    assert svm.prob_method_ == "decision_softmax"
    assert p.shape == (len(X), 7) and np.allclose(p.sum(1), 1) and np.allclose(p[:, [3, 4, 5]], 0)


def test_chi2_kernel_matches_hand_computed_2x2():
    a = np.array([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    b = np.array([[0.0, 1.0, 1.0], [0.5, 0.5, 0.0]])
    # chi2(a0,b0) = 1/2 (1/1 + 1/1 + 0/2) = 1; chi2(a0,b1) = 1/2 (0.25/1.5 + 0.25/0.5 + 1/1) = 5/6
    # chi2(a1,b0) = 1/2 (0.25/0.5 + 0.25/1.5 + 1/1) = 5/6; chi2(a1,b1) = 0 (0/0 terms count 0)
    expected_d = np.array([[1.0, 5 / 6], [5 / 6, 0.0]])
    assert np.allclose(chi2_distance_matrix(a, b), expected_d)
    assert np.allclose(chi2_kernel_matrix(a, b, scale=2.0), np.exp(-expected_d / 2.0))
    # mean over distinct training pairs of a: only (a0, a1): 5/6
    assert chi2_mean_distance(a) == pytest.approx(5 / 6)


def test_chi2_svm_on_histograms():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), 8)
    H = rng.gamma(1.0, size=(len(y), 30)) + np.eye(7, 30)[y] * (2 + 4 * rng.random((len(y), 1)))
    H /= H.sum(1, keepdims=True)
    svm = GridSearchSVM(kernel="chi2", C_grid=(100,), standardize=False).fit(H[::2], y[::2], H[1::2], y[1::2])
    assert svm.best_params_ == {"C": 100.0, "gamma": None}
    assert svm.chi2_scale_ == pytest.approx(chi2_mean_distance(H[::2]))
    assert svm.tune_score_ > 0.5
    with pytest.raises(ValueError, match="non-negative"):
        GridSearchSVM(kernel="chi2", standardize=True).fit(H, y)


def test_fit_fixed_freezes_choices():
    X, y = blobs(5)
    svm = GridSearchSVM().fit_fixed(X, y, C=10, gamma=0.01)
    assert svm.best_params_ == {"C": 10.0, "gamma": 0.01}
    assert math.isnan(svm.tune_score_) and svm.grid_scores_ == []
    assert svm.decision_summary()["tune_score"] is None
    with pytest.raises(ValueError, match="gamma=None"):
        GridSearchSVM().fit_fixed(X, y, C=10)


def test_nan_rows_are_rejected_with_clip_ids():
    X, y = blobs(3)
    X[[2, 5]] = np.nan
    ids = np.array([f"{i:09d}" for i in range(len(X))])
    with pytest.raises(
        ValueError, match=r"X: 2 of 21 rows contain NaN or inf \(clip ids: 000000002, 000000005\)"
    ):
        GridSearchSVM().fit(X, y, clip_ids=ids)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"kernel": "linear"}, "kernel='linear'"),
        ({"C_grid": (0,)}, r"C_grid=\[0\]"),
        ({"C_grid": ()}, "at least one C"),
        ({"gamma_grid": (), "gamma_per_dim_grid": ()}, "at least one gamma"),
        ({"cv": 1}, "cv=1"),
    ],
)
def test_bad_params_name_the_value(params, match):
    X, y = blobs(3)
    with pytest.raises(ValueError, match=match):
        GridSearchSVM(**params).fit(X, y)


def test_bad_labels_and_shapes_are_named():
    X, y = blobs(3)
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        GridSearchSVM().fit(X, np.r_[y[:-1], -1])
    with pytest.raises(ValueError, match="21 rows, but its labels have shape"):
        GridSearchSVM().fit(X, y[:-1])
    svm = GridSearchSVM(C_grid=(1,), gamma_grid=(1e-3,), gamma_per_dim_grid=()).fit(X, y)
    with pytest.raises(
        ValueError, match="X has 5 features, but GridSearchSVM is expecting 6 features as input"
    ):
        svm.predict_proba(X[:, :5])


def test_skops_round_trip(tmp_path):
    X, y = blobs(4)
    for svm in (
        GridSearchSVM(C_grid=(10,), gamma_grid=(0.1,), gamma_per_dim_grid=()),
        GridSearchSVM(kernel="chi2", C_grid=(100,), standardize=False),
    ):
        svm.fit(np.abs(X), y)
        save_svm(svm, tmp_path / "svm.skops")
        again = load_svm(tmp_path / "svm.skops")
        assert np.allclose(again.predict_proba(np.abs(X)), svm.predict_proba(np.abs(X)))


def test_skops_round_trip_of_constant_and_softmax_models(tmp_path):
    # The exact trusted-type list must cover every model a fit can store, not only the calibrated one.
    X, y = blobs(4)
    for svm, labels in (
        (GridSearchSVM(C_grid=(10,), gamma_grid=(0.1,), gamma_per_dim_grid=()), np.zeros_like(y)),
        (GridSearchSVM(probability="softmax", C_grid=(10,), gamma_grid=(0.1,), gamma_per_dim_grid=()), y),
    ):
        svm.fit(X, labels)
        save_svm(svm, tmp_path / "svm.skops")
        assert np.allclose(load_svm(tmp_path / "svm.skops").predict_proba(X), svm.predict_proba(X))


# Genuine departures from a generic sklearn classifier: labels are the canonical emotion indices 0..6 and
# ``classes_`` is always all 7 of them, so fusion sees the same columns from every model.
EXPECTED_FAILED = {
    "check_classifiers_classes": "labels must be the emotion indices 0..6; string labels are rejected",
    "check_classifiers_train": "classes_ is always 0..6, not the labels seen in fit",
}


@pytest.mark.slow  # about 50 sklearn checks
@parametrize_with_checks(
    [GridSearchSVM(C_grid=(1.0,), gamma_grid=(0.1,), gamma_per_dim_grid=())],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def test_softmax_probabilities_follow_the_svm_decision() -> None:
    from sklearn.datasets import make_blobs

    from emotiw.svm import GridSearchSVM

    X, y = make_blobs(n_samples=140, centers=7, n_features=5, cluster_std=3.0, random_state=0)
    est = GridSearchSVM(C_grid=[10], gamma_grid=[0.1], gamma_per_dim_grid=[], probability="softmax").fit(X, y)
    p = est.predict_proba(X)
    assert p.shape == (140, 7)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    svc = est.model_
    np.testing.assert_array_equal(p.argmax(1), svc.decision_function(est._transform(X)).argmax(1))
    with pytest.raises(ValueError, match="probability='platt' must be"):
        GridSearchSVM(probability="platt").fit(X, y)


def test_malicious_skops_svm_is_refused(tmp_path):
    # numpy.testing holds ``runstring(astr, dict)``, a plain ``exec`` wrapper: a tampered file that swaps the
    # chi2 SVC's kernel for it would hand the attacker a code-running callable, so only exact type names load.
    from numpy.testing._private.utils import runstring

    X, y = blobs(4)
    svm = GridSearchSVM(kernel="chi2", C_grid=(100,), standardize=False).fit(np.abs(X), y)
    svm.model_.calibrated_classifiers_[0].estimator.kernel = runstring
    save_svm(svm, tmp_path / "svm.skops")
    with pytest.raises(ValueError, match=r"svm\.skops.*numpy\.testing\._private\.utils\.runstring"):
        load_svm(tmp_path / "svm.skops")
