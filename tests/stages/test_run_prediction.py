"""Training and serving cannot drift apart: a run trained by the stages, predicted clip by clip with
``EmotionPipeline.from_run`` and ``predict.py --run``, gives what the stages wrote to ``probs/`` (within 1e-5).

The fast version (default suite) trains every stage after ``cnn`` on the session's tiny generated set with the
smallest settings, on a seeded untrained CNN (``cnn/best.ckpt`` in the stage's format); the slow one trains a whole
``scale=quick`` submission from scratch."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from emotiw.artifacts import load_json, load_probs
from emotiw.labels import EMOTIONS
from tests.helpers import run
from tests.stages.cnn_ckpt import save_cnn_ckpt
from tests.stages.run_prediction import MODELS, compare_cli, compare_pipeline

GUARD = "predict_guard"
# Every stage after the CNN, each as short as it can be and still fit its model. The IRNN's input weights start 50x
# the paper's scale, so that its output depends on the per-frame features enough to show their float16 rounding.
SMALLEST = [
    "stage=all",
    f"experiment_name={GUARD}",
    "scale=quick",
    "all.stages=[faces,features,irnn,aggcnn,audio,activity,fusion,combine]",
    "scale.irnn.max_epochs=2",
    "scale.fusion.max_epochs=2",
    "scale.activity.n_train_blocks=600",
    "scale.activity.n_val_blocks=200",
    "scale.activity.whitener_fit_blocks=600",
    "scale.activity.n_words=8",
    "scale.activity.codebook_blocks=600",
    "all.stage_overrides.irnn=['model.in_init_std=0.05']",
]


@pytest.fixture(scope="module")
def guard_run(tiny_root: Path) -> Path:
    run_dir = tiny_root / "runs" / GUARD
    save_cnn_ckpt(run_dir / "cnn" / "best.ckpt", seed=3)
    run(SMALLEST, tiny_root)
    return run_dir


def afew(root: Path) -> Path:
    return root / "data" / "generated" / "afew"


def test_pipeline_from_run_equals_what_the_stages_wrote(guard_run: Path, tiny_root: Path) -> None:
    worst = compare_pipeline(guard_run, afew(tiny_root))
    print(f"from_run max abs difference per model: {worst}")


def test_the_guard_sees_a_step_the_pipeline_would_skip(guard_run: Path, tiny_root: Path, monkeypatch) -> None:
    """Without the float16 rounding that stage=features applies to the per-frame features, the IRNN (and what reads
    it) drifts beyond the tolerance: the comparison can fail."""
    import emotiw.clip_models

    monkeypatch.setattr(emotiw.clip_models, "FRAME_FEATURE_DTYPE", np.float32)
    with pytest.raises(AssertionError, match="'irnn': "):
        compare_pipeline(guard_run, afew(tiny_root))


def test_predict_cli_with_run_equals_what_the_stages_wrote(
    guard_run: Path, tiny_root: Path, tmp_path
) -> None:
    worst = compare_cli(guard_run, afew(tiny_root), tmp_path / "out")
    print(f"predict.py --run max abs difference per model: {worst}")


def test_models_a_run_lacks_are_left_out_and_said(guard_run: Path, tiny_root: Path, tmp_path) -> None:
    """activity and fusion removed: their columns are empty, every status says why, and the decision is the
    combine weights over the models left (checked by hand from chosen.json)."""
    import predict

    partial = tmp_path / "partial"
    shutil.copytree(guard_run, partial, symlinks=True)
    (partial / "activity" / "svm.skops").unlink()
    (partial / "fusion" / "best.ckpt").unlink()
    clip = sorted((afew(tiny_root) / "Test").glob("*.avi"))[0]
    out = tmp_path / "out"
    assert predict.main([str(clip), "--run", str(partial), "--out", str(out)]) == 0
    (row,) = csv.DictReader((out / "predictions.csv").open())
    assert row["status"] == (
        "activity left out: the run has no activity/svm.skops (run stage=activity); "
        "fusion left out: the run has no fusion/best.ckpt (run stage=fusion)"
    )
    assert all(row[f"{m}_{e}"] == "" for m in ("activity", "fusion") for e in EMOTIONS)
    assert "activity left out: the run has no activity/svm.skops" in (out / "predict.log").read_text()
    chosen = load_json(partial / "combine" / "chosen.json")
    weights = np.asarray(chosen["weights"])
    num, den = np.zeros(7), np.zeros(7)
    for m, name in enumerate(chosen["models"]):
        if name in ("activity", "fusion"):
            continue
        cp = load_probs(partial, name, "Test")
        probs = cp.probs[list(cp.clip_ids).index(clip.stem)].astype(np.float64)
        num += weights[m] * probs
        den += weights[m]
    expected = num / np.maximum(den, 1e-12)
    expected = expected / expected.sum() if expected.sum() > 0 else np.full(7, 1 / 7)
    got = np.array([float(row[f"combined_{e}"]) for e in EMOTIONS])
    np.testing.assert_allclose(got, expected, atol=2e-6)

    # without the combiner's weights the decision is the mean of the models present, and the log says so
    (partial / "combine" / "chosen.json").unlink()
    assert predict.main([str(clip), "--run", str(partial), "--out", str(out)]) == 0
    (row,) = csv.DictReader((out / "predictions.csv").open())
    present = [[float(row[f"{m}_{e}"]) for e in EMOTIONS] for m in ("aggcnn", "audio", "irnn")]
    got = np.array([float(row[f"combined_{e}"]) for e in EMOTIONS])
    np.testing.assert_allclose(got, np.mean(present, axis=0), atol=2e-6)
    assert "the decision is the mean of aggcnn, audio, irnn" in (out / "predict.log").read_text()


@pytest.mark.slow
def test_a_quick_submission_predicts_what_its_stages_wrote(tmp_path: Path) -> None:
    run(["experiment=submission1", "scale=quick"], tmp_path)
    run_dir = tmp_path / "runs" / "submission1"
    assert all((run_dir / "probs" / f"{m}_Test.npz").is_file() for m in MODELS)
    worst = compare_pipeline(run_dir, afew(tmp_path))
    print(f"from_run max abs difference per model: {worst}")
    worst = compare_cli(run_dir, afew(tmp_path), tmp_path / "out")
    print(f"predict.py --run max abs difference per model: {worst}")
