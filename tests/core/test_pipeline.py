"""The inference object: the stage's preprocessing, per-frame and per-model outputs, models left out, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emotiw.audio.is10 import IS10_DIM
from emotiw.faces.align import AlignConfig
from emotiw.faces.cache import build_entry, cache_key
from emotiw.faces.detect import CenterFaceSource
from emotiw.faces.track import TrackConfig, TrackedFaceSource
from emotiw.io.afew import ClipRef
from emotiw.pipeline import ClipInputs, EmotionPipeline, ModelSkipped
from tests.predict_media import face_clip, face_frames, head, scene, write_clip


def fake_cnn(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits that depend on the face's brightness and contrast, so different faces give different probabilities."""
    x = faces.reshape(len(faces), -1).astype(np.float64) / 255
    mean, std = x.mean(1, keepdims=True), x.std(1, keepdims=True)
    logits = mean * (np.arange(7) - 3) + 4 * std * np.cos(np.arange(7))
    return logits.astype(np.float32), np.hstack([mean, std]).astype(np.float32)


class KeepFaces:
    """A clip model that records the aligned faces it is given and scores like the CNN mean."""

    name = "keeper"
    needs = frozenset({"faces", "frame_logits"})

    def __init__(self):
        self.faces = None

    def predict(self, clip: ClipInputs) -> np.ndarray:
        self.faces = clip.faces
        if len(clip.frame_logits) == 0:
            raise ModelSkipped("no face")
        return np.full(7, 1 / 7)


class LoudnessModel:
    """Stands in for the audio SVM: needs IS10 features, leaves itself out without them."""

    name = "audio"
    needs = frozenset({"audio"})

    def predict(self, clip: ClipInputs) -> np.ndarray:
        if clip.audio.status != "ok":
            raise ModelSkipped(clip.audio.detail)
        assert clip.audio.features.shape == (IS10_DIM,)
        p = np.exp(np.tanh(clip.audio.features[:7]))
        return p / p.sum()


def softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def source():
    return TrackedFaceSource(CenterFaceSource(), TrackConfig(every=4))


def test_video_frames_and_decision(tmp_path, source):
    keeper = KeepFaces()
    from emotiw.pipeline import MeanFrameProbs

    pipe = EmotionPipeline(fake_cnn, front_end=source, clip_models=[MeanFrameProbs(), keeper], batch_size=7)
    pred = pipe.predict(face_clip(tmp_path / "clip.avi", n=20))
    assert pred.kind == "video" and pred.n_frames == 20 and pred.fps == 25.0
    assert pred.frame_idx.tolist() == list(range(20)) and pred.status == "ok"
    assert pred.boxes.shape == (20, 4) and pred.points.shape == (20, 5, 2)
    assert pred.detected.tolist() == [t % 4 == 0 for t in range(20)]
    # The per-frame probabilities are the face model's on the aligned faces (in 3 batches of 7, 7, 6).
    expected = softmax(fake_cnn(keeper.faces)[0].astype(np.float64))
    np.testing.assert_allclose(pred.frame_probs, expected, rtol=1e-6)
    np.testing.assert_allclose(pred.models["cnn"], expected.mean(0), rtol=1e-6)
    # Decision without a combiner: the mean of the two models.
    np.testing.assert_allclose(pred.probs, (expected.mean(0) + 1 / 7) / 2, rtol=1e-6)
    assert (
        pred.emotion
        == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"][int(np.argmax(pred.probs))]
    )


def test_faces_are_exactly_what_the_face_stage_caches(tmp_path, source):
    """Same decode, tracker, alignment and padding noise as ``stage=faces`` with ``face_source=centerface_track``:
    the head drifts half out of the frame, so the noise padding is exercised too."""
    frames, _ = face_frames(16, size=(200, 150), drift=(10.0, 0.0), face_width=110)
    path = write_clip(tmp_path / "edge.avi", frames)
    ref = ClipRef("edge", "Test", -1, path, None)
    config = AlignConfig()
    entry = build_entry(ref, source, config, cache_key(ref, source, config))
    keeper = KeepFaces()
    pred = EmotionPipeline(fake_cnn, front_end=source, clip_models=[keeper]).predict(path)
    assert str(entry["status"]) == "ok" and len(entry["faces"]) >= 8
    np.testing.assert_array_equal(pred.frame_idx, entry["frame_idx"])
    np.testing.assert_array_equal(keeper.faces, entry["faces"])


