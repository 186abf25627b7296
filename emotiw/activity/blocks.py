"""Space-time blocks of grey video: random ones to train the SAE, a dense non-overlapping tiling to describe a clip.

A block is ``BLOCK_SHAPE = (time, height, width) = (10, 16, 16)`` pixels of consecutive full frames, flattened in
C order, so ``x[t*256:(t+1)*256]`` is frame t of the block (paper-spec §6.1 writes x = (x^1, ..., x^T)).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from emotiw.audio.whitening import ContrastPCAWhitener

BLOCK_SHAPE: tuple[int, int, int] = (10, 16, 16)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be a (T, H, W) grey video, got shape {frames.shape}")
    return frames


def double_short_clip(frames: np.ndarray, block_shape: tuple[int, int, int] = BLOCK_SHAPE) -> np.ndarray:
    """Clips of at most ``block_shape[0]`` frames are concatenated with themselves once (paper-spec §6.2), so a
    clip of exactly 10 frames gives two time chunks and one of 5..9 frames gives one."""
    frames = _check_frames(frames)
    if frames.shape[0] <= block_shape[0]:
        frames = np.concatenate([frames, frames], axis=0)
    return frames


def dense_block_origins(
    video_shape: tuple[int, int, int], block_shape: tuple[int, int, int] = BLOCK_SHAPE
) -> np.ndarray:
    """(n, 3) int64 origins (t, y, x) of the non-overlapping tiling of a (T, H, W) video by full blocks.

    The frame is cropped to multiples of the block size from the top-left corner and the time tail shorter than
    one block is dropped (paper-spec §6.2); origins are ordered by time, then row, then column.
    """
    counts = [dim // b for dim, b in zip(video_shape, block_shape, strict=True)]
    grid = np.stack(np.meshgrid(*[np.arange(c) for c in counts], indexing="ij"), axis=-1).reshape(-1, 3)
    return (grid * np.asarray(block_shape)).astype(np.int64)


def dense_blocks(frames: np.ndarray, block_shape: tuple[int, int, int] = BLOCK_SHAPE) -> np.ndarray:
    """All non-overlapping full blocks of a clip (short clips doubled first), shape (n, prod(block_shape)) float32."""
    frames = double_short_clip(frames, block_shape)
    bt, bh, bw = block_shape
    nt, nh, nw = (d // b for d, b in zip(frames.shape, block_shape, strict=True))
    if min(nt, nh, nw) == 0:
        return np.zeros((0, bt * bh * bw), dtype=np.float32)
    v = frames[: nt * bt, : nh * bh, : nw * bw].astype(np.float32)
    # (nt, bt, nh, bh, nw, bw) -> (nt, nh, nw, bt, bh, bw): same order as dense_block_origins.
    v = v.reshape(nt, bt, nh, bh, nw, bw).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(v).reshape(nt * nh * nw, bt * bh * bw)


def sample_blocks(
    frames: np.ndarray, n: int, *, block_shape: tuple[int, int, int] = BLOCK_SHAPE, random_state=None
) -> np.ndarray:
    """``n`` blocks at uniformly random positions of a clip (short clips doubled first), (n, prod(block_shape))."""
    frames = double_short_clip(frames, block_shape)
    rng = check_random_state(random_state)
    limits = [d - b + 1 for d, b in zip(frames.shape, block_shape, strict=True)]
    if min(limits) <= 0:
        return np.zeros((0, int(np.prod(block_shape))), dtype=np.float32)
    origins = np.stack([rng.randint(0, lim, size=n) for lim in limits], axis=1)
    bt, bh, bw = block_shape
    out = np.empty((n, bt * bh * bw), dtype=np.float32)
    for i, (t, y, x) in enumerate(origins):
        out[i] = frames[t : t + bt, y : y + bh, x : x + bw].reshape(-1)
    return out


def block_whitener(
    *, max_variance: float = 0.99, max_components: int = 500, contrast_offset: float = 0.001
) -> ContrastPCAWhitener:
    """The block preprocessing of paper-spec §6.2 as one estimator: block mean/std contrast normalisation with the
    constant (mean block std + 0.001), pixel-wise dataset mean/std, PCA-whitening keeping 99 % variance, <= 500 dims."""
    return ContrastPCAWhitener(
        n_components=max_components,
        max_variance=max_variance,
        row_offset=contrast_offset,
        column_offset="none",
    )
