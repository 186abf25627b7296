"""The gather / fit on rank zero / broadcast pattern of every callback that fits or writes on gathered rows.

Feed a :class:`GatherThenFitOnRankZero` subclass with ``trainer.predict`` over dict batches that carry one row per
clip (``clip_id`` and ``split`` lists, ``label`` and any per-clip tensors). At ``on_predict_end``, on every rank: gather
the rows of all ranks (object all-gather, so uneven shards are fine) and de-duplicate by clip id
(``DistributedSampler`` repeats clips to even out the ranks); on rank zero only: ``fit_on_rank_zero``; then every rank
gets rank zero's metrics, or its error re-raised, so no rank waits forever at a later collective.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from emotiw.artifacts import SPLITS, ClipProbs, save_json, save_probs
from emotiw.labels import UNLABELLED

log = logging.getLogger(__name__)

BATCH_KEYS = ("clip_id", "label", "split", "features")
T = TypeVar("T")


def gather_objects(obj: Any) -> list[Any]:
    """All-gather a picklable object from every rank (``[obj]`` without a process group). Call on ALL ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def rank_world() -> tuple[int, int]:
    """(this process's global rank, the number of ranks): (0, 1) without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rank_share(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (every world-size-th one from its rank): each item goes to exactly one rank,
    and one process gets them all. Split the clips of an extraction with it, then gather once."""
    rank, world = rank_world()
    return list(items)[rank::world]


