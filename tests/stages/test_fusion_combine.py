"""stage=fusion and stage=combine on fake upstream probabilities (the real contract), retraining, DDP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emotiw.artifacts import load_json, load_probs
from tests.helpers import run
from tests.stages.fusion_fakes import write_fake_run

# Enough steps (14 per epoch) for the fusion net to pass every single model on the fake data, few enough for CI.
EPOCHS = 6
SMALL_SEARCH = [
    "combine.estimator.n_samples=200",
    "combine.estimator.decay=0.5",
    "combine.estimator.sigma_min=0.1",
]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These nets and searches are tiny: one intra-op thread is faster, and on a shared, oversubscribed 2-core box
    two spinning OpenMP threads make a fusion step many times slower (README, Benchmarks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fused_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A root whose run `exp` holds fake aggcnn/audio/irnn/activity probs, then a short fusion run."""
    root = tmp_path_factory.mktemp("fusion_root")
    accs = write_fake_run(root / "runs" / "exp", missing={"audio": 6})
    metrics = run(
        [
            "stage=fusion",
            "experiment_name=exp",
            f"trainer.max_epochs={EPOCHS}",
            "data.batch_size=16",
            "seed=0",
        ],
        root,
    )
    return root, {"accs": accs, "metrics": metrics}


def test_fusion_beats_every_single_model_on_test(fused_root: tuple[Path, dict]) -> None:
    # judged on Test: Val chose the fusion net's epoch
    root, info = fused_root
    run_dir = root / "runs" / "exp"
    val = load_probs(run_dir, "fusion", "Val")
    assert float(np.mean(val.probs.argmax(1) == val.labels)) == pytest.approx(info["metrics"]["val/acc"])
    best_single = max(info["accs"][m]["Test"] for m in ("aggcnn", "audio", "irnn"))
    test = load_probs(run_dir, "fusion", "Test")
    fusion_acc = float(np.mean(test.probs.argmax(1) == test.labels))
    assert fusion_acc > best_single + 0.1, (fusion_acc, best_single)
    # every clip of every split is scored, including the ones audio misses (zeros for that modality)
    for split, n in (("Train", 210), ("Val", 140), ("Test", 140)):
        cp = load_probs(run_dir, "fusion", split)
        assert len(cp.clip_ids) == n
        np.testing.assert_allclose(cp.probs.sum(1), 1.0, rtol=1e-5)


def test_fusion_records_best_epoch_and_learning_curves(fused_root: tuple[Path, dict]) -> None:
    root, info = fused_root
    out = root / "runs" / "exp" / "fusion"
    chosen = load_json(out / "chosen.json")
    curves = load_json(out / "curves.json")
    assert len(curves) == EPOCHS and [r["epoch"] for r in curves] == list(range(1, EPOCHS + 1))
    assert all("train/acc" in r and "val/acc" in r for r in curves)
    best = max(r["val/acc"] for r in curves)
    # the first epoch reaching the best val accuracy is the one kept
    assert chosen["best_epoch"] == next(r["epoch"] for r in curves if r["val/acc"] == best)
    assert info["metrics"]["best_epoch"] == chosen["best_epoch"]
    assert chosen["lr"] == 0.1 and chosen["fusion_reg"] == "code_bug"


@pytest.mark.slow
def test_fusion_retrain_trains_exactly_the_frozen_epochs(fused_root: tuple[Path, dict]) -> None:
    root, _ = fused_root
    write_fake_run(root / "runs" / "exp_retrain")
    frozen = load_json(root / "runs" / "exp" / "fusion" / "chosen.json")["best_epoch"]
    metrics = run(
        [
            "stage=fusion",
            "experiment_name=exp_retrain",
            "partition=retrain",
            "partition.from_run=exp",
            "trainer.max_epochs=40",
            "data.batch_size=16",
            "seed=0",
        ],
        root,
    )
    out = root / "runs" / "exp_retrain" / "fusion"
    assert len(load_json(out / "curves.json")) == frozen
    assert metrics["best_epoch"] == frozen
    assert load_json(out / "chosen.json")["frozen_from"] == "exp"
    assert (root / "runs" / "exp_retrain" / "probs" / "fusion_Test.npz").is_file()


def test_combine_searches_on_val_and_writes_weights(fused_root: tuple[Path, dict]) -> None:
    root, info = fused_root
    run_dir = root / "runs" / "exp"
    metrics = run(["stage=combine", "experiment_name=exp", *SMALL_SEARCH], root)
    chosen = load_json(run_dir / "combine" / "chosen.json")
    assert chosen["models"] == ["aggcnn", "audio", "irnn", "activity", "fusion"]
    # the paper's choice: the weights of all models, no subset search
    assert chosen["subset"] == chosen["models"] and chosen["search_subsets"] is False
    assert "subset_scores" not in chosen and chosen["search_splits"] == ["Val"]
    w = np.array(chosen["weights"])
    assert w.shape == (5, 7)
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-6)
    val = load_probs(run_dir, "combine", "Val")
    acc = float(np.mean(val.probs.argmax(1) == val.labels))
    assert acc == pytest.approx(chosen["search_score"]) == pytest.approx(metrics["val/acc"])
    singles = [info["accs"][m]["Val"] for m in ("aggcnn", "audio", "irnn", "activity")]
    assert acc >= max(singles + [info["metrics"]["val/acc"]])
    assert len(load_probs(run_dir, "combine", "Test").clip_ids) == 140


