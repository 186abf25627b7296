"""predict.py and the inference pipeline on real media (skipped where the shared folder is absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from emotiw.audio.is10 import IS10_DIM


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    import predict

    faces = shared_data / "real_faces"
    crema = shared_data / "real_av" / "crema_d"
    out = tmp_path_factory.mktemp("real") / "out"
    rc = predict.main(
        [str(faces / "single_face.mp4"), str(faces / "no_face.mp4"), str(crema), "--out", str(out)]
    )
    rows = {Path(r["path"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}
    records = {Path(r["path"]).name: r for r in json.loads((out / "predictions.json").read_text())}
    return rc, out, rows, records


def test_single_face_found_in_most_frames(real_run):
    rc, _, rows, _ = real_run
    row = rows["single_face.mp4"]
    assert rc == 0 and row["status"] == "ok" and row["emotion"]
    assert int(row["frames_read"]) == 72  # SOURCE.md: 72 frames
    assert int(row["frames_with_face"]) >= 0.9 * 72


def test_no_face_clip_reported(real_run):
    row = real_run[2]["no_face.mp4"]
    assert row["emotion"] == "" and row["status"] == "no face found in 95 frames"


def test_crema_d_faces_and_a_timeline_each(real_run):
    _, out, rows, records = real_run
    clips = sorted(n for n in rows if n.endswith(".flv"))
    assert len(clips) == 6
    for name in [*clips, "single_face.mp4", "no_face.mp4"]:
        png = out / records[name]["timeline"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
    for name in clips:
        assert int(rows[name]["frames_with_face"]) >= 0.9 * int(rows[name]["frames_read"]), name


def test_crema_d_audio_gives_is10_features_of_the_speech(shared_data):
    """The pipeline's audio step (``clip_is10``, the audio stage's checks; tests/core/test_pipeline.py shows the
    pipeline hands its result to the models): each FLV's MP3 track gives the 1582 IS10 features over its whole
    length (the durations of MANIFEST.csv), and openSMILE finds voiced pitch in most clips, which it does not in
    noise of the same loudness."""
    from emotiw.audio.is10 import _smile, clip_is10, is10_features

    names = _smile().feature_names
    duration, onsets = names.index("F0final__Turn_duration"), names.index("F0final__Turn_numOnsets")
    crema = shared_data / "real_av" / "crema_d"
    manifest = {r["file"]: r for r in csv.DictReader((crema / "MANIFEST.csv").open())}
    assert len(manifest) == 6
    voiced = 0
    for name, row in manifest.items():
        audio = clip_is10(crema / name)
        assert audio.status == "ok", audio.detail
        assert audio.features.shape == (IS10_DIM,) and np.isfinite(audio.features).all()
        assert abs(audio.features[duration] - float(row["duration_s"])) < 0.15, name
        voiced += audio.features[onsets] > 0
    assert voiced >= 3
    noise = np.random.default_rng(0).normal(0, 0.03, 32000).astype(np.float32)
    assert is10_features(noise, 16000)[onsets] == 0
