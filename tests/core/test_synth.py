"""The generator: real formats, reproducible bytes, faces whose landmarks and expressions are what was drawn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import scipy.io

from emotiw.labels import AFEW_FOLDERS, EMOTIONS, NUM_CLASSES
from emotiw.synth import content_hash, generate, is_complete, make_fer, write_avi
from emotiw.synth.afew import FPS, LANDMARK_HEADER, MOTIONS, _motion
from emotiw.synth.faces import (
    EMOTION_AUS,
    FER_MEAN_SHAPE,
    Pose,
    StillStyle,
    expression_aus,
    render_face,
    render_still,
    sample_identity,
)
from emotiw.synth.voice import SAMPLE_RATE, speech

# A few items of every kind: enough to exercise every writer and the worker pool (>= 64 stills) in seconds.
SMALL = {"fer_per_class": 10, "tfd": 12, "afew_train": 2, "afew_val": 1, "afew_test": 1, "afew_max_s": 1.2}
CLEAN = StillStyle(shift=0.0, roll=0.0, yaw=0.0, scale=0.0, blur=0.0, noise=(0.0, 0.0), light=0.0)


@pytest.fixture(scope="module")
def tiny(tiny_root: Path) -> Path:
    return tiny_root / "data" / "generated"


# ------------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_any_workers_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", preset="tiny", seed=0, counts=SMALL, workers=1)
    b = generate(tmp_path / "b", preset="tiny", seed=0, counts=SMALL, workers=2)
    c = generate(tmp_path / "c", preset="tiny", seed=1, counts=SMALL, workers=1)
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(c)
    marker = json.loads((a / ".complete").read_text())
    assert marker["sha256"] == content_hash(a)
    assert (marker["preset"], marker["seed"], marker["difficulty"]) == ("tiny", 0, "easy")
    assert sum(marker["counts"]["afew"]["Train"].values()) == 2


def test_existing_tree_is_kept_unless_forced_and_a_failed_run_leaves_nothing(tmp_path, monkeypatch) -> None:
    import emotiw.synth as synth

    out = generate(tmp_path / "gen", preset="tiny", seed=0, counts=SMALL)
    stamp = (out / ".complete").stat().st_mtime_ns
    generate(out, preset="tiny", seed=0, counts=SMALL)
    assert (out / ".complete").stat().st_mtime_ns == stamp
    assert not is_complete(out, preset="tiny", seed=1, counts=SMALL)

    def crash(root, *args):
        (root / "half_written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_write_tree", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "other", preset="tiny", seed=0, counts=SMALL)
    with pytest.raises(RuntimeError):
        generate(out, preset="tiny", seed=0, counts=SMALL, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]  # no partial tree, old tree intact
    assert is_complete(out, preset="tiny", seed=0, counts=SMALL)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="preset='huge'"):
        generate("/nonexistent", preset="huge")
    with pytest.raises(ValueError, match="difficulty='hard'"):
        generate("/nonexistent", preset="tiny", difficulty="hard")
    with pytest.raises(ValueError, match="unknown keys.*afew_trian"):
        generate("/nonexistent", preset="tiny", counts={"afew_trian": 3})
    with pytest.raises(ValueError, match="multiples of 16"):
        generate("/nonexistent", preset="tiny", counts={"frame_size": [150, 128]})


def test_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds notes\.txt, which the generator did not write"):
        generate(tmp_path, preset="tiny", counts=SMALL)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------------------------------- formats


def _clips(afew: Path) -> dict[str, list[Path]]:
    return {s: sorted((afew / s).rglob("*.avi")) for s in ("Train", "Val", "Test")}


def test_afew_layout(tiny: Path) -> None:
    afew = tiny / "afew"
    for split in ("Train", "Val"):
        assert sorted(p.name for p in (afew / split).iterdir()) == sorted(AFEW_FOLDERS)
    assert [p for p in (afew / "Test").iterdir() if p.is_dir()] == []  # labels withheld
    clips = _clips(afew)
    ids = [p.stem for paths in clips.values() for p in paths]
    assert all(len(i) == 9 and i.isdigit() for i in ids)
    assert len(set(ids)) == len(ids) == 42
    for split in ("Train", "Val"):
        per_class = {e: len(list((afew / split / e).glob("*.avi"))) for e in AFEW_FOLDERS}
        assert set(per_class.values()) == {2}
    with open(afew / "Test_labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["clip_id", "emotion"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.stem for p in clips["Test"])
    assert {r[1] for r in rows[1:]} <= set(AFEW_FOLDERS)
    assert sorted(p.stem for p in (afew / "landmarks").glob("*.csv")) == sorted(ids)


def test_avi_is_25fps_with_mono_pcm_audio_and_1_to_6_seconds(tiny: Path) -> None:
    clips = _clips(tiny / "afew")
    for path in (clips["Train"][0], clips["Val"][-1], clips["Test"][0]):
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.average_rate == FPS
            assert (v.codec_context.width, v.codec_context.height) == (160, 128)
            assert (a.rate, a.channels, a.codec_context.name) == (SAMPLE_RATE, 1, "pcm_s16le")
            n = sum(1 for _ in c.decode(video=0))
        with av.open(str(path)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
        assert 1.0 - 1 / FPS <= n / FPS <= 2.0 + 1 / FPS  # tiny preset: 1-2 s
        assert samples == n * SAMPLE_RATE // FPS


def test_landmark_csv_rows_only_for_visible_frames_and_inside_the_frame(tiny: Path) -> None:
    afew = tiny / "afew"
    total = visible = 0
    for path in sorted((afew / "landmarks").glob("*.csv")):
        lines = path.read_text().splitlines()
        assert lines[0] == LANDMARK_HEADER
        rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]]).reshape(-1, 11)
        frames = rows[:, 0].astype(int)
        assert np.all(np.diff(frames) > 0)
        assert np.all(
            (rows[:, 1::2] >= 0) & (rows[:, 1::2] <= 159) & (rows[:, 2::2] >= 0) & (rows[:, 2::2] <= 127)
        )
        # image-left first: left eye left of the right eye, mouth corners likewise
        assert np.all(rows[:, 1] < rows[:, 3]) and np.all(rows[:, 7] < rows[:, 9])
        visible += len(rows)
    marker = json.loads((tiny / ".complete").read_text())
    total = marker["counts"]["afew"]["frames"]
    assert visible == marker["counts"]["afew"]["frames_with_face"]
    assert 0.6 * total < visible <= total


def test_landmarks_sit_on_dark_eyes_in_the_decoded_video(tiny: Path) -> None:
    afew = tiny / "afew"
    path = sorted((afew / "Train").rglob("*.avi"))[0]
    rows = np.loadtxt(afew / "landmarks" / f"{path.stem}.csv", delimiter=",", skiprows=1, ndmin=2)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    contrast = []
    for row in rows:
        g = frames[int(row[0])].astype(np.float64)
        for x, y in (row[1:3], row[3:5]):
            xi, yi = int(round(x)), int(round(y))
            centre = g[yi - 1 : yi + 2, xi - 1 : xi + 2].mean()
            below = g[yi + 5 : yi + 8, xi - 1 : xi + 2].mean()  # cheek skin under the eye
            contrast.append(below - centre)
    assert np.median(contrast) > 15


def test_fer_csv_and_image_folders_hold_the_same_faces(tiny: Path) -> None:
    fer = tiny / "fer2013"
    with open(fer / "fer2013.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["emotion", "pixels", "Usage"]
        rows = list(reader)
    pixels = np.array([[int(v) for v in r[1].split(" ")] for r in rows])
    assert pixels.shape[1] == 48 * 48 and pixels.min() >= 0 and pixels.max() <= 255
    labels = np.array([int(r[0]) for r in rows])
    usage = np.array([r[2] for r in rows])
    assert set(usage) == {"Training", "PublicTest", "PrivateTest"}
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts[EMOTIONS.index("disgust")] == counts.min() < 0.5 * counts.max()  # disgust rare, as in FER
    for folder, use in (("train", "Training"), ("test", "PublicTest")):
        assert sorted(p.name for p in (fer / "images" / folder).iterdir()) == sorted(EMOTIONS)
        for c, emotion in enumerate(EMOTIONS):
            files = sorted((fer / "images" / folder / emotion).glob(f"{use}_*.jpg"))
            assert len(files) == int(((labels == c) & (usage == use)).sum())
        img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 48) and img.dtype == np.uint8
        same = pixels[(labels == c) & (usage == use)].reshape(-1, 48, 48)
        assert np.abs(same - img.astype(int)).mean(axis=(1, 2)).min() < 3.0  # JPEG of one of those rows


def test_tfd_mat_keys_dtypes_unlabelled_and_subject_disjoint_folds(tiny: Path) -> None:
    m = scipy.io.loadmat(tiny / "tfd" / "TFD_48x48.mat")
    assert m["images"].shape == (100, 48, 48) and m["images"].dtype == np.uint8
    assert m["labs_ex"].shape == m["labs_id"].shape == (100, 1)
    assert m["folds"].shape == (100, 5)
    ex, subj, folds = m["labs_ex"][:, 0], m["labs_id"][:, 0], m["folds"]
    assert set(np.unique(ex)) <= {-1, 1, 2, 3, 4, 5, 6, 7} and (ex == -1).any() and (ex >= 1).sum() == 70
    assert np.array_equal(folds == 0, np.repeat((ex == -1)[:, None], 5, axis=1))
    for k in range(5):
        train, test = set(subj[folds[:, k] == 1]), set(subj[folds[:, k] == 3])
        assert test and train and not train & test


def test_write_avi_crafts_edge_cases(tmp_path: Path) -> None:
    one = write_avi(tmp_path / "one_frame.avi", np.full((1, 32, 48), 128, np.uint8))
    with av.open(str(one)) as c:
        assert len(c.streams.audio) == 0
        assert len(list(c.decode(video=0))) == 1
    with pytest.raises(ValueError, match=r"odd\.avi.*must be even"):
        write_avi(tmp_path / "odd.avi", np.zeros((2, 31, 48, 3), np.uint8))
    with pytest.raises(ValueError, match=r"none\.avi: no frames"):
        write_avi(tmp_path / "none.avi", [])


# -------------------------------------------------------------------------------------------------- renderer


def test_renderer_landmarks_are_what_was_drawn() -> None:
    for k in range(5):
        idn = sample_identity(np.random.default_rng(k))
        aus = expression_aus("neutral", 0.0)
        pose = Pose.make(center=(60, 60), scale=2.5, roll=10.0 * (k - 2), yaw=6.0 * (k - 2))
        face = render_face(idn, aus, pose, (120, 120))
        grey, alpha = face.full((120, 120))
        for x, y in face.landmarks[:2]:  # iris centre darker than the skin below the eye
            xi, yi = int(round(x)), int(round(y))
            assert grey[yi, xi] < grey[yi + 7, xi] - 20
        x, y = face.landmarks[2]
        assert alpha[int(y), int(x)] == 1.0  # the nose tip is on the face
        assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 0] < face.landmarks[4, 0]


def test_fer_still_points_land_near_the_fer_mean_shape() -> None:
    rng = np.random.default_rng(3)
    idn = sample_identity(rng)
    _, pts = render_still(idn, expression_aus("happy", 1.0), rng, style=StillStyle())
    assert np.abs(pts - FER_MEAN_SHAPE).max() < 4.0
    _, exact = render_still(idn, expression_aus("neutral", 0.0), rng, style=CLEAN)
    assert np.sqrt(((exact - FER_MEAN_SHAPE) ** 2).sum(1)).mean() < 1.5  # least-squares fit of 5 points


def test_expression_changes_pixels_more_with_intensity() -> None:
    idn = sample_identity(np.random.default_rng(0))

    def still(emotion: str, intensity: float) -> np.ndarray:
        img, _ = render_still(idn, expression_aus(emotion, intensity), np.random.default_rng(1), style=CLEAN)
        return img.astype(np.float64)

    base = still("neutral", 0.0)
    for emotion in EMOTIONS:
        d = [np.abs(still(emotion, i) - base).mean() for i in (0.0, 0.4, 1.0)]
        if emotion == "neutral":
            assert d == [0.0, 0.0, 0.0]
        else:
            assert d[0] == 0.0 < d[1] < d[2]


def test_confusable_emotions_share_action_units_and_look_alike() -> None:
    shared = lambda a, b: set(EMOTION_AUS[a]) & set(EMOTION_AUS[b])  # noqa: E731
    assert {1, 2, 5, 26} <= shared("fear", "surprise")
    assert 4 in shared("angry", "disgust")
    idn = sample_identity(np.random.default_rng(5))

    def still(emotion: str, intensity: float = 1.0) -> np.ndarray:
        img, _ = render_still(idn, expression_aus(emotion, intensity), np.random.default_rng(1), style=CLEAN)
        return img.astype(np.float64)

    dist = lambda a, b: np.abs(a - b).mean()  # noqa: E731
    assert dist(still("fear"), still("surprise")) < dist(still("fear"), still("happy"))
    assert dist(still("sad", 0.2), still("neutral")) < dist(still("sad", 1.0), still("neutral")) / 3


def _hog(images: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    """Histograms of gradient orientation per 8x8 cell, weighted by magnitude, L2-normalised per image."""
    x = images.astype(np.float32)
    gx = np.stack([cv2.Sobel(im, cv2.CV_32F, 1, 0) for im in x])
    gy = np.stack([cv2.Sobel(im, cv2.CV_32F, 0, 1) for im in x])
    mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((ang / np.pi * bins).astype(int), bins - 1)
    n, h, w = x.shape
    feats = np.zeros((n, h // cell, w // cell, bins), np.float32)
    cy, cx = np.meshgrid(np.arange(h) // cell, np.arange(w) // cell, indexing="ij")
    for i in range(n):
        np.add.at(feats[i], (cy, cx, b[i]), mag[i])
    feats = feats.reshape(n, -1)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-6)


@pytest.mark.parametrize(("difficulty", "lo", "hi"), [("easy", 2 / 7, 1.0), ("paper", 1 / 7, 0.95)])
def test_fer_stills_are_learnable_but_not_trivial(difficulty: str, lo: float, hi: float) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    data = make_fer([30] * NUM_CLASSES, seed=7, difficulty=difficulty, workers=1)
    acc = cross_val_score(
        LogisticRegression(C=10.0, max_iter=500), _hog(data.images), data.labels, cv=3
    ).mean()
    assert lo < acc < hi, f"{difficulty}: accuracy {acc:.3f}"


# ------------------------------------------------------------------------------------------- voice and motion


def test_voice_prosody_follows_the_emotion() -> None:
    def rms(emotion: str) -> float:
        return float(
            np.mean(
                [
                    np.sqrt(np.mean(speech(np.random.default_rng(s), emotion, 2 * SAMPLE_RATE)[0] ** 2))
                    for s in range(4)
                ]
            )
        )

    assert rms("angry") > 2 * rms("sad")
    wave, talk = speech(np.random.default_rng(0), "neutral", SAMPLE_RATE, silent=True)
    assert talk.max() == 0.0 and np.abs(wave).max() < 0.05


def test_recording_gain_scales_voice_and_room_noise_together() -> None:
    loud, talk = speech(np.random.default_rng(4), "angry", SAMPLE_RATE)
    quiet, talk_q = speech(np.random.default_rng(4), "angry", SAMPLE_RATE, gain_db=-20.0)
    np.testing.assert_allclose(quiet, 0.1 * loud, atol=1e-6)  # the same recording, 20 dB lower
    np.testing.assert_array_equal(talk, talk_q)
    assert np.abs(loud).max() < 1.0  # the loudest effort does not clip at the top of RECORDING_GAIN_DB


def test_agitated_motion_moves_more_than_slow_or_still() -> None:
    def speed(kind: str) -> float:
        m = _motion(np.random.default_rng(0), kind, 100)
        return float(np.abs(np.diff(m["head"], axis=0)).mean() + np.abs(np.diff(m["pan"], axis=0)).mean())

    s = {k: speed(k) for k in MOTIONS}
    assert s["agitated"] > 2 * s["slow"] > 0 and s["still"] < s["calm"]


# ---------------------------------------------------------------------------------------------- stage and CLI


def test_make_data_stage_generates_then_skips(tmp_path: Path) -> None:
    from tests.helpers import run

    small = "{" + ",".join(f"{k}:{v}" for k, v in SMALL.items()) + "}"
    first = run(["stage=make_data", "synth.preset=tiny", f"synth.counts={small}"], tmp_path)
    out = tmp_path / "data" / "generated"
    assert is_complete(out, preset="tiny", seed=0, counts=SMALL)
    assert first["skipped"] == 0 and first["train/afew_clips"] == 2 and first["fer2013/Training"] > 0
    again = run(["stage=make_data", "synth.preset=tiny", f"synth.counts={small}"], tmp_path)
    assert again["skipped"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["generated"]


def test_cli_writes_a_tree_and_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    from emotiw.synth.__main__ import main

    args = [f"{k}={v}" for k, v in SMALL.items()]
    assert main([f"out={tmp_path / 'cli'}", "preset=tiny", "seed=2", *args]) == 0
    assert is_complete(tmp_path / "cli", preset="tiny", seed=2, counts=SMALL)
    assert main(["preset=tiny"]) == 2
    assert "out=DIR is required" in capsys.readouterr().err
    assert main([f"out={tmp_path / 'x'}", "preset=tiny", "afew_trian=3"]) == 2
    assert "afew_trian" in capsys.readouterr().err


def test_the_project_readers_load_the_generated_tree(tiny: Path) -> None:
    from emotiw.io import afew, audio, fer, tfd, video

    sets = fer.read_fer_csv(tiny / "fer2013" / "fer2013.csv")
    assert sets["Training"].images.shape[1:] == (48, 48)
    assert len(fer.read_fer_images(tiny / "fer2013" / "images", "train").images) == len(
        sets["Training"].images
    )
    assert len(tfd.read_tfd_mat(tiny / "tfd" / "TFD_48x48.mat").images) == 70
    refs = afew.list_splits(tiny / "afew")
    assert len(refs) == 42 and all(r.landmarks_path is not None for r in refs)
    ref = refs[0]
    decoded = video.read_video(ref.video_path)
    marks = afew.read_landmarks(ref.landmarks_path)
    assert decoded.fps == FPS and marks.frame_idx.max() < decoded.num_frames
    assert len(audio.read_audio(ref.video_path)) == decoded.num_frames * SAMPLE_RATE // FPS


def test_make_data_config_and_paper_sizes_are_pinned(tmp_path: Path) -> None:
    from emotiw.synth.presets import AFEW_BALANCE, PRESETS
    from tests.helpers import compose_cfg

    cfg = compose_cfg(["stage=make_data"], tmp_path)
    assert (cfg.task_name, cfg.runner) == ("make_data", "stages.make_data.run")
    assert (cfg.synth.preset, cfg.synth.seed, cfg.synth.force) == ("demo", 0, False)
    assert cfg.synth.out == str(tmp_path / "data" / "generated")
    paper = PRESETS["paper"]
    assert (paper.afew_train, paper.afew_val, paper.afew_test) == (723, 383, 539)  # paper-spec §10
    assert paper.afew_counts()["Val"] == list(AFEW_BALANCE) == [64, 40, 46, 63, 61, 46, 63]
    assert (paper.afew_min_s, paper.afew_max_s) == (1.0, 6.0) and paper.frame_size == (160, 128)
