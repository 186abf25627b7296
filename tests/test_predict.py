"""The shipped face-CNN weights and `predict.py`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emotiw import assets
from emotiw.labels import EMOTIONS
from lightning_modules.cnn import load_cnn
from tests.helpers import env_for_subprocess

REPO = Path(__file__).resolve().parents[1]

# Softmax of the shipped model on reference_faces(), recorded when the weights were packaged.
REFERENCE_PROBS = [
    [
        0.1748189926147461,
        0.0008640000014565885,
        0.12772999703884125,
        0.06996700167655945,
        0.2649640142917633,
        0.03199800103902817,
        0.32965800166130066,
    ],
    [
        0.1413850039243698,
        0.00015100000018719584,
        0.033062998205423355,
        0.2219800055027008,
        0.3288800120353699,
        0.02169799990952015,
        0.2528429925441742,
    ],
    [
        0.09626299887895584,
        0.0016899999463930726,
        0.08523699641227722,
        0.35174399614334106,
        0.3713519871234894,
        0.005084000062197447,
        0.08862999826669693,
    ],
    [
        0.11251799762248993,
        0.0013780000153928995,
        0.08413399755954742,
        0.6069459915161133,
        0.08943700045347214,
        0.022353999316692352,
        0.08323399722576141,
    ],
]


def reference_faces() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 48, 48), generator=g, dtype=torch.uint8)
    ramp = (torch.arange(48)[None, :] * 5).expand(48, 48).to(torch.uint8)
    return torch.cat([noise, ramp[None], torch.full((1, 48, 48), 128, dtype=torch.uint8)])


def test_shipped_weights_checksum_and_reference_outputs():
    path = assets.asset_path(assets.CNN_PAPER_FER2013)  # verifies the recorded sha256
    assert path.stat().st_size < 1_000_000
    model = load_cnn(weights=path)
    assert not model.training and bool(model.norm_fitted)
    logits, feature = model.embed(reference_faces())
    assert feature.shape == (4, 3872)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), np.array(REFERENCE_PROBS), atol=1e-4)


def test_checksum_mismatch_is_refused(monkeypatch):
    monkeypatch.setitem(assets.SHA256, assets.CNN_PAPER_FER2013, "0" * 64)
    with pytest.raises(ValueError, match="does not match the recorded"):
        assets.asset_path(assets.CNN_PAPER_FER2013)


def _write_stills(folder: Path) -> None:
    from emotiw.synth import make_fer

    stills = make_fer([1, 0, 0, 1, 0, 0, 0], seed=3, difficulty="easy", workers=1)
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "aligned.png"), stills.images[0])
    big = cv2.resize(stills.images[1], (160, 120), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(folder / "big.jpg"), big)


def _predict(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "predict.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env_for_subprocess(cwd),
        cwd=cwd,
        timeout=timeout,
    )


def _rows(out: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}


def _probs(row: dict, model: str = "cnn") -> np.ndarray:
    return np.array([float(row[f"{model}_{e}"]) for e in EMOTIONS])


def test_predict_cli_on_generated_stills(tmp_path):
    """``--images`` stays as an alias; a 48x48 grey still is an aligned face, ``--no-detect`` takes the centre
    square of any other. (Was: a ``face`` column with aligned/centre-crop; the status column says it now.)"""
    images = tmp_path / "images"
    _write_stills(images)
    out = tmp_path / "out"
    proc = _predict(["--images", images, "--out", out, "--no-detect"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["path"]).name for r in rows] == ["aligned.png", "big.jpg"]
    assert [r["status"] for r in rows] == ["48x48 grey image taken as an aligned face", "ok"]
    for r in rows:
        p = _probs(r)
        assert abs(p.sum() - 1) < 1e-4
        assert r["emotion"] == EMOTIONS[int(p.argmax())] and float(r["probability"]) == pytest.approx(p.max())
    assert "2 of 2 inputs predicted" in proc.stderr


def test_predict_cli_bad_path(tmp_path):
    """A path that does not exist is a row with its reason; nothing predicted, so the exit status is 1."""
    proc = _predict([tmp_path / "missing"], tmp_path)
    assert proc.returncode == 1 and "missing: no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    (row,) = _rows(tmp_path / "predictions").values()
    assert row["status"] == "no such file or folder" and row["emotion"] == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "0"], "--every must be an integer >= 1, got 0"),
        (["--every", "-3"], "--every must be an integer >= 1, got -3"),
        (["--every", "two"], "--every must be an integer >= 1, got 'two'"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--out", "preds.csv"], "--out preds.csv: give a folder"),
        (["--out", "clip.avi"], "--out clip.avi: is a file, not a folder"),
        (["--weights", "nope.pt"], "nope.pt: no such weights file"),
        ([], "give at least one video, image or folder"),
    ],
)
def test_predict_cli_argument_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "clip.avi").write_bytes(b"x")
    proc = _predict([*(["clip.avi"] if args else []), *args], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_predict_cli_never_overwrites_an_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "predictions.csv"
    victim.write_text("my own data\n")
    proc = _predict([victim, "--out", out], tmp_path, timeout=120)
    assert proc.returncode == 2 and "would overwrite the input" in proc.stderr
    assert victim.read_text() == "my own data\n"


def test_inputs_are_checked_before_torch_is_imported(tmp_path):
    code = (
        "import sys, predict; rc = predict.main([sys.argv[1], '--out', sys.argv[2]]);"
        "print(rc, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "missing.mp4"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env_for_subprocess(tmp_path),
        timeout=120,
    )
    assert proc.stdout.split() == ["1", "False"], proc.stderr


def test_results_written_before_a_crash_are_kept(tmp_path, monkeypatch):
    """The run dies at the third input (as a kill or a full disk would): the first two are in both files, which
    are whole, and every file has the umask's permissions."""
    import predict
    from emotiw.pipeline import EmotionPipeline

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        gray = np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8)
        cv2.imwrite(str(images / f"{i}.png"), gray)
    real = EmotionPipeline.predict
    calls = []

    def dies_third(self, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(EmotionPipeline, "predict", dies_third)
    old = os.umask(0o022)
    try:
        with pytest.raises(KeyboardInterrupt):
            predict.main([str(images), "--out", str(tmp_path / "out")])
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert list(_rows(out)) == ["0.png", "1.png"]
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["path"]).name for r in records] == ["0.png", "1.png"]
    assert records[0]["frames"][0]["probs"] == pytest.approx(_probs(_rows(out)["0.png"]).tolist(), abs=1e-6)
    for name in ("predictions.csv", "predictions.json", "predict.log"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in out.iterdir()) == ["predict.log", "predictions.csv", "predictions.json"]


