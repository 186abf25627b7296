"""FeatureShardWriter: per-frame CNN outputs of ``trainer.predict`` to ``<run_dir>/features/<Split>.npz``.

Each rank keeps its outputs with their dataset indices and writes one shard per split; rank zero merges the shards
(dropping the samples that ``DistributedSampler`` repeats to even out the ranks) into the file format of
docs/pipeline.md. A failure on any rank (a shard) or on rank zero (the merge) is raised on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.gather import gather_objects, run_on_rank_zero
from emotiw.artifacts import FRAME_FEATURE_DTYPE, save_npz
from lightning_modules.frame_embedder import FEATURE_DIM


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
                prediction["feature"].cpu().numpy().astype(FRAME_FEATURE_DTYPE),
            )
        )

    def _shard(self, split: str, rank: int) -> Path:
        return self.out_dir / ".shards" / f"{split}_rank{rank}.npz"

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        error = None
        try:
            self._write_shards(trainer.global_rank)
        except Exception as err:
            error = f"rank {trainer.global_rank}: {type(err).__name__}: {err}"
        # Every rank learns whether every shard was written (the all-gather is also the barrier before the merge).
        errors = [e for e in gather_objects(error) if e is not None]
        if errors:
            raise RuntimeError(
                f"FeatureShardWriter: writing the feature shards failed on {'; '.join(errors)}"
            )
        run_on_rank_zero(trainer, lambda: self._merge(trainer), "FeatureShardWriter merging the shards")

    def _write_shards(self, rank: int) -> None:
        for i, split in enumerate(self.splits):
            parts = self._buffers.get(i, [])
            save_npz(
                self._shard(split, rank),
                index=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64),
                logits=np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 7), np.float32),
                feats=np.concatenate([p[2] for p in parts])
                if parts
                else np.zeros((0, FEATURE_DIM), FRAME_FEATURE_DTYPE),
            )

    def _merge(self, trainer: L.Trainer) -> None:
        for split in self.splits:
            shards = [self._shard(split, r) for r in range(trainer.world_size)]
            merge_shards(shards, trainer.datamodule.dataset([split]), self.out_dir / f"{split}.npz")
            for shard in shards:
                shard.unlink()


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
        feats=np.concatenate(feats)[first] if n else np.zeros((0, FEATURE_DIM), FRAME_FEATURE_DTYPE),
        logits=np.concatenate(logits)[first] if n else np.zeros((0, 7), np.float32),
        frame_idx=dataset.frame_idx.astype(np.int64),
    )
