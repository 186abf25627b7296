"""stage=combine: the paper's decision-level fusion (random search over per-model, per-class weights).

Sources are model names of this run (``aggcnn``, ``audio``, ``irnn``, ``activity``, ``fusion``: the authors' order)
or ``<experiment>/<model>`` for another run's output (submission 7 combines ``submission3/combine`` and
``submission6/combine``). Their ``probs/<model>_<split>.npz`` are aligned by clip id (NaN where a model has no score
for a clip) and served as dict batches to :class:`callbacks.combiner.RandomSearchCombine` through
``trainer.predict``, so the search works the same under DDP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from callbacks.combiner import RandomSearchCombine
from emotiw.artifacts import SPLITS, load_probs, probs_path
from emotiw.combine import align_models
from stages.lightning_fit import instantiate_loggers
from stages.svm import FeaturePassThrough

log = logging.getLogger(__name__)


def source_location(source: str, run_dir: str | Path, runs_dir: str | Path) -> tuple[Path, str]:
    """``"irnn"`` -> (this run, irnn); ``"submission3/combine"`` -> (runs/submission3, combine)."""
    run, _, model = source.rpartition("/")
    return (Path(runs_dir) / run if run else Path(run_dir)), model


def available_sources(
    sources: Sequence[str], run_dir: str | Path, runs_dir: str | Path, on_missing: str = "skip"
) -> list[str]:
    """The sources whose probabilities exist for every split; the others are skipped (logged) or an error."""
    if on_missing not in ("skip", "error"):
        raise ValueError(f"combine.on_missing_model={on_missing!r} must be 'skip' or 'error'")
    kept = []
    for source in sources:
        where, model = source_location(source, run_dir, runs_dir)
        absent = [s for s in SPLITS if not probs_path(where, model, s).is_file()]
        if not absent:
            kept.append(source)
        elif on_missing == "error":
            raise FileNotFoundError(
                f"{probs_path(where, model, absent[0])}: combine source {source!r} has no "
                f"probabilities for {absent}; run its stage first or drop it from combine.sources"
            )
        else:
            log.warning(
                "combine: skipping source %r (no probabilities for %s under %s)", source, absent, where
            )
    return kept


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


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    c = cfg.combine
    sources = available_sources(list(c.sources), cfg.paths.run_dir, cfg.paths.runs_dir, c.on_missing_model)
    if len(sources) < 2:
        raise FileNotFoundError(
            f"combine: only {sources} of combine.sources={list(c.sources)} have probabilities "
            f"under {cfg.paths.run_dir}/probs; at least two models are needed"
        )
    callback = RandomSearchCombine(
        models=sources,
        estimator=c.estimator,
        run_dir=cfg.paths.run_dir,
        partition=cfg.partition,
        search_splits=c.get("search_splits"),
        runs_dir=cfg.paths.runs_dir,
        task_name=cfg.task_name,
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[callback], logger=loggers or False)
    datamodule = CombineProbsDataModule(sources, cfg.paths.run_dir, cfg.paths.runs_dir)
    trainer.predict(FeaturePassThrough(), datamodule=datamodule, return_predictions=False)
    metrics = dict(callback.metrics)
    metrics["combine/n_models"] = len(sources)
    return metrics
