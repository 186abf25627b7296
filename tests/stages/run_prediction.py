"""The guard against training and serving drifting apart: a trained run's Test clips predicted by
``EmotionPipeline.from_run`` and by ``predict.py --run`` against what its stages wrote to ``probs/``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emotiw.artifacts import load_probs
from emotiw.io.afew import list_clips
from emotiw.labels import EMOTIONS

MODELS = ("aggcnn", "audio", "irnn", "activity", "fusion")
TOLERANCE = 1e-5


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def stage_outputs(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{model or "combine": {clip_id: (7,) probabilities the stage wrote for Test}}."""
    out = {}
    for model in (*MODELS, "combine"):
        cp = load_probs(run_dir, model, "Test")
        out[model] = {str(c): p for c, p in zip(cp.clip_ids.tolist(), cp.probs, strict=True)}
    return out


def compare_pipeline(run_dir: Path, afew_root: Path) -> dict[str, float]:
    """Predict every Test clip with ``EmotionPipeline.from_run``; assert every model's probabilities, the decision
    and the per-frame CNN outputs equal the stages' (a clip a stage left out is left out here too); return the
    largest difference per model."""
    from emotiw.pipeline import EmotionPipeline

    pipe = EmotionPipeline.from_run(run_dir)
    assert pipe.model_names == ["cnn", *MODELS]
    written = stage_outputs(run_dir)
    with np.load(run_dir / "features" / "Test.npz") as z:
        frames = {
            str(c): (z["frame_idx"][a:b], z["logits"][a:b])
            for c, a, b in zip(z["clip_ids"].tolist(), z["offsets"][:-1], z["offsets"][1:], strict=True)
        }
    worst = dict.fromkeys([*MODELS, "combine", "frames"], 0.0)
    compared = dict.fromkeys(worst, 0)
    for clip in list_clips(afew_root, "Test"):
        pred = pipe.predict(clip.video_path)
        got = {**pred.models, "combine": pred.probs}
        for model, by_clip in written.items():
            if clip.clip_id not in by_clip:
                assert got[model] is None, (model, clip.clip_id, pred.status)
                continue
            assert got[model] is not None, (model, clip.clip_id, pred.status)
            worst[model] = max(worst[model], float(np.abs(got[model] - by_clip[clip.clip_id]).max()))
            compared[model] += 1
        if clip.clip_id in frames:
            idx, logits = frames[clip.clip_id]
            np.testing.assert_array_equal(pred.frame_idx, idx)
            worst["frames"] = max(worst["frames"], float(np.abs(pred.frame_probs - softmax(logits)).max()))
            compared["frames"] += 1
        else:
            assert len(pred.frame_idx) == 0, clip.clip_id
    n_test = len(list_clips(afew_root, "Test"))
    # every model and the decision compared on most clips: the guard is not vacuous
    assert all(n >= n_test // 2 for n in compared.values()), compared
    assert all(d <= TOLERANCE for d in worst.values()), worst
    return worst


def compare_cli(run_dir: Path, afew_root: Path, out: Path) -> dict[str, float]:
    """``predict.py --run`` on the Test folder: every model's CSV columns and the predicted emotion equal the
    stages' outputs (the CSV holds 6 decimals); return the largest difference per model."""
    import predict

    assert predict.main([str(afew_root / "Test"), "--run", str(run_dir), "--out", str(out)]) == 0
    written = stage_outputs(run_dir)
    rows = {Path(r["path"]).stem: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert sorted(rows) == sorted(c.clip_id for c in list_clips(afew_root, "Test"))
    worst = dict.fromkeys([*MODELS, "combine"], 0.0)
    for model, by_clip in written.items():
        column = "combined" if model == "combine" else model
        for clip_id, row in rows.items():
            cells = [row[f"{column}_{e}"] for e in EMOTIONS]
            if clip_id not in by_clip:
                assert cells == [""] * 7, (model, clip_id)
                continue
            got = np.array([float(c) for c in cells])
            worst[model] = max(worst[model], float(np.abs(got - by_clip[clip_id]).max()))
    for clip_id, row in rows.items():
        assert row["emotion"] == EMOTIONS[int(np.argmax(written["combine"][clip_id]))], clip_id
    assert all(d <= TOLERANCE for d in worst.values()), worst
    return worst
