"""stage=activity on the generator's clips: artifacts and logs on the tiny preset, beating chance on Val and Test of a
larger generated set (fixed seed), and the same per-clip probabilities under two-process DDP."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from emotiw.artifacts import SPLITS, load_json, load_probs
from emotiw.labels import NUM_CLASSES
from tests.helpers import assert_exit, assert_split_once, compose_cfg, run, train_py

# The quickest settings that still run every step: scale=quick's small activity preset, 1 SAE epoch, 2000 blocks,
# 16 words.
QUICK = ["scale=quick"]


def test_activity_stage_on_the_generated_tiny_tree(tiny_root: Path) -> None:
    metrics = run(["stage=activity", "experiment_name=act_tiny", *QUICK], tiny_root)
    run_dir = tiny_root / "runs" / "act_tiny"
    for name in ("sae.ckpt", "codebook.npz", "chosen.json", "svm.skops"):
        assert (run_dir / "activity" / name).is_file(), name
    for split in SPLITS:  # every generated clip is scored: 14 per split, each once
        cp = load_probs(run_dir, "activity", split)
        assert len(cp.clip_ids) == len(set(cp.clip_ids)) == 14, split
        assert cp.features.shape == (14, 16) and cp.probs.shape == (14, NUM_CLASSES)
        np.testing.assert_allclose(cp.features.sum(1), 1.0, atol=1e-5)  # L1-normalised histograms
        np.testing.assert_allclose(cp.probs.sum(1), 1.0, atol=1e-5)
    assert metrics["activity/clips_ok"] == 42 and metrics["sae/n_visible"] <= 100
    # What the stage logs reaches the configured logger (CSV here; W&B in a real run): the SVM's accuracies and the
    # stage's counts, next to the SAE fit's own log.
    with open(run_dir / "activity" / "csv" / "metrics.csv", newline="") as fh:
        logged = {k for row in csv.DictReader(fh) for k, v in row.items() if v != ""}
    assert {"train/acc", "val/acc", "test/acc", "activity/clips_ok", "activity/seconds_sae"} <= logged
    assert (run_dir / "activity" / "csv_sae" / "metrics.csv").is_file()


def test_small_scale_departs_from_the_paper_only_where_it_says_why(tmp_path: Path) -> None:
    paper = compose_cfg(["stage=activity"], tmp_path)  # the default scale runs the paper's activity model
    assert (
        paper.data.max_components == 500 and paper.model.lr == 1e-3 and paper.svm.probability == "calibrated"
    )
    assert list(paper.svm.C_grid) == [100] and paper.bow.n_words == 3000 and paper.trainer.max_epochs == 50
    assert paper.cpu_threads is None
    for scale in ("demo", "quick"):  # the small preset: only the scales that run on the generated data
        small = compose_cfg(["stage=activity", f"scale={scale}"], tmp_path)
        assert (
            small.data.max_components == 100 and small.model.lr == 1e-2 and small.svm.probability == "softmax"
        )
        assert list(small.svm.C_grid) == [1, 10, 100] and small.cpu_threads == 1
    assert compose_cfg(["stage=activity", "scale=demo"], tmp_path).bow.n_words == 64


# 30 clips per class in each split of the tiny preset's sizes, easy difficulty: enough clips for the motion cue to
# show, as it cannot on 2 clips per class.
ACT_DATA = [
    "stage=make_data",
    "synth.preset=tiny",
    "synth.seed=0",
    "synth.difficulty=easy",
    "synth.counts={afew_train: 210, afew_val: 105, afew_test: 105, afew_max_s: 2.0}",
]


@pytest.fixture(scope="module")
def act_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("act_root")
    run(ACT_DATA, root)
    return root


@pytest.mark.slow
def test_activity_beats_chance_on_generated_val_and_test(act_root: Path) -> None:
    metrics = run(["stage=activity", "experiment_name=act", "seed=0", "scale=demo"], act_root)
    print(f"activity accuracy: {metrics}")
    chance = 1 / NUM_CLASSES  # uniform classes
    assert metrics["val/acc"] > 2 * chance and metrics["test/acc"] > 2 * chance, metrics


@pytest.mark.slow
def test_activity_under_two_process_ddp(tiny_root: Path) -> None:
    """DDP: each rank samples and encodes its share of the clips, rank zero fits the codebook and the SVM and writes.

    A DDP run of the whole stage trains its SAE on two ranks' batches (gradients averaged), so its features cannot
    equal a one-process run's: it must score every clip exactly once. With the SAE and codebook frozen
    (``partition=retrain``), what DDP changes is only the gathering, so its file must equal the one-process file.
    """

    def ddp(*overrides: str) -> None:
        base = ["stage=activity", "trainer=ddp_sim", "seed=0", f"paths.root_dir={tiny_root}"]
        assert_exit(train_py([*base, *overrides], tiny_root, timeout=1200))

    run(["stage=activity", "experiment_name=one", "seed=0", *QUICK], tiny_root)
    ddp("experiment_name=two", *QUICK)
    for split in SPLITS:
        one, two = (load_probs(tiny_root / "runs" / e, "activity", split) for e in ("one", "two"))
        np.testing.assert_array_equal(
            two.clip_ids, one.clip_ids
        )  # every clip once: the sampler's padding dropped
        assert len(two.clip_ids) == 14
        np.testing.assert_allclose(two.features.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(two.probs.sum(1), 1.0, atol=1e-5)
    assert load_json(tiny_root / "runs" / "two" / "activity" / "chosen.json")["n_fit"] == 14
    assert (tiny_root / "runs" / "two" / "activity" / "codebook.npz").is_file()
    # Each rank decoded its share of the clips for the SAE's blocks and encoded its share, each clip once; the
    # gathered blocks are one process's (the block whitening fitted on them is the same).
    from emotiw.io.afew import list_splits

    afew = tiny_root / "data" / "generated" / "afew"
    ranks = tiny_root / "runs" / "two" / "activity" / "ranks.json"
    assert_split_once(ranks, "blocks", [str(c.video_path) for c in list_splits(afew, ["Train", "Val"])])
    assert_split_once(ranks, "encode", [c.clip_id for c in list_splits(afew, SPLITS)])
    one_sae, two_sae = (
        torch.load(tiny_root / "runs" / e / "activity" / "sae.ckpt", map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        for e in ("one", "two")
    )
    for key in ("pixel_map", "pixel_bias", "row_constant"):
        torch.testing.assert_close(two_sae[key], one_sae[key], rtol=1e-5, atol=1e-6, msg=key)

    run(
        [
            "stage=activity",
            "experiment_name=one_r",
            "seed=0",
            "partition=retrain",
            "partition.from_run=one",
            *QUICK,
        ],
        tiny_root,
    )
    ddp("experiment_name=two_r", "partition=retrain", "partition.from_run=one", *QUICK)
    for split in SPLITS:
        a, b = (load_probs(tiny_root / "runs" / e, "activity", split) for e in ("one_r", "two_r"))
        np.testing.assert_array_equal(a.clip_ids, b.clip_ids)
        np.testing.assert_allclose(b.features, a.features, atol=1e-6)
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-6)
