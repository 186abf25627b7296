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
REFERENCE_PROBS = [[0.2997699975967407, 0.0019039999460801482, 0.15761099755764008, 0.04967999830842018, 0.23357899487018585, 0.06191999837756157, 0.19553600251674652], [0.32784000039100647, 0.0005740000051446259, 0.09482599794864655, 0.1620039939880371, 0.17295700311660767, 0.07515999674797058, 0.1666399985551834], [0.13116799294948578, 0.0026229999493807554, 0.07063400000333786, 0.23337599635124207, 0.382968008518219, 0.009820000268518925, 0.16941100358963013], [0.16715100407600403, 0.004474000073969364, 0.08959300071001053, 0.2933019995689392, 0.20159600675106049, 0.034258998930454254, 0.2096250057220459]]


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
        capture_output=True, text=True, env=env_for_subprocess(tmp_path), cwd=tmp_path, timeout=300,
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
        capture_output=True, text=True, env=env_for_subprocess(tmp_path), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode != 0 and "missing: no such file or folder" in proc.stderr
