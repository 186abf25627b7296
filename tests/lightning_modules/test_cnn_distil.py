"""Distillation of face CNNs (model.distil_targets): the mixed loss, the targets file and its guards, the script that
makes it, and a student that learns the teacher's answers rather than the labels."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.cnn import (
    CNNModule,
    images_digest,
    load_cnn,
    read_teacher_targets,
    save_teacher_targets,
    save_weights,
)
from tests.fer_stills import write_face_root
from tests.helpers import compose_cfg, run

SMALL = [
    "stage=cnn",
    "model=cnn_res",
    "data.val_source=fer_holdout",
    "data.fer_train=training",
    "data.afew_root=null",
    "data.tfd_mat=null",
    "data.batch_size=32",
    "++trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def test_distillation_loss_is_cross_entropy_against_the_mixed_target():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    labels = torch.tensor([0, 3, 6, 2, 2])
    teacher = torch.rand(5, 7, generator=g)
    teacher = teacher / teacher.sum(1, keepdim=True)
    for clip in (0.0, 1e-6):
        module = CNNModule(arch="res", label_smoothing=0.1, distil_weight=0.7, prob_clip=clip)
        # by hand: q = 0.3 * (0.9 one-hot + 0.1 / 7) + 0.7 * teacher; loss = mean_i -sum_k q_ik log p_ik
        onehot = torch.zeros(5, 7)
        onehot[torch.arange(5), labels] = 1.0
        q = 0.3 * (0.9 * onehot + 0.1 / 7) + 0.7 * teacher
        p = logits.softmax(-1).clamp(clip, 1 - clip) if clip else logits.softmax(-1)
        expected = -(q * p.log()).sum(1).mean()
        torch.testing.assert_close(module.loss(logits, labels, teacher), expected)
        # no teacher: the label loss alone, unchanged
        plain = F.cross_entropy(logits, labels, label_smoothing=0.1)
        if clip:
            plain = -((0.9 * onehot + 0.1 / 7) * p.log()).sum(1).mean()
        torch.testing.assert_close(module.loss(logits, labels), plain)
    with pytest.raises(ValueError, match="distil_weight"):
        CNNModule(distil_weight=1.5)


def test_teacher_targets_file_refuses_other_faces_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (10, 48, 48), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(7), 10).astype(np.float32)
    path = save_teacher_targets(tmp_path / "t.npz", probs, faces, ["a.pt"])
    torch.testing.assert_close(read_teacher_targets(path, faces, 7), torch.from_numpy(probs))
    other = faces.copy()
    other[3, 0, 0] ^= 1  # one pixel of one face
    with pytest.raises(ValueError, match=r"t\.npz.*expected.*teacher_targets\.py"):
        read_teacher_targets(path, other, 7)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz does not exist"):
        read_teacher_targets(tmp_path / "missing.npz", faces, 7)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: unreadable"):
        read_teacher_targets(tmp_path / "junk.npz", faces, 7)
    save_teacher_targets(tmp_path / "wide.npz", np.full((10, 8), 1 / 8, np.float32), faces, ["a.pt"])
    with pytest.raises(ValueError, match=r"wide\.npz: probs must be finite, shape \(10, 7\)"):
        read_teacher_targets(tmp_path / "wide.npz", faces, 7)
    save_teacher_targets(tmp_path / "neg.npz", probs * 2, faces, ["a.pt"])
    with pytest.raises(ValueError, match=r"neg\.npz: probs rows must be distributions"):
        read_teacher_targets(tmp_path / "neg.npz", faces, 7)


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("distil_root")
    write_face_root(root, per_class=40, tfd=0, seed=3, difficulty="easy")
    return root


def _train_split(root: Path) -> tuple[np.ndarray, np.ndarray]:
    dm = hydra.utils.instantiate(compose_cfg(SMALL, root).data)
    dm.setup("fit")
    return np.asarray(dm.data["train"].images), np.asarray(dm.data["train"].labels)


def test_script_writes_the_mean_of_the_teachers_views_for_the_runs_training_faces(face_root, tmp_path):
    from scripts.teacher_targets import main

    g = torch.Generator().manual_seed(1)
    second = CNNModule(arch="res")
    for p in second.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    second.set_normaliser(torch.full((48, 48), 120.0), torch.full((48, 48), 60.0))
    second_path = save_weights(second, tmp_path / "second.pt")
    shipped = str(Path(__file__).resolve().parents[2] / "emotiw" / "assets" / "cnn_res_fer2013.pt")
    out = main(
        [
            "--out",
            str(tmp_path / "t.npz"),
            "--teacher",
            shipped,
            "--teacher",
            str(second_path),
            "--views",
            "flip",
            *SMALL,
            f"paths.root_dir={face_root}",
        ]
    )
    images, _ = _train_split(face_root)
    got = read_teacher_targets(out, images, 7)
    # by hand: each teacher's softmax of the mean logits of the centre crop and its mirror, averaged over teachers
    expected = torch.zeros(len(images), 7)
    for model in (load_cnn(weights=shipped), load_cnn(weights=second_path)):
        x = model.preprocess(torch.from_numpy(images), train=False)
        with torch.no_grad():
            logits = 0.5 * (model(x)[0] + model(x.flip(-1))[0])
        expected += logits.softmax(-1) / 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert str(np.load(out)["key"]) == images_digest(images)


def test_student_learns_the_teachers_answers_rather_than_the_labels(face_root, tmp_path):
    """Targets that name the next class ((label + 1) mod 7) with distil_weight=1: the student must predict the
    teacher's class on unseen faces, which no reading of the labels can give."""
    images, labels = _train_split(face_root)
    shifted = (labels + 1) % 7
    save_teacher_targets(
        face_root / "runs" / "teachers" / "shifted.npz",
        np.eye(7, dtype=np.float32)[shifted],
        images,
        ["shift"],
    )
    run(
        [
            *SMALL,
            "trainer.max_epochs=6",
            "model.distil_targets=${paths.runs_dir}/teachers/shifted.npz",
            "model.distil_weight=1.0",
            "experiment_name=distil_shift",
        ],
        face_root,
    )
    # the last epoch: the best one on the (true-label) hold-out slice is the one that learnt the least
    model = load_cnn(checkpoint=face_root / "runs" / "distil_shift" / "cnn" / "checkpoints" / "last.ckpt")
    test = hydra.utils.instantiate(compose_cfg(SMALL, face_root).data)
    test.setup("test")
    faces, truth = test.data["test"].images, test.data["test"].labels
    preds = model.embed(torch.from_numpy(np.asarray(faces)))[0].argmax(-1).numpy()
    assert np.mean(preds == (truth + 1) % 7) > 2 / 7, np.mean(preds == (truth + 1) % 7)
    assert np.mean(preds == truth) < 1 / 7 + 0.05


