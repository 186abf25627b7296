"""The generic Lightning stage: instantiate datamodule, module, callbacks, loggers and trainer; fit; test the best
checkpoint. Stages with extra steps (writing per-clip probabilities, fitting SVMs) add callbacks or wrap this."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

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


def build(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Instantiate everything a Lightning stage needs, seeded; returns a dict of the objects."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + list(extra_callbacks or [])
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return {
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }


def log_hyperparameters(
    cfg: DictConfig, objects: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Log the resolved config (and e.g. a data hash) once, from rank zero."""
    trainer: L.Trainer = objects["trainer"]
    if not trainer.loggers:
        return
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams["model/params_total"] = sum(p.numel() for p in objects["model"].parameters())
    hparams.update(extra or {})
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)


def fit_and_test(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    objects = build(cfg, extra_callbacks)
    trainer: L.Trainer = objects["trainer"]
    model, datamodule = objects["model"], objects["datamodule"]
    data_hash = getattr(datamodule, "data_hash", None)
    log_hyperparameters(cfg, objects, {"data/hash": data_hash() if callable(data_hash) else None})

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
