"""Confusion-matrix figures at the end of validation and test, to a PNG in the output dir and to W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger


class ConfusionMatrixFigure(Callback):
    """Draws ``pl_module.<split>_confmat`` (a torchmetrics ConfusionMatrix) as ``<dirpath>/<split>_confusion.png``.

    ``compute()`` runs on every rank (it syncs under DDP); only rank zero draws and writes.
    """

    def __init__(self, dirpath: str, on_val: bool = True, on_test: bool = True) -> None:
        self.dirpath = dirpath
        self.on_val = on_val
        self.on_test = on_test

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        metric = getattr(pl_module, f"{split}_confmat", None)
        if metric is None:
            return
        cm = metric.compute().cpu().numpy()
        if not trainer.is_global_zero:
            return
        from emotiw.plots import confusion_matrix_figure, save_figure

        title = f"{split} epoch {trainer.current_epoch}"
        path = save_figure(
            confusion_matrix_figure(cm, title=title), Path(self.dirpath) / f"{split}_confusion.png"
        )
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key=f"{split}/confusion", images=[str(path)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_val and not trainer.sanity_checking and not trainer.fast_dev_run:
            self._draw(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_test:
            self._draw(trainer, pl_module, "test")
