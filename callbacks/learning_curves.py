"""RecordLearningCurves: train and val accuracy and loss per epoch to a JSON file (the paper's Figure 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from emotiw.artifacts import save_json


class RecordLearningCurves(Callback):
    """Collect ``train/acc`` and ``val/acc`` after every epoch and rewrite ``curves.json`` (rank zero)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key in ("train/acc", "train/loss", "val/acc", "val/loss"):
            if key in m:
                row[key] = float(m[key])
        self.rows.append(row)
        if trainer.is_global_zero:
            save_json(self.path, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
