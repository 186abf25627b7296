"""FrameEmbedder: the face CNN in inference mode over AFEW face frames, for ``stage=features`` (paper-spec §3 input)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class FrameEmbedder(L.LightningModule):
    """Wraps a module with ``embed(faces_uint8 (B,48,48)) -> (logits (B,7), feature (B,D))`` and ``feature_dim`` D
    for prediction (the paper's CNN: its conv2 block after max-pool + bias, 32 x 11 x 11 = 3872)."""

    def __init__(self, cnn: torch.nn.Module) -> None:
        super().__init__()
        self.cnn = cnn
        self.feature_dim = int(cnn.feature_dim)
        # Under DDP each rank predicts its share of the clips: a split with fewer clips than ranks leaves some empty.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        logits, feature = self.cnn.embed(batch["face"])
        if feature.shape[1:] != (self.feature_dim,):
            raise ValueError(
                f"the CNN's embed gave features of shape {tuple(feature.shape)}, expected (B, {self.feature_dim})"
            )
        return {"logits": logits.float(), "feature": feature.float()}
