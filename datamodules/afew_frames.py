"""Aligned AFEW faces from the face cache (:func:`emotiw.faces.load_afew_faces`, the single entry point).

``mode="frames"`` (feature extraction, early-stopping set): one item per aligned face::

    {"face": uint8 (48,48), "label": int, "clip_id": str, "split": str, "frame_idx": int, "index": int}

``mode="clips"``: one item per clip; a batch concatenates the clips' faces::

    {"faces": uint8 (F,48,48), "offsets": LongTensor (B+1,), "label": LongTensor (B,), "clip_id": list[str],
     "split": list[str], "frame_idx": LongTensor (F,)}

Within a split, clips are ordered by clip id and frames by time, so a frame's dataset index fixes its place in
``<run_dir>/features/<Split>.npz``. Train/val dataloaders follow the partition (``fit`` / ``tune`` splits);
``predict_dataloader`` returns one frames loader per ``predict_splits`` entry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from callbacks.gather import gather_share, rank_share, rank_world
from emotiw.artifacts import SPLITS
from emotiw.checks import check_batch, check_number
from emotiw.faces import AlignConfig, ClipFaces, FaceReport, load_afew_faces
from emotiw.io.afew import ClipRef
from emotiw.partitions import Partition

log = logging.getLogger(__name__)

MODES = ("frames", "clips")


class AfewFrameDataset(Dataset):
    """Every aligned face of ``clips`` (flattened in clip order, then time order). Faces are read clip by clip when
    served (the last clip read is kept), never gathered into one array: memory does not grow with the clips."""

    def __init__(self, clips: Sequence[ClipFaces]) -> None:
        self.clips = list(clips)
        lengths = np.array([len(c.faces) for c in self.clips], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.frame_idx = (
            np.concatenate([c.frame_idx for c in self.clips]) if self.clips else np.zeros(0, np.int64)
        )
        self.clip_of = np.repeat(np.arange(len(self.clips)), lengths)
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _clip_faces(self, c: int) -> np.ndarray:
        if self._last is None or self._last[0] != c:
            self._last = (c, np.asarray(self.clips[c].faces))
        return self._last[1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = int(self.clip_of[i])
        clip = self.clips[c]
        return {
            "face": torch.from_numpy(self._clip_faces(c)[i - self.offsets[c]].copy()),
            "label": clip.label,
            "clip_id": clip.clip_id,
            "split": clip.split,
            "frame_idx": int(self.frame_idx[i]),
            "index": i,
        }


class ClipShareSampler(Sampler[int]):
    """The items of this rank's share of the clips (every world-size-th clip from its rank; all of them in one
    process), in dataset order: a clip's frames all go to one rank, and every frame to exactly one."""

    def __init__(self, data: Dataset) -> None:
        clips = rank_share(range(len(data.clips)))
        if isinstance(data, AfewFrameDataset):
            self.indices = [i for c in clips for i in range(data.offsets[c], data.offsets[c + 1])]
        else:
            self.indices = list(clips)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class AfewClipDataset(Dataset):
    def __init__(self, clips: Sequence[ClipFaces]) -> None:
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> ClipFaces:
        return self.clips[i]


def collate_clips(clips: list[ClipFaces]) -> dict[str, Any]:
    lengths = [len(c.faces) for c in clips]
    return {
        "faces": torch.from_numpy(np.concatenate([c.faces for c in clips])),
        "offsets": torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long),
        "frame_idx": torch.from_numpy(np.concatenate([c.frame_idx for c in clips]).astype(np.int64)),
        "label": torch.tensor([c.label for c in clips], dtype=torch.long),
        "clip_id": [c.clip_id for c in clips],
        "split": [c.split for c in clips],
    }


