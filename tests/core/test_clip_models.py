"""A run's models as clip models (emotiw.clip_models) and the fusion input they share with the fusion stage, each on
hand-made inputs; the whole chain against a trained run is tests/stages/test_run_prediction.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotiw.aggcnn import k_average_pool
from emotiw.audio.is10 import ClipAudioFeatures
from emotiw.clip_models import (
    ActivitySvm,
    AggregatedCnn,
    AudioSvm,
    FusionNet,
    Irnn,
    ModelLeftOut,
    RunCombiner,
)
from emotiw.combine import RandomSearchCombiner
from emotiw.fusion import fuse_features
from emotiw.pipeline import ClipInputs, ClipScore, EmotionPipeline, MeanFrameProbs, ModelSkipped


class RecordingSvm:
    """Gives fixed probabilities and keeps what it was asked about."""

    def __init__(self):
        self.seen = []

    def predict_proba(self, X):
        self.seen.append(X)
        return np.tile(np.arange(1, 8) / 28.0, (len(X), 1))


def clip(n_frames: int = 5, **kw) -> ClipInputs:
    rng = np.random.default_rng(0)
    return ClipInputs(
        path=Path("x.avi"),
        n_frames=n_frames,
        fps=25.0,
        frame_idx=np.arange(n_frames),
        frame_logits=rng.normal(size=(n_frames, 7)).astype(np.float32),
        **kw,
    )


def test_fuse_features_zeros_and_drop():
    blocks = [np.array([[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]), np.array([[5.0], [6.0], [7.0]])]
    present = np.array([[True, False], [True, True], [False, True]])
    x, keep = fuse_features(blocks, present, "zeros")
    np.testing.assert_array_equal(x, [[1, 2, 0], [3, 4, 6], [0, 0, 7]])
    assert x.dtype == np.float32 and keep.tolist() == [True, True, True]
    x, keep = fuse_features(blocks, present, "drop")
    np.testing.assert_array_equal(x, [[3, 4, 6]])
    assert keep.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="missing='ignore' must be one of zeros, drop"):
        fuse_features(blocks, present, "ignore")


def test_aggregated_cnn_pools_the_logits_into_a_float32_svm_input():
    svm = RecordingSvm()
    c = clip(20)
    score = AggregatedCnn(svm, k=4).predict(c)
    expected = k_average_pool(c.frame_logits, 4)
    np.testing.assert_array_equal(score.features, expected)
    assert svm.seen[0].dtype == np.float32 and svm.seen[0].shape == (1, 28)
    np.testing.assert_allclose(score.probs, np.arange(1, 8) / 28.0)
    with pytest.raises(ModelSkipped, match="no face"):
        AggregatedCnn(svm).predict(clip(0))


def test_audio_without_usable_audio_is_skipped_or_scored_on_zeros():
    class Whitener:
        n_components_ = 3

        def transform(self, X):
            return X[:, :3] * 2

    class Scaler:
        def transform(self, X):
            return X + 1

    svm = RecordingSvm()
    feats = np.arange(10, dtype=np.float32)
    ok = clip(audio=ClipAudioFeatures("x", "ok", feats))
    score = AudioSvm(Scaler(), Whitener(), svm).predict(ok)
    np.testing.assert_array_equal(score.features, [2, 4, 6])
    silent = clip(audio=ClipAudioFeatures("x", "silent", None, "audio RMS 1.00e-05 < 1e-04"))
    with pytest.raises(ModelSkipped, match="audio RMS 1.00e-05 < 1e-04"):
        AudioSvm(Scaler(), Whitener(), svm).predict(silent)
    zeros = AudioSvm(Scaler(), Whitener(), svm, missing_audio="zeros").predict(silent)
    np.testing.assert_array_equal(zeros.features, [0, 0, 0])
    np.testing.assert_array_equal(svm.seen[-1], [[0, 0, 0]])


def test_irnn_sees_the_features_in_their_stored_precision():
    seen = []

    def net(frames):
        seen.append(frames)
        return np.full(7, 1 / 7), np.ones(4)

    c = clip(3, frame_features=np.array([[1 / 3, 1e-4, 1000.1]] * 3, np.float32))
    score = Irnn(net).predict(c)
    assert seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0], c.frame_features.astype(np.float16).astype(np.float32))
    assert not np.array_equal(seen[0], c.frame_features)  # the rounding is visible on these values
    assert score.features.dtype == np.float32


def test_fusion_reads_earlier_models_features_with_zeros_for_one_missing():
    seen = []

    def net(x):
        seen.append(x)
        return np.full((1, 7), 1 / 7)

    fusion = FusionNet(net, sources=("a", "b"), in_dims=(2, 1))
    c = clip(model_features={"a": np.array([1.0, 2.0]), "b": None})
    fusion.predict(c)
    np.testing.assert_array_equal(seen[0], [[1, 2, 0]])
    with pytest.raises(ModelSkipped, match="none of a, b scored the clip"):
        fusion.predict(clip(model_features={"a": None, "b": None}))
    with pytest.raises(ModelSkipped, match=r"b did not score the clip \(missing=drop\)"):
        FusionNet(net, ("a", "b"), (2, 1), missing="drop").predict(c)


def test_activity_needs_a_video_with_a_full_block(tmp_path):
    from tests.core.afew_tree import write_clip

    model = ActivitySvm(encoder=None, bow=None, svm=None)
    with pytest.raises(ModelSkipped, match="a still has no motion"):
        model.predict(clip(kind="image"))
    short = tmp_path / "short.avi"
    write_clip(short, 4, size=(8, 8))  # smaller than one 16x16 block
    c = clip(4)
    c.path = short

    class Encoder:
        n_features = 5

    with pytest.raises(ModelSkipped, match="no full 16x16x10 block in 4 frames of 8x8"):
        ActivitySvm(Encoder(), None, None).predict(c)


def test_run_combiner_weighs_the_models_present_like_the_stage():
    weights = np.array([[0.2] * 7, [0.8] * 7, [0.0] * 7])
    est = RandomSearchCombiner.from_weights(weights, subset=(0, 1))
    combiner = RunCombiner(est, ["a", "b", "c"])
    pa, pb = np.eye(7)[0] * 0.6 + 0.4 / 7, np.eye(7)[3] * 0.5 + 0.5 / 7
    both = combiner({"a": pa, "b": pb, "c": None})
    expected = 0.2 * pa + 0.8 * pb
    np.testing.assert_allclose(both, expected / expected.sum(), atol=1e-7)
    # b missing: a alone, renormalised by its weight
    np.testing.assert_allclose(combiner({"a": pa, "b": None}), pa, atol=1e-7)
    assert combiner({"a": None, "b": None, "c": None}) is None


def test_models_read_only_what_runs_before_them_and_left_out_models_are_said(tmp_path):
    from tests.core.test_pipeline import fake_cnn
    from tests.predict_media import face_clip

    class Echo:
        name, needs = "echo", frozenset({"frame_logits"})

        def predict(self, c):
            p = np.full(7, 1 / 7)
            return ClipScore(p, np.array([float(len(c.frame_idx))]))

    fusion = FusionNet(lambda x: np.eye(7)[[int(x[0, 0]) % 7]], sources=("echo",), in_dims=(1,))
    with pytest.raises(ValueError, match=r"clip model fusion reads \['echo'\], which must come before it"):
        EmotionPipeline(fake_cnn, clip_models=[fusion, Echo()])

    from emotiw.faces.track import CentreSquareSource

    pipe = EmotionPipeline(
        fake_cnn,
        front_end=CentreSquareSource(),
        clip_models=[
            MeanFrameProbs(),
            Echo(),
            ModelLeftOut("audio", "the run has no audio/svm.skops"),
            fusion,
        ],
        combiner=lambda models: models["fusion"],
    )
    pred = pipe.predict(face_clip(tmp_path / "c.avi", n=9))
    np.testing.assert_array_equal(pred.models["fusion"], np.eye(7)[9 % 7])  # the echo's feature: 9 frames
    assert pred.models["audio"] is None
    assert pred.status == "audio left out: the run has no audio/svm.skops"
    silent = EmotionPipeline(
        fake_cnn, front_end=CentreSquareSource(), clip_models=[MeanFrameProbs()], combiner=lambda m: None
    ).predict(face_clip(tmp_path / "d.avi", n=3))
    assert (
        silent.probs is None and silent.status == "no decision: none of the combined models scored the clip"
    )
