"""The fusion network's input (paper-spec §7): the clip features of several models side by side, in the models'
order (aggcnn 105 | audio 10 | irnn 200). A model that did not score a clip (no face, no audio) either leaves zeros in
its columns, so its dense layer contributes only its bias, or drops the clip (``missing``).

One function for training (``datamodules.fusion_features``) and prediction (``emotiw.clip_models.FusionNet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MISSING_MODES = ("zeros", "drop")


def fuse_features(
    blocks: Sequence[np.ndarray], present: np.ndarray, missing: str = "zeros"
) -> tuple[np.ndarray, np.ndarray]:
    """The fusion input of N clips.

    Args:
        blocks: one (N, d_m) array per model; the rows of clips the model did not score are ignored.
        present: (N, M) bool, which models scored each clip.
        missing: ``zeros`` or ``drop`` (module docstring).

    Returns:
        features (N', sum d_m) float32 and keep (N,) bool, the clips kept (all with ``zeros``, those every model
        scored with ``drop``).
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing={missing!r} must be one of {', '.join(MISSING_MODES)}")
    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != len(blocks):
        raise ValueError(f"present must be (N, {len(blocks)}), got {present.shape}")
    columns = [
        np.where(present[:, [m]], np.asarray(block, dtype=np.float32), np.float32(0))
        for m, block in enumerate(blocks)
    ]
    keep = present.all(axis=1) if missing == "drop" else np.ones(len(present), dtype=bool)
    return np.hstack(columns)[keep], keep
