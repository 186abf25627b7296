"""ModelCheckpoint whose ``last.ckpt`` follows every epoch, so a resumed run loses at most the epoch in progress.

Lightning's ``save_last`` rewrites ``last.ckpt`` only when it also saves a top-k checkpoint, i.e. when the monitored
metric improves; after a plateau of N epochs a kill cost N epochs. This subclass writes it at the end of every
epoch's checkpoint point (after validation, or after the training epoch when checkpoints are saved there).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # skipped when this step already saved (Lightning then wrote last.ckpt too), in sanity checks and fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
