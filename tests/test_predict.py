"""The shipped face-CNN weights and `predict.py`."""

from __future__ import annotations

import csv
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
    path = assets.asset_path()  # verifies the recorded sha256
    assert path.stat().st_size < 1_000_000
    model = load_cnn()
    assert not model.training and bool(model.norm_fitted)
    logits, feature = model.embed(reference_faces())
    assert feature.shape == (4, 3872)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), np.array(REFERENCE_PROBS), atol=1e-4)


def test_checksum_mismatch_is_refused(monkeypatch):
    monkeypatch.setitem(assets.SHA256, assets.CNN_PAPER_FER2013, "0" * 64)
    with pytest.raises(ValueError, match="does not match the recorded"):
        assets.asset_path()


def _write_stills(folder: Path) -> None:
    from emotiw.synth import make_fer

    stills = make_fer([1, 0, 0, 1, 0, 0, 0], seed=3, difficulty="easy", workers=1)
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "aligned.png"), stills.images[0])
    big = cv2.resize(stills.images[1], (160, 120), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(folder / "big.jpg"), big)


def test_predict_cli_on_generated_stills(tmp_path):
    images = tmp_path / "images"
    _write_stills(images)
    out = tmp_path / "preds.csv"
    proc = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--images", str(images), "--out", str(out), "--no-detect"],
        capture_output=True,
        text=True,
        env=env_for_subprocess(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["aligned.png", "big.jpg"]
    assert [r["face"] for r in rows] == ["aligned", "centre-crop"]
    for r in rows:
        p = np.array([float(r[f"p_{e}"]) for e in EMOTIONS])
        assert abs(p.sum() - 1) < 1e-4
        assert r["emotion"] == EMOTIONS[int(p.argmax())]
    assert "2 predictions" in proc.stdout


def test_predict_cli_bad_path(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "--images", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env_for_subprocess(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode != 0 and "missing: no such file or folder" in proc.stderr