class AfewFramesDataModule(L.LightningDataModule):
    """AFEW aligned faces for feature extraction and frame-level evaluation.

    Args:
        afew_root: the AFEW tree.
        cache_dir: the content-keyed cache root (``paths.cache_dir``).
        partition: which splits fit (train loader) and tune (val loader); a ``Partition`` or its config.
        mode: ``frames`` or ``clips`` (see the module docstring).
        predict_splits: splits served by ``predict_dataloader``, one loader each.
        face_source, on_missing, min_frames, face_workers: passed to ``load_afew_faces`` (``face_workers`` is its
            ``num_workers``).
        histeq_levels, noise_seed: the alignment's histogram levels and noise-border seed (``AlignConfig``).
        batch_size: items per batch on each process (prediction results do not depend on it).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        afew_root: str,
        cache_dir: str,
        *,
        partition: Any = None,
        mode: Literal["frames", "clips"] = "frames",
        predict_splits: Sequence[str] = SPLITS,
        face_source: str = "auto",
        on_missing: str = "skip",
        min_frames: int = 1,
        face_workers: int | None = None,
        histeq_levels: int = 64,
        noise_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_batch("data", batch_size, num_workers)
        check_number("data.min_frames", min_frames, min_val=1, integer=True)
        check_number("data.histeq_levels", histeq_levels, min_val=2, max_val=256, integer=True)
        if face_workers is not None:
            check_number("data.face_workers", face_workers, min_val=0, integer=True)
        self.save_hyperparameters(logger=False)
        self.clips: dict[str, list[ClipFaces]] = {}
        self.report: FaceReport | None = None
        self.built: list[str] = []  # the clips whose cache entry this rank built in setup

    @property
    def partition(self) -> Partition | None:
        p = self.hparams.partition
        return p if p is None or isinstance(p, Partition) else Partition.from_config(p)

    def _splits_needed(self) -> list[str]:
        wanted = set(self.hparams.predict_splits)
        if self.partition is not None:
            wanted |= set(self.partition.fit) | set(self.partition.tune)
        return [s for s in SPLITS if s in wanted]

    def load_faces(self, refs: Sequence[ClipRef] | None = None) -> tuple[list[ClipFaces], FaceReport]:
        """The faces of ``refs`` (default: every clip of the splits needed), building missing cache entries."""
        hp = self.hparams
        if hp.mode not in MODES:
            raise ValueError(f"mode={hp.mode!r}: expected one of {MODES}")
        if hp.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {hp.batch_size}")
        return load_afew_faces(
            hp.afew_root,
            self._splits_needed(),
            hp.cache_dir,
            face_source=hp.face_source,
            on_missing=hp.on_missing,
            min_frames=hp.min_frames,
            num_workers=hp.face_workers,
            config=AlignConfig(levels=hp.histeq_levels, seed=hp.noise_seed),
            in_memory=False,  # each clip's faces stay in its cache file until served
            refs=refs,
        )

    def build_share(self) -> list[str]:
        """Build the missing cache entries of this rank's share of the clips (every clip in one process) and return
        the ids it built. Every rank calls it (through ``gather_share``), then reads every entry (all hits)."""
        from emotiw.io.afew import list_splits

        _, report = self.load_faces(
            refs=rank_share(list_splits(self.hparams.afew_root, self._splits_needed()))
        )
        return report.built

    def setup(self, stage: str | None = None) -> None:
        if self.clips:
            return
        # Under DDP each rank builds its share of the missing cache entries; then every rank reads them all.
        # (a rank's error is raised on every rank).
        self.built = gather_share(self.build_share, "AFEW faces: building the cache")[rank_world()[0]]
        clips, self.report = self.load_faces()
        log.info("AFEW faces: %s", self.report.summary())
        self.clips = {s: [c for c in clips if c.split == s] for s in self._splits_needed()}

    def dataset(self, splits: Sequence[str]) -> Dataset:
        clips = [c for s in splits for c in self.clips.get(s, [])]
        return AfewFrameDataset(clips) if self.hparams.mode == "frames" else AfewClipDataset(clips)

    def _dataloader(
        self, splits: Sequence[str], *, shuffle: bool = False, by_rank: bool = False
    ) -> DataLoader:
        data = self.dataset(splits)
        return DataLoader(
            data,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            sampler=ClipShareSampler(data) if by_rank else None,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_clips if self.hparams.mode == "clips" else None,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _require_partition(self) -> Partition:
        if self.partition is None:
            raise ValueError("AfewFramesDataModule: train/val loaders need `partition` (fit and tune splits)")
        return self.partition

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(self._require_partition().fit, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(self._require_partition().tune)

    def predict_dataloader(self) -> list[DataLoader]:
        # Each rank predicts the frames of its share of the clips, each once (the Trainer of stage=features runs with
        # use_distributed_sampler=False, so no sampler repeats frames to even out the ranks).
        return [self._dataloader([s], by_rank=True) for s in self.hparams.predict_splits]
