"""LogCounts: fixed numbers of a stage (clip counts per status, dimensions) logged beside its metrics."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class LogCounts(Callback):
    """Logs fixed numbers (clip counts per status, dimensions) with the SVM metrics, from rank zero."""

    def __init__(self, counts: dict[str, float]):
        self.counts = counts

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics(self.counts, step=trainer.global_step)
                lg.save()
