"""Fit an SVM on per-clip features gathered from every rank, and write the SVM stage's artifacts.

Feed it with ``trainer.predict`` of :class:`lightning_modules.pass_through.FeaturePassThrough` over dataloaders
that yield dict batches for Train, Val and Test (``stages/svm.py`` composes them)::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, D)}

plus, optionally, ``"fusion_features": FloatTensor (B, D')`` when the clip feature fusion wants differs from the SVM
input (otherwise ``features`` is written). At ``on_predict_end`` (:class:`callbacks.gather.GatherThenFitOnRankZero`),
on every rank: gather the rows of all ranks and de-duplicate them by clip id; then on rank zero only: fit on the ``partition.fit`` splits, pick (C, gamma) on ``partition.tune``
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
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from sklearn.base import clone

from callbacks.gather import GatherThenFitOnRankZero, write_split_probs
from emotiw.artifacts import SPLITS, save_json
from emotiw.partitions import Partition, chosen_path, frozen_choice
from emotiw.svm import GridSearchSVM, check_finite_rows, save_svm

log = logging.getLogger(__name__)


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

    def fit_on_rank_zero(self, trainer: L.Trainer, table: dict[str, np.ndarray]) -> dict[str, float]:
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