def test_combine_retrain_reuses_the_frozen_weights(fused_root: tuple[Path, dict]) -> None:
    root, _ = fused_root
    if not (root / "runs" / "exp" / "combine" / "chosen.json").is_file():
        run(["stage=combine", "experiment_name=exp", *SMALL_SEARCH], root)
    other = root / "runs" / "exp_frozen"
    write_fake_run(other)  # same clips and labels as `exp` (refit on T+V in reality)
    for split in ("Train", "Val", "Test"):  # a stand-in for this run's fusion output
        (other / "probs" / f"fusion_{split}.npz").write_bytes(
            (root / "runs/exp/probs" / f"fusion_{split}.npz").read_bytes()
        )
    run(
        [
            "stage=combine",
            "experiment_name=exp_frozen",
            "partition=retrain",
            "partition.from_run=exp",
            *SMALL_SEARCH,
        ],
        root,
    )
    a = load_json(root / "runs" / "exp" / "combine" / "chosen.json")
    b = load_json(other / "combine" / "chosen.json")
    assert b["weights"] == a["weights"] and b["frozen_from"] == "exp" and b["n_search"] == 0


def test_combine_of_other_runs_searches_on_train_and_val(fused_root: tuple[Path, dict]) -> None:
    # submission 7: combine two runs' outputs, searched on T+V
    root, _ = fused_root
    metrics = run(
        [
            "stage=combine",
            "experiment_name=sub7",
            "combine.sources=[exp/irnn,exp/fusion]",
            "combine.search_splits=[Train,Val]",
            *SMALL_SEARCH,
        ],
        root,
    )
    chosen = load_json(root / "runs" / "sub7" / "combine" / "chosen.json")
    assert chosen["models"] == ["exp/irnn", "exp/fusion"] and chosen["search_splits"] == ["Train", "Val"]
    assert chosen["n_search"] == 350
    assert "test/acc" in metrics


def test_combine_names_missing_sources(tmp_path: Path) -> None:
    write_fake_run(tmp_path / "runs" / "lonely", models=("irnn",))
    with pytest.raises(FileNotFoundError, match=r"only \['irnn'\].*at least two models"):
        run(["stage=combine", "experiment_name=lonely", *SMALL_SEARCH], tmp_path)
    with pytest.raises(FileNotFoundError, match="aggcnn_Train.npz: combine source 'aggcnn'"):
        run(
            ["stage=combine", "experiment_name=lonely", "combine.on_missing_model=error", *SMALL_SEARCH],
            tmp_path,
        )


@pytest.mark.slow
def test_stage_all_runs_in_order_then_skips_current_stages(tmp_path: Path) -> None:
    write_fake_run(tmp_path / "runs" / "allexp", sizes={"Train": 70, "Val": 35, "Test": 35})
    per_stage = (
        "all.stage_overrides={fusion: ['trainer.max_epochs=2'], combine: ["
        + ", ".join(f"'{o}'" for o in SMALL_SEARCH)
        + "]}"
    )
    args = ["stage=all", "experiment_name=allexp", "all.stages=[fusion,combine,report]", per_stage]
    first = run(args, tmp_path)
    assert [first[f"{s}/status"] for s in ("fusion", "combine", "report")] == ["ran", "ran", "ran"]
    run_dir = tmp_path / "runs" / "allexp"
    assert (run_dir / "report.md").is_file() and (run_dir / "probs" / "combine_Test.npz").is_file()
    second = run(args, tmp_path)
    # the report always reruns: its Table 2 reads the other submission runs, which the skip rule does not track
    assert [second[f"{s}/status"] for s in ("fusion", "combine", "report")] == ["current", "current", "ran"]
    # a changed fusion hyper-parameter reruns fusion and, being newer, everything after it
    changed = [a.replace("trainer.max_epochs=2", "trainer.max_epochs=3") for a in args]
    third = run(changed, tmp_path)
    assert [third[f"{s}/status"] for s in ("fusion", "combine", "report")] == ["ran", "ran", "ran"]


def test_link_shared_stage_from_a_base_run(tmp_path: Path) -> None:
    from stages.all import link_shared

    base = tmp_path / "runs" / "submission1"
    (base / "features").mkdir(parents=True)
    (base / "features" / "Train.npz").write_bytes(b"x")
    link = link_shared("features", base, tmp_path / "runs" / "submission2")
    assert link.is_symlink() and (link / "Train.npz").read_bytes() == b"x"
    assert link_shared("features", base, tmp_path / "runs" / "submission2") == link  # idempotent


def test_report_is_written_by_rank_zero_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # under `stage=all trainer=ddp` every rank walks the pipeline; the report is not a collective, rank zero writes
    from lightning.pytorch.utilities import rank_zero_only

    write_fake_run(
        tmp_path / "runs" / "rep", models=("aggcnn", "irnn"), sizes={"Train": 14, "Val": 7, "Test": 7}
    )
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert "report/submissions" not in run(["stage=report", "experiment_name=rep"], tmp_path)
    assert not (tmp_path / "runs" / "rep" / "report.md").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert run(["stage=report", "experiment_name=rep"], tmp_path)["val/aggcnn_acc"] >= 0
    assert "| Aggregated CNN |" in (tmp_path / "runs" / "rep" / "report.md").read_text()
