"""Per-frame CNN features of AFEW clips (``<run_dir>/features/<Split>.npz``, written by ``stage=features``), served
either as frame sequences for the IRNN or as k-average-pooled logits for the aggregated-CNN SVM.

File format (docs/pipeline.md): ``clip_ids (N,)``, ``labels (N,)``, ``offsets (N+1,)`` int64 (clip i's frames are
``offsets[i]:offsets[i+1]``), ``feats (F, 3872) float16``, ``logits (F, 7) float32``, ``frame_idx (F,)``.

``representation="sequence"`` batches (IRNN, paper-spec §3)::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str],
     "frames": FloatTensor (B, T, 3872) zero-padded at the end, "lengths": LongTensor (B,),
     "norm_len": LongTensor (B,)}

A batch is padded to its own longest clip (the RNN is causal, so outputs at ``lengths - 1`` do not depend on the
padding). ``norm_len`` is the longest clip of the clip's dataset (the fit splits for training, the split otherwise):
the length the authors padded every clip to, which their loss divides by (paper-spec §3, §12.3).

``representation="pooled"`` batches (aggregated CNN, paper-spec §4; what ``FitSVMOnFeatures`` reads)::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, k*7)}

Clips without frames (no face found) are left out and counted in :attr:`AfewFeaturesDataModule.skipped`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from datamodules.padding import padded_index
from emotiw.aggcnn import PAPER_K, k_average_pool
from emotiw.artifacts import SPLITS, npz_memmap
from emotiw.checks import check_batch, check_number
from emotiw.partitions import Partition

log = logging.getLogger(__name__)

REPRESENTATIONS = ("sequence", "pooled")
FILE_KEYS = ("clip_ids", "labels", "offsets", "feats", "logits")


def _finite_rows(a: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Rows of ``a`` without NaN or inf, checked ``chunk`` rows at a time (``a`` may be a memory map)."""
    return np.concatenate(
        [np.isfinite(a[i : i + chunk]).all(1) for i in range(0, len(a), chunk)] or [np.zeros(0, bool)]
    )


class FeatureFile:
    """One split's feature file, validated; clips without frames dropped (and listed in ``skipped``)."""

    def __init__(self, path: str | Path, split: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no per-frame features for split {split!r}; run stage=features first"
            )
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in FILE_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}; expected {list(FILE_KEYS)}")
            clip_ids, labels, offsets = z["clip_ids"].astype(str), z["labels"].astype(np.int64), z["offsets"]
            logits = z["logits"]
        # Memory-mapped: a clip's frames are read when served, never the whole split at once.
        feats = npz_memmap(path, "feats")
        n = len(clip_ids)
        if labels.shape != (n,) or offsets.shape != (n + 1,):
            raise ValueError(
                f"{path}: {n} clip ids but labels {labels.shape} and offsets {offsets.shape} "
                f"(expected ({n},) and ({n + 1},))"
            )
        if offsets[0] != 0 or offsets[-1] != len(feats) or np.any(np.diff(offsets) < 0):
            raise ValueError(
                f"{path}: offsets must rise from 0 to the {len(feats)} frames, got "
                f"{offsets[0]}..{offsets[-1]}"
            )
        if len(logits) != len(feats):
            raise ValueError(f"{path}: {len(feats)} feature rows but {len(logits)} logit rows")
        bad_frames = np.flatnonzero(~(_finite_rows(feats) & np.isfinite(logits).all(1)))
        if len(bad_frames):
            bad_clips = np.unique(clip_ids[np.searchsorted(offsets, bad_frames, side="right") - 1]).tolist()
            raise ValueError(
                f"{path}: {len(bad_frames)} frames of {len(bad_clips)} clips contain NaN or inf "
                f"(clip ids: {', '.join(bad_clips[:10])})"
            )
        lengths = np.diff(offsets)
        keep = lengths > 0
        self.path, self.split = path, split
        self.skipped = clip_ids[~keep].tolist()
        self.clip_ids, self.labels = clip_ids[keep], labels[keep]
        self.starts, self.lengths = offsets[:-1][keep], lengths[keep]
        self.feats, self.logits = feats, logits

    def __len__(self) -> int:
        return len(self.clip_ids)

    def frames(self, i: int) -> np.ndarray:
        return self.feats[self.starts[i] : self.starts[i] + self.lengths[i]]

    def identity(self, i: int) -> dict[str, Any]:
        """The per-clip keys every dataset item carries."""
        return {"clip_id": str(self.clip_ids[i]), "label": int(self.labels[i]), "split": self.split}

    def frame_logits(self, i: int) -> np.ndarray:
        return self.logits[self.starts[i] : self.starts[i] + self.lengths[i]]


class SequenceDataset(Dataset):
    def __init__(self, file: FeatureFile, norm_len: int | None = None) -> None:
        self.file = file
        self.norm_len = int(norm_len if norm_len is not None else (file.lengths.max() if len(file) else 0))

    def __len__(self) -> int:
        return len(self.file)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            **self.file.identity(i),
            "frames": torch.from_numpy(np.asarray(self.file.frames(i), dtype=np.float32)),
            "norm_len": self.norm_len,
        }


