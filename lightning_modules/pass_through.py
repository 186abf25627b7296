"""FeaturePassThrough: the module of the prediction-only stages whose work happens in a callback (the SVM stages and
the combiner): its ``predict_step`` hands each batch on, so the callback sees it as ``outputs``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class FeaturePassThrough(L.LightningModule):
    """A parameter-free module whose ``predict_step`` returns the batch, detached."""

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
