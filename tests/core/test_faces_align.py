from __future__ import annotations

import numpy as np
import pytest

from emotiw.faces.align import FER_MEAN_SHAPE_48, AlignConfig, align_clip, align_face, similarity_transform


def test_mean_shape_is_zero_based_paper_values():
    np.testing.assert_allclose(FER_MEAN_SHAPE_48[0], [13.99, 16.41])
    np.testing.assert_allclose(FER_MEAN_SHAPE_48[4], [31.73, 37.01])


def test_similarity_hand_computed_scale_and_translation():
    # Source = 2 * mean + (10, 20): the inverse is scale 0.5 and translation (-5, -10).
    src = FER_MEAN_SHAPE_48 * 2 + [10, 20]
    m = similarity_transform(src, FER_MEAN_SHAPE_48)
    np.testing.assert_allclose(m, [[0.5, 0, -5], [0, 0.5, -10]], atol=1e-9)


def test_similarity_recovers_rotation_and_maps_points():
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    src = FER_MEAN_SHAPE_48 @ rot.T * 3 + [100, 50]
    m = similarity_transform(src, FER_MEAN_SHAPE_48)
    mapped = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, FER_MEAN_SHAPE_48, atol=1e-9)
    np.testing.assert_allclose(np.hypot(m[0, 0], m[1, 0]), 1 / 3)


def test_similarity_is_least_squares_with_noise():
    rng = np.random.default_rng(0)
    src = FER_MEAN_SHAPE_48 * 2 + 5 + rng.normal(0, 0.5, (5, 2))
    m = similarity_transform(src, FER_MEAN_SHAPE_48)
    residual = lambda mat: np.sum((src @ mat[:, :2].T + mat[:, 2] - FER_MEAN_SHAPE_48) ** 2)  # noqa: E731
    best = residual(m)
    for _ in range(50):  # any nearby similarity is worse
        a, b, tx, ty = np.array([m[0, 0], m[1, 0], m[0, 2], m[1, 2]]) + rng.normal(0, 1e-3, 4)
        assert residual(np.array([[a, -b, tx], [b, a, ty]])) > best


def test_degenerate_points_rejected():
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), FER_MEAN_SHAPE_48)


def _dots_frame(points, size=(200, 240), value=250, background=40):
    frame = np.full(size, background, np.uint8)
    for x, y in np.round(points).astype(int):
        frame[y - 2 : y + 3, x - 2 : x + 3] = value
    return frame


def test_align_puts_landmarks_on_mean_shape():
    src = FER_MEAN_SHAPE_48 * 2 + [60, 50]  # scale 2, well inside the frame
    out = align_face(_dots_frame(src), src, np.random.default_rng(0))
    assert out.shape == (48, 48) and out.dtype == np.uint8
    for x, y in np.round(FER_MEAN_SHAPE_48).astype(int):
        assert out[y, x] > 200, (x, y)
    # Between the eyes and on the cheeks: background, the bulk of the pixels, equalised to mid-grey (histeq puts a
    # value at the middle of its own pixel mass).
    assert 100 < out[16, 24] < 140 and 100 < out[28, 8] < 140
    # The window lies inside the frame: no noise anywhere.
    assert out.std() < 90 and len(np.unique(out[:8, :8])) == 1


def test_noise_border_where_window_leaves_the_frame_and_seeded():
    src = FER_MEAN_SHAPE_48 * 2 + [-20, -25]  # face in the top-left corner: window leaves the frame
    frame = _dots_frame(np.clip(src, 3, None))
    a = align_face(frame, src, np.random.default_rng(1))
    b = align_face(frame, src, np.random.default_rng(1))
    c = align_face(frame, src, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    corner = a[:6, :6].astype(float)  # samples x, y < 0 of the frame
    assert corner.std() > 30 and 60 < corner.mean() < 195
    assert not np.array_equal(a[:6, :6], c[:6, :6])
    np.testing.assert_array_equal(a[30:, 30:], c[30:, 30:])  # in-frame part does not depend on the noise


def test_align_clip_drops_frames_without_landmarks_in_order():
    src = FER_MEAN_SHAPE_48 * 2 + [60, 50]
    gray = np.stack([_dots_frame(src)] * 6)
    idx = np.array([1, 3, 4, 9])  # 9 is past the decoded frames
    faces, kept = align_clip(gray, idx, np.stack([src] * 4), np.random.default_rng(0))
    np.testing.assert_array_equal(kept, [1, 3, 4])
    assert faces.shape == (3, 48, 48)


def test_config_key_changes_with_levels():
    assert AlignConfig().key() == AlignConfig(levels=64).key()
    assert AlignConfig().key() != AlignConfig(levels=256).key()
