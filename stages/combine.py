"""stage=combine: the paper's decision-level fusion (random search over per-model, per-class weights).

Sources are model names of this run (``aggcnn``, ``audio``, ``irnn``, ``activity``, ``fusion``: the authors' order)
or ``<experiment>/<model>`` for another run's output (submission 7 combines ``submission3/combine`` and
``submission6/combine``). :class:`datamodules.combine_probs.CombineProbsDataModule` aligns their probabilities by
clip id and serves them to :class:`callbacks.combiner.FitCombinerOnProbs` through ``trainer.predict``, so the search
works the same under DDP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from callbacks.combiner import FitCombinerOnProbs
from datamodules.combine_probs import CombineProbsDataModule, source_location
from emotiw.artifacts import SPLITS, probs_path
from lightning_modules.pass_through import FeaturePassThrough
from stages.lightning_fit import build_trainer

log = logging.getLogger(__name__)


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


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    c = cfg.combine
    sources = available_sources(list(c.sources), cfg.paths.run_dir, cfg.paths.runs_dir, c.on_missing_model)
    if len(sources) < 2:
        raise FileNotFoundError(
            f"combine: only {sources} of combine.sources={list(c.sources)} have probabilities "
            f"under {cfg.paths.run_dir}/probs; at least two models are needed"
        )
    callback = FitCombinerOnProbs(
        models=sources,
        estimator=c.estimator,
        run_dir=cfg.paths.run_dir,
        partition=cfg.partition,
        search_splits=c.get("search_splits"),
        runs_dir=cfg.paths.runs_dir,
        task_name=cfg.task_name,
    )
    trainer = build_trainer(cfg, [callback])
    datamodule = CombineProbsDataModule(sources, cfg.paths.run_dir, cfg.paths.runs_dir)
    trainer.predict(FeaturePassThrough(), datamodule=datamodule, return_predictions=False)
    metrics = dict(callback.metrics)
    metrics["combine/n_models"] = len(sources)
    return metrics
