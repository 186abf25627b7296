"""benchmarks/fer2013.py on a generated FER2013 image folder: the last line is the accuracy of the model's own view."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from emotiw.synth import make_fer, write_fer_images
from lightning_modules.cnn import CNNModule, save_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fer2013  # noqa: E402


@pytest.mark.parametrize(
    ("flip", "crops", "views"),
    [
        (False, False, ["centre crop"]),
        (True, False, ["centre crop", "flip"]),
        (False, True, ["centre crop", "five crops"]),
        (True, True, ["centre crop", "flip", "flip + five crops"]),
    ],
)
def test_reports_the_models_own_test_time_view(tmp_path, capsys, flip, crops, views):
    write_fer_images(tmp_path / "fer", make_fer(3, seed=0, workers=1))
    torch.manual_seed(0)
    weights = save_weights(CNNModule(tta_flip=flip, tta_crops=crops), tmp_path / "cnn.pt")
    acc = fer2013.main(["--test-dir", str(tmp_path / "fer" / "test"), "--weights", str(weights)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{acc:.4f}" and 0.0 <= acc <= 1.0
    accuracy_line = next(line for line in lines if line.startswith("accuracy: "))
    assert [part.split(" (", 1)[1].rstrip(")") for part in accuracy_line[10:].split(", ")] == views
    own = views[-1]
    assert lines[-2] == f"reported: {own}"
    assert f"{acc:.4f} ({own})" in accuracy_line
    # --no-tta reports the centre crop
    centre = fer2013.main(
        ["--test-dir", str(tmp_path / "fer" / "test"), "--weights", str(weights), "--no-tta"]
    )
    assert f"{centre:.4f} (centre crop)" in accuracy_line
