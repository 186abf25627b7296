"""What every Lightning stage shares: the one Trainer builder, the loggers and callbacks from the config, the
hyperparameter log, the generic fit-then-test-best runner, and the fit that keeps the best epoch (or, under a retrain
partition, trains exactly the tuned run's epoch count)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from callbacks.gather import run_on_rank_zero
from emotiw.artifacts import atomic_copy, best_ckpt_path
from emotiw.partitions import Partition, frozen_choice

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    callbacks: list[Callback] = []
    for name, cb_conf in (cfg or {}).items():
        if isinstance(cb_conf, DictConfig) and "_target_" in cb_conf:
            log.info("callback %s: %s", name, cb_conf._target_)
            callbacks.append(hydra.utils.instantiate(cb_conf))
    return callbacks


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    loggers: list[Logger] = []
    for _, lg_conf in (cfg or {}).items():
        if isinstance(lg_conf, DictConfig) and "_target_" in lg_conf:
            loggers.append(hydra.utils.instantiate(lg_conf))
    return loggers


def build_trainer(
    cfg: DictConfig,
    callbacks: Sequence[Callback] = (),
    loggers: list[Logger] | None = None,
    **overrides: Any,
) -> L.Trainer:
    """The Trainer of every stage: ``cfg.trainer`` with these callbacks, the configured loggers (or ``loggers``) and
    ``overrides`` of single trainer arguments."""
    if loggers is None:
        loggers = instantiate_loggers(cfg.get("logger"))
    return hydra.utils.instantiate(
        cfg.trainer, callbacks=list(callbacks), logger=loggers or False, **overrides
    )


def log_hyperparameters(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, extra: dict[str, Any] | None = None
) -> None:
    """Log the resolved config (and e.g. a data hash) once, from rank zero."""
    if not trainer.loggers:
        return
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams["model/params_total"] = sum(p.numel() for p in model.parameters())
    hparams.update(extra or {})
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)


def fit_and_test(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Instantiate the datamodule, module, callbacks, loggers and trainer (seeded); fit; test the best checkpoint."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    trainer = build_trainer(cfg, [*instantiate_callbacks(cfg.get("callbacks")), *(extra_callbacks or [])])
    data_hash = getattr(datamodule, "data_hash", None)
    log_hyperparameters(cfg, trainer, model, {"data/hash": data_hash() if callable(data_hash) else None})

    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        ckpt_path = None
        if trainer.checkpoint_callback is not None:
            ckpt_path = trainer.checkpoint_callback.best_model_path or None
        if ckpt_path is None and cfg.get("train", True):
            log.warning("no best checkpoint found; testing the current weights")
        if trainer.fast_dev_run:
            ckpt_path = None
        trainer.test(
            model=model,
            datamodule=datamodule,
            ckpt_path=ckpt_path or (None if cfg.get("train", True) else cfg.get("ckpt_path")),
        )
        metrics.update(trainer.callback_metrics)
        if ckpt_path:
            metrics["best_ckpt"] = ckpt_path
    return metrics


@dataclass
class BestEpoch:
    """The outcome of :func:`fit_best_epoch`.

    Attributes:
        trainer: the fitted trainer.
        ckpt_path: the best checkpoint, or None when the final weights are the kept ones (retrain, or no checkpoint).
        epochs: epochs trained up to the kept weights (1-based: "train exactly this many").
        chosen: what the stage records in ``<stage>/chosen.json`` (``best_epoch`` and ``val_acc_best`` or
            ``frozen_from``).
    """

    trainer: L.Trainer
    ckpt_path: str | None
    epochs: int
    chosen: dict[str, Any] = field(default_factory=dict)


def checkpoint_epochs(path: str | Path) -> int:
    """Epochs trained when a checkpoint was written (Lightning stores the 0-based epoch)."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) + 1


def fit_best_epoch(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    stage: str,
    extra_callbacks: Sequence[Callback] = (),
) -> BestEpoch:
    """Fit on ``partition.fit`` keeping the epoch with the best monitored score on ``partition.tune`` (the
    configured ``ModelCheckpoint``; first best kept, no early stop), or, under a retrain partition, train exactly the
    ``best_epoch`` of the tuned run's ``<stage>/chosen.json`` with no validation and keep the final weights."""
    partition = Partition.from_config(cfg.partition)
    frozen = frozen_choice(partition, cfg.paths.runs_dir, stage)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    overrides: dict[str, Any] = {}
    if frozen is not None:
        epochs = int(frozen["best_epoch"])
        # No tune split, so no best-epoch selection: the final weights, saved as last.ckpt for a resume.
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        callbacks.append(ModelCheckpoint(dirpath=Path(cfg.paths.output_dir) / "checkpoints", save_last=True))
        overrides = {
            "max_epochs": epochs,
            "min_epochs": epochs,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
        }
        log.info(
            "%s retrain: exactly %d epochs on %s (frozen from run %s)",
            stage,
            epochs,
            "+".join(partition.fit),
            partition.from_run,
        )
    trainer = build_trainer(cfg, [*callbacks, *extra_callbacks], **overrides)
    log_hyperparameters(cfg, trainer, model)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    if frozen is not None:
        return BestEpoch(trainer, None, epochs, {"best_epoch": epochs, "frozen_from": partition.from_run})
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        log.warning(
            "%s: no best checkpoint (fast_dev_run or checkpointing off); keeping the current weights", stage
        )
        epochs = max(trainer.current_epoch, 1)
        return BestEpoch(trainer, None, epochs, {"best_epoch": epochs, "val_acc_best": None})
    score = checkpoint.best_model_score
    epochs = checkpoint_epochs(checkpoint.best_model_path)
    chosen = {"best_epoch": epochs, "val_acc_best": None if score is None else float(score)}
    return BestEpoch(trainer, checkpoint.best_model_path, epochs, chosen)


def keep_weights(best: BestEpoch, run_dir: str | Path, stage: str) -> Path:
    """Leave the kept weights (the best checkpoint, or the final weights) at ``<run_dir>/<stage>/best.ckpt``, the
    path prediction loads them from (``lightning_modules/trained_run.py``); atomic. Call on every rank."""
    path = best_ckpt_path(run_dir, stage)
    if best.ckpt_path:
        run_on_rank_zero(
            best.trainer, lambda: atomic_copy(best.ckpt_path, path), f"{stage}: keeping its weights"
        )
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        best.trainer.save_checkpoint(tmp)  # every rank; Lightning writes on rank zero
        run_on_rank_zero(best.trainer, lambda: os.replace(tmp, path), f"{stage}: keeping its weights")
    return path
