from __future__ import annotations

import shutil

import numpy as np
import pytest

import emotiw.faces.cache as cache_mod
from emotiw.faces import AlignConfig, load_afew_faces
from emotiw.faces.cache import cache_key, cache_path
from emotiw.faces.detect import LandmarkFileSource
from emotiw.io.afew import list_clips
from tests.core.afew_tree import write_clip


@pytest.fixture()
def tree(tmp_path, afew_tree):
    root, info = afew_tree
    shutil.copytree(root, tmp_path / "afew")
    return tmp_path / "afew", info, tmp_path / "cache"


def test_loads_aligned_faces_and_reports(tree):
    root, info, cache = tree
    clips, report = load_afew_faces(root, ["Train", "Val", "Test"], cache, num_workers=0)
    by_id = {c.clip_id: c for c in clips}
    # 100000004 has no landmark file, 200000002 never shows a face: skipped and reported.
    assert sorted(by_id) == ["100000001", "100000002", "100000003", "200000001", "300000001", "300000002"]
    assert set(report.without_faces) == {"100000004", "200000002"}
    assert "landmarks/100000004.csv" in report.without_faces["100000004"]
    assert "200000002.avi: no frame with a face" in report.without_faces["200000002"]
    np.testing.assert_array_equal(
        by_id["100000002"].frame_idx, [0, 1, 2, 5, 6]
    )  # frames without points dropped
    assert by_id["100000003"].faces.shape == (1, 48, 48)  # 1-frame clip
    assert by_id["100000001"].faces.shape == (12, 48, 48) and by_id["100000001"].faces.dtype == np.uint8
    assert by_id["300000002"].label == 6  # from Test_labels.csv
    assert report.with_faces == 6 and report.clips == 8 and report.cache_built == 8
    assert report.frames == sum(len(c.faces) for c in clips)
    assert report.per_split["Val"] == {"clips": 2, "with_faces": 1, "frames": 9}


def test_aligned_face_puts_eyes_where_fer_has_them(tree):
    root, _, cache = tree
    clips, _ = load_afew_faces(root, ["Train"], cache, num_workers=0)
    face = clips[0].faces.astype(float).mean(0)
    # The drawn eyes are dark discs at the landmarks: darker than the face between them.
    assert face[16, 14] < face[16, 24] - 40 and face[16, 33] < face[16, 24] - 40


def test_second_call_hits_cache_without_decoding(tree, monkeypatch):
    root, _, cache = tree
    first, _ = load_afew_faces(root, ["Train"], cache, num_workers=0)

    def fail(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(cache_mod, "read_video", fail)
    second, report = load_afew_faces(root, ["Train"], cache, num_workers=0)
    assert report.cache_hits == 4 and report.cache_built == 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.faces, b.faces)


def test_changed_video_or_config_invalidates(tree):
    root, _, cache = tree
    _, r1 = load_afew_faces(root, ["Val"], cache, num_workers=0)
    write_clip(root / "Val" / "Angry" / "200000001.avi", 9, seed=99)
    clips, r2 = load_afew_faces(root, ["Val"], cache, num_workers=0)
    assert (r2.cache_hits, r2.cache_built) == (1, 1)
    _, r3 = load_afew_faces(root, ["Val"], cache, num_workers=0, config=AlignConfig(levels=256))
    assert r3.cache_built == 2


def test_changed_landmarks_invalidate(tree):
    root, _, cache = tree
    load_afew_faces(root, ["Val"], cache, num_workers=0)
    lm = root / "landmarks" / "200000001.csv"
    lm.write_text("\n".join(lm.read_text().splitlines()[:4]) + "\n")  # keep 3 frames
    clips, report = load_afew_faces(root, ["Val"], cache, num_workers=0)
    assert report.cache_built == 1 and len(clips[0].faces) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key"])
def test_corrupt_cache_file_rebuilt(tree, damage):
    root, _, cache = tree
    first, _ = load_afew_faces(root, ["Val"], cache, num_workers=0)
    ref = list_clips(root, "Val")[0]
    path = cache_path(cache, cache_key(ref, LandmarkFileSource(), AlignConfig()))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a zip")
    else:
        other = cache_path(cache, cache_key(list_clips(root, "Val")[1], LandmarkFileSource(), AlignConfig()))
        shutil.copy(other, path)
    clips, report = load_afew_faces(root, ["Val"], cache, num_workers=0)
    assert list(report.cache_rebuilt) == [ref.clip_id] and str(path.name) in report.cache_rebuilt[ref.clip_id]
    np.testing.assert_array_equal(clips[0].faces, first[0].faces)
    _, again = load_afew_faces(root, ["Val"], cache, num_workers=0)
    assert again.cache_hits == 2 and not again.cache_rebuilt


def test_decode_error_reported_and_on_missing_error(tree):
    root, _, cache = tree
    bad = root / "Val" / "Angry" / "200000001.avi"
    bad.write_bytes(bad.read_bytes()[:200])
    clips, report = load_afew_faces(root, ["Val"], cache, num_workers=0)
    assert clips == [] and "200000001.avi: truncated file" in report.decode_errors["200000001"]
    with pytest.raises(
        ValueError, match=r"2 clip\(s\) without a usable face.*200000001.avi: truncated.*200000002"
    ):
        load_afew_faces(root, ["Val"], cache, num_workers=0, on_missing="error")


