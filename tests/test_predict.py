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
REFERENCE_PROBS = [[0.1739020049571991, 0.011498999781906605, 0.32582101225852966, 0.08880600333213806, 0.16173499822616577, 0.11737699806690216, 0.12086000293493271], [0.2409220039844513, 0.010985000059008598, 0.30375999212265015, 0.059351999312639236, 0.16830900311470032, 0.11932399868965149, 0.09734699875116348], [0.13372600078582764, 0.01885100081562996, 0.13791899383068085, 0.12275499850511551, 0.30778300762176514, 0.04681900143623352, 0.2321459949016571], [0.14922599494457245, 0.03218099847435951, 0.14180700480937958, 0.13317400217056274, 0.2664110064506531, 0.06713499873876572, 0.21006600558757782]]


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
