"""FeatureShardWriter: per-frame CNN outputs of ``trainer.predict`` to ``<run_dir>/features/<Split>.npz``.

Each rank streams its features to disk as they come (one raw shard per split, beside its dataset indices and
logits), so no rank holds a split's features in memory; rank zero merges the shards in dataset order (dropping the
samples that ``DistributedSampler`` repeats to even out the ranks) into the file format of docs/pipeline.md, a chunk
of rows at a time. A failure on any rank (a shard) or on rank zero (the merge) is raised on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.gather import gather_objects, run_on_rank_zero
from emotiw.artifacts import FRAME_FEATURE_DTYPE, save_npz

# The width of a split without any frame when the module does not say its own (the paper CNN's conv2 block, 32x11x11).
PAPER_FEATURE_DIM = 3872
MERGE_ROWS = (
    8192  # rows copied at a time when merging: memory stays a few tens of MB whatever the split's size
)


class FeatureShardWriter(BasePredictionWriter):
    """Per-rank shards: ``<out_dir>/.shards/<split>_rank<r>.feats`` (raw float16 rows, written batch by batch) and
    ``<split>_rank<r>.npz`` (their dataset indices and logits); merged by rank zero into ``<split>.npz``."""

    def __init__(self, out_dir: str | Path, splits: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.splits = list(splits)
        self._index: dict[int, list[np.ndarray]] = {}
        self._logits: dict[int, list[np.ndarray]] = {}
        self._feats: dict[int, BinaryIO] = {}
        self._dim: int | None = None
        self.clips_done: list[str] = []  # the clips whose frames this rank embedded, in the order it did

    def _shard(self, split: str, rank: int) -> Path:
        return self.out_dir / ".shards" / f"{split}_rank{rank}.npz"

    def _raw(self, split: str, rank: int) -> Path:
        return self.out_dir / ".shards" / f"{split}_rank{rank}.feats"

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        self._index = {i: [] for i in range(len(self.splits))}
        self._logits = {i: [] for i in range(len(self.splits))}
        (self.out_dir / ".shards").mkdir(parents=True, exist_ok=True)
        self._feats = {i: open(self._raw(s, trainer.global_rank), "wb") for i, s in enumerate(self.splits)}  # noqa: SIM115
        self._dim = getattr(pl_module, "feature_dim", None)  # the CNN's width, also for a split without rows
        self.clips_done = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        feats = prediction["feature"].cpu().numpy().astype(FRAME_FEATURE_DTYPE)
        if self._dim is None:
            self._dim = feats.shape[1]
        self._feats[dataloader_idx].write(np.ascontiguousarray(feats).tobytes())
        self._index[dataloader_idx].append(np.asarray(batch_indices, dtype=np.int64))
        self._logits[dataloader_idx].append(prediction["logits"].cpu().numpy().astype(np.float32))
        for clip_id in batch["clip_id"] if isinstance(batch, dict) else ():
            if not self.clips_done or self.clips_done[-1] != clip_id:
                self.clips_done.append(str(clip_id))

    def _close(self) -> None:
        for fh in self._feats.values():
            fh.close()
        self._feats = {}

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
        self._close()
        for i, split in enumerate(self.splits):
            index, logits = self._index.get(i, []), self._logits.get(i, [])
            save_npz(
                self._shard(split, rank),
                index=np.concatenate(index) if index else np.zeros(0, np.int64),
                logits=np.concatenate(logits) if logits else np.zeros((0, 7), np.float32),
                dim=np.asarray(-1 if self._dim is None else self._dim, np.int64),
            )

    def _merge(self, trainer: L.Trainer) -> None:
        for split in self.splits:
            shards = [self._shard(split, r) for r in range(trainer.world_size)]
            merge_shards(shards, trainer.datamodule.dataset([split]), self.out_dir / f"{split}.npz")
            for shard in shards:
                shard.unlink()
                shard.with_suffix(".feats").unlink(missing_ok=True)


def merge_shards(shards: Sequence[Path], dataset, out_path: Path) -> Path:
    """Merge rank shards of one split into the features file; every frame of ``dataset`` must occur. The features
    go from the shards' raw files to the output a chunk of rows at a time, through a memory-mapped scratch array."""
    index, logits, dims = [], [], []
    for shard in shards:
        with np.load(shard, allow_pickle=False) as z:
            index.append(z["index"])
            logits.append(z["logits"])
            dims.append(int(z["dim"]))
    index_all = np.concatenate(index)
    uniq, first = np.unique(index_all, return_index=True)  # DistributedSampler repeats a few samples
    n = len(dataset)
    if not np.array_equal(uniq, np.arange(n)):
        raise RuntimeError(
            f"{out_path}: the shards cover {len(uniq)} of {n} frames; prediction was incomplete"
        )
    dim = max(dims) if max(dims, default=-1) > 0 else PAPER_FEATURE_DIM
    starts = np.cumsum([0, *(len(i) for i in index)])
    clips = {
        "clip_ids": np.array([c.clip_id for c in dataset.clips], dtype=str),
        "labels": np.array([c.label for c in dataset.clips], dtype=np.int64),
        "offsets": dataset.offsets.astype(np.int64),
        "logits": np.concatenate(logits)[first] if n else np.zeros((0, 7), np.float32),
        "frame_idx": dataset.frame_idx.astype(np.int64),
    }
    if n == 0:
        return save_npz(out_path, feats=np.zeros((0, dim), FRAME_FEATURE_DTYPE), **clips)
    scratch = out_path.parent / f".{out_path.stem}.merging.npy"
    try:
        feats = np.lib.format.open_memmap(scratch, mode="w+", dtype=FRAME_FEATURE_DTYPE, shape=(n, dim))
        for s, shard in enumerate(shards):
            rows = len(index[s])
            if rows == 0:
                continue
            raw = np.memmap(
                shard.with_suffix(".feats"), dtype=FRAME_FEATURE_DTYPE, mode="r", shape=(rows, dim)
            )
            # the output rows whose first occurrence is in this shard, and where in the shard it is
            mine = (first >= starts[s]) & (first < starts[s + 1])
            dest, src = np.flatnonzero(mine), first[mine] - starts[s]
            for c in range(0, len(dest), MERGE_ROWS):
                feats[dest[c : c + MERGE_ROWS]] = raw[src[c : c + MERGE_ROWS]]
            del raw
        feats.flush()
        out = save_npz(out_path, feats=feats, **clips)  # numpy writes a memory map into the zip in chunks
        del feats
    finally:
        scratch.unlink(missing_ok=True)
    return out
