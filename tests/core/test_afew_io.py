from __future__ import annotations

import shutil

import numpy as np
import pytest

from emotiw.io.afew import AfewLayoutError, LandmarkFormatError, list_clips, list_splits, read_landmarks
from emotiw.labels import from_name
from tests.core.afew_tree import LANDMARK_HEADER


def test_lists_real_layout(afew_tree):
    root, info = afew_tree
    train = list_clips(root, "Train")
    assert [r.clip_id for r in train] == ["100000001", "100000002", "100000003", "100000004"]
    assert [r.label for r in train] == [from_name("happy")] * 2 + [from_name("sad")] * 2
    assert train[0].video_path == root / "Train" / "Happy" / "100000001.avi"
    assert train[0].landmarks_path == root / "landmarks" / "100000001.csv"
    assert train[3].landmarks_path is None


def test_test_labels_from_csv_or_withheld(afew_tree):
    root, _ = afew_tree
    assert [r.label for r in list_clips(root, "test")] == [from_name("fear"), from_name("neutral")]
    assert [r.label for r in list_clips(root, "Test", test_labels=False)] == [-1, -1]


def test_any_capitalisation(tmp_path, afew_tree):
    root, _ = afew_tree
    copy = tmp_path / "afew"
    shutil.copytree(root / "Train", copy / "train")
    (copy / "train" / "Happy").rename(copy / "train" / "HAPPY")
    refs = list_clips(copy, "Train")
    assert {r.label for r in refs} == {from_name("happy"), from_name("sad")}


def test_unknown_emotion_folder_named(tmp_path, afew_tree):
    root, _ = afew_tree
    copy = tmp_path / "afew"
    shutil.copytree(root / "Val", copy / "Val")
    (copy / "Val" / "Contempt").mkdir()
    with pytest.raises(AfewLayoutError, match="Contempt.*unknown emotion folder"):
        list_clips(copy, "Val")


def test_missing_root_and_split_say_layout(tmp_path):
    with pytest.raises(AfewLayoutError, match="AFEW root not found; expected <root>/Train/<Emotion>"):
        list_clips(tmp_path / "nowhere", "Train")
    with pytest.raises(AfewLayoutError, match="no Val/ folder; expected"):
        list_clips(tmp_path, "Val")
    with pytest.raises(ValueError, match="split='Dev'"):
        list_clips(tmp_path, "Dev")


def test_flat_train_clip_is_an_error(tmp_path, afew_tree):
    root, _ = afew_tree
    (tmp_path / "Train").mkdir()
    shutil.copy(root / "Train" / "Happy" / "100000001.avi", tmp_path / "Train")
    with pytest.raises(AfewLayoutError, match="100000001.avi: Train clips must sit in emotion folders"):
        list_clips(tmp_path, "Train")


def test_duplicate_ids_across_splits(tmp_path, afew_tree):
    root, _ = afew_tree
    shutil.copytree(root, tmp_path / "afew")
    shutil.copy(root / "Train" / "Happy" / "100000001.avi", tmp_path / "afew" / "Val" / "Angry")
    with pytest.raises(AfewLayoutError, match="duplicate clip id '100000001' in Train and Val"):
        list_splits(tmp_path / "afew", ["Train", "Val"])


def test_read_landmarks(afew_tree):
    root, info = afew_tree
    lm = read_landmarks(root / "landmarks" / "100000002.csv")
    np.testing.assert_array_equal(lm.frame_idx, info["100000002"]["face_frames"])
    assert lm.points.shape == (5, 5, 2)
    assert lm.points[0, 0, 0] < lm.points[0, 1, 0]  # image-left eye first
    empty = read_landmarks(root / "landmarks" / "200000002.csv")
    assert empty.points.shape == (0, 5, 2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("0,1,2,3", "line 3: expected 11 fields, got 4"),
        ("x,1,2,3,4,5,6,7,8,9,10", "line 3: frame 'x' is not an integer"),
        ("1,1,2,3,4,5,6,7,8,9,abc", "line 3: a coordinate is not a number"),
        ("1,1,2,3,4,5,6,7,8,9,nan", "line 3: coordinates must be finite"),
        ("0,1,2,3,4,5,6,7,8,9,10", "line 3: frame 0 must be >= 0 and greater"),
    ],
)
def test_bad_landmark_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "123.csv"
    path.write_text(f"{LANDMARK_HEADER}\n0,1,2,3,4,5,6,7,8,9,10\n{row}\n")
    with pytest.raises(LandmarkFormatError, match=f"123.csv {message}"):
        read_landmarks(path)


def test_bad_landmark_header(tmp_path):
    path = tmp_path / "9.csv"
    path.write_text("frame,x,y\n")
    with pytest.raises(LandmarkFormatError, match="9.csv line 1: expected header"):
        read_landmarks(path)
