"""The real-video face front end: detect every few frames, follow by optical flow, one smoothed track per clip."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.faces.detect import CenterFaceSource, Face, make_face_source
from emotiw.faces.track import (
    CentreSquareSource,
    FaceTracker,
    TrackConfig,
    TrackedFaceSource,
    box_iou,
    smooth_points,
)
from tests.predict_media import face_frames, scene


@pytest.fixture(scope="module")
def centerface():
    return CenterFaceSource()


def test_box_iou_hand_computed():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([10.0, 0.0, 20.0, 10.0])) == 0.0


def test_smooth_points_within_runs_only():
    frames = np.array([0, 1, 2, 3, 4, 10, 11])
    pts = np.zeros((7, 5, 2))
    pts[2] = 10.0  # a spike in the middle of the first run
    pts[5:] = 100.0  # the second run sits elsewhere
    out = smooth_points(frames, pts, sigma=1.0)
    # scipy's Gaussian (truncate 4): the centre weight of sigma 1 is 1/sqrt(2 pi) renormalised over 9 taps.
    taps = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    assert out[2, 0, 0] == pytest.approx(10 * taps[4] / taps.sum(), rel=1e-6)
    assert out[1, 0, 0] == pytest.approx(10 * taps[3] / taps.sum(), rel=1e-6)
    np.testing.assert_allclose(out[5:], 100.0)  # nothing leaks across the gap between frames 4 and 10
    np.testing.assert_array_equal(smooth_points(frames, pts, sigma=0), pts)


def _truth(track, corners):
    """Where the points should be: the head moves rigidly, so points minus its corner are constant."""
    rel = track.points - corners[track.frame_idx][:, None, :]
    return corners[track.frame_idx][:, None, :] + rel.mean(0)


def test_tracker_follows_a_moving_face_between_keyframes(centerface):
    frames, corners = face_frames(30)
    every1 = FaceTracker(centerface, TrackConfig(every=1, smooth_sigma=0)).track(frames)
    every5 = FaceTracker(centerface, TrackConfig(every=5)).track(frames)
    assert every1.frame_idx.tolist() == every5.frame_idx.tolist() == list(range(30))
    assert every5.detected.sum() == 6 and every5.detected[::5].all()  # the detector ran on keyframes only
    iod = np.linalg.norm(every1.points[:, 0] - every1.points[:, 1], axis=1).mean()
    truth = _truth(every1, corners)
    err5 = np.abs(every5.points - truth).max(axis=(1, 2))
    assert err5.max() < 0.12 * iod, err5  # within about 4 px of a 32 px inter-ocular distance, every frame
    # Smoothing over time removes part of the detector's frame-to-frame jitter.
    smoothed = FaceTracker(centerface, TrackConfig(every=1, smooth_sigma=1.5)).track(frames)
    raw_err = np.abs(every1.points - truth).mean()
    assert np.abs(smoothed.points - truth).mean() < 0.8 * raw_err


def test_one_track_the_most_persistent_face(centerface):
    """A big face in the first 8 frames and a smaller one throughout: the smaller, persistent one is kept."""
    from tests.predict_media import head

    n = 20
    frames = []
    big, small = head(150), head(90)
    for t in range(n):
        f = scene(240, 400, seed=1)
        f[40 : 40 + small.shape[0], 280 : 280 + small.shape[1]] = small
        if t < 8:
            f[20 : 20 + big.shape[0], 20 : 20 + big.shape[1]] = big
        frames.append(f)
    track = FaceTracker(centerface, TrackConfig(every=4)).track(frames)
    assert track.n_tracks == 2
    assert track.frame_idx.tolist() == list(range(n))
    assert (track.boxes[:, 0] > 250).all()  # the small face on the right
    first = FaceTracker(centerface, TrackConfig(every=4)).track(frames[:8])
    assert first.n_tracks == 2 and (first.boxes[:, 0] < 100).all()  # equally persistent: the larger wins


def test_face_lost_halfway_ends_at_the_last_detection(centerface):
    visible = np.arange(40) < 20
    frames, _ = face_frames(40, visible=visible)
    track = FaceTracker(centerface, TrackConfig(every=6)).track(frames)
    # Keyframes 0, 6, 12, 18 see the face, 24 does not: frames after 18 are not confirmed and dropped.
    assert track.frame_idx.tolist() == list(range(19))
    assert track.n_frames == 40


def test_no_face_and_empty_input(centerface):
    frames = [scene(120, 160, seed=s) for s in range(6)]
    track = FaceTracker(centerface, TrackConfig(every=2)).track(frames)
    assert len(track.frame_idx) == 0 and track.n_frames == 6 and track.n_tracks == 0
    assert FaceTracker(centerface).track([]).n_frames == 0


class _ScriptedDetector:
    """Detections given per frame index, to test the drift correction without a network."""

    def __init__(self, faces: dict[int, Face]):
        self.faces, self.calls = faces, []

    def detect(self, image, *, bgr=True):
        self.calls.append(len(self.calls))
        return [self.faces[len(self.calls) - 1]] if len(self.calls) - 1 in self.faces else []

    def cache_id(self):
        return "scripted"


def test_track_config_is_validated_and_keys_the_cache():
    for bad in ({"every": 0}, {"every": -3}, {"min_iou": 0}, {"smooth_sigma": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrackConfig(**bad)
    assert TrackConfig().key() == TrackConfig().key() != TrackConfig(every=3).key()
    a, b = TrackedFaceSource(config=TrackConfig()), TrackedFaceSource(config=TrackConfig(smooth_sigma=0))
    assert a.cache_id() != b.cache_id()
    assert a.cache_id().startswith(CenterFaceSource().cache_id())
    assert isinstance(make_face_source("centerface_track"), TrackedFaceSource)
    with pytest.raises(ValueError, match="centerface_track"):
        make_face_source("nope")


def test_centre_square_maps_the_square_onto_the_aligned_face():
    from emotiw.faces.align import FER_MEAN_SHAPE_48, similarity_transform

    frame = np.zeros((96, 160, 3), np.uint8)
    track = CentreSquareSource().track([frame, frame])
    assert track.frame_idx.tolist() == [0, 1] and track.boxes[0].tolist() == [32, 0, 128, 96]
    # Alignment's transform is then the pure 2:1 scaling of the square onto 48x48 (hand-computed).
    m = similarity_transform(track.points[0], FER_MEAN_SHAPE_48)
    np.testing.assert_allclose(m, [[0.5, 0, -16], [0, 0.5, 0]], atol=1e-9)


def test_drift_is_spread_back_to_the_last_detection():
    """The flow follows the head exactly; the second keyframe's detection sits 5 px further right than the flow
    says, so the frames between move right by 5 * k / 5 = k px and the keyframe takes the detection."""
    frames, corners = face_frames(6, drift=(2.0, 0.0), face_width=120)
    rel = np.array([[40.0, 50], [80, 50], [60, 70], [45, 90], [75, 90]])  # points on the head, any will do
    box = np.array([20.0, 30, 100, 120])

    def face(t, dx=0.0):
        shift = corners[t] + [dx, 0]
        return Face(box=box + np.r_[shift, shift], points5=rel + shift, score=0.9)

    detector = _ScriptedDetector({0: face(0), 1: face(5, dx=5.0)})
    track = FaceTracker(detector, TrackConfig(every=5, smooth_sigma=0)).track(frames)
    assert track.detected.tolist() == [True, False, False, False, False, True]
    expected = np.stack([rel + corners[t] + [t, 0] for t in range(6)])
    np.testing.assert_allclose(track.points, expected, atol=0.6)
