"""benchmarks/fer2013.py on a generated FER2013 image folder: the last line is the accuracy of the model's own view."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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


def _accuracy_line(lines: list[str]) -> dict[str, float]:
    line = next(line for line in lines if line.startswith("accuracy: "))
    return {
        part.split(" (", 1)[1].rstrip(")"): float(part.split(" ", 1)[0]) for part in line[10:].split(", ")
    }


def test_val_scores_every_view_on_the_training_runs_holdout_slice(tmp_path, capsys):
    from sklearn.model_selection import train_test_split

    from emotiw.faces.histeq import equalize_hist
    from emotiw.io import read_fer_images

    write_fer_images(tmp_path / "fer", make_fer(20, seed=1, workers=1))
    torch.manual_seed(0)
    module = CNNModule()
    module.set_normaliser(torch.full((48, 48), 120.0), torch.full((48, 48), 60.0))
    weights = save_weights(module, tmp_path / "cnn.pt")
    acc = fer2013.main(["--val", str(tmp_path / "fer"), "--weights", str(weights)])
    lines = capsys.readouterr().out.strip().splitlines()
    scored = _accuracy_line(lines)
    # reference: the stratified 10 % slice (seed 1) of train/, equalised, each view by hand
    train = read_fer_images(tmp_path / "fer", "train")
    _, val_idx = train_test_split(
        np.arange(len(train.labels)), test_size=0.1, stratify=train.labels, random_state=1
    )
    val_idx = np.sort(val_idx)
    faces = torch.from_numpy(np.stack([equalize_hist(im, 64) for im in train.images[val_idx]]))
    assert f"images: {len(val_idx)} in the hold-out slice" in lines[1]
    expected = {}
    for name, (flip, crops) in fer2013.VIEWS.items():
        module.hparams.tta_flip, module.hparams.tta_crops = flip, crops
        preds = module.embed(faces)[0].argmax(-1).numpy()
        expected[name] = float(np.mean(preds == train.labels[val_idx]))
    assert list(scored) == list(fer2013.VIEWS)
    for name in expected:
        assert scored[name] == pytest.approx(expected[name], abs=1e-4)
    best = max(expected.values())
    chosen = next(name for name in fer2013.VIEWS if expected[name] == best)  # the fewest views on a tie
    assert lines[-2] == f"chosen on the hold-out slice: {chosen}"
    assert acc == pytest.approx(best)


def test_exclude_duplicates_of_drops_faces_with_training_pixels(tmp_path, capsys):
    from emotiw.io import read_fer_images

    write_fer_images(tmp_path / "fer", make_fer(3, seed=0, workers=1))
    train_files = sorted((tmp_path / "fer" / "train").rglob("*.*"))
    for i, src in enumerate(train_files[:2]):  # two training faces copied into test/
        (tmp_path / "fer" / "test" / src.parent.name / f"copy{i}{src.suffix}").write_bytes(src.read_bytes())
    test, train = read_fer_images(tmp_path / "fer", "test"), read_fer_images(tmp_path / "fer", "train")
    # reference: pairwise pixel equality
    dup = [any(np.array_equal(t, r) for r in train.images) for t in test.images]
    assert sum(dup) >= 2
    weights = save_weights(CNNModule(), tmp_path / "cnn.pt")
    args = ["--test-dir", str(tmp_path / "fer" / "test"), "--weights", str(weights), "--no-tta"]
    fer2013.main([*args, "--exclude-duplicates-of", str(tmp_path / "fer" / "train")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith(f"images: {len(dup) - sum(dup)} in ") and f"less {sum(dup)} faces" in lines[1]
    np.testing.assert_array_equal(fer2013.duplicate_mask(test.images, train.images), dup)