def gather_share(work: Callable[[], T], who: str) -> list[T]:
    """Run ``work()`` (this rank's share of a stage's clips) on every rank and gather the results once: every rank
    gets every rank's result in rank order, or, when any rank failed, raises that error on every rank, so no rank is
    left waiting at a later collective. Call on ALL ranks; ``[work()]`` without a process group."""
    result, error, failure = None, None, None
    try:
        result = work()
    except Exception as err:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise
        failure, error = err, f"{type(err).__name__}: {err}"
        log.exception("%s failed on rank %d", who, rank_world()[0])
    parts = gather_objects((result, error))
    for rank, (_, rank_error) in enumerate(parts):
        if rank_error is not None:
            raise RuntimeError(f"{who} failed on rank {rank}: {rank_error}") from failure
    return [part for part, _ in parts]


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def launch_ranks(trainer_cfg: Any) -> None:
    """Start the processes of ``trainer_cfg``'s strategy for a stage that splits work over ranks before (or without)
    a Trainer: under DDP this re-runs the command once per further device, as a Trainer would, and sets up the
    process group; a later Trainer of the same run joins it. Nothing to do for one device or when already started."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    devices, strategy = trainer_cfg.get("devices", 1), str(trainer_cfg.get("strategy", "auto"))
    if not strategy.startswith("ddp") or devices in (1, "1", [0]):
        return
    fabric = L.Fabric(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=devices,
        num_nodes=trainer_cfg.get("num_nodes", 1),
        strategy=strategy,
    )
    fabric.launch()


def record_work_split(path: str | os.PathLike, work: dict[str, Sequence[str]]) -> dict[str, list[list[str]]]:
    """Gather which items each rank did, per kind of work (``{"encode": clip ids}``); rank zero writes them to
    ``path`` (JSON: ``world_size`` and ``by_rank``), the record that each clip was done exactly once. Call on ALL
    ranks; returns ``{kind: [ids of rank 0, ids of rank 1, ...]}``."""
    shards = gather_objects({kind: [str(i) for i in ids] for kind, ids in work.items()})
    by_rank = {kind: [shard[kind] for shard in shards] for kind in work}
    if rank_world()[0] == 0:
        save_json(path, {"world_size": len(shards), "by_rank": by_rank})
    return by_rank


def is_rank_zero() -> bool:
    """Whether this process is global rank zero, the one that writes: Lightning's rank once a Trainer has set up its
    strategy; before that, the rank its launcher gave it (``LOCAL_RANK``/``RANK``) on the first node (``NODE_RANK``)."""
    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def run_on_rank_zero(trainer: L.Trainer, fn: Callable[[], Any], who: str) -> Any:
    """Run ``fn()`` on rank zero only, then give every rank its result, or raise its error on every rank.

    Call on ALL ranks: the broadcast carries rank zero's error too, so a failure there cannot leave the other ranks
    waiting forever at a later collective. Ends with a barrier, so rank zero's files exist when any rank returns.
    """
    result, error, failure = None, None, None
    if trainer.is_global_zero:
        try:
            result = fn()
        except Exception as err:
            failure, error = err, f"{type(err).__name__}: {err}"
            log.exception("%s failed on rank zero", who)
    result, error = trainer.strategy.broadcast((result, error), src=0)
    trainer.strategy.barrier(who)
    if error is not None:
        raise RuntimeError(f"{who} failed on rank zero: {error}") from failure
    return result


def log_shared_metrics(trainer: L.Trainer, metrics: dict[str, float], who: str) -> dict[str, float]:
    """Put metrics every rank holds into ``trainer.callback_metrics`` and the loggers, and log them."""
    metrics = dict(metrics)
    for key, value in metrics.items():
        trainer.callback_metrics[key] = torch.tensor(value)
    finite = {k: v for k, v in metrics.items() if not math.isnan(v)}
    for lg in trainer.loggers:
        lg.log_metrics(finite, step=trainer.global_step)
        lg.save()
    log.info("%s: %s", who, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


class ClipTable:
    """Per-clip rows collected from dict batches: ``clip_id`` and ``split`` (lists of str), ``label`` and every other
    tensor/array entry with one row per clip (``features``, ``fusion_features``, ``probs``, ...)."""

    def __init__(self, required: tuple[str, ...] = BATCH_KEYS) -> None:
        self.required = required
        self.parts: dict[str, list] = defaultdict(list)

    def add(self, batch: dict[str, Any]) -> None:
        missing = [k for k in self.required if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}; it must carry {list(self.required)}")
        n = len(batch["clip_id"])
        self.parts["clip_id"].extend(str(c) for c in batch["clip_id"])
        self.parts["split"].extend(str(s) for s in batch["split"])
        self.parts["label"].append(_to_numpy(batch["label"]).astype(np.int64).reshape(n))
        for key, value in batch.items():
            if key in ("clip_id", "split", "label") or not isinstance(value, (torch.Tensor, np.ndarray)):
                continue
            value = _to_numpy(value)
            if value.ndim >= 1 and len(value) == n:
                self.parts[key].append(value.astype(np.float32).reshape(n, -1))

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.parts["clip_id"]:
            return {"clip_id": np.array([], dtype=str)}
        return {
            k: np.asarray(v, dtype=str) if k in ("clip_id", "split") else np.concatenate(v)
            for k, v in self.parts.items()
        }

    @staticmethod
    def merge(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Concatenate rank shards, keep the first row of each clip id, order by clip id."""
        shards = [s for s in shards if len(s["clip_id"])]
        if not shards:
            raise RuntimeError("no rank produced any clip; is the predict dataloader empty?")
        merged = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
        _, first = np.unique(merged["clip_id"], return_index=True)  # sorted by clip id
        return {k: v[first] for k, v in merged.items()}


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def write_split_probs(
    run_dir,
    model_name: str,
    ids: np.ndarray,
    y: np.ndarray,
    split: np.ndarray,
    predict_proba,
    features: np.ndarray | None = None,
) -> dict[str, float]:
    """Write ``probs/<model_name>_<Split>.npz`` for every split present; return ``<split>/acc`` where labels exist.

    ``predict_proba(rows)`` gets a boolean row mask and returns the (n, 7) probabilities of those rows.
    """
    metrics: dict[str, float] = {}
    for name in SPLITS:
        rows = split == name
        if not rows.any():
            continue
        probs = predict_proba(rows)
        feats = None if features is None else features[rows]
        save_probs(run_dir, model_name, name, ClipProbs(ids[rows], y[rows], probs.astype(np.float32), feats))
        labelled = y[rows] != UNLABELLED
        if labelled.any():
            metrics[f"{name.lower()}/acc"] = float(np.mean(probs[labelled].argmax(1) == y[rows][labelled]))
    return metrics


class GatherThenFitOnRankZero(Callback):
    """Collect dict rows during ``trainer.predict``; at its end every rank gathers, rank zero fits and writes
    (``fit_on_rank_zero``), and every rank gets the metrics (or rank zero's error) back.

    ``required`` names the keys every batch must carry (``BATCH_KEYS`` by default)."""

    label = "GatherThenFitOnRankZero"
    required: tuple[str, ...] = BATCH_KEYS

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}
        self._table = ClipTable(self.required)

    def fit_on_rank_zero(self, trainer: L.Trainer, table: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._table = ClipTable(self.required)

    def on_predict_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._table.add(outputs if isinstance(outputs, dict) else batch)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank joins the gather and the broadcast (never rank_zero_only here: that would deadlock).
        shards = gather_objects(self._table.arrays())
        metrics = run_on_rank_zero(
            trainer, lambda: self.fit_on_rank_zero(trainer, ClipTable.merge(shards)), self.label
        )
        self.metrics = log_shared_metrics(trainer, metrics, self.label)
