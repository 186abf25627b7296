"""Bag of words: motion weights, hard assignment, L1-normalised histograms; the folded encoder."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.activity import BagOfWords, FoldedEncoder, block_whitener, motion_weights


def _fixed_codebook(centres: np.ndarray) -> BagOfWords:
    bow = BagOfWords(n_words=len(centres))
    bow.cluster_centers_ = centres.astype(np.float32)
    bow.n_features_in_ = centres.shape[1]
    return bow


def test_motion_weight_is_mean_of_2f_minus_1():
    f = np.array([[0.5, 0.5, 0.5, 0.5], [1.0, 0.5, 0.75, 0.75], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(motion_weights(f), [0.0, 0.5, 1.0])


def test_histogram_on_a_hand_built_case():
    bow = _fixed_codebook(np.array([[0.5, 0.5], [1.0, 1.0], [0.5, 1.0]]))
    feats = np.array(
        [
            [0.55, 0.5],  # word 0, m = 0.05
            [0.95, 0.95],  # word 1, m = 0.9
            [1.0, 0.9],  # word 1, m = 0.9
            [0.5, 0.9],  # word 2, m = 0.4
        ]
    )
    np.testing.assert_array_equal(bow.assign(feats), [0, 1, 1, 2])
    raw = np.array([0.05, 1.8, 0.4])
    np.testing.assert_allclose(bow.histogram(feats), raw / raw.sum())
    hists = bow.histograms([feats, feats[:0], np.full((3, 2), 0.5)])
    np.testing.assert_allclose(hists.sum(1), [1.0, 0.0, 0.0])  # no blocks / no motion: an all-zero row


def test_codebook_fit_is_seeded_and_checks_n_words():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.05, size=(50, 3)) for c in (0.5, 0.7, 0.9)]).astype(np.float32)
    a = BagOfWords(n_words=3, random_state=0).fit(X)
    b = BagOfWords(n_words=3, random_state=0).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_allclose(np.sort(a.cluster_centers_[:, 0]), [0.5, 0.7, 0.9], atol=0.05)
    with pytest.raises(ValueError, match="n_words=500 exceeds the 150 blocks"):
        BagOfWords(n_words=500).fit(X)


def test_folded_encoder_equals_whiten_then_encode():
    rng = np.random.default_rng(0)
    # Any block size folds the same way; 160 "pixels" keep the PCA cheap.
    blocks = (rng.normal(size=(300, 160)) * rng.uniform(0.5, 2, 160)).astype(np.float32)
    w = block_whitener(max_components=50).fit(blocks)
    W = rng.uniform(-0.3, 0.3, size=(w.n_components_, 8))
    s = w.transform(blocks) @ W
    enc = FoldedEncoder.from_whitener(w, W)
    np.testing.assert_allclose(enc.encode(blocks, batch_size=64), 1 / (1 + np.exp(-(s**2))), atol=1e-4)


def test_cpu_threads_limits_torch_and_blas_then_restores_them():
    import torch
    from threadpoolctl import threadpool_info

    from emotiw.activity import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with cpu_threads(None):  # None leaves the pools alone
        assert torch.get_num_threads() == before
