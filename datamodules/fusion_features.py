"""Clip-level features of several models, concatenated for the fusion MLP (paper-spec §7).

Reads ``<run_dir>/probs/<model>_<split>.npz`` (the ``features`` array) of each model in ``models`` order
(aggcnn 105 | audio 10 | irnn 200). A clip that some model cannot score (no face, no audio) is treated as the
``missing`` option says: ``zeros`` (default) puts zeros in that modality's columns, so the modality's dense layer
contributes only its bias, as if the modality were silent; ``drop`` removes the clip from training and scoring
(its fused probabilities are then absent from ``probs/fusion_<split>.npz``, like any model that cannot score a clip).

A training epoch is every fit clip once plus random duplicates up to a multiple of ``batch_size`` (the authors'
code, paper-spec §7), so every batch is full; the duplicates are drawn once, from ``seed``, so every rank and every
run with that seed pads alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.padding import padded_index
from emotiw.artifacts import SPLITS, load_probs, probs_path
from emotiw.checks import check_batch, check_numbers
from emotiw.fusion import fuse_features


@dataclass
class FusedSplit:
    """One split's concatenated features: ``present`` (N, n_models) says which models scored each clip."""

    split: str
    clip_ids: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    present: np.ndarray


def load_fused_split(
    run_dir: str | Path,
    models: Sequence[str],
    split: str,
    in_dims: Sequence[int] | None = None,
    missing: str = "zeros",
) -> FusedSplit:
    """Align the models' per-clip features of one split by clip id (union), per the ``missing`` rule."""
    per_model = []
    for i, model in enumerate(models):
        cp = load_probs(run_dir, model, split)
        if cp.features is None:
            raise ValueError(
                f"{probs_path(run_dir, model, split)}: has no `features` array; the fusion MLP needs "
                f"model {model!r}'s clip-level features"
            )
        if in_dims is not None and cp.features.shape[1] != in_dims[i]:
            raise ValueError(
                f"{probs_path(run_dir, model, split)}: features have {cp.features.shape[1]} columns, "
                f"but model.in_dims[{i}]={in_dims[i]}"
            )
        if not np.all(np.isfinite(cp.features)):
            raise ValueError(f"{probs_path(run_dir, model, split)}: features contain NaN or inf")
        per_model.append(cp)
    ids = np.array(sorted(set().union(*(set(cp.clip_ids.tolist()) for cp in per_model))))
    index = {c: i for i, c in enumerate(ids.tolist())}
    labels = np.full(len(ids), -2, dtype=np.int64)
    present = np.zeros((len(ids), len(models)), dtype=bool)
    blocks = []
    for m, cp in enumerate(per_model):
        rows = np.array([index[c] for c in cp.clip_ids.tolist()], dtype=np.int64)
        block = np.zeros((len(ids), cp.features.shape[1]), dtype=np.float32)
        block[rows] = cp.features
        known = labels[rows] != -2
        if np.any(labels[rows][known] != cp.labels[known]):
            bad = cp.clip_ids[np.flatnonzero(labels[rows][known] != cp.labels[known])[0]]
            raise ValueError(
                f"{probs_path(run_dir, models[m], split)}: clip {bad} has a label that disagrees with "
                f"model {models[0]!r}"
            )
        labels[rows] = cp.labels
        present[rows, m] = True
        blocks.append(block)
    features, keep = fuse_features(blocks, present, missing)
    return FusedSplit(split, ids[keep], labels[keep], features, present[keep])


class _ClipDataset(Dataset):
    def __init__(self, parts: Sequence[FusedSplit], index: np.ndarray | None = None) -> None:
        self.clip_ids = np.concatenate([p.clip_ids for p in parts]) if parts else np.array([], dtype=str)
        self.splits = np.concatenate([[p.split] * len(p.clip_ids) for p in parts]) if parts else np.array([])
        self.features = torch.as_tensor(
            np.concatenate([p.features for p in parts]) if parts else np.zeros((0, 0)), dtype=torch.float32
        )
        self.labels = torch.as_tensor(
            np.concatenate([p.labels for p in parts]) if parts else np.zeros(0), dtype=torch.int64
        )
        self.index = np.arange(len(self.clip_ids)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(self.index[i])
        return {
            "clip_id": str(self.clip_ids[i]),
            "split": str(self.splits[i]),
            "features": self.features[i],
            "label": self.labels[i],
        }


class FusionFeaturesDataModule(L.LightningDataModule):
    """Train on the partition's ``fit`` splits, validate (early-stopping choice) on ``tune``, test on Test."""

    def __init__(
        self,
        run_dir: str,
        models: Sequence[str] = ("aggcnn", "audio", "irnn"),
        in_dims: Sequence[int] | None = (105, 10, 200),
        fit_splits: Sequence[str] = ("Train",),
        tune_splits: Sequence[str] = ("Val",),
        batch_size: int = 128,
        missing: str = "zeros",
        num_workers: int = 0,
        pad_to_batch: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # plain containers, so checkpoints that carry these hparams load with weights_only=True
        models, fit_splits, tune_splits = list(models), list(fit_splits), list(tune_splits or [])
        in_dims = None if in_dims is None else [int(d) for d in in_dims]
        check_batch("data", batch_size, num_workers)
        check_numbers("data.in_dims", in_dims or (), min_val=1, integer=True)
        self.save_hyperparameters(logger=False)
        self.data: dict[str, FusedSplit] = {}
        self.batch_size_per_device = batch_size

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.hparams.batch_size % world:
            raise RuntimeError(
                f"batch_size={self.hparams.batch_size} is not divisible by the number of devices ({world})"
            )
        self.batch_size_per_device = self.hparams.batch_size // world
        for split in SPLITS:
            self.data[split] = load_fused_split(
                self.hparams.run_dir, self.hparams.models, split, self.hparams.in_dims, self.hparams.missing
            )

    def _loader(self, splits: Sequence[str], shuffle: bool, pad: bool = False) -> DataLoader:
        parts = [self.data[s] for s in splits]
        index = None
        if pad:  # a multiple of the global batch: under DDP each rank then gets whole per-device batches too
            index = padded_index(
                sum(len(p.clip_ids) for p in parts), self.hparams.batch_size, self.hparams.seed
            )
        return DataLoader(
            _ClipDataset(parts, index),
            batch_size=self.batch_size_per_device,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.fit_splits, shuffle=True, pad=self.hparams.pad_to_batch)

    def val_dataloader(self) -> DataLoader | list:
        # Under partition=retrain nothing tunes: no validation loop (Lightning skips an empty list).
        return self._loader(self.hparams.tune_splits, shuffle=False) if self.hparams.tune_splits else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(["Test"], shuffle=False)
