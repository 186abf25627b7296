"""A Lightning checkpoint of an untrained, seeded CNNModule: what stage=cnn leaves, without training one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lightning_modules.cnn import CNNModule


def save_cnn_ckpt(path: Path, seed: int = 0, **hparams) -> Path:
    torch.manual_seed(seed)
    model = CNNModule(**hparams)
    # A normaliser like a trained one's (faces are uint8), so the features are not dominated by the raw pixel scale.
    model.set_normaliser(torch.full((48, 48), 120.0), torch.full((48, 48), 60.0))
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
