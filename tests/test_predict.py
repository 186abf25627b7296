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
REFERENCE_PROBS = [[0.3370969891548157, 0.0033319999929517508, 0.21694999933242798, 0.04189499840140343, 0.25263699889183044, 0.05912499874830246, 0.08896400034427643], [0.3159889876842499, 0.001623000018298626, 0.23056000471115112, 0.09535899758338928, 0.18074899911880493, 0.09877599775791168, 0.076944999396801], [0.129954993724823, 0.009724999777972698, 0.11035799980163574, 0.16505999863147736, 0.3721970021724701, 0.016798999160528183, 0.19590499997138977], [0.13537199795246124, 0.014205999672412872, 0.10171599686145782, 0.19985799491405487, 0.3194740116596222, 0.02491299994289875, 0.2044599950313568]]


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
