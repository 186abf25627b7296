"""FerTfdDataModule on FER/TFD files written by the generator's writers."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datamodules.fer_tfd import FerTfdDataModule
from emotiw.faces.histeq import equalize_hist
from emotiw.io import FaceSet
from tests.fer_stills import usage_count, write_face_root


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_face_root(tmp_path_factory.mktemp("fer_dm"), per_class=12, tfd=40)


def _dm(faces, **kw):
    gen = faces["gen"]
    args = dict(
        root=str(gen / "fer2013"),
        fer_format="csv",
        tfd_mat=str(gen / "tfd" / "TFD_48x48.mat"),
        val_source="fer_holdout",
        afew_root=None,
        holdout_fraction=0.25,
        batch_size=16,
        fer_train="training",  # most tests here look at PublicTest, the held-out test split of this choice
    )
    args.update(kw)
    return FerTfdDataModule(**args)


def test_splits_sizes_and_stratified_holdout(faces):
    dm = _dm(faces)
    dm.setup("fit")
    fer, tfd = faces["fer"], faces["tfd"]
    n_train = usage_count(fer, "Training") + int((tfd.labels >= 0).sum())
    assert len(dm.data["train"]) + len(dm.data["val"]) == n_train
    assert len(dm.data["test"]) == usage_count(fer, "PublicTest")
    assert abs(len(dm.data["val"]) - 0.25 * n_train) <= 1
    # stratified: every class keeps about its share in the hold-out slice
    all_labels = np.concatenate([dm.data["train"].labels, dm.data["val"].labels])
    for c in range(7):
        share = (all_labels == c).sum() * 0.25
        assert abs((dm.data["val"].labels == c).sum() - share) <= 1.5
    assert not set(dm.data["train"].keys) & set(dm.data["val"].keys)


def test_histeq_then_normaliser_fitted_on_train_only(faces):
    # TFD as stored: registered TFD faces are equalised before their warp (test_tfd_is_registered_...)
    dm = _dm(faces, histeq_levels=64, tfd_registration="none")
    dm.setup("fit")
    raw = _dm(faces, histeq_levels=None, tfd_registration="none")
    raw.setup("fit")
    # same split (seeded), images equalised one by one to 64 levels
    np.testing.assert_array_equal(dm.data["train"].keys, raw.data["train"].keys)
    expected = np.stack([equalize_hist(im, 64) for im in raw.data["train"].images])
    np.testing.assert_array_equal(dm.data["train"].images, expected)
    assert all(len(np.unique(im)) <= 64 for im in dm.data["train"].images[:10])
    np.testing.assert_allclose(dm.normaliser.mean_, dm.data["train"].images.mean(0), rtol=1e-5)
    np.testing.assert_allclose(dm.normaliser.std_, np.maximum(dm.data["train"].images.std(0), 1.0), rtol=1e-5)


@pytest.mark.parametrize("fer_format", ["csv", "images"])
def test_fer_train_all_is_every_fer2013_face_and_leaves_no_test_split(faces, fer_format):
    # paper-spec §2.2: the CNN trains on all of FER2013 (Training, PublicTest, PrivateTest) + labelled TFD
    fer = faces["fer"]
    root = faces["gen"] / "fer2013" / ("images" if fer_format == "images" else "")
    dm = _dm(faces, fer_train="all", fer_format=fer_format, root=str(root))
    dm.setup("fit")
    usages = ("Training", "PublicTest", "PrivateTest") if fer_format == "csv" else ("Training", "PublicTest")
    n_fer = sum(usage_count(fer, u) for u in usages)
    assert len(dm.data["train"]) + len(dm.data["val"]) == n_fer + int((faces["tfd"].labels >= 0).sum())
    assert len(dm.data["test"]) == 0 and dm.test_dataloader() == []
    assert dm.data_hash() != _dm(faces, fer_format=fer_format, root=str(root)).data_hash()
    with pytest.raises(ValueError, match=r"data.fer_train='public'"):
        _dm(faces, fer_train="public").setup("fit")


def test_tfd_is_registered_to_the_fer_frame_before_mixing(faces):
    """The generator draws TFD 12 % tighter than FER2013 (emotiw.synth.stills.TFD_MEAN_SHAPE); registered by the two
    sets' mean shapes (from the face_points.csv sidecars it writes), TFD's faces land on FER2013's mean shape."""
    from emotiw.faces.register import register_faces
    from emotiw.synth.faces import FER_MEAN_SHAPE
    from emotiw.synth.stills import TFD_MEAN_SHAPE

    dm = _dm(faces)
    dm.setup("fit")
    reg = dm.registration
    assert reg.point_source == "sidecar" and reg.scale == pytest.approx(1 / 1.12, abs=0.02)
    landed = TFD_MEAN_SHAPE @ reg.matrix[:, :2].T + reg.matrix[:, 2]
    assert np.linalg.norm(landed - FER_MEAN_SHAPE, axis=1).max() < 1.0
    # the TFD faces (train and hold-out slice) are the equalised TFD images warped by it over a seeded noise border
    raw = _dm(faces, tfd_registration="none")
    raw.setup("fit")

    def tfd_faces(d):  # in TFD row order, as registered
        both = FaceSet.concat([d.data["train"], d.data["val"]])
        rows = [i for i, k in enumerate(both.keys) if str(k).startswith("TFD_48x48.mat:")]
        rows.sort(key=lambda i: int(str(both.keys[i]).split(":")[1]))
        return both.images[rows], both.keys[rows]

    got, keys = tfd_faces(dm)
    before, raw_keys = tfd_faces(raw)
    assert np.array_equal(keys, raw_keys) and len(keys) == int((faces["tfd"].labels >= 0).sum())
    np.testing.assert_array_equal(got, register_faces(before, reg.matrix, np.random.default_rng([0, 0])))
    assert not np.array_equal(got, before) and dm.data_hash() != raw.data_hash()
    np.testing.assert_array_equal(dm.data["test"].images, raw.data["test"].images)  # FER faces as they were


