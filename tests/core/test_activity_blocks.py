"""Space-time blocks: dense tiling covers the clip once, short clips are doubled, random blocks are real blocks."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.activity import (
    BLOCK_SHAPE,
    block_whitener,
    dense_block_origins,
    dense_blocks,
    double_short_clip,
    sample_blocks,
)


def test_block_shape_is_the_papers_16x16x10():
    assert BLOCK_SHAPE == (10, 16, 16) and np.prod(BLOCK_SHAPE) == 2560


def test_dense_tiling_covers_every_full_cell_exactly_once():
    shape = (35, 50, 70)  # 3 time chunks (tail of 5 dropped), 3 rows (2 px cropped), 4 columns (6 px cropped)
    origins = dense_block_origins(shape)
    assert len(origins) == 3 * 3 * 4
    cover = np.zeros(shape, np.int64)
    for t, y, x in origins:
        cover[t : t + 10, y : y + 16, x : x + 16] += 1
    assert (cover[:30, :48, :64] == 1).all()  # every pixel of the cropped volume exactly once
    assert cover[30:].sum() == 0 and cover[:, 48:].sum() == 0 and cover[:, :, 64:].sum() == 0


def test_dense_blocks_hold_the_pixels_at_their_origins():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 255, size=(23, 33, 40)).astype(np.uint8)
    blocks = dense_blocks(v)
    origins = dense_block_origins(v.shape)
    assert blocks.shape == (len(origins), 2560) == (2 * 2 * 2, 2560)
    for blk, (t, y, x) in zip(blocks, origins, strict=True):
        np.testing.assert_array_equal(blk.reshape(10, 16, 16), v[t : t + 10, y : y + 16, x : x + 16])
    # frame t of a block is x[t*256:(t+1)*256] (the x = (x^1..x^T) layout of the SAE).
    np.testing.assert_array_equal(blocks[0][256:512].reshape(16, 16), v[1, :16, :16])


@pytest.mark.parametrize(("n_frames", "n_chunks"), [(1, 0), (5, 1), (10, 2), (11, 1), (20, 2)])
def test_short_clips_are_doubled_once(n_frames, n_chunks):
    v = np.arange(n_frames)[:, None, None] * np.ones((1, 16, 16))
    doubled = double_short_clip(v)
    assert doubled.shape[0] == (2 * n_frames if n_frames <= 10 else n_frames)
    if n_frames <= 10:
        np.testing.assert_array_equal(doubled[n_frames:], v)
    assert len(dense_blocks(v)) == n_chunks


def test_sample_blocks_are_blocks_of_the_clip():
    v = np.random.default_rng(1).integers(0, 255, size=(12, 20, 24)).astype(np.uint8)
    blocks = sample_blocks(v, 50, random_state=0)
    assert blocks.shape == (50, 2560)
    windows = np.lib.stride_tricks.sliding_window_view(v, BLOCK_SHAPE).reshape(-1, 2560)
    for b in blocks:
        assert (windows == b).all(axis=1).any()
    np.testing.assert_array_equal(blocks, sample_blocks(v, 50, random_state=0))  # seeded


def test_block_whitener_defaults_are_the_spec_gaps():
    w = block_whitener()
    assert (w.max_variance, w.n_components, w.row_offset, w.column_offset) == (0.99, 500, 0.001, "none")
