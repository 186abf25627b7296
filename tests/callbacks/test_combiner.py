"""FitCombinerOnProbs: the rank-zero search-and-write without a Trainer, inside trainer.predict, and under 2-process
DDP (slow)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest

from callbacks.combiner import FitCombinerOnProbs, search_and_write
from datamodules.combine_probs import CombineProbsDataModule
from emotiw.artifacts import load_json, load_probs, save_json
from emotiw.combine import RandomSearchCombiner
from emotiw.partitions import Partition
from lightning_modules.pass_through import FeaturePassThrough
from tests.helpers import assert_exit, train_py
from tests.stages.fusion_fakes import write_fake_run

C = 7
FAST = dict(n_samples=200, decay=0.5, sigma_min=0.05)
STANDARD = Partition("standard", ("Train",), ("Val",))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def table(n: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = np.hstack([rng.dirichlet(np.ones(C), n) for _ in range(2)]).astype(np.float32)
    X[np.arange(n), y] += 1.0  # model 0 is informative
    X[:, :C] /= X[:, :C].sum(1, keepdims=True)
    split = np.array(["Train", "Val", "Test"] * (n // 3))
    return {"clip_id": np.array([f"{i:09d}" for i in range(n)]), "label": y, "split": split, "features": X}


def test_search_and_write_searches_only_the_search_split(tmp_path: Path) -> None:
    t = table()
    est, metrics = search_and_write(
        t,
        models=["a", "b"],
        estimator=RandomSearchCombiner(**FAST),
        run_dir=tmp_path / "r",
        search_splits=["Val"],
        partition=STANDARD,
        runs_dir=tmp_path,
    )
    chosen = load_json(tmp_path / "r" / "combine" / "chosen.json")
    assert chosen["n_search"] == 20 and chosen["models"] == ["a", "b"]
    val = t["split"] == "Val"
    ref = RandomSearchCombiner(**FAST, n_models=2).fit(t["features"][val].astype(np.float64), t["label"][val])
    np.testing.assert_allclose(np.array(chosen["weights"]), ref.weights_)
    assert metrics["combine/search_score"] == pytest.approx(ref.best_score_)
    for split in ("Train", "Val", "Test"):
        assert len(load_probs(tmp_path / "r", "combine", split).clip_ids) == 20


def test_frozen_weights_must_name_the_same_models(tmp_path: Path) -> None:
    save_json(
        tmp_path / "base" / "combine" / "chosen.json",
        {"models": ["x", "y"], "subset": ["x", "y"], "weights": [[0.5] * C] * 2, "search_score": 0.3},
    )
    retrain = Partition("retrain", ("Train", "Val"), (), from_run="base")
    with pytest.raises(
        ValueError, match=r"weights are for models \['x', 'y'\], this run combines \['a', 'b'\]"
    ):
        search_and_write(
            table(),
            models=["a", "b"],
            estimator=RandomSearchCombiner(**FAST),
            run_dir=tmp_path / "r",
            search_splits=[],
            partition=retrain,
            runs_dir=tmp_path,
        )


def test_callback_inside_trainer_predict(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "exp"
    write_fake_run(run_dir, models=("aggcnn", "irnn"), missing={"irnn": 5})
    cb = FitCombinerOnProbs(
        models=["aggcnn", "irnn"], estimator=RandomSearchCombiner(**FAST), run_dir=run_dir, partition=STANDARD
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(
        FeaturePassThrough(),
        datamodule=CombineProbsDataModule(["aggcnn", "irnn"], str(run_dir), str(tmp_path / "runs")),
        return_predictions=False,
    )
    assert 0 < cb.metrics["val/acc"] <= 1 and float(trainer.callback_metrics["val/acc"]) == pytest.approx(
        cb.metrics["val/acc"]
    )
    # irnn misses 5 clips per split; combine still scores every clip (renormalised over aggcnn alone)
    assert len(load_probs(run_dir, "combine", "Val").clip_ids) == 140
    with pytest.raises(ValueError, match="at least two models"):
        FitCombinerOnProbs(
            models=["aggcnn"], estimator=RandomSearchCombiner(), run_dir=run_dir, partition=STANDARD
        )


@pytest.mark.slow
def test_two_process_ddp_gathers_and_matches_one_process(tmp_path: Path) -> None:
    for exp in ("one", "two"):
        write_fake_run(tmp_path / "runs" / exp, models=("aggcnn", "audio", "irnn"), missing={"irnn": 9})
    common = [
        "stage=combine",
        "combine.sources=[aggcnn,audio,irnn]",
        *(f"combine.estimator.{k}={v}" for k, v in FAST.items()),
    ]
    for exp, trainer in (("one", "cpu"), ("two", "ddp_sim")):
        assert_exit(
            train_py([f"experiment_name={exp}", f"trainer={trainer}", *common], tmp_path, timeout=900)
        )
    one = load_json(tmp_path / "runs" / "one" / "combine" / "chosen.json")
    two = load_json(tmp_path / "runs" / "two" / "combine" / "chosen.json")
    assert two["weights"] == one["weights"] and two["n_search"] == one["n_search"] == 140
    for split in ("Train", "Val", "Test"):
        a = load_probs(tmp_path / "runs" / "one", "combine", split)
        b = load_probs(tmp_path / "runs" / "two", "combine", split)
        np.testing.assert_array_equal(a.clip_ids, b.clip_ids)
        np.testing.assert_allclose(a.probs, b.probs)
