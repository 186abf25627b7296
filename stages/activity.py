"""stage=activity (paper-spec §6): train the synchrony autoencoder on random blocks (a Lightning fit,
checkpointed), encode every dense block of every clip, build the motion-weighted bag of words on the fitting
clips, and fit the chi-squared SVM through ``FitSVMOnFeatures``.

Writes ``<run_dir>/activity/{sae.ckpt, codebook.npz, chosen.json, svm.skops}`` and ``probs/activity_<Split>.npz``.
Under ``partition=retrain`` the SAE and the codebook of the run named in ``from_run`` are reused and only the SVM is
refitted (spec §9 default).

Under DDP every rank fits the SAE (Lightning's DDP) and encodes every clip; rank zero fits the k-means codebook and
broadcasts it; ``FitSVMOnFeatures`` gathers the histograms of all ranks, fits the SVM on rank zero and writes.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from callbacks.gather import is_rank_zero, run_on_rank_zero
from callbacks.log_counts import LogCounts
from datamodules.afew_audio import ClipFeatureDataset, ClipFeaturesDataModule
from emotiw.activity import BagOfWords, cpu_threads, encode_clips, load_codebook, read_gray, save_codebook
from emotiw.artifacts import SPLITS
from emotiw.partitions import Partition
from lightning_modules.sae import SAEModule
from stages.lightning_fit import build_trainer, instantiate_callbacks, instantiate_loggers
from stages.svm import run_svm_stage

log = logging.getLogger(__name__)


def _sae_loggers(cfg: DictConfig) -> list:
    """The stage's loggers, with the CSV log of the SAE fit in its own folder: the SVM trainer that follows
    rewrites ``csv/metrics.csv``."""
    logger_cfg = OmegaConf.to_container(cfg.get("logger") or {}, resolve=True)
    if isinstance(logger_cfg.get("csv"), dict):
        logger_cfg["csv"]["name"] = "csv_sae"
    return instantiate_loggers(OmegaConf.create(logger_cfg))


def train_sae(cfg: DictConfig) -> tuple[SAEModule, dict[str, Any], L.Trainer]:
    """Fit the SAE on whitened random blocks of the fitting clips; return the best checkpoint's module, the fit's
    metrics and its trainer (whose strategy shares the codebook that rank zero fits)."""
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    model: SAEModule = hydra.utils.instantiate(cfg.model, n_visible=datamodule.n_visible)
    model.set_whitening(*datamodule.whitener.affine_map(), datamodule.whitener.row_constant_)
    trainer = build_trainer(cfg, instantiate_callbacks(cfg.get("callbacks")), loggers=_sae_loggers(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and not trainer.fast_dev_run:
        model = SAEModule.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    # the SAE fit's train/<name> and val/<name> as train/sae_<name>, val/sae_<name>: the SVM's train/acc etc. follow
    metrics = {
        f"{split}/sae_{name}": float(v)
        for k, v in trainer.callback_metrics.items()
        for split, _, name in [k.partition("/")]
        if split in ("train", "val")
    }
    metrics["sae/n_visible"] = float(datamodule.n_visible)
    metrics["sae/n_train_blocks"] = float(len(datamodule.train_set))
    sae_path = Path(cfg.paths.output_dir) / "sae.ckpt"
    if best and Path(best).is_file():
        run_on_rank_zero(trainer, lambda: shutil.copyfile(best, sae_path), "activity: saving the SAE")
    else:
        trainer.save_checkpoint(sae_path)  # a collective: every rank calls it, rank zero writes
    return model.cpu().eval(), metrics, trainer


def run(cfg: DictConfig) -> dict[str, Any]:
    partition = Partition.from_config(cfg.partition)
    out_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    threads = cfg.get("cpu_threads")
    start = time.perf_counter()
    if partition.is_retrain:
        source = Path(cfg.paths.runs_dir) / str(partition.from_run) / cfg.task_name
        for name in ("sae.ckpt", "codebook.npz"):
            if not (source / name).is_file():
                raise FileNotFoundError(
                    f"{source / name}: partition=retrain reuses the SAE and codebook of run "
                    f"{partition.from_run!r}; run stage=activity there first"
                )
        sae = SAEModule.load_from_checkpoint(
            source / "sae.ckpt", map_location="cpu", weights_only=True
        ).eval()
    else:
        with cpu_threads(threads):
            sae, metrics, sae_trainer = train_sae(cfg)
    encoder = sae.folded_encoder()
    seconds["sae"] = time.perf_counter() - start

    from emotiw.io.afew import list_splits

    start = time.perf_counter()
    clips = list_splits(cfg.data.afew_root, SPLITS)
    with cpu_threads(threads):
        encodings, report = encode_clips([(c.clip_id, c.video_path) for c in clips], encoder, read_gray)
    seconds["encode"] = time.perf_counter() - start

    start = time.perf_counter()
    if partition.is_retrain:
        bow = load_codebook(source / "codebook.npz")
    else:
        fit_blocks = np.concatenate(
            [encodings[c.clip_id] for c in clips if c.split in partition.fit and c.clip_id in encodings]
        ).astype(np.float32)
        rng = np.random.RandomState(cfg.seed)
        rows = rng.choice(len(fit_blocks), size=min(len(fit_blocks), cfg.bow.codebook_blocks), replace=False)

        def fit_codebook() -> BagOfWords:
            with cpu_threads(threads):
                return BagOfWords(
                    n_words=cfg.bow.n_words,
                    batch_size=cfg.bow.batch_size,
                    max_iter=cfg.bow.max_iter,
                    random_state=cfg.seed,
                ).fit(fit_blocks[rows])

        # k-means on rank zero; every rank then encodes with the same codebook
        bow = run_on_rank_zero(sae_trainer, fit_codebook, "activity: fitting the codebook")
    if is_rank_zero():
        save_codebook(out_dir / "codebook.npz", bow)
        if partition.is_retrain:
            shutil.copyfile(source / "sae.ckpt", out_dir / "sae.ckpt")

    datamodule = ClipFeaturesDataModule(batch_size=cfg.bow.get("serve_batch_size", 256))
    datamodule.tables = {}
    for split in SPLITS:
        refs = [c for c in clips if c.split == split and c.clip_id in encodings]
        hists = bow.histograms([encodings[c.clip_id].astype(np.float32) for c in refs])
        datamodule.tables[split] = ClipFeatureDataset(
            [c.clip_id for c in refs],
            np.array([c.label for c in refs]),
            split,
            hists.reshape(len(refs), bow.n_words),
        )
    seconds["bow"] = time.perf_counter() - start
    counts = {f"activity/clips_{k}": float(v) for k, v in report.counts.items()}
    counts["activity/clips_ok"] = float(len(encodings))
    counts["activity/n_words"] = float(bow.n_words)
    counts.update({f"activity/seconds_{k}": round(v, 2) for k, v in seconds.items()})
    log.info("activity: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    start = time.perf_counter()
    metrics.update(
        run_svm_stage(cfg, datamodule, cfg.task_name, estimator=cfg.svm, extra_callbacks=[LogCounts(counts)])
    )
    log.info("activity: SVM %.1f s", time.perf_counter() - start)
    return {**metrics, **counts}