def collate_sequences(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad at the end to the batch's longest clip."""
    lengths = torch.tensor([len(it["frames"]) for it in items], dtype=torch.long)
    frames = torch.nn.utils.rnn.pad_sequence([it["frames"] for it in items], batch_first=True)
    return {
        "clip_id": [it["clip_id"] for it in items],
        "label": torch.tensor([it["label"] for it in items]),
        "split": [it["split"] for it in items],
        "frames": frames,
        "lengths": lengths,
        "norm_len": torch.tensor([it["norm_len"] for it in items], dtype=torch.long),
    }


class PooledDataset(Dataset):
    def __init__(self, file: FeatureFile, k: int) -> None:
        self.file = file
        self.features = (
            np.stack([k_average_pool(file.frame_logits(i), k) for i in range(len(file))]).astype(np.float32)
            if len(file)
            else np.zeros((0, k * file.logits.shape[1]), np.float32)
        )

    def __len__(self) -> int:
        return len(self.file)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.file.identity(i), "features": torch.from_numpy(self.features[i])}


class AfewFeaturesDataModule(L.LightningDataModule):
    """Serves the per-frame feature files by partition: ``fit`` splits train, ``tune`` splits validate, and every
    split (Train, Val, Test) is served for prediction.

    Args:
        features_dir: ``<run_dir>/features`` holding ``Train.npz``, ``Val.npz``, ``Test.npz``.
        partition: a :class:`emotiw.partitions.Partition` or its config.
        representation: ``sequence`` (IRNN) or ``pooled`` (k-average-pooled logits for the SVM).
        k: bins of the pooled representation (paper: 15 -> 105-d).
        batch_size: global batch size (paper IRNN: 64); divided by the world size under DDP.
        predict_splits: splits served by ``predict_dataloader`` (those whose file exists are required).
        pad_to_batch: the training epoch is every fit clip once plus random duplicates up to a multiple of
            ``batch_size``, drawn once from ``seed`` (the authors' loaders, paper-spec §12.9); false serves each
            clip once.
        seed: the duplicates' seed.
    """

    def __init__(
        self,
        features_dir: str,
        partition: Any,
        representation: str = "sequence",
        k: int = PAPER_K,
        batch_size: int = 64,
        num_workers: int = 0,
        predict_splits: tuple[str, ...] | list[str] = SPLITS,
        pad_to_batch: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_batch("data", batch_size, num_workers)
        check_number("data.k", k, min_val=1, integer=True)
        self.features_dir = features_dir
        self.partition = partition
        self.representation = representation
        self.k = k
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_splits = predict_splits
        self.pad_to_batch = pad_to_batch
        self.seed = seed
        self.files: dict[str, FeatureFile] | None = None
        self.skipped: dict[str, list[str]] = {}

    @property
    def partition_(self) -> Partition:
        p = self.partition
        return p if isinstance(p, Partition) else Partition.from_config(p)

    def setup(self, stage: str | None = None) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation={self.representation!r} must be one of {REPRESENTATIONS}")
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by the world size {world}")
        self.batch_size_per_device = self.batch_size // world
        if self.files is not None:
            return
        part = self.partition_
        needed = list(dict.fromkeys([*part.fit, *part.tune, *self.predict_splits]))
        self.files = {s: FeatureFile(Path(self.features_dir) / f"{s}.npz", s) for s in needed}
        self.skipped = {s: f.skipped for s, f in self.files.items() if f.skipped}
        for s, ids in self.skipped.items():
            log.warning(
                "%s: %d clips have no frames (no face) and are left out: %s", s, len(ids), ", ".join(ids[:5])
            )

    def _dataset(self, splits: tuple[str, ...] | list[str], norm_len: int | None = None) -> Dataset:
        if self.representation == "pooled":
            parts = [PooledDataset(self.files[s], self.k) for s in splits]
        else:
            parts = [SequenceDataset(self.files[s], norm_len) for s in splits]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        collate = collate_sequences if self.representation == "sequence" else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size_per_device,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
        )

    def fit_norm_len(self) -> int:
        """The longest clip of the fit splits (the authors' padded length, the loss normaliser)."""
        return int(max(self.files[s].lengths.max() for s in self.partition_.fit if len(self.files[s])))

    def train_dataloader(self) -> DataLoader:
        data = self._dataset(self.partition_.fit, self.fit_norm_len())
        if self.pad_to_batch:  # a multiple of the global batch: under DDP every rank gets whole batches too
            data = Subset(data, padded_index(len(data), self.batch_size, self.seed).tolist())
        return self._loader(data, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        tune = self.partition_.tune
        return self._loader(self._dataset(tune), shuffle=False) if tune else []

    def predict_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(self._dataset([s]), shuffle=False) for s in self.predict_splits if len(self.files[s])
        ]

    def input_dim(self) -> int:
        """The model's input width: the per-frame feature width (sequence; the CNN's, e.g. 3872 or 256) or k x 7."""
        f = next(iter(self.files.values()))
        return int(f.feats.shape[1]) if self.representation == "sequence" else self.k * int(f.logits.shape[1])