def test_average_weights_script_is_the_mean_net_with_fresh_batch_norm_statistics(face_root, tmp_path):
    """scripts/average_weights.py on a run's epoch checkpoints: every parameter is the mean of the checkpoints', and
    the stem's batch-norm mean is the mean of its conv's output over the run's (augmented) training faces."""
    from scripts.average_weights import main

    run(
        [*SMALL, "trainer.max_epochs=3", "callbacks.model_checkpoint.save_top_k=-1", "experiment_name=swa"],
        face_root,
    )
    ckpts = sorted((face_root / "runs" / "swa" / "cnn" / "checkpoints").glob("epoch_*.ckpt"))
    assert len(ckpts) == 3
    out = main(
        [*map(str, ckpts), "--out", str(tmp_path / "swa.pt"), "--views", "flip", "--batch-size", "100000"]
    )
    model = load_cnn(weights=out)
    assert model.hparams.tta_flip and not model.hparams.tta_crops
    states = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in ckpts]
    for name, value in model.net.named_parameters():
        torch.testing.assert_close(value, sum(s[f"net.{name}"] for s in states) / 3)
    images, _ = _train_split(face_root)
    torch.manual_seed(0)  # the script's default --seed: the same augmentation draws, in one batch
    x = model.preprocess(torch.from_numpy(images), train=True)
    with torch.no_grad():
        stem_out = model.net.stem[0](x)
    torch.testing.assert_close(model.net.stem[1].running_mean, stem_out.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(
        model.net.stem[1].running_mean, states[-1]["net.stem.1.running_mean"], atol=1e-3
    )
