"""Decision-level fusion as a callback: gather per-clip probabilities from every rank, search the paper's per-class
weights on rank zero (``emotiw.combine.RandomSearchCombiner``), write the combined probabilities.

Fed by ``trainer.predict`` with dict batches (``stages/combine.py`` serves them)::

    {"clip_id": list[str], "label": LongTensor (B,), "split": list[str], "features": FloatTensor (B, M*7)}

where ``features`` holds the M models' probabilities hstacked, NaN where a model has no score for the clip.
At ``on_predict_end``, on every rank: all-gather the rows and de-duplicate by clip id; on rank zero: search on the
``search_splits`` rows (or reuse the weights frozen in the ``chosen.json`` of a retrain partition's ``from_run``),
write ``<run_dir>/<task>/chosen.json`` and ``<run_dir>/probs/combine_<Split>.npz``; broadcast the metrics; barrier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from sklearn.base import clone

from callbacks.gather import ClipTable, GatherThenFitOnRankZero, write_split_probs
from emotiw.artifacts import save_json
from emotiw.combine import RandomSearchCombiner
from emotiw.labels import NUM_CLASSES, UNLABELLED
from emotiw.partitions import Partition, chosen_path, frozen_choice

log = logging.getLogger(__name__)


def build_combiner(estimator: Any) -> RandomSearchCombiner:
    if isinstance(estimator, RandomSearchCombiner):
        return clone(estimator)
    if hasattr(estimator, "get") and estimator.get("_target_"):
        import hydra

        return hydra.utils.instantiate(estimator, _convert_="all")
    raise ValueError(
        f"estimator must be a RandomSearchCombiner or a config with _target_, got {type(estimator).__name__}"
    )


def search_and_write(
    table: dict[str, np.ndarray],
    *,
    models: Sequence[str],
    estimator: RandomSearchCombiner,
    run_dir: str | Path,
    search_splits: Sequence[str],
    partition: Partition,
    runs_dir: str | Path,
    task_name: str = "combine",
    output_model: str = "combine",
) -> tuple[RandomSearchCombiner, dict[str, float]]:
    """The rank-zero part, testable without a Trainer: search (or freeze) the weights, write the artifacts."""
    X, y, ids, split = table["features"].astype(np.float64), table["label"], table["clip_id"], table["split"]
    if X.shape[1] != len(models) * NUM_CLASSES:
        raise ValueError(
            f"{task_name}: batches carry {X.shape[1]} probability columns, expected "
            f"{len(models)} models x {NUM_CLASSES}"
        )
    estimator.set_params(n_models=len(models))
    frozen = frozen_choice(partition, runs_dir, task_name)
    if frozen is not None:
        if list(frozen["models"]) != list(models):
            raise ValueError(
                f"{chosen_path(Path(runs_dir) / str(partition.from_run), task_name)}: weights are for "
                f"models {frozen['models']}, this run combines {list(models)}"
            )
        estimator = RandomSearchCombiner.from_weights(
            frozen["weights"],
            subset=tuple(models.index(m) for m in frozen["subset"]),
            best_score=float(frozen["search_score"]),
            **{k: v for k, v in estimator.get_params().items() if k not in ("n_models", "n_classes")},
        )
        n_search = 0
    else:
        rows = np.isin(split, list(search_splits)) & (y != UNLABELLED)
        if not rows.any():
            raise ValueError(
                f"{task_name}: no labelled clip of the search splits {list(search_splits)} was served"
            )
        estimator.fit(X[rows], y[rows])
        n_search = int(rows.sum())
    chosen = {
        "models": list(models),
        "subset": [models[i] for i in estimator.subset_],
        "weights": estimator.weights_.tolist(),
        "search_score": float(estimator.best_score_),
        "search_splits": list(search_splits) if frozen is None else [],
        "n_search": n_search,
        "partition": partition.name,
        # all models (the paper's choice) or the best of every subset (the authors' script)
        "search_subsets": bool(
            estimator.search_subsets if frozen is None else frozen.get("search_subsets", False)
        ),
    }
    if frozen is not None:
        chosen["frozen_from"] = partition.from_run
    if frozen is None and estimator.search_subsets:
        chosen["subset_scores"] = {
            "+".join(models[i] for i in s): v for s, v in estimator.subset_scores_.items()
        }
    save_json(chosen_path(run_dir, task_name), chosen)

    metrics: dict[str, float] = {f"{task_name}/search_score": float(estimator.best_score_)}
    metrics.update(
        write_split_probs(run_dir, output_model, ids, y, split, lambda rows: estimator.predict_proba(X[rows]))
    )
    return estimator, metrics


class FitCombinerOnProbs(GatherThenFitOnRankZero):
    """Search per-model, per-class weights over the gathered probabilities at the end of ``trainer.predict``.

    Args:
        models: names of the combined models, in the column order of ``features`` (for ``chosen.json``).
        estimator: a :class:`emotiw.combine.RandomSearchCombiner` (cloned) or a Hydra config of one.
        run_dir: ``paths.run_dir`` of the experiment (outputs).
        partition: a :class:`emotiw.partitions.Partition` or its config; a retrain partition reuses the weights.
        search_splits: the splits the weights are tuned on (default ``partition.tune``).
        runs_dir: where a retrain partition's ``from_run`` lives (default: the parent of ``run_dir``).
        task_name: folder of ``chosen.json`` and the key prefix of the metrics.
    """

    def __init__(
        self,
        models: Sequence[str],
        estimator: Any,
        run_dir: str | Path,
        partition: Partition | Any,
        search_splits: Sequence[str] | None = None,
        runs_dir: str | Path | None = None,
        task_name: str = "combine",
    ) -> None:
        super().__init__()
        self.models = list(models)
        if len(self.models) < 2:
            raise ValueError(f"models={self.models} must name at least two models to combine")
        self.estimator = estimator
        self.run_dir = Path(run_dir)
        self.partition = partition if isinstance(partition, Partition) else Partition.from_config(partition)
        self.search_splits = list(search_splits) if search_splits else list(self.partition.tune)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.run_dir.parent
        self.task_name = task_name

    @property
    def label(self) -> str:
        return f"FitCombinerOnProbs({self.task_name!r})"

    def fit_on_rank_zero(self, trainer: L.Trainer, table: ClipTable) -> dict[str, float]:
        estimator = build_combiner(self.estimator)
        if trainer.fast_dev_run:  # keep the smoke test cheap: 2 local rounds of 500 candidates
            estimator.set_params(n_samples=500, decay=0.1, sigma_min=0.01)
        _, metrics = search_and_write(
            table,
            models=self.models,
            estimator=estimator,
            run_dir=self.run_dir,
            search_splits=self.search_splits,
            partition=self.partition,
            runs_dir=self.runs_dir,
            task_name=self.task_name,
        )
        return metrics
