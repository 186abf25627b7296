"""The seven submissions of the paper's Table 2 (paper-spec §9): what each configures, their dependencies, and (slow)
all seven run end to end on the tiny generated set with `scale=quick`, sharing one root in dependency order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from emotiw.artifacts import load_json, load_probs
from stages.all import PIPELINE, compose_stage
from tests.helpers import assert_exit, compose_cfg, run, train_py

# paper-spec §9, Table 2: fit splits, tune (early stopping / SVM grid) splits, random-search splits, fusion preset,
# the run whose hyper-parameters a retrain freezes. Sub 7 combines the Test probabilities of 3 and 6, searched on T+V.
TABLE2 = {
    1: {"fit": ["Train"], "tune": ["Val"], "search": ["Val"], "variant": "fusion", "from_run": None},
    2: {"fit": ["Train"], "tune": ["Val"], "search": ["Val"], "variant": "fusion_stable", "from_run": None},
    3: {
        "fit": ["Train", "Val"],
        "tune": [],
        "search": [],
        "variant": "fusion_stable",
        "from_run": "submission2",
    },
    4: {"fit": ["Val"], "tune": ["Train"], "search": ["Train"], "variant": "fusion", "from_run": None},
    5: {"fit": ["Val"], "tune": ["Train"], "search": ["Train"], "variant": "fusion_stable", "from_run": None},
    6: {"fit": ["Train", "Val"], "tune": [], "search": [], "variant": "fusion", "from_run": "submission4"},
}
ORDER = (1, 2, 3, 4, 5, 6, 7)  # 3 needs 2, 6 needs 4, 7 needs 3 and 6


@pytest.mark.parametrize("n", sorted(TABLE2))
def test_submission_config_matches_table2(n: int, tmp_path: Path) -> None:
    row = TABLE2[n]
    for extra in ([], ["scale=quick"]):  # the quick scale shortens runs; it never changes the protocol
        cfg = compose_cfg([f"experiment=submission{n}", *extra], tmp_path)
        assert (list(cfg.partition.fit), list(cfg.partition.tune)) == (row["fit"], row["tune"])
        assert cfg.partition.get("from_run") == row["from_run"]
        assert cfg.hydra.runtime.choices.fusion_variant == row["variant"]
        assert cfg.all.stages is None  # the whole pipeline
        # one face CNN for all, trained in submission 1: it is never retrained (§9)
        assert cfg.all.reuse_from == (None if n == 1 else "submission1")
        combine = compose_stage(
            "combine", [f"experiment=submission{n}", f"paths.root_dir={tmp_path}", *extra]
        )
        # null search splits = the partition's tune splits; a retrain partition has none and reuses the weights
        assert list(combine.combine.search_splits or combine.partition.tune) == row["search"]
        assert list(combine.combine.sources) == ["aggcnn", "audio", "irnn", "activity", "fusion"]


def test_submission7_combines_3_and_6_searched_on_train_and_val(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=submission7", "scale=quick"], tmp_path)
    assert list(cfg.all.stages) == ["combine", "report"]
    combine = compose_stage(
        "combine", ["experiment=submission7", f"paths.root_dir={tmp_path}", "scale=quick"]
    )
    assert list(combine.combine.sources) == ["submission3/combine", "submission6/combine"]
    assert (
        list(combine.combine.search_splits) == ["Train", "Val"]
        and combine.combine.on_missing_model == "error"
    )


def test_quick_scale_shortens_every_trained_stage_and_paper_defaults_stay(tmp_path: Path) -> None:
    base = [f"paths.root_dir={tmp_path}", "experiment=submission2"]
    expected_epochs = {"cnn": 2, "irnn": 5, "activity": 1, "fusion": 5}
    for stage in ("make_data", "cnn", "irnn", "activity", "fusion", "combine"):
        short = compose_stage(stage, [*base, "scale=quick"])
        paper = compose_stage(stage, base)
        if stage in expected_epochs:
            assert short.trainer.max_epochs == expected_epochs[stage]
        assert OmegaConf.to_container(short.partition) == OmegaConf.to_container(paper.partition)
    # what the quick scale set before it was config values: these overrides, per stage
    short = {s: compose_stage(s, [*base, "scale=quick"]) for s in ("make_data", "cnn", "activity", "combine")}
    assert short["make_data"].synth.preset == "tiny"
    cnn = short["cnn"]
    assert (cnn.data.val_source, cnn.model.lr_schedule, cnn.model.max_lr) == ("fer_holdout", "onecycle", 0.04)
    act = short["activity"]
    assert (act.data.n_train_blocks, act.data.n_val_blocks, act.data.whitener_fit_blocks) == (2000, 500, 2000)
    assert (act.bow.n_words, act.bow.codebook_blocks, act.data.max_components, act.model.lr) == (
        16,
        2000,
        100,
        1e-2,
    )
    est = short["combine"].combine.estimator
    assert (est.n_samples, est.decay, est.sigma_min) == (2000, 0.1, 0.01)
    paper = {s: compose_stage(s, base) for s in expected_epochs}
    assert [paper[s].trainer.max_epochs for s in ("cnn", "irnn", "fusion")] == [700, 1000, 5000]
    assert compose_stage("make_data", base).synth.preset == "demo"


def test_a_single_stage_run_applies_the_scale(tmp_path: Path) -> None:
    assert compose_cfg(["stage=irnn", "scale=quick"], tmp_path).trainer.max_epochs == 5
    assert (
        compose_cfg(
            ["stage=fusion", "scale=quick", "fusion_variant=fusion_stable"], tmp_path
        ).trainer.max_epochs
        == 5
    )
    assert compose_cfg(["stage=make_data", "scale=quick"], tmp_path).synth.preset == "tiny"


@pytest.mark.parametrize(
    ("n", "needs"), [(3, "submission2"), (6, "submission4"), (7, "submission3, submission6")]
)
def test_a_submission_names_the_runs_it_needs_before_running_anything(
    n: int, needs: str, tmp_path: Path
) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=rf"submission{n} needs the outputs of run\(s\) {needs} .* missing\)"
        rf": run `python train.py experiment=submission",
    ):
        run([f"experiment=submission{n}", "scale=quick"], tmp_path)
    assert not (tmp_path / "runs" / f"submission{n}" / "irnn").exists()  # nothing ran
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_all_seven_submissions_run_end_to_end_on_tiny(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for n in ORDER:
        summary = run([f"experiment=submission{n}", "scale=quick"], tmp_path)
        assert summary["report/status"] == "ran"
        run_dir = runs / f"submission{n}"
        test_ids = sorted(p.stem for p in (tmp_path / "data" / "generated" / "afew" / "Test").glob("*.avi"))
        assert test_ids
        final = ["combine"] if n == 7 else ["fusion", "combine"]
        for model in final:  # every Test clip scored once, probabilities that sum to one
            test = load_probs(run_dir, model, "Test")
            assert sorted(test.clip_ids.tolist()) == test_ids, (n, model)
            np.testing.assert_allclose(test.probs.sum(1), 1.0, rtol=1e-5)
        report = (run_dir / "report.md").read_text()
        for m in range(1, n + 1):  # Table 2 holds a row for every submission run so far
            assert f"\n| {m} | " in report, (n, m)

    # retraining reused the tuned runs' choices (§9): epoch counts, SVM (C, gamma), the combination weights
    for retrained, tuned in ((3, 2), (6, 4)):
        new, old = runs / f"submission{retrained}", runs / f"submission{tuned}"
        for stage in ("irnn", "fusion"):
            assert (
                load_json(new / stage / "chosen.json")["best_epoch"]
                == load_json(old / stage / "chosen.json")["best_epoch"]
            )
        for stage in ("aggcnn", "audio"):
            a, b = load_json(new / stage / "chosen.json"), load_json(old / stage / "chosen.json")
            assert (a["C"], a["gamma"], a["fit"]) == (b["C"], b["gamma"], ["Train", "Val"])
        a, b = load_json(new / "combine" / "chosen.json"), load_json(old / "combine" / "chosen.json")
        assert a["weights"] == b["weights"] and a["frozen_from"] == f"submission{tuned}"
    # the swapped submissions fit on Val and tune on Train
    for n in (4, 5):
        chosen = load_json(runs / f"submission{n}" / "aggcnn" / "chosen.json")
        assert (chosen["fit"], chosen["tune"]) == (["Val"], ["Train"])
        assert load_json(runs / f"submission{n}" / "combine" / "chosen.json")["search_splits"] == ["Train"]
    sub7 = load_json(runs / "submission7" / "combine" / "chosen.json")
    assert sub7["models"] == ["submission3/combine", "submission6/combine"]
    assert sub7["search_splits"] == ["Train", "Val"] and sub7["n_search"] > 0

    # a second pass over submission 1 reruns nothing but its report, whose Table 2 now holds all seven rows
    again = run(["experiment=submission1", "scale=quick"], tmp_path)
    statuses = {k.removesuffix("/status"): v for k, v in again.items() if k.endswith("/status")}
    assert statuses == {s: "ran" if s == "report" else "current" for s in PIPELINE}
    report = (runs / "submission1" / "report.md").read_text()
    assert all(f"\n| {m} | " in report for m in ORDER)


@pytest.mark.slow
@pytest.mark.ddp
def test_a_submission_runs_end_to_end_under_two_process_ddp(tmp_path: Path) -> None:
    # Lightning's launcher re-runs the command for rank 1, so both ranks walk stage=all in step: rank 1 finds
    # make_data current, joins every collective, and only rank zero writes
    overrides = ["experiment=submission1", "scale=quick", "trainer=ddp_sim"]
    assert "MEMBER: 2/2" in assert_exit(train_py(overrides, tmp_path, timeout=1500, one_thread=True))
    run_dir = tmp_path / "runs" / "submission1"
    test_ids = sorted(p.stem for p in (tmp_path / "data" / "generated" / "afew" / "Test").glob("*.avi"))
    for model in ("aggcnn", "audio", "irnn", "fusion", "combine"):
        assert sorted(load_probs(run_dir, model, "Test").clip_ids.tolist()) == test_ids, model
    assert "\n| 1 | " in (run_dir / "report.md").read_text()
