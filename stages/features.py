"""``stage=features``: run the trained face CNN over every cached AFEW face and write ``<run_dir>/features/<Split>.npz``.

``trainer.predict`` of :class:`lightning_modules.frame_embedder.FrameEmbedder` with one loader per split;
:class:`callbacks.feature_writer.FeatureShardWriter` writes one shard per rank and split and merges them on rank zero
into the file format of docs/pipeline.md. Under ``trainer=ddp`` each rank builds its share of the missing face cache
entries and embeds the frames of its share of the clips, each once; ``ranks.json`` records which.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig

from callbacks.feature_writer import FeatureShardWriter
from callbacks.gather import is_rank_zero, record_work_split
from lightning_modules.cnn import load_cnn
from lightning_modules.frame_embedder import FrameEmbedder
from stages.lightning_fit import build_trainer

log = logging.getLogger(__name__)


def features_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / "features" / f"{split}.npz"


def split_accuracies(path: str | Path) -> dict[str, float]:
    """Frame-level accuracy and clip-level accuracy of the mean of frame probabilities (labelled clips only)."""
    with np.load(path, allow_pickle=False) as z:
        labels, offsets, logits = z["labels"], z["offsets"], z["logits"].astype(np.float64)
    lengths = np.diff(offsets)
    labelled = labels >= 0
    if not labelled.any() or len(logits) == 0:
        return {"frames": int(len(logits)), "clips": int(len(labels))}
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    frame_labels = np.repeat(labels, lengths)
    frame_ok = (probs.argmax(1) == frame_labels)[frame_labels >= 0]
    clip_probs = np.add.reduceat(probs, offsets[:-1], axis=0) / lengths[:, None]
    clip_ok = (clip_probs.argmax(1) == labels)[labelled]
    return {
        "frames": int(len(logits)),
        "clips": int(len(labels)),
        "frame_acc": float(frame_ok.mean()),
        "clip_acc": float(clip_ok.mean()),
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    splits = list(cfg.data.predict_splits)
    model = FrameEmbedder(load_cnn(checkpoint=cfg.cnn_ckpt))
    out_dir = Path(cfg.paths.run_dir) / "features"
    writer = FeatureShardWriter(out_dir, splits)
    # each rank predicts the frames of its share of the clips, once (AfewFramesDataModule.predict_dataloader)
    trainer = build_trainer(cfg, [writer], use_distributed_sampler=False)
    start = time.perf_counter()
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    record_work_split(
        Path(cfg.paths.output_dir) / "ranks.json", {"faces": datamodule.built, "embed": writer.clips_done}
    )
    if not is_rank_zero():
        return {}
    if datamodule.report is not None:
        datamodule.report.save(Path(cfg.paths.output_dir) / "face_report.json")
    metrics: dict[str, Any] = {}
    for split in splits:
        found = split_accuracies(features_path(cfg.paths.run_dir, split))
        metrics.update({f"{split.lower()}/{name}": value for name, value in found.items()})
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in found.items())
        print(f"[features] {split}: {shown}")
    total = sum(metrics.get(f"{s.lower()}/frames", 0) for s in splits)
    metrics["frames_per_second"] = total / seconds if seconds > 0 else float("nan")
    for lg in trainer.loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        lg.save()
    return metrics
