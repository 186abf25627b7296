"""stage=irnn: train the IRNN on per-frame CNN features, keep the best epoch, write per-clip probabilities.

1. Fit on ``partition.fit`` splits, validating on ``partition.tune`` every epoch; the checkpoint callback keeps the
   best ``val/acc`` (paper: up to 1000 epochs, best validation epoch kept, no early stop).
   Under ``partition=retrain``: train exactly ``best_epoch`` epochs (from the tuned run's ``irnn/chosen.json``) on
   Train+Val, no validation, and keep the last weights.
2. Record ``{"best_epoch": n_epochs_to_best, "val_acc_best": ...}`` in ``<run_dir>/irnn/chosen.json`` and leave the
   kept weights at ``<run_dir>/irnn/best.ckpt`` (what prediction loads).
3. Predict Train, Val and Test with the kept weights and write ``probs/irnn_<Split>.npz`` with ``features`` = the
   200-d hidden state at the last real frame (the fusion network's RNN input), gathered over ranks.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from callbacks.clip_probs import WriteClipProbs
from callbacks.gather import is_rank_zero
from emotiw.artifacts import save_json
from emotiw.partitions import Partition, chosen_path
from stages.lightning_fit import fit_best_epoch, keep_weights

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    partition = Partition.from_config(cfg.partition)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    # The input size is the width of the features files: 3872 (model.input_size) for the paper's CNN, another CNN's
    # feature width (e.g. model=cnn_res in stage=cnn) otherwise.
    datamodule.setup("fit")
    input_size = datamodule.input_dim()
    if input_size != cfg.model.input_size:
        log.info(
            "irnn: input size %d from the features files (model.input_size=%d)",
            input_size,
            cfg.model.input_size,
        )
    model = hydra.utils.instantiate(cfg.model, input_size=input_size)
    writer = WriteClipProbs(cfg.task_name, cfg.paths.run_dir)
    best = fit_best_epoch(cfg, model, datamodule, cfg.task_name, extra_callbacks=[writer])
    metrics: dict[str, Any] = {k: float(v) for k, v in best.trainer.callback_metrics.items()}
    chosen = {
        **best.chosen,
        "partition": partition.name,
        "fit": list(partition.fit),
        "tune": list(partition.tune),
    }
    if is_rank_zero():
        save_json(chosen_path(cfg.paths.run_dir, cfg.task_name), chosen)

    keep_weights(best, cfg.paths.run_dir, cfg.task_name)
    best.trainer.predict(model, datamodule=datamodule, ckpt_path=best.ckpt_path, return_predictions=False)
    # Per-split accuracies of the kept weights, read back from the probs files (train/acc, val/acc, test/acc).
    metrics.update(writer.metrics)
    metrics["best_epoch"] = best.epochs
    if best.ckpt_path:
        metrics["best_ckpt"] = best.ckpt_path
    return metrics
