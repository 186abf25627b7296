"""k-average pooling against the worked examples of paper-spec §4."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.aggcnn import PAPER_K, KAveragePooling, bin_sizes, expand_index, k_average_pool, round_half_up


def test_paper_k():
    assert PAPER_K == 15


def test_round_half_up_is_not_bankers_rounding():
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 2.4999, 2.5001)] == [1, 2, 3, 2, 3]


@pytest.mark.parametrize(
    ("n", "k", "sizes"),
    [
        (25, 10, [3, 2, 3, 2, 3, 2, 3, 2, 3, 2]),
        (28, 10, [3, 3, 3, 3, 3, 3, 3, 2, 3, 2]),
        (10, 10, [1] * 10),
        (30, 15, [2] * 15),
    ],
)
def test_shrink_bin_sizes(n, k, sizes):
    assert bin_sizes(n, k) == sizes


@pytest.mark.parametrize(
    ("n", "k", "index"),
    [
        (7, 10, [0, 1, 1, 2, 3, 3, 4, 5, 5, 6]),
        (6, 10, [0, 0, 1, 1, 2, 2, 3, 4, 4, 5]),
        (1, 10, [0] * 10),
    ],
)
def test_expand_index(n, k, index):
    assert expand_index(n, k) == index


def test_pool_shrink_values_are_bin_means():
    frames = np.arange(25 * 2, dtype=np.float32).reshape(25, 2)
    pooled = k_average_pool(frames, k=10)
    assert pooled.shape == (20,) and pooled.dtype == np.float32
    # bins: [0,1,2], [3,4], [5,6,7], ...
    assert np.allclose(pooled[:6], [frames[0:3, 0].mean(), frames[0:3, 1].mean(), 7.0, 8.0, 12.0, 13.0])
    bins = np.split(frames, np.cumsum(bin_sizes(25, 10))[:-1])
    assert np.allclose(pooled.reshape(10, 2), [b.mean(0) for b in bins])


def test_pool_expand_repeats_frames_in_order():
    frames = np.arange(7, dtype=np.float32)[:, None] * 10
    assert k_average_pool(frames, k=10).tolist() == [0, 10, 10, 20, 30, 30, 40, 50, 50, 60]


def test_pool_n_equals_k_and_single_frame():
    frames = np.random.default_rng(0).normal(size=(15, 7))
    assert np.allclose(k_average_pool(frames), frames.reshape(-1))
    one = np.arange(7.0)[None]
    assert np.allclose(k_average_pool(one), np.tile(one[0], 15))
    assert k_average_pool(frames).shape == (105,)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="0 frames"):
        k_average_pool(np.zeros((0, 7)))
    with pytest.raises(ValueError, match="k=0"):
        k_average_pool(np.zeros((3, 7)), k=0)
    with pytest.raises(ValueError, match=r"2-D.*\(7,\)"):
        k_average_pool(np.zeros(7))


def test_transformer_wraps_the_function():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(n, 7)) for n in (3, 15, 40)]
    out = KAveragePooling(k=15).fit(clips).transform(clips)
    assert out.shape == (3, 105)
    assert np.allclose(out[2], k_average_pool(clips[2], 15))
    with pytest.raises(ValueError, match=r"clip 0 has shape \(3, 6\)"):
        KAveragePooling().fit(clips).transform([np.zeros((3, 6))])
