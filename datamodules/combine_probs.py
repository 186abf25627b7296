"""Per-clip probabilities of several models, aligned by clip id, served for the decision-level combiner.

A source is a model name of this run (``irnn``) or ``<experiment>/<model>`` for another run's output (submission 7
combines ``submission3/combine`` and ``submission6/combine``); its ``probs/<model>_<split>.npz`` are read and
aligned by clip id (NaN where a model has no score for a clip). Every split is served for prediction as dict batches::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, M*7)}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from emotiw.artifacts import SPLITS, load_probs
from emotiw.checks import check_batch
from emotiw.combine import align_models


def source_location(source: str, run_dir: str | Path, runs_dir: str | Path) -> tuple[Path, str]:
    """``"irnn"`` -> (this run, irnn); ``"submission3/combine"`` -> (runs/submission3, combine)."""
    run, _, model = source.rpartition("/")
    return (Path(runs_dir) / run if run else Path(run_dir)), model


class _Rows(Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class CombineProbsDataModule(L.LightningDataModule):
    """Serves every split's aligned probabilities: ``features`` = the sources' (N, M*7) hstacked, NaN = absent."""

    def __init__(self, sources: Sequence[str], run_dir: str, runs_dir: str, batch_size: int = 256) -> None:
        super().__init__()
        check_batch("data", batch_size)
        self.sources = list(sources)
        self.run_dir, self.runs_dir, self.batch_size = run_dir, runs_dir, batch_size
        self.rows: list[dict[str, Any]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        for split in SPLITS:
            per = {}
            for source in self.sources:
                where, model = source_location(source, self.run_dir, self.runs_dir)
                cp = load_probs(where, model, split)
                per[source] = (cp.clip_ids, cp.labels, cp.probs)
            ids, labels, X = align_models(per)
            feats = torch.as_tensor(X, dtype=torch.float32)
            self.rows += [
                {"clip_id": str(c), "split": split, "label": torch.tensor(int(lab)), "features": f}
                for c, lab, f in zip(ids.tolist(), labels.tolist(), feats, strict=True)
            ]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Rows(self.rows), batch_size=self.batch_size, shuffle=False)
