"""``stage=features``: run the trained face CNN over every cached AFEW face and write ``<run_dir>/features/<Split>.npz``.

``trainer.predict`` with one loader per split; :class:`FeatureShardWriter` keeps each rank's outputs with their
dataset indices, writes one shard per rank and split, and rank zero merges the shards (dropping the samples that
``DistributedSampler`` repeats to even out the ranks) into the file format of docs/pipeline.md.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig

from emotiw.artifacts import save_npz
from stages.lightning_fit import instantiate_loggers

log = logging.getLogger(__name__)

FEATURE_DIM = 3872


def features_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / "features" / f"{split}.npz"


class FrameEmbedder(L.LightningModule):
    """Wraps a module with ``embed(faces_uint8 (B,48,48)) -> (logits (B,7), feature (B,3872))`` for prediction."""

    def __init__(self, cnn: torch.nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        logits, feature = self.cnn.embed(batch["face"])
        if feature.shape[1:] != (FEATURE_DIM,):
            raise ValueError(
                f"the CNN's embed gave features of shape {tuple(feature.shape)}, expected (B, {FEATURE_DIM})"
            )
        return {"logits": logits.float(), "feature": feature.float()}


class FeatureShardWriter(BasePredictionWriter):
    """Per-rank shards (``<out_dir>/.shards/<split>_rank<r>.npz``), merged by rank zero into ``<split>.npz``."""

    def __init__(self, out_dir: str | Path, splits: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.splits = list(splits)
        self._buffers: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._buffers = {i: [] for i in range(len(self.splits))}

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self._buffers[dataloader_idx].append(
            (
                np.asarray(batch_indices, dtype=np.int64),
                prediction["logits"].cpu().numpy().astype(np.float32),
                prediction["feature"].cpu().numpy().astype(np.float16),
            )
        )

    def _shard(self, split: str, rank: int) -> Path:
        return self.out_dir / ".shards" / f"{split}_rank{rank}.npz"

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for i, split in enumerate(self.splits):
            parts = self._buffers.get(i, [])
            save_npz(
                self._shard(split, trainer.global_rank),
                index=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64),
                logits=np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 7), np.float32),
                feats=np.concatenate([p[2] for p in parts])
                if parts
                else np.zeros((0, FEATURE_DIM), np.float16),
            )
        trainer.strategy.barrier("feature shards written")
        if trainer.is_global_zero:
            for split in self.splits:
                shards = [self._shard(split, r) for r in range(trainer.world_size)]
                merge_shards(shards, trainer.datamodule.dataset([split]), self.out_dir / f"{split}.npz")
                for shard in shards:
                    shard.unlink()
        trainer.strategy.barrier("feature files merged")


def merge_shards(shards: Sequence[Path], dataset, out_path: Path) -> Path:
    """Merge rank shards of one split into the features file; every frame of ``dataset`` must occur."""
    index, logits, feats = [], [], []
    for shard in shards:
        with np.load(shard, allow_pickle=False) as z:
            index.append(z["index"])
            logits.append(z["logits"])
            feats.append(z["feats"])
    index_all = np.concatenate(index)
    uniq, first = np.unique(index_all, return_index=True)  # DistributedSampler repeats a few samples
    n = len(dataset)
    if not np.array_equal(uniq, np.arange(n)):
        raise RuntimeError(
            f"{out_path}: the shards cover {len(uniq)} of {n} frames; prediction was incomplete"
        )
    return save_npz(
        out_path,
        clip_ids=np.array([c.clip_id for c in dataset.clips], dtype=str),
        labels=np.array([c.label for c in dataset.clips], dtype=np.int64),
        offsets=dataset.offsets.astype(np.int64),
        feats=np.concatenate(feats)[first] if n else np.zeros((0, FEATURE_DIM), np.float16),
        logits=np.concatenate(logits)[first] if n else np.zeros((0, 7), np.float32),
        frame_idx=dataset.frame_idx.astype(np.int64),
    )


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


def load_cnn(cls_path: str, ckpt: str | Path) -> torch.nn.Module:
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"cnn_ckpt={ckpt}: no face CNN checkpoint; run stage=cnn first (or set cnn_ckpt=...)"
        )
    module_name, _, attr = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls.load_from_checkpoint(str(ckpt), map_location="cpu")


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    splits = list(cfg.data.predict_splits)
    model = FrameEmbedder(load_cnn(cfg.cnn_class, cfg.cnn_ckpt))
    out_dir = Path(cfg.paths.run_dir) / "features"
    writer = FeatureShardWriter(out_dir, splits)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[writer], logger=loggers or False)
    start = time.perf_counter()
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    if datamodule.report is not None:
        datamodule.report.save(Path(cfg.paths.output_dir) / "face_report.json")
    metrics: dict[str, Any] = {}
    for split in splits:
        for name, value in split_accuracies(features_path(cfg.paths.run_dir, split)).items():
            metrics[f"{split}/{name}"] = value
        shown = ", ".join(
            f"{k.split('/')[1]}={v:.4f}" if isinstance(v, float) else f"{k.split('/')[1]}={v}"
            for k, v in metrics.items()
            if k.startswith(f"{split}/")
        )
        print(f"[features] {split}: {shown}")
    total = sum(metrics.get(f"{s}/frames", 0) for s in splits)
    metrics["frames_per_second"] = total / seconds if seconds > 0 else float("nan")
    for lg in trainer.loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        lg.save()
    return metrics
