"""stage=audio: IS10 features, PCA-whitening (fitted on partition.fit, reused under retrain), RBF SVM.

Under ``trainer=ddp`` each rank extracts its share of the clips and they gather once; ``ranks.json`` records which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from callbacks.gather import is_rank_zero, launch_ranks, record_work_split
from callbacks.log_counts import LogCounts
from stages.svm import run_svm_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    launch_ranks(cfg.trainer)  # under trainer=ddp each rank extracts its share of the clips in setup
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("predict")
    record_work_split(Path(cfg.paths.output_dir) / "ranks.json", {"extract": datamodule.extracted})
    if is_rank_zero():
        datamodule.save_preprocessor(cfg.paths.run_dir)
    counts = {f"audio/clips_{k}": float(v) for k, v in datamodule.report.counts.items()}
    counts["audio/n_components"] = float(datamodule.whitener.n_components_)
    counts["audio/n_columns_kept"] = float(datamodule.scaler.keep_.sum())
    missing = [c for c in datamodule.report.missing]
    if missing:
        log.warning(
            "audio: %d clips without usable audio (%s), missing_audio=%s",
            len(missing),
            datamodule.report.summary(),
            cfg.data.missing_audio,
        )
    metrics = run_svm_stage(cfg, datamodule, cfg.task_name, extra_callbacks=[LogCounts(counts)])
    return {**metrics, **counts}
