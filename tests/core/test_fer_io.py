"""Readers of fer2013.csv, the FER image folders and TFD_48x48.mat, on files written by the generator's writers."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import scipy.io

from emotiw.io import FaceSet, read_fer_csv, read_fer_images, read_tfd_mat
from tests.fer_stills import write_face_root


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_face_root(tmp_path_factory.mktemp("fer_io"), per_class=6, tfd=30)


def test_csv_round_trip(faces):
    fer = faces["fer"]
    sets = read_fer_csv(faces["gen"] / "fer2013" / "fer2013.csv")
    for usage in ("Training", "PublicTest", "PrivateTest"):
        mask = fer.usage == usage
        got = sets[usage]
        assert len(got) == mask.sum()
        np.testing.assert_array_equal(got.images, fer.images[mask])
        np.testing.assert_array_equal(got.labels, fer.labels[mask])
    # keys name the file and the 1-based line (header = line 1)
    assert sets["Training"].keys[0].startswith("fer2013.csv:")
    assert len(set(np.concatenate([s.keys for s in sets.values()]))) == len(fer.labels)


def test_csv_only_requested_usages(faces):
    sets = read_fer_csv(faces["gen"] / "fer2013" / "fer2013.csv", usages=("PublicTest",))
    assert list(sets) == ["PublicTest"]


def _copy_with_line(src, dst, lineno, transform):
    lines = src.read_text().splitlines()
    lines[lineno - 1] = transform(lines[lineno - 1])
    dst.write_text("\n".join(lines) + "\n")


def test_csv_short_pixel_row_names_file_and_line(faces, tmp_path):
    bad = tmp_path / "fer2013.csv"

    def drop4(line):
        emotion, pixels, usage = line.split(",")
        return ",".join([emotion, " ".join(pixels.split()[:-4]), usage])

    _copy_with_line(faces["gen"] / "fer2013" / "fer2013.csv", bad, 5, drop4)
    with pytest.raises(ValueError, match=r"^fer2013.csv line 5: expected 2304 pixels, got 2300$"):
        read_fer_csv(bad)


@pytest.mark.parametrize(
    ("transform", "msg"),
    [
        (lambda line: "9" + line[1:], r"fer2013.csv line 3: bad emotion '9'"),
        (lambda line: line.rsplit(",", 1)[0] + ",Secret", r"fer2013.csv line 3: unknown Usage 'Secret'"),
        (lambda line: line.replace(" ", " x", 1), r"fer2013.csv line 3: pixels must be integers"),
        (lambda line: line.split(",", 1)[0], r"fer2013.csv line 3: expected 3 fields"),
    ],
)
def test_csv_broken_rows(faces, tmp_path, transform, msg):
    bad = tmp_path / "fer2013.csv"
    _copy_with_line(faces["gen"] / "fer2013" / "fer2013.csv", bad, 3, transform)
    with pytest.raises(ValueError, match=msg):
        read_fer_csv(bad)


def test_csv_bad_header_and_missing_file(tmp_path):
    bad = tmp_path / "fer2013.csv"
    bad.write_text("label,pixels\n")
    with pytest.raises(ValueError, match="line 1: expected header 'emotion,pixels,Usage'"):
        read_fer_csv(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv: FER2013 CSV not found"):
        read_fer_csv(tmp_path / "nope.csv")


def test_images_round_trip(faces):
    fer = faces["fer"]
    root = faces["gen"] / "fer2013" / "images"
    for split, usage in (("train", "Training"), ("test", "PublicTest")):
        got = read_fer_images(root, split)
        mask = fer.usage == usage
        assert len(got) == mask.sum()
        assert sorted(got.labels.tolist()) == sorted(fer.labels[mask].tolist())
        assert all(k.startswith(f"{split}/") and k.endswith(".jpg") for k in got.keys)
        # JPEG is lossy: match each image to its source by id and compare pixels loosely.
        by_id = {
            f"{usage}_{i}": img
            for i, img, u in zip(fer.ids, fer.images, fer.usage, strict=True)
            if u == usage
        }
        for key, img in zip(got.keys, got.images, strict=True):
            src = by_id[key.rsplit("/", 1)[1][:-4]]
            assert np.abs(img.astype(int) - src.astype(int)).mean() < 3


def test_images_same_name_under_two_classes_kept_apart(faces, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(faces["gen"] / "fer2013" / "images", root)
    a, b = np.full((48, 48), 10, np.uint8), np.full((48, 48), 200, np.uint8)
    cv2.imwrite(str(root / "train" / "neutral" / "Training_52789098.jpg"), a)
    cv2.imwrite(str(root / "train" / "surprise" / "Training_52789098.jpg"), b)
    got = read_fer_images(root, "train")
    keys = got.keys.tolist()
    assert "train/neutral/Training_52789098.jpg" in keys and "train/surprise/Training_52789098.jpg" in keys
    assert len(set(keys)) == len(keys)
    i = keys.index("train/surprise/Training_52789098.jpg")
    assert got.labels[i] == 5 and got.images[i].mean() > 150


def test_images_unknown_folder(faces, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(faces["gen"] / "fer2013" / "images", root)
    (root / "train" / "contempt").mkdir()
    with pytest.raises(ValueError, match=r"train/contempt: unknown emotion folder 'contempt'"):
        read_fer_images(root, "train")


def test_images_wrong_size_error_or_resize(faces, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(faces["gen"] / "fer2013" / "images", root)
    big = root / "test" / "happy" / "PublicTest_big.jpg"
    cv2.imwrite(str(big), np.full((96, 80), 128, np.uint8))
    with pytest.raises(ValueError, match=r"PublicTest_big.jpg: image is 80x96, expected 48x48"):
        read_fer_images(root, "test")
    got = read_fer_images(root, "test", resize=True)
    assert got.images.shape[1:] == (48, 48)
    assert "test/happy/PublicTest_big.jpg" in got.keys.tolist()


def test_images_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="train: FER image folder not found"):
        read_fer_images(tmp_path, "train")


def test_tfd_round_trip(faces):
    path = faces["gen"] / "tfd" / "TFD_48x48.mat"
    stills = faces["tfd"]
    got = read_tfd_mat(path)
    labelled = stills.labels >= 0
    assert len(got) == labelled.sum() > 0
    np.testing.assert_array_equal(got.images, stills.images[labelled])
    np.testing.assert_array_equal(got.labels, stills.labels[labelled])
    everything = read_tfd_mat(path, labelled_only=False)
    assert len(everything) == len(stills.labels)
    assert (everything.labels == -1).sum() == (~labelled).sum()


def test_tfd_label_codes_mapped(tmp_path):
    path = tmp_path / "TFD_48x48.mat"
    imgs = np.zeros((4, 48, 48), np.uint8)
    scipy.io.savemat(
        path, {"images": imgs, "labs_ex": np.array([[1], [7], [0], [-1]]), "folds": np.zeros((4, 5))}
    )
    got = read_tfd_mat(path, labelled_only=False)
    assert got.labels.tolist() == [0, 6, -1, -1]


def test_tfd_broken(tmp_path):
    path = tmp_path / "TFD_48x48.mat"
    scipy.io.savemat(path, {"images": np.zeros((2, 48, 48), np.uint8)})
    with pytest.raises(ValueError, match="TFD_48x48.mat: missing variable 'labs_ex'"):
        read_tfd_mat(path)
    scipy.io.savemat(path, {"images": np.zeros((2, 48, 48), np.uint8), "labs_ex": np.array([[9], [1]])})
    with pytest.raises(ValueError, match="TFD_48x48.mat: .*1..7.*got 9"):
        read_tfd_mat(path)
    path.write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="cannot read as a MATLAB .mat file"):
        read_tfd_mat(path)
    with pytest.raises(FileNotFoundError, match="TFD .mat file not found"):
        read_tfd_mat(tmp_path / "missing.mat")


def test_faceset_validates_shapes():
    with pytest.raises(ValueError, match="uint8"):
        FaceSet(np.zeros((2, 48, 48), np.float32), np.zeros(2, np.int64), np.array(["a", "b"]))
    both = FaceSet.concat(
        [
            FaceSet(np.zeros((1, 48, 48), np.uint8), np.array([3]), np.array(["a"])),
            FaceSet(np.ones((2, 48, 48), np.uint8), np.array([1, 2]), np.array(["b", "c"])),
        ]
    )
    assert both.labels.tolist() == [3, 1, 2] and both.keys.tolist() == ["a", "b", "c"]
