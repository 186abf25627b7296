"""Dense block encodings of whole clips (paper-spec §6.2): every non-overlapping 16x16x10 block of the full grey
frames through the folded SAE encoder."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from emotiw.activity.blocks import BLOCK_SHAPE, dense_blocks
from emotiw.activity.encode import FoldedEncoder

log = logging.getLogger(__name__)


def read_gray(path) -> np.ndarray:
    """Every decoded frame of a clip in grey (T, H, W) uint8: the activity model's input, in training
    (``stage=activity``) and prediction alike. Raises ``ValueError`` naming the file when it cannot decode."""
    from emotiw.io.video import read_video

    return read_video(path).gray


def encode_clip(
    frames: np.ndarray, encoder: FoldedEncoder, block_shape: tuple[int, int, int] = BLOCK_SHAPE
) -> np.ndarray:
    """(n_blocks, K) float16 encodings of a clip's dense blocks (float16 is what the stage keeps for the codebook
    and the histograms); (0, K) for a clip without a full block."""
    blocks = dense_blocks(frames, block_shape)
    if len(blocks) == 0:
        return np.zeros((0, encoder.n_features), np.float16)
    return encoder.encode(blocks).astype(np.float16)


@dataclass
class EncodingReport:
    """Clips that yielded no block features: undecodable files, or too few frames / too small frames for a block."""

    undecodable: dict[str, str] = field(default_factory=dict)
    no_blocks: list[str] = field(default_factory=list)
    n_blocks: int = 0

    def merge(self, other: EncodingReport) -> EncodingReport:
        """This report and ``other``'s, over both their clips (e.g. two ranks' shares of the clips)."""
        return EncodingReport(
            {**self.undecodable, **other.undecodable},
            [*self.no_blocks, *other.no_blocks],
            self.n_blocks + other.n_blocks,
        )

    @property
    def counts(self) -> dict[str, int]:
        return {
            "undecodable": len(self.undecodable),
            "no_blocks": len(self.no_blocks),
            "blocks": self.n_blocks,
        }


def iter_encoded_clips(
    clips: Sequence[tuple[str, object]],
    encoder: FoldedEncoder,
    read_gray: Callable[[object], np.ndarray],
    report: EncodingReport,
    *,
    block_shape: tuple[int, int, int] = BLOCK_SHAPE,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(clip_id, (n_blocks, K) float16)`` clip by clip, for the clips that have at least one block; the others are
    recorded in ``report``. One clip's encodings at a time: the caller keeps what it needs.

    ``read_gray(path)`` returns (T, H, W) grey frames and raises ``ValueError`` (naming the file) when it cannot.
    """
    for clip_id, path in clips:
        try:
            frames = read_gray(path)
        except ValueError as err:
            report.undecodable[str(clip_id)] = str(err)
            log.warning("activity: skipping clip %s: %s", clip_id, err)
            continue
        encodings = encode_clip(frames, encoder, block_shape)
        if len(encodings) == 0:
            report.no_blocks.append(str(clip_id))
            log.info(
                "activity: clip %s (%s frames of %s) has no full block",
                clip_id,
                frames.shape[0],
                frames.shape[1:],
            )
            continue
        report.n_blocks += len(encodings)
        yield str(clip_id), encodings


def encode_clips(
    clips: Sequence[tuple[str, object]],
    encoder: FoldedEncoder,
    read_gray: Callable[[object], np.ndarray],
    *,
    block_shape: tuple[int, int, int] = BLOCK_SHAPE,
) -> tuple[dict[str, np.ndarray], EncodingReport]:
    """``{clip_id: (n_blocks, K) float16}`` for the clips that have at least one block, and a report of the others
    (every clip's encodings in memory; :func:`iter_encoded_clips` gives them one clip at a time)."""
    report = EncodingReport()
    out = dict(iter_encoded_clips(clips, encoder, read_gray, report, block_shape=block_shape))
    return out, report
