"""Random 16x16x10 space-time blocks of AFEW's full grey frames for training the synchrony autoencoder
(paper-spec §6.1-6.2).

``setup`` decodes every clip of the ``partition.fit`` splits (under DDP each rank its share, the blocks gathered
once), samples ``n_train_blocks`` blocks spread evenly over them (kept as uint8 pixels), fits the block whitening (contrast normalisation, pixel-wise mean/std, PCA keeping 99 %
of the variance, at most 500 dims) on the fitting blocks, and serves whitened blocks as ``{"blocks": (B, d)}``.
Validation blocks (for the reconstruction loss that picks the checkpoint) come from the ``partition.tune`` splits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from callbacks.gather import gather_share, rank_share
from emotiw.activity import BLOCK_SHAPE, block_whitener, read_gray, sample_blocks
from emotiw.checks import check_batch, check_number
from emotiw.partitions import Partition

log = logging.getLogger(__name__)


class BlockDataset(Dataset):
    def __init__(self, blocks: np.ndarray):
        self.blocks = torch.as_tensor(np.asarray(blocks, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"blocks": self.blocks[i]}


def sample_clip_blocks(
    paths: Sequence, n_blocks: int, seed: int, failures: dict[str, str], sampled: list[str] | None = None
) -> np.ndarray:
    """``n_blocks`` random blocks spread evenly over the clips (uint8); undecodable clips are skipped and recorded.

    Each clip draws from its own stream (``seed`` and its position), so under DDP each rank decodes only its share of
    the clips and the gathered blocks equal one process's. ``sampled`` receives the paths this rank decoded."""
    width = int(np.prod(BLOCK_SHAPE))
    if not paths:
        return np.zeros((0, width), np.uint8)
    per_clip = np.full(len(paths), n_blocks // len(paths))
    per_clip[: n_blocks % len(paths)] += 1

    def share() -> tuple[dict[int, np.ndarray], dict[str, str]]:
        mine: dict[int, np.ndarray] = {}
        for i in rank_share(range(len(paths))):
            if sampled is not None:
                sampled.append(str(paths[i]))
            try:
                frames = read_gray(paths[i])
            except ValueError as err:  # emotiw.io.video.VideoDecodeError: one line naming the file
                failures[str(paths[i])] = str(err)
                continue
            if per_clip[i]:
                rng = np.random.RandomState([seed, i])
                mine[i] = sample_blocks(frames, int(per_clip[i]), random_state=rng).astype(np.uint8)
        return mine, failures

    out: dict[int, np.ndarray] = {}
    for part, part_failures in gather_share(share, "activity: sampling blocks"):
        out.update(part)
        failures.update(part_failures)
    return np.concatenate([out[i] for i in sorted(out)]) if out else np.zeros((0, width), np.uint8)


class AfewBlocksDataModule(L.LightningDataModule):
    def __init__(
        self,
        afew_root: str,
        partition: Any,
        n_train_blocks: int = 500_000,
        n_val_blocks: int = 20_000,
        whitener_fit_blocks: int = 50_000,
        max_variance: float = 0.99,
        max_components: int = 500,
        contrast_offset: float = 0.001,
        batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_batch("data", batch_size, num_workers)
        check_number("data.n_train_blocks", n_train_blocks, min_val=2, integer=True)
        check_number("data.n_val_blocks", n_val_blocks, min_val=1, integer=True)
        check_number("data.whitener_fit_blocks", whitener_fit_blocks, min_val=2, integer=True)
        check_number("data.max_variance", max_variance, min_val=0, max_val=1, closed="right")
        check_number("data.max_components", max_components, min_val=1, integer=True)
        check_number("data.contrast_offset", contrast_offset, min_val=0)
        # The partition is kept as a Partition, not in hparams: checkpoints must hold plain values only.
        self.save_hyperparameters(ignore=["partition"], logger=False)
        self.partition = Partition.from_config(partition)
        self.whitener = None
        self.train_set: BlockDataset | None = None
        self.val_set: BlockDataset | None = None
        self.failures: dict[str, str] = {}
        self.sampled: list[str] = []  # the clips this rank decoded for blocks

    @property
    def n_visible(self) -> int:
        if self.whitener is None:
            raise RuntimeError("AfewBlocksDataModule.setup() has not run")
        return int(self.whitener.n_components_)

    def _whiten(self, blocks: np.ndarray, chunk: int = 8192) -> np.ndarray:
        out = np.empty((len(blocks), self.n_visible), np.float32)
        for i in range(0, len(blocks), chunk):
            out[i : i + chunk] = self.whitener.transform(blocks[i : i + chunk].astype(np.float64))
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from emotiw.io.afew import list_splits

        hp = self.hparams
        partition = self.partition
        fit_paths = [c.video_path for c in list_splits(hp.afew_root, partition.fit)]
        tune_paths = (
            [c.video_path for c in list_splits(hp.afew_root, partition.tune)] if partition.tune else []
        )
        train = sample_clip_blocks(fit_paths, hp.n_train_blocks, hp.seed, self.failures, self.sampled)
        if len(train) < 2:
            raise ValueError(
                f"activity: no blocks could be sampled from the {len(fit_paths)} clips of {list(partition.fit)}"
                f" ({len(self.failures)} undecodable)"
            )
        if tune_paths:
            val = sample_clip_blocks(tune_paths, hp.n_val_blocks, hp.seed + 1, self.failures, self.sampled)
        else:  # no tune split: hold out a tenth of the fitting blocks for the reconstruction loss
            rng = np.random.RandomState(hp.seed + 1)
            order = rng.permutation(len(train))
            n_val = max(1, len(train) // 10)
            val, train = train[order[:n_val]], train[order[n_val:]]
        rng = np.random.RandomState(hp.seed + 2)
        fit_rows = rng.choice(len(train), size=min(len(train), hp.whitener_fit_blocks), replace=False)
        self.whitener = block_whitener(
            max_variance=hp.max_variance, max_components=hp.max_components, contrast_offset=hp.contrast_offset
        ).fit(train[fit_rows].astype(np.float64))
        self.train_set, self.val_set = BlockDataset(self._whiten(train)), BlockDataset(self._whiten(val))
        log.info(
            "activity blocks: %d train, %d val, whitened to %d dims; %d clips undecodable",
            len(self.train_set),
            len(self.val_set),
            self.n_visible,
            len(self.failures),
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            num_workers=self.hparams.num_workers,
            drop_last=len(self.train_set) > self.hparams.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=max(self.hparams.batch_size, 1000),
            shuffle=False,
            num_workers=self.hparams.num_workers,
        )