def test_min_frames(tree):
    root, _, cache = tree
    clips, report = load_afew_faces(root, ["Train"], cache, num_workers=0, min_frames=6)
    assert [c.clip_id for c in clips] == ["100000001"]
    assert "fewer than min_frames=6" in report.without_faces["100000003"]


def test_process_pool_gives_same_faces_and_report_json(tree, tmp_path):
    root, _, cache = tree
    serial, _ = load_afew_faces(root, ["Train", "Val"], cache, num_workers=0)
    pooled, report = load_afew_faces(root, ["Train", "Val"], tmp_path / "cache2", num_workers=2)
    assert report.cache_built == 6
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(a.faces, b.faces)
    path = report.save(tmp_path / "report.json")
    assert '"with_faces": 4' in path.read_text()


def test_bad_arguments_named(tree):
    root, _, cache = tree
    with pytest.raises(ValueError, match="on_missing='drop'"):
        load_afew_faces(root, ["Val"], cache, on_missing="drop")
    with pytest.raises(ValueError, match="face_source='dlib'"):
        load_afew_faces(root, ["Val"], cache, face_source="dlib")


def test_centerface_source_through_the_cache(tmp_path):
    """A clip of a packaged photo (matplotlib's sample image) aligned with the detector instead of landmark files."""
    import os

    import av
    import cv2
    import matplotlib

    from emotiw.faces.detect import CenterFaceSource
    from emotiw.io.afew import ClipRef

    photo = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    photo = cv2.cvtColor(cv2.resize(photo, (256, 300)), cv2.COLOR_BGR2RGB)
    path = tmp_path / "Test" / "400000001.avi"
    path.parent.mkdir()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 300, "yuv420p"
        for img in (photo, np.full_like(photo, 128), photo):  # the middle frame shows no face
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    refs = [ClipRef("400000001", "Test", -1, path, None)]
    clips, report = load_afew_faces(
        tmp_path, ["Test"], tmp_path / "cache", face_source=CenterFaceSource(), refs=refs, num_workers=0
    )
    assert report.with_faces == 1
    np.testing.assert_array_equal(clips[0].frame_idx, [0, 2])
    # Aligned like FER: the eyes (dark) sit on the mean-shape eye row, darker than the forehead above them.
    face = clips[0].faces[0].astype(float)
    assert face[15:19, 11:17].mean() < face[4:8, 11:17].mean()
    _, again = load_afew_faces(
        tmp_path, ["Test"], tmp_path / "cache", face_source=CenterFaceSource(), refs=refs, num_workers=0
    )
    assert again.cache_hits == 1


def test_generated_tree_round_trip(tiny_root):
    """The generator's tiny AFEW tree: every landmark row within the decoded frames becomes one aligned face."""
    from emotiw.io.afew import list_splits, read_landmarks
    from emotiw.io.video import read_video

    afew = tiny_root / "data" / "generated" / "afew"
    refs = list_splits(afew)
    clips, report = load_afew_faces(afew, ["Train", "Val", "Test"], tiny_root / "cache", num_workers=0)
    assert report.clips == len(refs) and not report.decode_errors
    by_id = {c.clip_id: c for c in clips}
    for ref in refs[:: max(1, len(refs) // 6)]:
        n_frames = read_video(ref.video_path).num_frames
        rows = read_landmarks(ref.landmarks_path).frame_idx if ref.landmarks_path else np.zeros(0, int)
        expected = rows[rows < n_frames]
        if len(expected):
            np.testing.assert_array_equal(by_id[ref.clip_id].frame_idx, expected)
            assert by_id[ref.clip_id].label == ref.label
        else:
            assert ref.clip_id in report.without_faces
    assert {c.split for c in clips} == {"Train", "Val", "Test"}


@pytest.mark.parametrize("workers", [0, 2])
def test_faces_left_in_the_cache_file_read_as_loaded_ones(tree, workers):
    from emotiw.faces import CachedFaces

    root, _, cache = tree
    built, report = load_afew_faces(root, ["Train", "Val"], cache, num_workers=workers, in_memory=False)
    assert report.cache_built == 6 and all(isinstance(c.faces, CachedFaces) for c in built)
    hits, report = load_afew_faces(root, ["Train", "Val"], cache, num_workers=0, in_memory=False)
    assert report.cache_hits == 6 and all(isinstance(c.faces, CachedFaces) for c in hits)
    loaded, _ = load_afew_faces(root, ["Train", "Val"], cache, num_workers=0)
    for lazy_built, lazy_hit, ref in zip(built, hits, loaded, strict=True):
        assert isinstance(ref.faces, np.ndarray) and lazy_hit.faces.shape == ref.faces.shape
        np.testing.assert_array_equal(np.asarray(lazy_built.faces), ref.faces)
        np.testing.assert_array_equal(lazy_hit.faces[1:3], ref.faces[1:3])
        np.testing.assert_array_equal(lazy_hit.frame_idx, ref.frame_idx)
    # a cache entry that changes under the run is named, not served
    victim = hits[0].faces.path
    victim.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=str(victim.name)):
        np.asarray(hits[0].faces)
