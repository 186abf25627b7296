"""TFD registered to the FER2013 frame by the similarity between the two data sets' mean 5-point shapes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotiw.faces.align import FER_MEAN_SHAPE_48
from emotiw.faces.register import fit_registration, register_faces, resolve_point_source
from emotiw.io.fer import FaceSet
from emotiw.io.points import POINTS_FILE, read_face_points, write_face_points

# A TFD-like frame: the FER2013 mean shape 12 % larger about its centre and a little higher (tighter crops).
CENTRE = FER_MEAN_SHAPE_48.mean(0)
TFD_MEAN = (FER_MEAN_SHAPE_48 - CENTRE) * 1.12 + CENTRE + [0.3, -0.6]


def dots(points: np.ndarray, size: int = 48) -> np.ndarray:
    """A dark 48x48 image with a bright Gaussian blob (sigma 1 px) at each point."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for x, y in points:
        img += 220 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def blob_centres(img: np.ndarray, near: np.ndarray, radius: int = 3) -> np.ndarray:
    """Intensity-weighted centre of the blob in a (2r+1)^2 window around each expected point."""
    out = []
    for x, y in near:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        win = img[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(np.float64)
        win = np.clip(win - 20, 0, None)
        yy, xx = np.mgrid[: win.shape[0], : win.shape[1]]
        out.append([x0 + (win * xx).sum() / win.sum(), y0 + (win * yy).sum() / win.sum()])
    return np.array(out)


def still_set(tmp: Path, name: str, mean: np.ndarray, n: int, seed: int) -> FaceSet:
    """``n`` faces whose sidecar points scatter around ``mean`` with exactly that average."""
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, 1.0, size=(n, 5, 2))
    points = mean + jitter - jitter.mean(0)
    keys = np.array([f"{name}:{i}" for i in range(n)])
    tmp.mkdir(parents=True, exist_ok=True)
    write_face_points(tmp / POINTS_FILE, keys, points)
    return FaceSet(np.stack([dots(p) for p in points]), np.zeros(n, np.int64), keys)


def test_registered_tfd_face_lands_on_the_fer_mean_shape(tmp_path: Path) -> None:
    fer = still_set(tmp_path / "fer", "fer2013.csv", FER_MEAN_SHAPE_48, 40, seed=0)
    tfd = still_set(tmp_path / "tfd", "TFD_48x48.mat", TFD_MEAN, 30, seed=1)
    reg = fit_registration(tfd, tmp_path / "tfd", fer, tmp_path / "fer")
    assert reg.point_source == "sidecar" and (reg.source_points, reg.target_points) == (30, 40)
    np.testing.assert_allclose(reg.source_mean, TFD_MEAN, atol=0.01)  # sidecar rounding: 2 decimals
    assert reg.scale == pytest.approx(1 / 1.12, abs=0.002) and abs(reg.rotation_deg) < 0.05
    # A TFD face whose 5 points sit on TFD's mean shape lands on FER2013's, within a pixel (bilinear warp).
    face = dots(TFD_MEAN)
    out = register_faces(face[None], reg.matrix, np.random.default_rng(0))[0]
    landed = blob_centres(out, FER_MEAN_SHAPE_48)
    assert np.linalg.norm(landed - FER_MEAN_SHAPE_48, axis=1).max() < 1.0, landed
    # Unregistered, the same face is off by up to ~2.4 px: the test can tell the two apart.
    assert np.linalg.norm(blob_centres(face, FER_MEAN_SHAPE_48) - FER_MEAN_SHAPE_48, axis=1).max() > 2.0


def test_what_falls_outside_the_tfd_face_is_uniform_noise(tmp_path: Path) -> None:
    fer = still_set(tmp_path / "fer", "f", FER_MEAN_SHAPE_48, 10, seed=0)
    tfd = still_set(tmp_path / "tfd", "t", TFD_MEAN, 10, seed=1)
    matrix = fit_registration(tfd, tmp_path / "tfd", fer, tmp_path / "fer").matrix
    flat = np.full((3, 48, 48), 100, np.uint8)
    out = register_faces(flat, matrix, np.random.default_rng(5))
    # the 48x48 TFD face shrinks to ~43 px: its inside keeps the face's pixels, the outer ring is noise 0..255
    inside = cv2.warpAffine(np.ones((48, 48), np.uint8), matrix, (48, 48), flags=cv2.INTER_NEAREST)
    core = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)
    ring = ~cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
    assert np.all(out[:, core] == 100)
    assert (
        ring.sum() > 100 and out[:, ring].std() > 50 and out[:, ring].min() < 30 and out[:, ring].max() > 225
    )
    assert not np.array_equal(out[0][ring], out[1][ring])  # fresh noise per face
    np.testing.assert_array_equal(out, register_faces(flat, matrix, np.random.default_rng(5)))  # seeded


def test_point_source_and_sidecar_errors(tmp_path: Path) -> None:
    assert resolve_point_source("auto", tmp_path) == "centerface"
    write_face_points(tmp_path / POINTS_FILE, ["a:1"], np.zeros((1, 5, 2)))
    assert resolve_point_source("auto", tmp_path) == "sidecar"
    assert read_face_points(tmp_path / POINTS_FILE)["a:1"].shape == (5, 2)
    with pytest.raises(ValueError, match="still_points='dlib'"):
        resolve_point_source("dlib", tmp_path)
    (tmp_path / POINTS_FILE).write_text("key,x\na:1,2\n")
    with pytest.raises(ValueError, match=r"face_points.csv line 1: expected header"):
        read_face_points(tmp_path / POINTS_FILE)
    other = FaceSet(np.zeros((2, 48, 48), np.uint8), np.zeros(2, np.int64), np.array(["b:1", "b:2"]))
    write_face_points(tmp_path / POINTS_FILE, ["a:1"], np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match=r"holds no points for any of the 2 faces"):
        fit_registration(other, tmp_path, other, tmp_path, "sidecar")


def test_centerface_mean_shapes_of_real_fer2013_undo_a_known_zoom(shared_data: Path, tmp_path: Path) -> None:
    """The real-data path: CenterFace on both sets. 'TFD' is real FER2013 faces zoomed 1.12x about the face (a known
    similarity T, a tighter crop like TFD's); the registration fitted from the two detected mean shapes must undo it
    at the mean shape's points within a pixel."""
    images = []
    with tarfile.open(shared_data / "fer2013" / "fer2013_train_publictest.tar.gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("train/") and member.name.endswith(".jpg"):
                images.append(cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), 0))
                if len(images) == 600:
                    break
    images = np.stack(images)
    T = np.array([[1.12, 0.0, 0.0], [0.0, 1.12, 0.0]])
    T[:, 2] = CENTRE - 1.12 * CENTRE + [0.3, -0.6]
    zoomed = np.stack([cv2.warpAffine(im, T, (48, 48), borderMode=cv2.BORDER_REFLECT) for im in images[300:]])
    labels, keys = np.zeros(300, np.int64), np.array([str(i) for i in range(300)])
    fer, tfd = FaceSet(images[:300], labels, keys), FaceSet(zoomed, labels, keys)  # different faces in each
    reg = fit_registration(tfd, None, fer, None, "centerface")
    assert reg.point_source == "centerface" and min(reg.source_points, reg.target_points) > 250
    p = reg.target_mean
    back = (p @ T[:, :2].T + T[:, 2]) @ reg.matrix[:, :2].T + reg.matrix[:, 2]
    assert np.linalg.norm(back - p, axis=1).max() < 1.0, (reg.summary(), back - p)
