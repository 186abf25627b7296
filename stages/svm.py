"""The generic runner of the SVM stages (``aggcnn``, ``audio``, ``activity``).

A feature datamodule serves every split for prediction; a pass-through module hands its batches to
:class:`callbacks.svm_fit.FitSVMOnFeatures`, which gathers them over ranks, fits on rank zero and writes
``chosen.json``, ``svm.skops`` and ``probs/<model>_<Split>.npz``.

Contract for the feature datamodule: ``predict_dataloader()`` returns one loader or a list of loaders that together
cover Train, Val and Test, each batch a dict::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, D)}

(optionally ``"fusion_features"`` when fusion wants another clip feature than the SVM input).

From a stage function::

    from stages.svm import run_svm_stage

    def run(cfg):                                   # e.g. stages/audio.py, runner: stages.audio.run
        datamodule = AudioFeaturesDataModule(...)   # or hydra.utils.instantiate(cfg.data)
        return run_svm_stage(cfg, datamodule, "audio")   # estimator from cfg.svm (conf/svm/*.yaml)

or, when ``cfg.data`` already is that datamodule, point the stage config at ``runner: stages.svm.run`` and add
``- /svm: rbf`` (or ``chi2``) to its defaults.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from callbacks.svm_fit import FitSVMOnFeatures
from stages.lightning_fit import instantiate_loggers

log = logging.getLogger(__name__)


class FeaturePassThrough(L.LightningModule):
    """A parameter-free module whose ``predict_step`` returns the batch, so callbacks see it as ``outputs``."""

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def run_svm_stage(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    model_name: str | None = None,
    estimator: Any = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> dict[str, float]:
    """Predict over ``datamodule``'s splits, fit the SVM on the gathered features, write its artifacts.

    Args:
        cfg: the composed stage config (uses ``seed``, ``trainer``, ``logger``, ``partition``, ``paths``, ``svm``).
        datamodule: serves dict batches for Train, Val and Test through ``predict_dataloader()``.
        model_name: names the outputs (default ``cfg.task_name``).
        estimator: an ``emotiw.svm.GridSearchSVM`` or its config (default ``cfg.svm``).

    Returns:
        The metrics: ``<model>/C``, ``<model>/gamma``, ``<model>/tune_score``, ``train/acc``, ``val/acc``
        (and ``test/acc`` when Test labels are known).
    """
    L.seed_everything(cfg.seed, workers=True)
    model_name = model_name or cfg.task_name
    estimator = estimator if estimator is not None else cfg.get("svm")
    if estimator is None:
        raise ValueError(
            f"stage {model_name!r}: no SVM given; add `- /svm: rbf` (or chi2) to the stage defaults"
        )
    callback = FitSVMOnFeatures(
        model_name=model_name,
        estimator=estimator,
        run_dir=cfg.paths.run_dir,
        partition=cfg.partition,
        runs_dir=cfg.paths.runs_dir,
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[callback, *(extra_callbacks or [])], logger=loggers or False
    )
    trainer.predict(FeaturePassThrough(), datamodule=datamodule, return_predictions=False)
    return dict(callback.metrics)


def run(cfg: DictConfig) -> dict[str, float]:
    """Hydra runner: ``cfg.data`` is the feature datamodule, ``cfg.svm`` the estimator, ``cfg.task_name`` the model."""
    return run_svm_stage(cfg, hydra.utils.instantiate(cfg.data))