def test_audio_model_left_out_without_an_audio_track(tmp_path, source):
    from emotiw.pipeline import MeanFrameProbs

    pipe = EmotionPipeline(fake_cnn, front_end=source, clip_models=[MeanFrameProbs(), LoudnessModel()])
    silent = pipe.predict(face_clip(tmp_path / "mute.avi", n=12, audio=False))
    assert silent.models["audio"] is None
    assert silent.status == "audio left out: has no audio track"
    np.testing.assert_allclose(silent.probs, silent.models["cnn"])
    voiced = pipe.predict(face_clip(tmp_path / "voiced.avi", n=12))
    assert voiced.status == "ok" and voiced.models["audio"] is not None
    np.testing.assert_allclose(voiced.probs, (voiced.models["cnn"] + voiced.models["audio"]) / 2)


def test_combiner_sees_a_missing_model_as_none(tmp_path, source):
    from emotiw.pipeline import MeanFrameProbs

    seen = []

    def combiner(models):
        seen.append(dict(models))
        return 2 * models["cnn"]

    pipe = EmotionPipeline(
        fake_cnn, front_end=source, clip_models=[MeanFrameProbs(), LoudnessModel()], combiner=combiner
    )
    pred = pipe.predict(face_clip(tmp_path / "mute.avi", n=8, audio=False))
    assert list(seen[0]) == ["cnn", "audio"] and seen[0]["audio"] is None
    np.testing.assert_allclose(pred.probs, pred.models["cnn"])  # scores are normalised to sum to 1


def test_stills(tmp_path, source):
    pipe = EmotionPipeline(fake_cnn, front_end=source)
    aligned = tmp_path / "fer.png"
    gray48 = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(gray48).save(aligned)
    pred = pipe.predict(aligned)
    from emotiw.faces.histeq import equalize_hist

    expected = softmax(fake_cnn(equalize_hist(gray48, 64)[None])[0].astype(np.float64))[0]
    np.testing.assert_allclose(pred.probs, expected, rtol=1e-6)
    assert pred.status == "48x48 grey image taken as an aligned face"
    photo = tmp_path / "photo.jpg"
    canvas = scene(300, 400)
    canvas[40:210, 100:254] = head(154)[:170]
    Image.fromarray(canvas).save(photo)
    pred = pipe.predict(photo)
    assert pred.kind == "image" and pred.n_frames == 1 and len(pred.frame_idx) == 1 and pred.status == "ok"
    assert 90 < pred.boxes[0][0] < pred.boxes[0][2] < 270
    two = tmp_path / "two.jpg"
    canvas = scene(300, 500)
    canvas[20:250, 280:488] = head(208)[:230]
    canvas[60:170, 40:140] = head(100)[:110]
    Image.fromarray(canvas).save(two)
    pred = pipe.predict(two)
    assert pred.status == "2 faces found, the largest kept" and pred.boxes[0][0] > 250
    empty = tmp_path / "wall.png"
    Image.fromarray(scene(200, 200)).save(empty)
    pred = pipe.predict(empty)
    assert pred.probs is None and pred.emotion == "" and pred.status == "no face found"


@pytest.mark.parametrize(
    ("name", "content", "status"),
    [
        ("missing.mp4", None, "video file not found"),
        ("empty.mp4", b"", "empty file (0 bytes), not a video"),
        ("notes.mp4", b"this is text, not a video\n" * 20, "not a readable video container"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),
    ],
)
def test_bad_input_is_a_note_not_an_exception(tmp_path, source, name, content, status):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    pred = EmotionPipeline(fake_cnn, front_end=source).predict(path)
    assert pred.probs is None and pred.status.startswith(status), pred.status


def test_truncated_video_is_scored_and_flagged(tmp_path, source):
    path = face_clip(tmp_path / "cut.avi", n=30)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    pred = EmotionPipeline(fake_cnn, front_end=source).predict(path)
    assert pred.probs is not None and 0 < pred.n_frames < 30
    assert pred.status.startswith("truncated file") and f"scored on the {pred.n_frames} frames" in pred.status


