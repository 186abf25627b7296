"""The generic runner of the SVM stages (``aggcnn``, ``audio``, ``activity``).

A feature datamodule serves every split for prediction; :class:`lightning_modules.pass_through.FeaturePassThrough`
hands its batches to :class:`callbacks.svm_fit.FitSVMOnFeatures`, which gathers them over ranks, fits on rank zero and writes
``chosen.json``, ``svm.skops`` and ``probs/<model>_<Split>.npz``.

Contract for the feature datamodule: ``predict_dataloader()`` returns one loader or a list of loaders that together
cover Train, Val and Test, each batch a dict::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, D)}

(optionally ``"fusion_features"`` when fusion wants another clip feature than the SVM input).

A stage composes it as ``stages/aggcnn.py`` and ``stages/audio.py`` do::

    def run(cfg):
        return run_svm_stage(cfg, hydra.utils.instantiate(cfg.data))   # estimator from cfg.svm (conf/svm/*.yaml)
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig

from callbacks.svm_fit import FitSVMOnFeatures
from lightning_modules.pass_through import FeaturePassThrough
from stages.lightning_fit import build_trainer

log = logging.getLogger(__name__)


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
    trainer = build_trainer(cfg, [callback, *(extra_callbacks or [])])
    trainer.predict(FeaturePassThrough(), datamodule=datamodule, return_predictions=False)
    return dict(callback.metrics)
