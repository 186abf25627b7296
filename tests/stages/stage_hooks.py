"""Callbacks that tests add to a stage's trainer from the command line (``+callbacks.NAME={_target_: ...}``) to stop
or hold it at a chosen point, as a user's Ctrl+C, a scheduler's SIGTERM or a second run would meet it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Send ``signum`` to this process after training batch ``batch`` of epoch ``epoch`` (0-based), mid-epoch, in a
    run that was not resumed (so the resume command this test runs does not stop again)."""

    def __init__(self, epoch: int, batch: int, signum: int) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.ckpt_path is None and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)


class HoldAt(Callback):
    """At the start of epoch ``epoch``, write ``ready`` and wait (at most ``timeout`` s) until ``go`` exists."""

    def __init__(self, epoch: int, ready: str, go: str, timeout: float = 300.0) -> None:
        self.epoch, self.ready, self.go, self.timeout = epoch, Path(ready), Path(go), timeout

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        self.ready.write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
