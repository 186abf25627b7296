"""Dense block encodings of whole clips (paper-spec §6.2): every non-overlapping 16x16x10 block of the full grey
frames through the folded SAE encoder."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from emotiw.activity.blocks import BLOCK_SHAPE, dense_blocks
from emotiw.activity.encode import FoldedEncoder

log = logging.getLogger(__name__)


@dataclass
class EncodingReport:
    """Clips that yielded no block features: undecodable files, or too few frames / too small frames for a block."""

    undecodable: dict[str, str] = field(default_factory=dict)
    no_blocks: list[str] = field(default_factory=list)
    n_blocks: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "undecodable": len(self.undecodable),
            "no_blocks": len(self.no_blocks),
            "blocks": self.n_blocks,
        }


def encode_clips(
    clips: Sequence[tuple[str, object]],
    encoder: FoldedEncoder,
    read_gray: Callable[[object], np.ndarray],
    *,
    block_shape: tuple[int, int, int] = BLOCK_SHAPE,
) -> tuple[dict[str, np.ndarray], EncodingReport]:
    """``{clip_id: (n_blocks, K) float16}`` for the clips that have at least one block, and a report of the others.

    ``read_gray(path)`` returns (T, H, W) grey frames and raises ``ValueError`` (naming the file) when it cannot.
    """
    report = EncodingReport()
    out: dict[str, np.ndarray] = {}
    for clip_id, path in clips:
        try:
            frames = read_gray(path)
        except ValueError as err:
            report.undecodable[str(clip_id)] = str(err)
            log.warning("activity: skipping clip %s: %s", clip_id, err)
            continue
        blocks = dense_blocks(frames, block_shape)
        if len(blocks) == 0:
            report.no_blocks.append(str(clip_id))
            log.info(
                "activity: clip %s (%s frames of %s) has no full block",
                clip_id,
                frames.shape[0],
                frames.shape[1:],
            )
            continue
        out[str(clip_id)] = encoder.encode(blocks).astype(np.float16)
        report.n_blocks += len(blocks)
    return out, report
