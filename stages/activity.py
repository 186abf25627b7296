"""stage=activity (paper-spec §6): train the synchrony autoencoder on random blocks (a Lightning fit,
checkpointed), encode every dense block of every clip, build the motion-weighted bag of words on the fitting
clips, and fit the chi-squared SVM through ``FitSVMOnFeatures``.

Writes ``<run_dir>/activity/{sae.ckpt, codebook.npz, chosen.json, svm.skops}`` and ``probs/activity_<Split>.npz``.
Under ``partition=retrain`` the SAE and the codebook of the run named in ``from_run`` are reused and only the SVM is
refitted (spec §9 default).

Under DDP each rank decodes and samples the SAE's training blocks of its share of the clips (gathered once), the
ranks fit the SAE together (Lightning's DDP), each rank encodes its share of the clips into its own file, rank zero
fits the k-means codebook on a sample read from every rank's file and broadcasts it, and each rank counts the words of
its clips (gathered once); ``FitSVMOnFeatures`` fits the SVM on rank zero and writes. ``ranks.json`` records which
rank sampled and encoded which clips. No rank holds more than one clip's encodings.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from callbacks.gather import (
    gather_share,
    is_rank_zero,
    launch_ranks,
    rank_share,
    rank_world,
    record_work_split,
    run_on_rank_zero,
)
from callbacks.log_counts import LogCounts
from datamodules.afew_audio import ClipFeatureDataset, ClipFeaturesDataModule
from emotiw.activity import (
    BagOfWords,
    EncodingReport,
    cpu_threads,
    iter_encoded_clips,
    load_codebook,
    read_gray,
    save_codebook,
)
from emotiw.artifacts import SPLITS, atomic_copy
from emotiw.partitions import Partition
from lightning_modules.sae import SAEModule
from stages.lightning_fit import build_trainer, instantiate_callbacks, instantiate_loggers
from stages.svm import run_svm_stage

log = logging.getLogger(__name__)


def _sae_loggers(cfg: DictConfig) -> list:
    """The stage's loggers, with the CSV log of the SAE fit in its own folder: the SVM trainer that follows
    rewrites ``csv/metrics.csv``."""
    logger_cfg = OmegaConf.to_container(cfg.get("logger") or {}, resolve=True)
    if isinstance(logger_cfg.get("csv"), dict):
        logger_cfg["csv"]["name"] = "csv_sae"
    return instantiate_loggers(OmegaConf.create(logger_cfg))


class ShardedEncodings:
    """Every clip's block encodings, each rank's share in its own raw float16 file (``<dir>/rank<r>.f16``, clip
    after clip), found through an index that the ranks gather once: no rank holds more than one clip's encodings, and
    any rank can read any clip."""

    def __init__(
        self, directory: Path, index: dict, rows: list[int], dim: int, mine: list[str], report
    ) -> None:
        self.directory, self.index, self.rows_by_rank, self.dim = directory, index, rows, dim
        self.mine = mine  # the clips this rank encoded
        self.report = report  # over every rank's clips
        self._maps: dict[int, np.ndarray] = {}

    @classmethod
    def encode(cls, clips, encoder, directory: Path) -> ShardedEncodings:
        """Encode ``clips`` (this rank's share) into this rank's file; every rank must call it (it gathers)."""
        rank, _ = rank_world()
        directory.mkdir(parents=True, exist_ok=True)

        def share() -> tuple[dict, int, int, EncodingReport]:
            report, index, row, dim = EncodingReport(), {}, 0, 0
            with open(directory / f"rank{rank}.f16", "wb") as fh:
                pairs = [(c.clip_id, c.video_path) for c in clips]
                for clip_id, enc in iter_encoded_clips(pairs, encoder, read_gray, report):
                    fh.write(np.ascontiguousarray(enc, dtype=np.float16).tobytes())
                    index[clip_id] = (row, len(enc))
                    row, dim = row + len(enc), enc.shape[1]
            return index, row, dim, report

        merged, rows, dims, everyone = {}, [], [], EncodingReport()
        parts = gather_share(share, "activity: encoding the clips")
        for r, (idx, n, d, rep) in enumerate(parts):
            merged.update({c: (r, first, count) for c, (first, count) in idx.items()})
            rows.append(n)
            dims.append(d)
            everyone = everyone.merge(rep)
        return cls(directory, merged, rows, max(dims), list(parts[rank][0]), everyone)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.index

    def n_blocks(self, clip_id: str) -> int:
        return self.index[clip_id][2]

    def _map(self, rank: int) -> np.ndarray:
        if rank not in self._maps:
            path, shape = self.directory / f"rank{rank}.f16", (self.rows_by_rank[rank], self.dim)
            self._maps[rank] = np.memmap(path, dtype=np.float16, mode="r", shape=shape)
        return self._maps[rank]

    def clip(self, clip_id: str) -> np.ndarray:
        rank, first, count = self.index[clip_id]
        return np.array(self._map(rank)[first : first + count])

    def rows(self, clip_ids: list[str], rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (in that order) of the clips' encodings stacked in ``clip_ids`` order, as float32."""
        starts = np.concatenate([[0], np.cumsum([self.n_blocks(c) for c in clip_ids])])
        which = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), np.float32)
        for k in np.unique(which):
            sel = which == k
            rank, first, _ = self.index[clip_ids[k]]
            out[sel] = self._map(rank)[first + rows[sel] - starts[k]]
        return out

    def remove_shard(self) -> None:
        """Delete this rank's file (call once no rank reads the shards any more)."""
        self._maps.clear()
        (self.directory / f"rank{rank_world()[0]}.f16").unlink(missing_ok=True)