# ------------------------------------------------------------------------------------------------ bad input
NON_UTF8 = os.fsdecode(b"caf\xe9 clip.avi")


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory) -> tuple[Path, dict[str, dict], list[dict], subprocess.CompletedProcess]:
    """One run of the tool over every kind of bad input beside good ones (each checked by its own test)."""
    from PIL import Image

    from tests.predict_media import face_clip, face_frames, head, scene, write_clip

    root = tmp_path_factory.mktemp("bad")
    media = root / "media"
    media.mkdir()
    face_clip(media / "good.avi", n=16)
    (media / "notes.mp4").write_text("this is text, not a video\n" * 20)
    (media / "empty.mp4").write_bytes(b"")
    cut = face_clip(media / "cut.avi", n=30)
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
    write_clip(media / "noface.avi", [scene(120, 160, seed=s) for s in range(12)])
    face_clip(media / "lost.avi", n=24, visible=np.arange(24) < 12)
    face_clip(media / "mute.avi", n=12, audio=False)
    face_clip(media / "one.avi", n=1)
    face_clip(media / "portrait.avi", n=12, size=(180, 320), drift=(0.5, 1.0))
    frames, _ = face_frames(12)
    write_clip(media / "gray.avi", [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    # A flat background: a generated scene this size would take gigabytes of floats.
    big = np.full((8000, 8000, 3), 90, np.uint8)
    big[2000:5700, 2500:5855] = cv2.resize(head(400), (3355, 3700))
    Image.fromarray(big).save(media / "big.jpg", quality=80)
    face_clip(media / NON_UTF8, n=8)
    (root / "nothing").mkdir()
    out = root / "new" / "deeper" / "out"
    proc = _predict([media, root / "nothing", root / "missing.mp4", "--out", out, "--every", "4"], root)
    rows = {r["path"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    rows = {Path(k).name: v for k, v in rows.items()}
    records = json.loads((out / "predictions.json").read_text())
    return out, rows, records, proc


def test_bad_run_goes_on_and_exits_zero(bad_run):
    out, rows, records, proc = bad_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(rows) == len(records) == 14
    assert [Path(r["path"]).name for r in records] == list(rows)
    log = (out / "predict.log").read_text()
    for name, row in rows.items():  # every input that is not plainly fine has its reason in the log too
        if row["status"] != "ok":
            assert row["status"] in log, name


def _status(bad_run, name):
    return bad_run[1][name]["status"]


def test_missing_path(bad_run):
    assert _status(bad_run, "missing.mp4") == "no such file or folder"


def test_empty_folder(bad_run):
    assert _status(bad_run, "nothing") == "no videos or images in this folder (searched recursively)"


def test_text_file_named_mp4(bad_run):
    assert _status(bad_run, "notes.mp4") == (
        "not a readable video container (Invalid data found when processing input)"
    )
    assert bad_run[1]["notes.mp4"]["emotion"] == ""


def test_zero_byte_video(bad_run):
    assert _status(bad_run, "empty.mp4") == "empty file (0 bytes), not a video"


def test_truncated_video_is_flagged(bad_run):
    row = bad_run[1]["cut.avi"]
    assert row["emotion"] and 0 < int(row["frames_read"]) < 30
    assert row["status"].startswith("truncated file") and "scored on the" in row["status"]


def test_video_without_a_face(bad_run):
    row = bad_run[1]["noface.avi"]
    assert row["emotion"] == "" and row["status"] == "no face found in 12 frames"
    assert (row["frames_read"], row["frames_with_face"]) == ("12", "0")


def test_face_lost_halfway(bad_run):
    row = bad_run[1]["lost.avi"]
    # Keyframes 0, 4, 8 see the face, 12 does not: it ends at frame 8.
    assert row["status"] == "face in 9 of 24 frames" and row["emotion"]


def test_video_without_audio_is_predicted_from_the_faces(bad_run):
    # No model of this run needs audio; the pipeline test covers an audio model being left out.
    assert _status(bad_run, "mute.avi") == "ok"


def test_one_frame_clip(bad_run):
    row = bad_run[1]["one.avi"]
    assert (row["status"], row["frames_read"], row["frames_with_face"]) == ("ok", "1", "1")


def test_portrait_and_grey_videos(bad_run):
    for name in ("portrait.avi", "gray.avi"):
        row = bad_run[1][name]
        assert row["status"] == "ok" and row["frames_with_face"] == "12", name


def test_8000_pixel_image_downscaled(bad_run):
    row = bad_run[1]["big.jpg"]
    assert row["emotion"] and row["status"] == "downscaled from 8000x8000 to 2048x2048 before detection"


def test_non_utf8_spaced_name(bad_run):
    out, rows, records, _ = bad_run
    row = rows["caf\\xe9 clip.avi"]  # the undecodable byte shown as \xe9
    assert row["status"] == "ok" and row["emotion"]
    (record,) = [r for r in records if r["path"].endswith("clip.avi") and "caf" in r["path"]]
    assert record["timeline"] == "timelines/caf_xe9_clip.png" and (out / record["timeline"]).is_file()


def test_out_folder_created_with_a_timeline_per_video(bad_run):
    out, rows, records, _ = bad_run
    videos = [r for r in records if r["kind"] == "video" and r["frames_read"]]
    assert len(videos) == 9
    for r in videos:
        png = out / r["timeline"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r["path"]
    assert all(r["timeline"] is None for r in records if r["kind"] == "image")


def test_json_holds_the_per_frame_data(bad_run):
    _, rows, records, _ = bad_run
    (good,) = [r for r in records if r["path"].endswith("good.avi")]
    assert good["frames_read"] == 16 and len(good["frames"]) == 16
    assert [f["detected"] for f in good["frames"]] == [t % 4 == 0 for t in range(16)]
    probs = np.array([f["probs"] for f in good["frames"]])
    np.testing.assert_allclose(probs.mean(0), good["models"]["cnn"], atol=1e-5)
    np.testing.assert_allclose(_probs(rows["good.avi"]), good["models"]["cnn"], atol=1e-6)
    assert good["frames"][5]["time_s"] == pytest.approx(5 / 25)
    assert len(good["frames"][0]["points"]) == 10 and len(good["frames"][0]["box"]) == 4


def test_views_centre_by_default_own_on_request(tmp_path):
    """``--views centre`` (the default) classifies the face once; ``--views own`` with the shipped weights' test-time
    views (flip + five crops): each equals the model called directly with those views."""
    from emotiw.faces.histeq import equalize_hist

    images = tmp_path / "images"
    _write_stills(images)
    face = cv2.imread(str(images / "aligned.png"), cv2.IMREAD_GRAYSCALE)
    model = load_cnn()
    assert model.hparams.tta_flip and model.hparams.tta_crops  # the shipped file's own views
    x = torch.from_numpy(equalize_hist(face, 64)[None])
    own = torch.softmax(model.embed(x)[0], -1)[0].numpy()
    model.hparams.tta_flip = model.hparams.tta_crops = False
    centre = torch.softmax(model.embed(x)[0], -1)[0].numpy()
    assert np.abs(own - centre).max() > 1e-3  # the two settings are told apart
    for views, expected in ((None, centre), ("own", own)):
        out = tmp_path / f"out_{views}"
        extra = [] if views is None else ["--views", views]
        proc = _predict([images / "aligned.png", "--out", out, *extra], tmp_path)
        assert proc.returncode == 0, proc.stderr
        (row,) = _rows(out).values()
        np.testing.assert_allclose(_probs(row), expected, atol=2e-5)
