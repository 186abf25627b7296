"""The CNN input normaliser (per-pixel mean and std image) and the 64-level histogram equalisation it follows."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from emotiw.faces.histeq import equalize_hist
from emotiw.preprocess import MeanStdImage


def test_mean_std_image_hand_computed():
    x = np.zeros((2, 2, 2), np.uint8)
    x[0] = [[0, 10], [4, 7]]
    x[1] = [[4, 30], [4, 9]]
    norm = MeanStdImage(min_std=1.0).fit(x)
    np.testing.assert_allclose(norm.mean_, [[2, 20], [4, 8]])
    # population std per pixel: |a-b|/2 -> 2, 10, 0 (floored to 1), 1
    np.testing.assert_allclose(norm.std_, [[2, 10], [1, 1]])
    out = norm.transform(np.array([[[2, 40], [5, 6]]], np.uint8))
    np.testing.assert_allclose(out, [[[0, 2], [1, -2]]])
    assert norm.n_samples_seen_ == 2


def test_mean_std_image_errors():
    with pytest.raises(NotFittedError):
        MeanStdImage().transform(np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="min_std must be > 0, got 0"):
        MeanStdImage(min_std=0).fit(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"non-empty \(N, H, W\)"):
        MeanStdImage().fit(np.zeros((4, 4)))
    norm = MeanStdImage().fit(np.zeros((2, 48, 48)))
    with pytest.raises(ValueError, match=r"fitted on \(48, 48\)"):
        norm.transform(np.zeros((1, 44, 44)))


def test_histeq_64_levels_hand_case():
    # 4 pixels of value 10 and 4 of value 200 on a 2x4 image: halves of the mass.
    img = np.array([[10, 10, 10, 10], [200, 200, 200, 200]], np.uint8)
    out = equalize_hist(img, 64)
    # value 10: cumulative 4/8 minus half its own mass (2/8) = 2/8 -> level 15 of 0..63 -> round(15*255/63) = 61
    # value 200: 8/8 - 2/8 = 6/8 -> level 47 -> round(47*255/63) = 190
    assert out[0, 0] == round(15 * 255 / 63) and out[1, 0] == round(47 * 255 / 63)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    assert len(np.unique(equalize_hist(noisy, 64))) <= 64
    assert len(np.unique(equalize_hist(noisy, 256))) > 64
