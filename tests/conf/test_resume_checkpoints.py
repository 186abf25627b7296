"""The default checkpoint callbacks: the best epoch by val/acc, and a last.ckpt to resume from after every epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_modules.fusion import FusionModule
from stages.lightning_fit import instantiate_callbacks
from tests.helpers import compose_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_last_ckpt_for_resume_is_written_every_epoch_without_improvement(tmp_path: Path) -> None:
    cfg = compose_cfg([], tmp_path)  # the default stage's checkpointing (fusion's keeps no last.ckpt)
    callbacks = [c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, ModelCheckpoint)]
    g = torch.Generator().manual_seed(0)
    rows = [{"features": torch.randn(6, generator=g), "label": torch.tensor(i % 7)} for i in range(14)]
    loader = DataLoader(rows, batch_size=7)
    # lr 0: val/acc never improves after the first epoch, so only epoch 0 is the best
    model = FusionModule(in_dims=(2, 2, 2), hidden_dims=(3, 3, 3), shared_dim=4, lr=0.0)
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader)
    best = trainer.checkpoint_callback
    assert best.monitor == "val/acc" and Path(best.best_model_path).name == "epoch_000.ckpt"
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert (
        torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 2
    )  # the last epoch, not the best
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
