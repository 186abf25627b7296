"""A stand-in for lightning_modules.cnn.CNNModule with the same `embed` interface (until the real one is trained)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F


class StandInCNN(L.LightningModule):
    """Deterministic: logits from a seeded linear map of the face, feature = 32 scaled copies of an 11x11 pooling."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        gen = torch.Generator().manual_seed(seed)
        self.head = torch.nn.Linear(48 * 48, 7)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(7, 48 * 48, generator=gen) * 0.01)
            self.head.bias.zero_()
        self.register_buffer("channel_scale", torch.linspace(0.5, 2.0, 32))

    @torch.no_grad()
    def embed(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = faces.float() / 255.0
        logits = self.head(x.flatten(1))
        pooled = F.adaptive_avg_pool2d(x[:, None], 11)  # (B,1,11,11)
        feature = (pooled * self.channel_scale[None, :, None, None]).flatten(1)
        return logits, feature


def save_standin_ckpt(path: Path, seed: int = 0) -> Path:
    model = StandInCNN(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path
