"""Every submission of Table 2 composes, with the partition, fusion preset and sources the paper describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.all import PIPELINE, compose_stage
from tests.helpers import compose_cfg

EXPECTED = {
    1: ("standard", ["Train"], ["Val"], "fusion", None),
    2: ("standard", ["Train"], ["Val"], "fusion_stable", None),
    3: ("retrain", ["Train", "Val"], [], "fusion_stable", "submission2"),
    4: ("swapped", ["Val"], ["Train"], "fusion", None),
    5: ("swapped", ["Val"], ["Train"], "fusion_stable", None),
    6: ("retrain", ["Train", "Val"], [], "fusion", "submission4"),
}


@pytest.mark.parametrize("n", range(1, 8))
def test_submission_runs_the_whole_pipeline_by_default(n: int, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment=submission{n}"], tmp_path)
    assert cfg.experiment_name == f"submission{n}"
    assert cfg.runner == "stages.all.run" and cfg.task_name == "all"
    assert Path(cfg.paths.run_dir) == tmp_path / "runs" / f"submission{n}"


@pytest.mark.parametrize("n", sorted(EXPECTED))
def test_submission_partition_and_fusion_preset(n: int, tmp_path: Path) -> None:
    name, fit, tune, variant, from_run = EXPECTED[n]
    cfg = compose_cfg([f"experiment=submission{n}", "stage=fusion"], tmp_path)
    assert cfg.task_name == "fusion"  # a stage on the command line beats the experiment's stage=all
    assert (cfg.partition.name, list(cfg.partition.fit), list(cfg.partition.tune)) == (name, fit, tune)
    assert cfg.partition.get("from_run") == from_run if from_run else True
    assert cfg.hydra.runtime.choices.fusion_variant == variant and cfg.model.variant == variant
    # what stage=all composes for the fusion stage: the preset's values
    fusion = compose_stage("fusion", [f"experiment=submission{n}", f"paths.root_dir={tmp_path}"])
    lr, momentum, epochs = (0.001, 0.9, 5000) if variant == "fusion_stable" else (0.1, 0.0, 500)
    assert (fusion.model.lr, fusion.model.momentum, fusion.trainer.max_epochs) == (lr, momentum, epochs)
    assert fusion.model.variant == variant
    if n > 1:
        top = compose_cfg([f"experiment=submission{n}"], tmp_path)
        assert top.all.reuse_from == "submission1" and "cnn" in top.all.shared_stages


def test_submission7_combines_the_retrained_runs_on_train_and_val(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=submission7", "stage=combine"], tmp_path)
    assert list(cfg.combine.sources) == ["submission3/combine", "submission6/combine"]
    assert list(cfg.combine.search_splits) == ["Train", "Val"]
    assert cfg.combine.estimator.n_samples == 100_000
    top = compose_cfg(["experiment=submission7"], tmp_path)
    assert list(top.all.stages) == ["combine", "report"]


def test_stage_defaults_pin_the_paper(tmp_path: Path) -> None:
    est = compose_cfg(["stage=combine"], tmp_path).combine.estimator
    assert (est.n_samples, est.sigma0, est.decay, est.sigma_min, est.min_models, est.random_state) == (
        100_000,
        0.5,
        0.9,
        1e-4,
        2,
        1,
    )
    assert est.search_subsets is False  # the paper: all models together was consistently best
    assert list(compose_cfg(["stage=combine"], tmp_path).combine.sources) == [
        "aggcnn",
        "audio",
        "irnn",
        "activity",
        "fusion",
    ]
    assert PIPELINE == (
        "make_data",
        "cnn",
        "faces",
        "features",
        "irnn",
        "aggcnn",
        "audio",
        "activity",
        "fusion",
        "combine",
        "report",
    )


def test_fusion_variant_preset_applies_outside_stage_all(tmp_path: Path) -> None:
    # Hydra composes the preset for the fusion stage run alone, and a variant on the command line beats the experiment's.
    cfg = compose_cfg(["experiment=submission5", "stage=fusion"], tmp_path)
    assert (cfg.model.lr, cfg.model.momentum, cfg.trainer.max_epochs) == (0.001, 0.9, 5000)
    cfg = compose_cfg(["experiment=submission5", "stage=fusion", "fusion_variant=fusion"], tmp_path)
    assert (cfg.model.lr, cfg.model.momentum, cfg.trainer.max_epochs) == (0.1, 0.0, 500)
    # Other stages keep their own model.
    assert compose_cfg(["experiment=submission5", "stage=irnn"], tmp_path).model.lr == 0.005


def test_shared_stages_compose_as_the_base_run_composed_them(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from stages.all import base_run_overrides

    own = compose_stage("cnn", ["experiment=submission1", f"paths.root_dir={tmp_path}"])
    as_base = compose_stage(
        "cnn", base_run_overrides(["experiment=submission4", f"paths.root_dir={tmp_path}"], "submission1")
    )
    assert OmegaConf.to_container(own, resolve=True) == OmegaConf.to_container(as_base, resolve=True)
    assert base_run_overrides(["experiment=x"], "my_base") == ["experiment_name=my_base"]


def test_stage_all_composes_every_stage_before_running_any(tmp_path: Path) -> None:
    from tests.helpers import run

    bad = ["stage=all", "experiment_name=bad", "all.stages=[make_data,report]"]
    with pytest.raises(Exception, match="no_such_key"):
        run([*bad, "all.stage_overrides.report=[no_such_key.x=1]"], tmp_path)
    with pytest.raises(ValueError, match=r"unknown stages \['fusio'\]"):
        run([*bad, "+all.stage_overrides.fusio=[]"], tmp_path)
    assert not (tmp_path / "data" / "generated").exists()  # make_data, first in line, never ran


@pytest.mark.parametrize("n", range(1, 8))
def test_submissions_run_the_papers_activity_model(n: int, tmp_path: Path) -> None:
    """Paper-spec §6: K = 300 product units, a 3,000-word codebook, the chi-squared SVM with C = 100 and Platt
    probabilities; lr 1e-3 for 50 epochs on ~500k blocks ([gap] values the spec proposes). The small preset is only
    for the scales that run on the generated data."""
    act = compose_stage("activity", [f"experiment=submission{n}", f"paths.root_dir={tmp_path}"])
    assert (act.model.n_hidden, act.bow.n_words, act.model.lr, act.trainer.max_epochs) == (
        300,
        3000,
        1e-3,
        50,
    )
    assert (act.svm.probability, list(act.svm.C_grid), act.svm.kernel) == ("calibrated", [100], "chi2")
    assert (act.data.n_train_blocks, act.data.max_components) == (500_000, 500)
    for scale in ("quick", "demo"):
        small = compose_stage(
            "activity", [f"experiment=submission{n}", f"scale={scale}", f"paths.root_dir={tmp_path}"]
        )
        assert (small.model.n_hidden, small.svm.probability, small.data.max_components) == (
            300,
            "softmax",
            100,
        )
        assert small.bow.n_words < 3000 and small.model.lr == 1e-2
