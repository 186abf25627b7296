import cv2
import numpy as np
import pytest

from emotiw.faces.histeq import equalize_hist


def test_hand_computed_four_levels():
    # N=4, target cumulative (1,2,3,4). Value 0: C=2, t=0 -> k=1 -> 85. Value 128: C=3, t=0.5 -> need 2.5
    # -> k=2 -> 170. Value 255: C=4, t=0 -> k=3 -> 255.
    img = np.array([[0, 0], [128, 255]], np.uint8)
    np.testing.assert_array_equal(equalize_hist(img, levels=4), [[85, 85], [170, 255]])


def test_constant_image_goes_to_middle_level():
    # All mass at one value: need = N/2 -> k = levels/2 - 1 = 31 -> round(31*255/63) = 125.
    img = np.full((5, 7), 77, np.uint8)
    assert np.all(equalize_hist(img) == 125)


def test_64_levels_uses_64_values_and_is_monotone():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    out = equalize_hist(img)
    allowed = np.round(np.arange(64) * 255 / 63).astype(np.uint8)
    assert set(np.unique(out)) <= set(allowed)
    assert len(np.unique(out)) > 50
    order = np.argsort(img.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_64_levels_flattens_histogram():
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(100, 10, (200, 200)), 0, 255).astype(np.uint8)
    counts = np.bincount(equalize_hist(img).ravel(), minlength=256)
    counts = counts[counts > 0]
    # A narrow input spreads to many output values of roughly equal size.
    assert len(counts) >= 25
    assert counts.max() < 4 * img.size / len(counts)


def test_256_levels_matches_opencv():
    rng = np.random.default_rng(2)
    img = np.clip(rng.normal(90, 30, (64, 80)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(equalize_hist(img, levels=256), cv2.equalizeHist(img))


@pytest.mark.parametrize("levels", [1, 257, 3.5])
def test_bad_levels_named(levels):
    with pytest.raises(ValueError, match="levels"):
        equalize_hist(np.zeros((2, 2), np.uint8), levels=levels)


def test_bad_dtype_named():
    with pytest.raises(ValueError, match="uint8"):
        equalize_hist(np.zeros((2, 2), np.float32))
