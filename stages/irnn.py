"""stage=irnn: train the IRNN on per-frame CNN features, keep the best epoch, write per-clip probabilities.

1. Fit on ``partition.fit`` splits, validating on ``partition.tune`` every epoch; the checkpoint callback keeps the
   best ``val/acc`` (paper: up to 1000 epochs, best validation epoch kept, no early stop).
   Under ``partition=retrain``: train exactly ``best_epoch`` epochs (from the tuned run's ``irnn/chosen.json``) on
   Train+Val, no validation, and keep the last weights.
2. Record ``{"best_epoch": n_epochs_to_best, "val_acc_best": ...}`` in ``<run_dir>/irnn/chosen.json``.
3. Predict Train, Val and Test with the kept weights and write ``probs/irnn_<Split>.npz`` with ``features`` = the
   200-d hidden state at the last real frame (the fusion network's RNN input), gathered over ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from callbacks.clip_probs import WriteClipProbs
from emotiw.artifacts import save_json
from emotiw.partitions import Partition, chosen_path, frozen_choice
from stages.lightning_fit import instantiate_callbacks, instantiate_loggers, log_hyperparameters

log = logging.getLogger(__name__)


def _best_epoch(checkpoint: ModelCheckpoint | None) -> tuple[str | None, int | None, float | None]:
    """(path, epochs trained up to the best checkpoint, its score) of the best checkpoint, or Nones."""
    if checkpoint is None or not checkpoint.best_model_path:
        return None, None, None
    ckpt = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    score = checkpoint.best_model_score
    return checkpoint.best_model_path, int(ckpt["epoch"]) + 1, None if score is None else float(score)


def run(cfg: DictConfig) -> dict[str, Any]:
    partition = Partition.from_config(cfg.partition)
    frozen = frozen_choice(partition, cfg.paths.runs_dir, cfg.task_name)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    trainer_overrides: dict[str, Any] = {}
    if frozen is not None:
        # Retrain: no tune split, so no best-epoch selection; train exactly the tuned run's epoch count.
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        callbacks.append(ModelCheckpoint(dirpath=Path(cfg.paths.output_dir) / "checkpoints", save_last=True))
        trainer_overrides = {
            "max_epochs": int(frozen["best_epoch"]),
            "min_epochs": int(frozen["best_epoch"]),
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
        }
        log.info(
            "irnn retrain: %d epochs on %s (frozen from run %s)",
            frozen["best_epoch"],
            partition.fit,
            partition.from_run,
        )
    writer = WriteClipProbs(cfg.task_name, cfg.paths.run_dir)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[*callbacks, writer],
        logger=instantiate_loggers(cfg.get("logger")) or False,
        **trainer_overrides,
    )
    log_hyperparameters(cfg, {"trainer": trainer, "model": model})
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if frozen is not None:
        best_path, best_epoch, best_score = None, trainer.current_epoch, None
        chosen = {"best_epoch": int(frozen["best_epoch"]), "frozen_from": partition.from_run}
    else:
        best_path, best_epoch, best_score = _best_epoch(trainer.checkpoint_callback)
        if best_path is None:  # fast_dev_run or checkpointing off: the current weights
            log.warning("irnn: no best checkpoint; predicting with the current weights")
            best_epoch = max(trainer.current_epoch, 1)
        chosen = {"best_epoch": best_epoch, "val_acc_best": best_score}
    chosen.update(partition=partition.name, fit=list(partition.fit), tune=list(partition.tune))
    if trainer.is_global_zero:
        save_json(chosen_path(cfg.paths.run_dir, cfg.task_name), chosen)

    trainer.predict(model, datamodule=datamodule, ckpt_path=best_path, return_predictions=False)
    # Per-split accuracies of the kept weights, read back from the probs files (train/acc, val/acc, test/acc).
    metrics.update(writer.metrics)
    metrics["best_epoch"] = chosen["best_epoch"]
    if best_path:
        metrics["best_ckpt"] = best_path
    return metrics