def test_image_folder_source(faces):
    dm = _dm(faces, root=str(faces["gen"] / "fer2013" / "images"), fer_format="images", tfd_mat=None)
    dm.setup("fit")
    fer = faces["fer"]
    assert len(dm.data["train"]) + len(dm.data["val"]) == usage_count(fer, "Training")
    assert len(dm.data["test"]) == usage_count(fer, "PublicTest")
    assert dm.data["test"].keys[0].startswith("test/")


def test_batches_are_dicts(faces):
    dm = _dm(faces)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (16, 48, 48) and batch["image"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["index"].shape == (16,)
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["index"].tolist() == list(range(len(test_batch["index"])))  # unshuffled


def test_train_epoch_is_padded_with_duplicates_to_whole_batches(faces):
    dm = _dm(faces, batch_size=16)
    dm.setup("fit")
    n = len(dm.data["train"])
    assert n % 16, n  # the fixture leaves a short last batch to fill
    seen = torch.cat([b["index"] for b in dm.train_dataloader()])
    assert len(seen) == n + (-n) % 16 and len(seen) % 16 == 0  # the authors' full last batch
    assert set(seen.tolist()) == set(range(n))  # every face at least once, the rest duplicates
    short = _dm(faces, batch_size=16, pad_to_batch=False)
    short.setup("fit")
    assert len(torch.cat([b["index"] for b in short.train_dataloader()])) == n


def test_batch_size_divided_by_world_size(faces):
    dm = _dm(faces, batch_size=16)
    dm.trainer = SimpleNamespace(world_size=2)
    dm.setup("fit")
    assert dm.batch_size_per_device == 8
    bad = _dm(faces, batch_size=16)
    bad.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(RuntimeError, match=r"batch_size=16 is not divisible by the number of devices \(3\)"):
        bad.setup("fit")


def test_missing_inputs_named_before_training(faces, tmp_path):
    dm = _dm(faces, root=str(tmp_path / "nowhere"), tfd_mat=str(tmp_path / "no.mat"))
    with pytest.raises(FileNotFoundError, match=r"data.root: .*nowhere.*fer2013.csv.*data.tfd_mat: .*no.mat"):
        dm.setup("fit")
    afew = _dm(faces, val_source="afew", afew_root=str(tmp_path / "no_afew"))
    with pytest.raises(FileNotFoundError, match=r"data.afew_root: .*no_afew \(needed by val_source=afew"):
        afew.setup("fit")
    with pytest.raises(ValueError, match=r"data.val_source='clips'"):
        _dm(faces, val_source="clips").setup("fit")


def test_data_hash_tracks_files_and_preprocessing(faces, tmp_path):
    dm = _dm(faces)
    h = dm.data_hash()
    assert h == _dm(faces).data_hash()
    assert h != _dm(faces, histeq_levels=256).data_hash()
    mat = faces["gen"] / "tfd" / "TFD_48x48.mat"
    st = mat.stat()
    os.utime(mat, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert _dm(faces).data_hash() != h
    finally:
        os.utime(mat, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_round_trip(faces, tmp_path):
    dm = _dm(faces, cache_dir=str(tmp_path))
    dm.setup("fit")
    assert len(list((tmp_path / "fer_tfd").glob("*.npz"))) == 1
    again = _dm(faces, cache_dir=str(tmp_path))
    again.setup("fit")
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(again.data[split].images, dm.data[split].images)
        np.testing.assert_array_equal(again.data[split].keys, dm.data[split].keys)


def test_afew_frames_are_the_early_stopping_set(faces, tiny_root, tmp_path):
    from emotiw.faces import load_afew_faces

    afew = tiny_root / "data" / "generated" / "afew"
    dm = _dm(faces, val_source="afew", afew_root=str(afew), cache_dir=str(tmp_path))
    dm.setup("fit")
    clips, _ = load_afew_faces(afew, splits=("Train", "Val"), cache_dir=str(tmp_path))
    assert {c.split for c in clips} == {"Train", "Val"}
    val = dm.data["val"]
    assert len(val) == sum(len(c.faces) for c in clips) > 0
    # frame label = clip label; the aligned faces are used as emotiw.faces gives them (already equalised)
    expected_labels = np.concatenate([np.full(len(c.faces), c.label) for c in clips])
    np.testing.assert_array_equal(val.labels, expected_labels)
    assert val.keys[0].startswith(f"{clips[0].split}/{clips[0].clip_id}:")
    # the FER training set keeps every Training row (no hold-out slice taken)
    assert len(dm.data["train"]) == usage_count(faces["fer"], "Training") + int(
        (faces["tfd"].labels >= 0).sum()
    )
    np.testing.assert_array_equal(val.images, np.concatenate([c.faces for c in clips]))
