"""stage=fusion: train the feature-fusion MLP, keep the best-val epoch, write per-clip fused probabilities.

Under a tuning partition the checkpoint with the best ``val/acc`` (first best kept, as the authors' code) is used and
``fusion/chosen.json`` records ``best_epoch`` = the number of epochs trained when it was reached. Under
``partition=retrain`` there is no validation: the module trains exactly the frozen ``best_epoch`` epochs of the run
named in ``partition.from_run`` on Train+Val, and the final weights are used.

Writes ``<run_dir>/probs/fusion_<split>.npz`` for Train, Val, Test, ``fusion/chosen.json``, ``fusion/best.ckpt`` (the
kept weights, what prediction loads) and ``fusion/curves.json`` (train/val accuracy per epoch: the paper's Figure 5).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from callbacks.gather import run_on_rank_zero
from callbacks.learning_curves import RecordLearningCurves
from emotiw.artifacts import SPLITS, ClipProbs, save_json, save_probs
from stages.lightning_fit import fit_best_epoch, keep_weights

log = logging.getLogger(__name__)


def load_kept_weights(module: type[L.LightningModule], ckpt_path: str | Path) -> L.LightningModule:
    """The module saved in a checkpoint, read without unpickling code (tensors and plain values only)."""
    return module.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    curves = RecordLearningCurves(out / "curves.json")
    best = fit_best_epoch(cfg, model, datamodule, "fusion", extra_callbacks=[curves])
    keep_weights(best, cfg.paths.run_dir, "fusion")
    if best.ckpt_path:
        best_model = load_kept_weights(type(model), best.ckpt_path)
    else:
        best_model = model.cpu()
    metrics: dict[str, Any] = {"best_epoch": best.epochs}
    if "val/acc_best" in best.trainer.callback_metrics:
        metrics["val/acc_best"] = float(best.trainer.callback_metrics["val/acc_best"])

    # Every rank holds the full data (a few thousand clips): score them in one pass; rank zero writes.
    datamodule.setup("predict")
    scored = {}
    for split in SPLITS:
        data = datamodule.data[split]
        probs = best_model.predict_proba(torch.as_tensor(data.features)).cpu().numpy()
        scored[split] = ClipProbs(data.clip_ids, data.labels, probs.astype(np.float32))
        labelled = data.labels >= 0
        if labelled.any():
            metrics[f"{split.lower()}/acc"] = float(
                np.mean(probs[labelled].argmax(1) == data.labels[labelled])
            )

    def write() -> None:
        for split, clip_probs in scored.items():
            save_probs(cfg.paths.run_dir, "fusion", split, clip_probs)
        chosen = {
            **best.chosen,
            "variant": str(cfg.model.get("variant", "")),
            "lr": float(cfg.model.lr),
            "momentum": float(cfg.model.momentum),
            "fusion_reg": str(cfg.model.fusion_reg),
            "missing": str(cfg.data.missing),
        }
        save_json(out / "chosen.json", chosen)
        OmegaConf.save(OmegaConf.create({"best_ckpt": best.ckpt_path or ""}), out / "best.yaml")

    run_on_rank_zero(best.trainer, write, "fusion: writing its outputs")
    return metrics
