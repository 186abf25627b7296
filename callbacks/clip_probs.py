"""WriteClipProbs: per-clip probabilities of ``trainer.predict`` to ``<run_dir>/probs/<model>_<Split>.npz``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from callbacks.gather import ClipTable, gather_objects, run_on_rank_zero
from emotiw.artifacts import SPLITS, ClipProbs, save_probs
from emotiw.labels import UNLABELLED

REQUIRED = ("clip_id", "label", "split", "probs")


class WriteClipProbs(Callback):
    """Gathers ``predict_step`` dicts ``{clip_id, label, split, probs, features}`` from every rank, de-duplicates
    by clip id and, on rank zero, writes ``probs/<model_name>_<Split>.npz``; per-split accuracies (or rank zero's
    error) are broadcast to every rank, the accuracies in :attr:`metrics`."""

    def __init__(self, model_name: str, run_dir: str | Path) -> None:
        super().__init__()
        self.model_name = model_name
        self.run_dir = Path(run_dir)
        self.metrics: dict[str, float] = {}
        self._table = ClipTable(required=REQUIRED)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._table = ClipTable(required=REQUIRED)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._table.add(outputs)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shards = gather_objects(self._table.arrays())
        self.metrics = run_on_rank_zero(
            trainer, lambda: self.write(ClipTable.merge(shards)), f"WriteClipProbs({self.model_name!r})"
        )

    def write(self, table: dict[str, np.ndarray]) -> dict[str, float]:
        """Write every split's probabilities; return ``<split>/acc`` where labels are known."""
        metrics: dict[str, float] = {}
        for split in SPLITS:
            rows = table["split"] == split
            if not rows.any():
                continue
            probs, labels = table["probs"][rows], table["label"][rows]
            feats = table["features"][rows] if "features" in table else None
            save_probs(
                self.run_dir, self.model_name, split, ClipProbs(table["clip_id"][rows], labels, probs, feats)
            )
            known = labels != UNLABELLED
            if known.any():
                metrics[f"{split.lower()}/acc"] = float(np.mean(probs[known].argmax(1) == labels[known]))
        return metrics
