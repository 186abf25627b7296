"""Per-clip audio features of AFEW for the audio SVM (paper-spec §5), and the generic per-clip feature server.

``AfewAudioDataModule.setup`` extracts the IS10 features of every clip (cached by content; under DDP each rank its
share of the clips, gathered once), fits the scaler and the
PCA-whitening on the ``partition.fit`` splits (or, under ``partition=retrain``, loads the ones fitted by the run
named in ``from_run``: spec §9 default), projects every clip on the 10 whitened components and serves
``{"clip_id", "label", "split", "features"}`` batches for ``stages.svm.run_svm_stage``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from callbacks.gather import gather_share, rank_share, rank_world
from emotiw.artifacts import SPLITS
from emotiw.checks import check_batch, check_number
from emotiw.partitions import Partition

log = logging.getLogger(__name__)

MISSING_AUDIO = ("skip", "zeros")


class ClipFeatureDataset(Dataset):
    """One row per clip: id, label, split and a feature vector."""

    def __init__(self, clip_ids: Sequence[str], labels: np.ndarray, split: str, features: np.ndarray):
        if not len(clip_ids) == len(labels) == len(features):
            raise ValueError(
                f"{split}: {len(clip_ids)} clip ids, {len(labels)} labels, {len(features)} feature rows"
            )
        self.clip_ids = list(clip_ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.split = split
        self.features = np.asarray(features, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "clip_id": self.clip_ids[i],
            "label": self.labels[i],
            "split": self.split,
            "features": self.features[i],
        }


class ClipFeaturesDataModule(L.LightningDataModule):
    """Serves per-clip feature tables, one predict loader per split that has clips (Train, Val, Test order).

    Subclasses fill ``self.tables = {split: ClipFeatureDataset}`` in ``setup``.
    """

    def __init__(self, batch_size: int = 256, num_workers: int = 0):
        super().__init__()
        check_batch("data", batch_size, num_workers)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.tables: dict[str, ClipFeatureDataset] | None = None

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.tables[split], batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )

    def predict_dataloader(self) -> list[DataLoader]:
        if self.tables is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return [self._loader(s) for s in SPLITS if s in self.tables and len(self.tables[s])]


class AfewAudioDataModule(ClipFeaturesDataModule):
    """IS10 features -> scaler -> PCA-whitening, per clip; ``missing_audio`` says what a clip without usable audio
    gets: ``skip`` (absent from every output, counted in ``report``) or ``zeros`` (the all-zero whitened vector,
    i.e. the fitting-set mean, so every clip is scored)."""

    def __init__(
        self,
        afew_root: str,
        cache_dir: str,
        partition: Any,
        runs_dir: str,
        task_name: str = "audio",
        splits: Sequence[str] = SPLITS,
        sample_rate: int = 16000,
        min_duration_s: float = 0.25,
        silence_rms: float = 1e-4,
        missing_audio: str = "skip",
        column_filter: str = "zero_sum_on_tune",
        n_components: int = 10,
        max_variance: float = 0.99999,
        n_jobs: int = 1,
        batch_size: int = 256,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        check_number("data.sample_rate", sample_rate, min_val=1, integer=True)
        check_number("data.min_duration_s", min_duration_s, min_val=0)
        check_number("data.silence_rms", silence_rms, min_val=0)
        check_number("data.n_components", n_components, min_val=1, integer=True)
        check_number("data.max_variance", max_variance, min_val=0, max_val=1, closed="right")
        # The partition is kept as a Partition, not in hparams: checkpoints must hold plain values only.
        self.save_hyperparameters(ignore=["partition"], logger=False)
        self.partition = Partition.from_config(partition)
        self.report = None
        self.extracted: list[str] = []  # the clips whose features this rank computed in setup
        self.scaler = None
        self.whitener = None

    def _clips(self):
        from emotiw.io.afew import list_splits

        return list_splits(self.hparams.afew_root, self.hparams.splits)

    def preprocessor_path(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / self.hparams.task_name / "preprocess.skops"

    def setup(self, stage: str | None = None) -> None:
        if self.tables is not None:
            return
        from emotiw.audio import ContrastPCAWhitener, FeatureScaler, extract_is10
        from emotiw.audio.is10 import AudioFeatureReport
        from emotiw.audio.whitening import load_fitted, whiten_clips

        hp = self.hparams
        if hp.missing_audio not in MISSING_AUDIO:
            raise ValueError(f"missing_audio={hp.missing_audio!r}; expected one of {MISSING_AUDIO}")
        partition = self.partition
        clips = self._clips()
        # Each rank extracts its share of the clips (all of them in one process), then they gather once.
        parts = gather_share(
            lambda: extract_is10(
                [(c.clip_id, c.video_path) for c in rank_share(clips)],
                cache_dir=hp.cache_dir,
                sample_rate=hp.sample_rate,
                min_duration_s=hp.min_duration_s,
                silence_rms=hp.silence_rms,
                n_jobs=hp.n_jobs,
            ),
            "audio: extracting the IS10 features",
        )
        self.extracted = list(parts[rank_world()[0]][1].extracted)
        feats, self.report = {}, AudioFeatureReport()
        for part_feats, part_report in parts:
            feats.update(part_feats)
            self.report = self.report.merge(part_report)
        scored = [c for c in clips if c.clip_id in feats]

        def stack(refs) -> np.ndarray:
            return np.stack([feats[c.clip_id] for c in refs]) if refs else np.zeros((0, 1582), np.float32)

        if partition.is_retrain:
            # Spec §9 default: the authors refit only the SVM on Train+Val, on features whitened by the PCA fitted
            # in the tuned run.
            path = self.preprocessor_path(Path(hp.runs_dir) / str(partition.from_run))
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: partition=retrain reuses the audio PCA of run {partition.from_run!r}; "
                    f"run stage=audio with experiment_name={partition.from_run} first"
                )
            fitted = load_fitted(path)
            self.scaler, self.whitener = fitted["scaler"], fitted["whitener"]
        else:
            fit_refs = [c for c in scored if c.split in partition.fit]
            tune_refs = [c for c in scored if c.split in partition.tune]
            if len(fit_refs) < 2:
                raise ValueError(
                    f"audio: only {len(fit_refs)} clips of {list(partition.fit)} have usable audio "
                    f"({self.report.summary()}); cannot fit the PCA"
                )
            self.scaler = FeatureScaler(column_filter=hp.column_filter).fit(
                stack(fit_refs), X_tune=stack(tune_refs)
            )
            self.whitener = ContrastPCAWhitener(
                n_components=hp.n_components, max_variance=hp.max_variance
            ).fit(self.scaler.transform(stack(fit_refs)))
        projected = whiten_clips(self.scaler, self.whitener, stack(scored))
        by_id = {c.clip_id: projected[i] for i, c in enumerate(scored)}
        dim = projected.shape[1]
        self.tables = {}
        for split in hp.splits:
            refs = [
                c for c in clips if c.split == split and (c.clip_id in by_id or hp.missing_audio == "zeros")
            ]
            rows = (
                np.stack([by_id.get(c.clip_id, np.zeros(dim, np.float32)) for c in refs])
                if refs
                else np.zeros((0, dim))
            )
            self.tables[split] = ClipFeatureDataset(
                [c.clip_id for c in refs], np.array([c.label for c in refs]), split, rows
            )
        log.info(
            "audio: %s; missing_audio=%s; %d whitened components",
            self.report.summary(),
            hp.missing_audio,
            dim,
        )

    def save_preprocessor(self, run_dir: str | Path) -> Path:
        from emotiw.audio.whitening import save_fitted

        path = self.preprocessor_path(run_dir)
        save_fitted(path, scaler=self.scaler, whitener=self.whitener)
        return path
