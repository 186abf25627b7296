"""Scaling and contrast-normalised PCA-whitening of the audio (and activity) features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from emotiw.audio import ContrastPCAWhitener, FeatureScaler

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 30)) @ RNG.normal(size=(30, 30)) + 5.0


def test_scaler_drops_constant_columns_and_imputes_nan_with_the_mean():
    Xc = X.copy()
    Xc[:, 3] = 7.0
    sc = FeatureScaler().fit(Xc)
    assert sc.keep_.sum() == 29 and not sc.keep_[3]
    row = Xc[:1].copy()
    row[0, 5] = np.nan
    z = sc.transform(row)
    assert np.isfinite(z).all() and z[0, 4] == 0.0  # column 5 sits at index 4 once column 3 is dropped
    Z = sc.transform(Xc)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-10)


def test_scaler_zero_sum_on_tune_is_the_authors_mask():
    tune = X[:20].copy()
    tune[:, 2] = 0.0
    sc = FeatureScaler(column_filter="zero_sum_on_tune").fit(X, X_tune=tune)
    assert not sc.keep_[2] and sc.keep_.sum() == 29
    with pytest.raises(ValueError, match="needs X_tune"):
        FeatureScaler(column_filter="zero_sum_on_tune").fit(X)
    with pytest.raises(ValueError, match="column_filter='bogus'"):
        FeatureScaler(column_filter="bogus").fit(X)


def test_whitener_steps_by_hand_and_sklearn_pca_whiten_agree():
    w = ContrastPCAWhitener(n_components=10).fit(X)
    # (a) row contrast normalisation with the constant from the fitting set.
    c = X.std(axis=1).mean()
    assert w.row_constant_ == pytest.approx(c)
    R = (X - X.mean(1, keepdims=True)) / (X.std(1, keepdims=True) + c)
    # (b) column normalisation with the mean column std as offset.
    C = (R - R.mean(0)) / (R.std(0) + R.std(0).mean())
    expected = PCA(n_components=10, whiten=True, svd_solver="full").fit(C).transform(C)
    got = w.transform(X)
    # Same subspace and scale; eigenvector signs are arbitrary.
    signs = np.sign((got * expected).sum(0))
    np.testing.assert_allclose(got, expected * signs, atol=1e-6)
    # Whitened: identity covariance on the fitting set (1/(n-1) convention of sklearn).
    np.testing.assert_allclose(np.cov(got.T), np.eye(10), atol=1e-6)


def test_whitener_drops_the_variance_tail_and_folds_into_an_affine_map():
    low_rank = RNG.normal(size=(300, 4)) @ RNG.normal(size=(4, 40))
    w = ContrastPCAWhitener(n_components=10, max_variance=0.99999).fit(low_rank)
    assert w.n_components_ <= 4  # rank 4 (row centring may remove one more direction)
    A, b = w.affine_map()
    np.testing.assert_allclose(w.row_normalise(low_rank) @ A + b, w.transform(low_rank), atol=1e-8)


def test_whitener_rejects_nan_and_bad_params():
    with pytest.raises(ValueError, match="NaN or inf"):
        ContrastPCAWhitener().fit(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="n_components=0"):
        ContrastPCAWhitener(n_components=0).fit(X)
    with pytest.raises(ValueError, match="expecting 30 features"):
        ContrastPCAWhitener().fit(X).transform(X[:, :5])


def test_malicious_preprocess_skops_is_refused(tmp_path):
    from numpy.testing._private.utils import runstring

    from emotiw.audio.whitening import load_fitted, save_fitted

    rng = np.random.default_rng(0)
    save_fitted(
        tmp_path / "preprocess.skops", scaler=FeatureScaler().fit(rng.normal(size=(20, 4))), hook=runstring
    )
    with pytest.raises(ValueError, match=r"preprocess\.skops.*numpy\.testing\._private\.utils\.runstring"):
        load_fitted(tmp_path / "preprocess.skops")


def test_scaler_zero_sum_on_tune_needs_tuning_rows():
    with pytest.raises(ValueError, match="at least one row"):
        FeatureScaler(column_filter="zero_sum_on_tune").fit(X, X_tune=X[:0])
