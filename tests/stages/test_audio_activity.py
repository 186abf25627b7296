"""stage=audio and stage=activity end to end on a tiny tree whose pitch and motion follow the label."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.artifacts import load_json, load_probs
from tests.core.audio_clips import write_av_afew
from tests.helpers import assert_exit, assert_split_once, compose_cfg, generated_clip_ids, run, train_py

SILENT, NO_AUDIO = "000000001", "000000002"


@pytest.fixture(scope="module")
def av_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("avroot")
    write_av_afew(root / "data" / "generated" / "afew", silent_ids={SILENT}, no_audio_ids={NO_AUDIO})
    return root


def test_audio_stage_writes_probs_and_10d_features_and_beats_chance(av_root):
    metrics = run(["stage=audio", "experiment_name=a"], av_root)
    run_dir = av_root / "runs" / "a"
    train, val, test = (load_probs(run_dir, "audio", s) for s in ("Train", "Val", "Test"))
    assert train.features.shape[1] == 10 and val.features.shape == (len(val.clip_ids), 10)
    assert SILENT not in train.clip_ids and NO_AUDIO not in train.clip_ids  # missing_audio=skip
    assert len(train.clip_ids) == 21 - 2 and len(val.clip_ids) == 14 and len(test.clip_ids) == 3
    assert metrics["audio/clips_silent"] == 1 and metrics["audio/clips_no_audio"] == 1
    chosen = load_json(run_dir / "audio" / "chosen.json")
    assert chosen["C"] in (1, 10, 100, 1000, 10000) and chosen["gamma"] in (1e-3, 1e-4, 1e-5)
    assert metrics["val/acc"] > 3 / 7  # chance is 1/7
    assert (run_dir / "audio" / "preprocess.skops").is_file()


@pytest.mark.slow
def test_audio_stage_zeros_scores_every_clip_and_retrain_reuses_the_pca(av_root):
    run(["stage=audio", "experiment_name=z", "data.missing_audio=zeros"], av_root)
    train = load_probs(av_root / "runs" / "z", "audio", "Train")
    assert len(train.clip_ids) == 21
    np.testing.assert_array_equal(train.features[list(train.clip_ids).index(SILENT)], 0)

    run(
        [
            "stage=audio",
            "experiment_name=r",
            "partition=retrain",
            "partition.from_run=z",
            "data.missing_audio=zeros",
        ],
        av_root,
    )
    chosen_z = load_json(av_root / "runs" / "z" / "audio" / "chosen.json")
    chosen_r = load_json(av_root / "runs" / "r" / "audio" / "chosen.json")
    assert (chosen_r["C"], chosen_r["gamma"]) == (chosen_z["C"], chosen_z["gamma"])
    # Same PCA: the 10-d features of a Val clip are identical in both runs.
    vz, vr = (
        load_probs(av_root / "runs" / "z", "audio", "Val"),
        load_probs(av_root / "runs" / "r", "audio", "Val"),
    )
    np.testing.assert_allclose(vz.features, vr.features)


@pytest.mark.slow
def test_activity_stage_trains_the_sae_and_beats_chance(av_root):
    metrics = run(
        [
            "stage=activity",
            "experiment_name=act",
            "scale/activity=small",
            "trainer.max_epochs=3",
            "data.n_train_blocks=3000",
            "data.n_val_blocks=500",
            "bow.n_words=16",
        ],
        av_root,
    )
    run_dir = av_root / "runs" / "act"
    for name in ("sae.ckpt", "codebook.npz", "chosen.json", "svm.skops"):
        assert (run_dir / "activity" / name).is_file(), name
    train, val = load_probs(run_dir, "activity", "Train"), load_probs(run_dir, "activity", "Val")
    assert len(train.clip_ids) == 21 and len(val.clip_ids) == 14
    np.testing.assert_allclose(train.features.sum(1), 1.0, atol=1e-5)  # L1-normalised histograms
    assert train.features.shape[1] == 16
    assert load_json(run_dir / "activity" / "chosen.json")["C"] in (1, 10, 100)  # activity_scale=small's grid
    assert metrics["val/acc"] > 2 / 7
    assert (
        run_dir / "activity" / "csv_sae" / "metrics.csv"
    ).is_file()  # the SAE fit's log survives the SVM's

    # Retrain: the SAE and the codebook are reused, only the SVM is refitted on Train+Val with the frozen C.
    run(
        [
            "stage=activity",
            "experiment_name=act_r",
            "scale/activity=small",
            "partition=retrain",
            "partition.from_run=act",
        ],
        av_root,
    )
    retrain_dir = av_root / "runs" / "act_r" / "activity"
    with np.load(run_dir / "activity" / "codebook.npz") as a, np.load(retrain_dir / "codebook.npz") as b:
        np.testing.assert_array_equal(a["cluster_centers"], b["cluster_centers"])
    assert not (retrain_dir / "checkpoints").exists()  # no SAE training under retrain
    np.testing.assert_allclose(
        load_probs(av_root / "runs" / "act_r", "activity", "Val").features, val.features, atol=1e-6
    )
    assert load_json(retrain_dir / "chosen.json")["n_fit"] == 35


def test_audio_defaults_are_pinned(tmp_path):
    cfg = compose_cfg(["stage=audio"], tmp_path)
    assert cfg.data.n_components == 10 and cfg.data.max_variance == 0.99999
    assert cfg.data.missing_audio == "skip" and cfg.data.sample_rate == 16000
    assert list(cfg.svm.C_grid) == [1, 10, 100, 1000, 10000]
    assert list(cfg.svm.gamma_grid) == [1e-3, 1e-4, 1e-5] and list(cfg.svm.gamma_per_dim_grid) == []


def test_audio_stage_on_the_generated_tiny_tree(tiny_root):
    metrics = run(["stage=audio", "experiment_name=tiny"], tiny_root)
    n_clips = sum(
        metrics[f"audio/clips_{k}"] for k in ("ok", "no_audio", "silent", "too_short", "unreadable")
    )
    assert n_clips == 42
    train = load_probs(tiny_root / "runs" / "tiny", "audio", "Train")
    assert train.features.shape[1] == 10 and 0 < len(train.clip_ids) <= 14
    assert np.isfinite(train.probs).all()


@pytest.mark.slow
def test_audio_stage_under_two_process_ddp_matches_one_process(av_root):
    overrides = ["stage=audio", "trainer=ddp_sim", f"paths.root_dir={av_root}", "experiment_name=ddp"]
    assert_exit(train_py(overrides, av_root, timeout=900))
    run(["stage=audio", "experiment_name=single"], av_root)
    for split in ("Train", "Val", "Test"):
        a = load_probs(av_root / "runs" / "ddp", "audio", split)
        b = load_probs(av_root / "runs" / "single", "audio", split)
        np.testing.assert_array_equal(a.clip_ids, b.clip_ids)  # every clip once: padding de-duplicated
        np.testing.assert_allclose(a.features, b.features, atol=1e-5)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


@pytest.mark.slow
def test_audio_under_two_process_ddp_extracts_each_clip_once(av_root, tmp_path):
    """trainer=ddp_sim on an empty feature cache: each rank extracts its share of the clips, they gather once, and the
    probabilities equal the one-process run's."""
    run(["stage=audio", "experiment_name=a1", f"paths.cache_dir={tmp_path / 'cache1'}"], av_root)
    overrides = [
        "stage=audio",
        "trainer=ddp_sim",
        "experiment_name=a2",
        f"paths.root_dir={av_root}",
        f"paths.cache_dir={tmp_path / 'cache2'}",
    ]
    assert_exit(train_py(overrides, av_root, timeout=1200))
    every_clip = generated_clip_ids(av_root)
    assert_split_once(av_root / "runs" / "a2" / "audio" / "ranks.json", "extract", every_clip)
    for split in ("Train", "Val", "Test"):
        one, two = (load_probs(av_root / "runs" / e, "audio", split) for e in ("a1", "a2"))
        np.testing.assert_array_equal(two.clip_ids, one.clip_ids)
        np.testing.assert_allclose(two.features, one.features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(two.probs, one.probs, rtol=1e-5, atol=1e-6)