def test_settings_are_validated(source):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        EmotionPipeline(fake_cnn, front_end=source, batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        EmotionPipeline(fake_cnn, front_end=source, clip_models=[LoudnessModel(), LoudnessModel()])


def test_timeline_shades_the_frames_without_a_face():
    from matplotlib.patches import Rectangle

    from emotiw.pipeline import ClipPrediction
    from emotiw.plots import timeline_figure

    probs = softmax(np.random.default_rng(0).normal(size=(5, 7)))
    pred = ClipPrediction(
        path=__import__("pathlib").Path("x.avi"),
        kind="video",
        n_frames=9,
        fps=25.0,
        frame_idx=np.array([0, 1, 2, 5, 6]),
        frame_probs=probs,
        frame_times=np.arange(9) * 0.04,
        probs=probs.mean(0),
    )
    fig = timeline_figure(pred, title="x.avi")
    ax = fig.axes[0]
    spans = sorted(
        (round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6))
        for p in ax.patches
        if isinstance(p, Rectangle)
    )
    assert spans == [(0.12, 0.2), (0.28, 0.36)]  # frames 3-4 and 7-8, each frame 0.04 s wide
    happy = ax.get_lines()[3].get_ydata()
    np.testing.assert_allclose(happy[[0, 1, 2, 5, 6]], probs[:, 3])
    assert np.isnan(happy[[3, 4, 7, 8]]).all()
    assert ax.get_title().startswith("x.avi: ") and "face in 5/9 frames" in ax.get_title()


def test_landmark_runs_see_the_faces_the_face_stage_cached(tmp_path):
    """A run trained on landmark sidecars (the generated data): a clip of the AFEW tree is aligned from its sidecar,
    noise and all, exactly as the face cache holds it; a clip without one goes to the fallback, and says so."""
    from emotiw.faces.detect import LandmarkFileSource
    from emotiw.faces.track import CentreSquareSource, SidecarLandmarkSource
    from emotiw.io.afew import find_landmarks, list_splits
    from tests.core.afew_tree import write_tiny_afew

    root = tmp_path / "afew"
    write_tiny_afew(root)
    config, stage_source = AlignConfig(), LandmarkFileSource()
    keeper = KeepFaces()
    pipe = EmotionPipeline(
        fake_cnn, front_end=SidecarLandmarkSource(fallback=CentreSquareSource()), clip_models=[keeper]
    )
    refs = list_splits(root)
    for ref in refs:
        assert find_landmarks(ref.video_path) == ref.landmarks_path, ref.clip_id
        pred = pipe.predict(ref.video_path)
        if ref.landmarks_path is None:
            assert "no landmark file beside it: faces found by the detector" in pred.status
            assert len(pred.frame_idx) == pred.n_frames  # the centre square in every frame
            continue
        entry = build_entry(ref, stage_source, config, cache_key(ref, stage_source, config))
        np.testing.assert_array_equal(pred.frame_idx, entry["frame_idx"])
        if len(entry["faces"]):
            np.testing.assert_array_equal(keeper.faces, entry["faces"])
    assert sum(r.landmarks_path is not None for r in refs) == 7
    outside = tmp_path / "elsewhere" / "100000001.avi"
    outside.parent.mkdir()
    outside.write_bytes(refs[0].video_path.read_bytes())
    assert find_landmarks(outside) is None


def test_every_frame_detection_sees_the_faces_the_face_stage_cached(tmp_path):
    """face_source=centerface (real AFEW's default): the largest face of every frame, as the face cache holds it."""
    frames, _ = face_frames(10, size=(200, 150), drift=(10.0, 0.0), face_width=110)
    path = write_clip(tmp_path / "edge.avi", frames)
    ref = ClipRef("edge", "Test", -1, path, None)
    source, config = CenterFaceSource(), AlignConfig()
    entry = build_entry(ref, source, config, cache_key(ref, source, config))
    keeper = KeepFaces()
    pred = EmotionPipeline(fake_cnn, front_end=source, clip_models=[keeper]).predict(path)
    assert str(entry["status"]) == "ok" and len(entry["faces"]) >= 5
    np.testing.assert_array_equal(pred.frame_idx, entry["frame_idx"])
    np.testing.assert_array_equal(keeper.faces, entry["faces"])
    assert pred.detected.all()


def test_fewer_faces_than_the_runs_min_frames_is_no_face(tmp_path, source):
    from emotiw.pipeline import MeanFrameProbs

    path = face_clip(tmp_path / "brief.avi", n=12, visible=np.arange(12) < 3)
    pred = EmotionPipeline(fake_cnn, front_end=source, clip_models=[MeanFrameProbs()], min_frames=5).predict(
        path
    )
    assert pred.probs is None and len(pred.frame_idx) == 0
    assert pred.status.startswith("1 face frame(s), fewer than the run's min_frames=5")
