from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from emotiw.faces import CenterFaceSource
from emotiw.faces.detect import LandmarkFileSource, NoFaceError, decode_centerface
from emotiw.io.afew import ClipRef


def _outputs(h=8, w=10):
    return (
        np.zeros((1, 1, h, w), np.float32),
        np.zeros((1, 2, h, w), np.float32),
        np.zeros((1, 2, h, w), np.float32),
        np.zeros((1, 10, h, w), np.float32),
    )


def test_decode_hand_built_heatmap():
    heat, scale, offset, lms = _outputs()
    # A face centred on cell (y=3, x=5) with offset (0.5, 0.25): centre ((5+0.25+0.5)*4, (3+0.5+0.5)*4) = (23, 16).
    heat[0, 0, 3, 5] = 0.9
    offset[0, :, 3, 5] = [0.5, 0.25]
    scale[0, :, 3, 5] = [np.log(20 / 4), np.log(10 / 4)]  # height 20, width 10
    lms[0, :, 3, 5] = [0.25, 0.2, 0.25, 0.8, 0.5, 0.5, 0.75, 0.3, 0.75, 0.7]  # (y, x) fractions per point
    heat[0, 0, 4, 5] = 0.7  # a weaker, overlapping duplicate: suppressed
    offset[0, :, 4, 5] = [0.0, 0.25]
    scale[0, :, 4, 5] = scale[0, :, 3, 5]
    heat[0, 0, 0, 0] = 0.3  # below threshold
    faces = decode_centerface(heat, scale, offset, lms, (32, 40), threshold=0.5)
    assert len(faces) == 1
    face = faces[0]
    np.testing.assert_allclose(face.box, [18, 6, 28, 26], atol=1e-4)
    np.testing.assert_allclose(face.points5, [[20, 11], [26, 11], [23, 16], [21, 21], [25, 21]], atol=1e-4)
    assert face.score == pytest.approx(0.9)


def test_decode_keeps_separate_faces_best_first_and_clips_to_image():
    heat, scale, offset, lms = _outputs()
    heat[0, 0, 1, 1] = 0.6
    heat[0, 0, 6, 8] = 0.95
    scale[0, :, 1, 1] = np.log(16 / 4)  # 16x16 box centred at (6, 6): clipped at 0
    faces = decode_centerface(heat, scale, offset, lms, (32, 40))
    assert [round(f.score, 2) for f in faces] == [0.95, 0.6]
    assert faces[1].box[0] == 0 and faces[1].box[1] == 0
    assert decode_centerface(*_outputs(), (32, 40)) == []


@pytest.fixture(scope="module")
def centerface():
    return CenterFaceSource()


def test_centerface_finds_the_face_in_a_packaged_photo(centerface):
    import matplotlib

    img = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    faces = centerface.detect(img)
    assert len(faces) == 1 and faces[0].score > 0.7
    x1, y1, x2, y2 = faces[0].box
    assert 100 < x1 < x2 < 420 and 60 < y1 < y2 < 400 and x2 - x1 > 120
    pts = faces[0].points5
    assert pts[0, 0] < pts[2, 0] < pts[1, 0]  # nose between the eyes, image-left eye first
    assert pts[0, 1] < pts[2, 1] < pts[3, 1]  # eyes above nose above mouth
    # Grey input works too and finds the same face.
    grey = centerface.detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert len(grey) == 1 and np.abs(grey[0].points5 - pts).max() < 10


def test_align_largest_face_on_a_still(centerface):
    import matplotlib

    from emotiw.faces import align_largest_face

    img = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    face = align_largest_face(img, centerface)
    assert face.shape == (48, 48) and face.dtype == np.uint8
    # FER framing: the eye row (mean shape y ~16) is darker than the forehead above it.
    assert face[15:19, 11:17].mean() < face[4:8, 11:17].mean() - 50
    assert align_largest_face(np.full((100, 100), 128, np.uint8), centerface) is None


def test_centerface_blank_image_and_clip_points(centerface):
    blank = np.full((120, 160, 3), 128, np.uint8)
    assert centerface.detect(blank) == []
    idx, pts = centerface.clip_points(None, np.stack([blank, blank]))
    assert idx.shape == (0,) and pts.shape == (0, 5, 2)
    with pytest.raises(ValueError, match="uint8"):
        centerface.detect(blank.astype(np.float32))


def test_centerface_pickles_without_the_net(centerface):
    import pickle

    centerface.detect(np.zeros((64, 64), np.uint8))
    clone = pickle.loads(pickle.dumps(centerface))
    assert clone._net is None and clone.cache_id() == centerface.cache_id()


def test_landmark_source_without_file(tmp_path):
    ref = ClipRef("1", "Train", 0, tmp_path / "1.avi", None)
    with pytest.raises(NoFaceError, match="1.avi: no landmark file landmarks/1.csv"):
        LandmarkFileSource().clip_points(ref, np.zeros((1, 4, 4), np.uint8))


def test_auto_face_source_follows_the_landmarks_folder(tmp_path):
    from emotiw.faces import make_face_source, resolve_face_source

    assert resolve_face_source("auto", tmp_path) == "centerface"  # real AFEW: no sidecars, the detector
    (tmp_path / "Landmarks").mkdir()  # any capitalisation, as the rest of the tree
    assert resolve_face_source("auto", tmp_path) == "landmarks"
    assert isinstance(make_face_source("auto", tmp_path), LandmarkFileSource)
    assert resolve_face_source("centerface", tmp_path) == "centerface"  # an explicit choice wins
    with pytest.raises(ValueError, match="face_source='dlib': expected one of auto, landmarks, centerface"):
        make_face_source("dlib")
