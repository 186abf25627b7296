"""Fit an SVM on per-clip features gathered from every rank, and write the SVM stage's artifacts.

Feed it with ``trainer.predict`` over dataloaders that yield dict batches (``stages/svm.py`` provides the
pass-through module; the datamodule serves Train, Val and Test)::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, D)}

plus, optionally, ``"fusion_features": FloatTensor (B, D')`` when the clip feature fusion wants differs from the SVM
input (otherwise ``features`` is written). At ``on_predict_end``, on every rank: gather the rows of all ranks
(object all-gather, so uneven shards are fine), de-duplicate by clip id (``DistributedSampler`` repeats clips to even
out the ranks); then on rank zero only: fit on the ``partition.fit`` splits, pick (C, gamma) on ``partition.tune``
(or reuse ``chosen.json`` of the run named by a retrain partition), and write::

    <run_dir>/<model_name>/chosen.json      {"C": ..., "gamma": ..., "kernel": ..., "tune_score": ...}
    <run_dir>/<model_name>/svm.skops        the fitted estimator (emotiw.svm.load_svm reads it)
    <run_dir>/probs/<model_name>_<Split>.npz  for Train, Val, Test (emotiw.artifacts.save_probs)

then broadcast the metrics to every rank and barrier. The metrics (``<model_name>/C``, ``<model_name>/gamma``,
``<model_name>/tune_score``, ``train/acc``, ``val/acc``, ``test/acc`` where labels exist) go to the loggers, to
``trainer.callback_metrics`` and to :attr:`FitSVMOnFeatures.metrics`.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.base import clone

from emotiw.artifacts import SPLITS, ClipProbs, save_json, save_probs
from emotiw.labels import UNLABELLED
from emotiw.partitions import Partition, chosen_path, frozen_choice
from emotiw.svm import GridSearchSVM, check_finite_rows, save_svm

log = logging.getLogger(__name__)

BATCH_KEYS = ("clip_id", "label", "split", "features")


def gather_objects(obj: Any) -> list[Any]:
    """All-gather a picklable object from every rank (``[obj]`` without a process group). Call on ALL ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def share_rank_zero_result(
    trainer: L.Trainer, metrics: dict[str, float], error: str | None, who: str
) -> dict:
    """Broadcast rank zero's metrics (or its error) to every rank, barrier, and log them on each.

    An error on rank zero is re-raised on every rank, so no rank waits forever at a later collective.
    """
    metrics, error = trainer.strategy.broadcast((metrics, error), src=0)
    trainer.strategy.barrier(who)
    if error is not None:
        raise RuntimeError(f"{who} failed on rank zero: {error}")
    metrics = dict(metrics)
    for key, value in metrics.items():
        trainer.callback_metrics[key] = torch.tensor(value)
    finite = {k: v for k, v in metrics.items() if not math.isnan(v)}
    for lg in trainer.loggers:
        lg.log_metrics(finite, step=trainer.global_step)
        lg.save()
    log.info("%s: %s", who, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def build_estimator(estimator: Any) -> GridSearchSVM:
    """A fresh estimator from an object (cloned) or a Hydra config with ``_target_``."""
    if hasattr(estimator, "fit") and hasattr(estimator, "get_params"):
        return clone(estimator)
    if hasattr(estimator, "get") and estimator.get("_target_"):
        import hydra

        return hydra.utils.instantiate(estimator, _convert_="all")
    raise ValueError(
        f"estimator must be an sklearn estimator or a config with _target_, got {type(estimator).__name__}"
    )


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


def fit_and_write(
    table: dict[str, np.ndarray],
    *,
    model_name: str,
    estimator: GridSearchSVM,
    run_dir: str | Path,
    partition: Partition,
    runs_dir: str | Path,
) -> tuple[GridSearchSVM, dict[str, float]]:
    """The rank-zero part, testable without a Trainer: fit, tune (or freeze), write every artifact, return metrics."""
    split = table["split"]
    unknown = sorted(set(split.tolist()) - set(SPLITS))
    if unknown:
        raise ValueError(f"{model_name}: batches name unknown splits {unknown}; expected {list(SPLITS)}")
    check_finite_rows(table["features"], name=f"{model_name} features", clip_ids=table["clip_id"])
    fusion_features = table.get("fusion_features", table["features"])

    fit_rows = np.isin(split, partition.fit)
    tune_rows = np.isin(split, partition.tune)
    if not fit_rows.any():
        raise ValueError(f"{model_name}: no clip of the fit splits {list(partition.fit)} was served")
    X, y, ids = table["features"], table["label"], table["clip_id"]

    frozen = frozen_choice(partition, runs_dir, model_name)
    if frozen is not None:
        estimator.fit_fixed(
            X[fit_rows], y[fit_rows], C=frozen["C"], gamma=frozen.get("gamma"), clip_ids=ids[fit_rows]
        )
    elif tune_rows.any():
        estimator.fit(
            X[fit_rows],
            y[fit_rows],
            X[tune_rows],
            y[tune_rows],
            clip_ids=ids[fit_rows],
            tune_clip_ids=ids[tune_rows],
        )
    else:
        log.warning(
            "%s: no clip of the tune splits %s; choosing (C, gamma) by CV", model_name, list(partition.tune)
        )
        estimator.fit(X[fit_rows], y[fit_rows], clip_ids=ids[fit_rows])

    out_dir = Path(run_dir) / model_name
    chosen = estimator.decision_summary()
    chosen.update(
        partition=partition.name,
        fit=list(partition.fit),
        tune=list(partition.tune),
        n_fit=int(fit_rows.sum()),
        n_tune=int(tune_rows.sum()),
    )
    save_json(chosen_path(run_dir, model_name), chosen)
    save_svm(estimator, out_dir / "svm.skops")

    metrics: dict[str, float] = {
        f"{model_name}/C": float(chosen["C"]),
        f"{model_name}/gamma": float("nan") if chosen["gamma"] is None else float(chosen["gamma"]),
        f"{model_name}/tune_score": float("nan")
        if chosen["tune_score"] is None
        else float(chosen["tune_score"]),
    }
    metrics.update(
        write_split_probs(
            run_dir,
            model_name,
            ids,
            y,
            split,
            lambda rows: estimator.predict_proba(X[rows], clip_ids=ids[rows]),
            features=fusion_features,
        )
    )
    return estimator, metrics


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
    (``fit_on_rank_zero``), and every rank gets the metrics (or rank zero's error) back."""

    label = "GatherThenFitOnRankZero"

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}
        self._table = ClipTable()

    def fit_on_rank_zero(self, trainer: L.Trainer, table: ClipTable) -> dict[str, float]:
        raise NotImplementedError

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._table = ClipTable()

    def on_predict_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._table.add(outputs if isinstance(outputs, dict) else batch)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank joins the gather and the broadcast (never rank_zero_only here: that would deadlock).
        shards = gather_objects(self._table.arrays())
        metrics: dict[str, float] | None = None
        error: str | None = None
        if trainer.is_global_zero:
            try:
                metrics = self.fit_on_rank_zero(trainer, ClipTable.merge(shards))
            except Exception as err:  # re-raised on every rank below, so no rank waits forever at the barrier
                error = f"{type(err).__name__}: {err}"
                log.exception("%s failed", self.label)
        self.metrics = share_rank_zero_result(trainer, metrics, error, self.label)


class FitSVMOnFeatures(GatherThenFitOnRankZero):
    """Gather per-clip features at the end of ``trainer.predict``, fit the SVM on rank zero, write its artifacts.

    Args:
        model_name: the stage / model name (``aggcnn``, ``audio``, ``activity``): names the output folder and probs.
        estimator: a :class:`emotiw.svm.GridSearchSVM` (cloned) or a Hydra config of one.
        run_dir: ``paths.run_dir`` of the experiment.
        partition: a :class:`emotiw.partitions.Partition` or its config.
        runs_dir: where a retrain partition's ``from_run`` lives (default: the parent of ``run_dir``).
    """

    def __init__(
        self,
        model_name: str,
        estimator: Any,
        run_dir: str | Path,
        partition: Partition | Any,
        runs_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not model_name:
            raise ValueError(f"model_name={model_name!r} must be a non-empty stage name")
        self.model_name = model_name
        self.estimator = estimator
        self.run_dir = Path(run_dir)
        self.partition = partition if isinstance(partition, Partition) else Partition.from_config(partition)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.run_dir.parent

    @property
    def label(self) -> str:
        return f"FitSVMOnFeatures({self.model_name!r})"

    def fit_on_rank_zero(self, trainer: L.Trainer, table: ClipTable) -> dict[str, float]:
        estimator = build_estimator(self.estimator)
        if trainer.fast_dev_run:
            estimator = _smallest_grid(estimator)
        _, metrics = fit_and_write(
            table,
            model_name=self.model_name,
            estimator=estimator,
            run_dir=self.run_dir,
            partition=self.partition,
            runs_dir=self.runs_dir,
        )
        return metrics


def _smallest_grid(est: GridSearchSVM) -> GridSearchSVM:
    """fast_dev_run: one C and one gamma, so the smoke test stays cheap."""
    params = est.get_params()
    small = {"C_grid": list(params["C_grid"])[:1]}
    if list(params["gamma_grid"] or ()):
        small.update(gamma_grid=list(params["gamma_grid"])[:1], gamma_per_dim_grid=[])
    else:
        small.update(gamma_per_dim_grid=list(params["gamma_per_dim_grid"])[:1])
    return est.set_params(**small)