def train_sae(cfg: DictConfig) -> tuple[SAEModule, dict[str, Any], L.Trainer, list[str]]:
    """Fit the SAE on whitened random blocks of the fitting clips; return the best checkpoint's module, the fit's
    metrics, its trainer (whose strategy shares the codebook that rank zero fits) and the clips whose blocks this
    rank sampled."""
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    model: SAEModule = hydra.utils.instantiate(cfg.model, n_visible=datamodule.n_visible)
    model.set_whitening(*datamodule.whitener.affine_map(), datamodule.whitener.row_constant_)
    trainer = build_trainer(cfg, instantiate_callbacks(cfg.get("callbacks")), loggers=_sae_loggers(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and not trainer.fast_dev_run:
        model = SAEModule.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    # the SAE fit's train/<name> and val/<name> as train/sae_<name>, val/sae_<name>: the SVM's train/acc etc. follow
    metrics = {
        f"{split}/sae_{name}": float(v)
        for k, v in trainer.callback_metrics.items()
        for split, _, name in [k.partition("/")]
        if split in ("train", "val")
    }
    metrics["sae/n_visible"] = float(datamodule.n_visible)
    metrics["sae/n_train_blocks"] = float(len(datamodule.train_set))
    sae_path = Path(cfg.paths.output_dir) / "sae.ckpt"
    if best and Path(best).is_file():
        run_on_rank_zero(trainer, lambda: atomic_copy(best, sae_path), "activity: saving the SAE")
    else:
        trainer.save_checkpoint(sae_path)  # a collective: every rank calls it, rank zero writes
    return model.cpu().eval(), metrics, trainer, datamodule.sampled


def run(cfg: DictConfig) -> dict[str, Any]:
    partition = Partition.from_config(cfg.partition)
    out_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    threads = cfg.get("cpu_threads")
    # under trainer=ddp each rank samples, encodes and counts its share of the clips
    launch_ranks(cfg.trainer)
    start = time.perf_counter()
    blocks_sampled: list[str] = []
    if partition.is_retrain:
        source = Path(cfg.paths.runs_dir) / str(partition.from_run) / cfg.task_name
        for name in ("sae.ckpt", "codebook.npz"):
            if not (source / name).is_file():
                raise FileNotFoundError(
                    f"{source / name}: partition=retrain reuses the SAE and codebook of run "
                    f"{partition.from_run!r}; run stage=activity there first"
                )
        sae = SAEModule.load_from_checkpoint(
            source / "sae.ckpt", map_location="cpu", weights_only=True
        ).eval()
    else:
        with cpu_threads(threads):
            sae, metrics, sae_trainer, blocks_sampled = train_sae(cfg)
    encoder = sae.folded_encoder()
    seconds["sae"] = time.perf_counter() - start

    from emotiw.io.afew import list_splits

    start = time.perf_counter()
    clips = list_splits(cfg.data.afew_root, SPLITS)
    with cpu_threads(threads):
        encodings = ShardedEncodings.encode(rank_share(clips), encoder, out_dir / ".encodings")
    seconds["encode"] = time.perf_counter() - start

    start = time.perf_counter()
    if partition.is_retrain:
        bow = load_codebook(source / "codebook.npz")
    else:
        fit_ids = [c.clip_id for c in clips if c.split in partition.fit and c.clip_id in encodings]
        total = sum(encodings.n_blocks(c) for c in fit_ids)
        rng = np.random.RandomState(cfg.seed)
        rows = rng.choice(total, size=min(total, cfg.bow.codebook_blocks), replace=False)

        def fit_codebook() -> BagOfWords:
            with cpu_threads(threads):
                return BagOfWords(
                    n_words=cfg.bow.n_words,
                    batch_size=cfg.bow.batch_size,
                    max_iter=cfg.bow.max_iter,
                    random_state=cfg.seed,
                ).fit(encodings.rows(fit_ids, rows))

        # k-means on rank zero, on a sample read from every rank's shard; every rank then gets the codebook
        bow = run_on_rank_zero(sae_trainer, fit_codebook, "activity: fitting the codebook")
    if is_rank_zero():
        save_codebook(out_dir / "codebook.npz", bow)
        if partition.is_retrain:
            atomic_copy(source / "sae.ckpt", out_dir / "sae.ckpt")

    # each rank the histograms of the clips it encoded, gathered once
    hists: dict[str, np.ndarray] = {}
    for part in gather_share(
        lambda: {c: bow.histogram(encodings.clip(c).astype(np.float32)) for c in encodings.mine},
        "activity: counting the words",
    ):
        hists.update(part)
    encodings.remove_shard()
    datamodule = ClipFeaturesDataModule(batch_size=cfg.bow.get("serve_batch_size", 256))
    datamodule.tables = {}
    for split in SPLITS:
        refs = [c for c in clips if c.split == split and c.clip_id in hists]
        datamodule.tables[split] = ClipFeatureDataset(
            [c.clip_id for c in refs],
            np.array([c.label for c in refs]),
            split,
            np.stack([hists[c.clip_id] for c in refs]).reshape(len(refs), bow.n_words),
        )
    record_work_split(out_dir / "ranks.json", {"blocks": blocks_sampled, "encode": encodings.mine})
    seconds["bow"] = time.perf_counter() - start
    counts = {f"activity/clips_{k}": float(v) for k, v in encodings.report.counts.items()}
    counts["activity/clips_ok"] = float(len(hists))
    counts["activity/n_words"] = float(bow.n_words)
    counts.update({f"activity/seconds_{k}": round(v, 2) for k, v in seconds.items()})
    log.info("activity: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    start = time.perf_counter()
    metrics.update(
        run_svm_stage(cfg, datamodule, cfg.task_name, estimator=cfg.svm, extra_callbacks=[LogCounts(counts)])
    )
    log.info("activity: SVM %.1f s", time.perf_counter() - start)
    return {**metrics, **counts}
