"""stage=faces and stage=features on a tiny AFEW tree, with an untrained CNNModule checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotiw.faces import load_afew_faces
from lightning_modules.cnn import CNNModule
from tests.core.afew_tree import write_tiny_afew
from tests.helpers import assert_exit, assert_split_once, generated_clip_ids, run, train_py
from tests.stages.cnn_ckpt import save_cnn_ckpt


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features_root")
    write_tiny_afew(root / "data" / "generated" / "afew")
    save_cnn_ckpt(root / "cnn.ckpt")
    return root


def _overrides(root: Path) -> list[str]:
    return [
        f"cnn_ckpt={root / 'cnn.ckpt'}",
        "data.face_workers=0",
        "data.batch_size=4",
        "trainer.accelerator=cpu",
    ]


def test_config_pins_paper_values(tmp_path):
    from tests.helpers import compose_cfg

    cfg = compose_cfg(["stage=features"], tmp_path)
    assert cfg.data.histeq_levels == 64  # MATLAB histeq default (paper-spec §1)
    assert cfg.data.min_frames == 1  # every clip with an aligned face (paper-spec §3)
    assert (
        cfg.data.face_source == "auto" and cfg.data.on_missing == "skip"
    )  # sidecars when present, else CenterFace
    assert cfg.cnn_ckpt == str(tmp_path / "runs" / "default" / "cnn" / "best.ckpt")
    assert (
        compose_cfg(["stage=faces"], tmp_path).data._target_ == "datamodules.afew_frames.AfewFramesDataModule"
    )


def test_faces_stage_writes_report(root):
    metrics = run(["stage=faces", "data.face_workers=0"], root)
    # Another histeq setting is another cache entry for every clip.
    assert run(["stage=faces", "data.face_workers=0", "data.histeq_levels=256"], root)["cache_built"] == 8
    assert metrics["clips"] == 8 and metrics["clips_with_faces"] == 6 and metrics["clips_without_faces"] == 2
    report = json.loads((root / "runs" / "default" / "faces" / "face_report.json").read_text())
    assert set(report["without_faces"]) == {"100000004", "200000002"}
    assert report["per_split"]["Train"] == {"clips": 4, "with_faces": 3, "frames": 18}


def test_features_file_format_offsets_and_values(root):
    metrics = run(["stage=features", *_overrides(root)], root)
    clips, _ = load_afew_faces(root / "data/generated/afew", ["Train"], root / "cache", num_workers=0)
    with np.load(root / "runs/default/features/Train.npz") as z:
        assert list(z["clip_ids"]) == ["100000001", "100000002", "100000003"]
        assert z["labels"].tolist() == [3, 3, 4]
        assert z["offsets"].dtype == np.int64 and z["offsets"].tolist() == [0, 12, 17, 18]
        assert z["feats"].shape == (18, 3872) and z["feats"].dtype == np.float16
        assert z["logits"].shape == (18, 7) and z["logits"].dtype == np.float32
        np.testing.assert_array_equal(z["frame_idx"][12:17], [0, 1, 2, 5, 6])
        faces = torch.from_numpy(np.concatenate([c.faces for c in clips]))
        logits, feats = CNNModule.load_from_checkpoint(root / "cnn.ckpt").embed(faces)
        np.testing.assert_allclose(z["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z["feats"], feats.numpy(), rtol=2e-3, atol=1e-3)
        # Accuracies recomputed by hand: frame-level argmax, clip-level argmax of the mean softmax.
        lg = z["logits"].astype(np.float64)
        probs = np.exp(lg) / np.exp(lg).sum(1, keepdims=True)
        frame_acc = np.mean(probs.argmax(1) == np.repeat([3, 3, 4], [12, 5, 1]))
        clip_pred = [probs[a:b].mean(0).argmax() for a, b in [(0, 12), (12, 17), (17, 18)]]
        clip_acc = np.mean(np.array(clip_pred) == [3, 3, 4])
    assert metrics["train/frame_acc"] == pytest.approx(frame_acc)
    assert metrics["train/clip_acc"] == pytest.approx(clip_acc)
    assert metrics["val/frames"] == 9 and metrics["test/clips"] == 2
    assert not (root / "runs/default/features/.shards" / "Train_rank0.npz").exists()


def test_missing_checkpoint_says_run_cnn(root):
    with pytest.raises(FileNotFoundError, match="stage=cnn` first"):
        run(["stage=features", *_overrides(root), f"cnn_ckpt={root / 'none.ckpt'}"], root)


@pytest.mark.slow
def test_ddp_two_processes_match_one(root, tmp_path):
    """trainer=ddp_sim (2 CPU processes, gloo): the merged files equal the 1-process ones."""
    run(["stage=features", *_overrides(root), "experiment_name=single"], root)
    overrides = [
        "stage=features",
        *_overrides(root),
        "trainer=ddp_sim",
        "experiment_name=ddp",
        f"paths.root_dir={root}",
        f"paths.cache_dir={tmp_path / 'cache'}",  # an empty face cache: the ranks build it between them
    ]
    assert_exit(train_py(overrides, root))
    for split in ("Train", "Val", "Test"):
        with (
            np.load(root / f"runs/single/features/{split}.npz") as a,
            np.load(root / f"runs/ddp/features/{split}.npz") as b,
        ):
            assert sorted(a.files) == sorted(b.files)
            for key in ("clip_ids", "labels", "offsets", "frame_idx"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split}/{key}")
            # Other batch compositions change float rounding only (BLAS blocking), not which frame is where.
            np.testing.assert_allclose(
                a["logits"], b["logits"], rtol=1e-5, atol=1e-6, err_msg=f"{split}/logits"
            )
            np.testing.assert_allclose(
                a["feats"].astype(np.float32),
                b["feats"].astype(np.float32),
                rtol=2e-3,
                atol=1e-3,
                err_msg=f"{split}/feats",
            )
    # Each rank built the cache entries of its share of the clips and embedded the frames of its share, each once.
    from emotiw.io.afew import list_splits

    ranks = root / "runs" / "ddp" / "features" / "ranks.json"
    every_clip = [
        c.clip_id for c in list_splits(root / "data" / "generated" / "afew", ["Train", "Val", "Test"])
    ]
    assert_split_once(ranks, "faces", every_clip)
    with_frames = []
    for split in ("Train", "Val", "Test"):
        with np.load(root / f"runs/single/features/{split}.npz") as a:
            with_frames += [c for c, n in zip(a["clip_ids"], np.diff(a["offsets"]), strict=True) if n > 0]
    assert_split_once(ranks, "embed", with_frames)


@pytest.mark.slow
def test_faces_stage_under_two_process_ddp_builds_each_clip_once(root, tmp_path):
    """stage=faces with trainer=ddp_sim on an empty cache: each rank builds its share of the entries; the report
    equals the one-process one."""
    faces = ["data.face_workers=0", "trainer.accelerator=cpu"]
    run(["stage=faces", *faces, "experiment_name=faces1", f"paths.cache_dir={tmp_path / 'c1'}"], root)
    overrides = [
        "stage=faces",
        *faces,
        "trainer=ddp_sim",
        "experiment_name=faces2",
        f"paths.root_dir={root}",
        f"paths.cache_dir={tmp_path / 'c2'}",
    ]
    assert_exit(train_py(overrides, root))
    assert_split_once(root / "runs" / "faces2" / "faces" / "ranks.json", "faces", generated_clip_ids(root))
    one, two = (
        json.loads((root / "runs" / e / "faces" / "face_report.json").read_text())
        for e in ("faces1", "faces2")
    )
    for key in ("clips", "with_faces", "frames", "without_faces", "decode_errors", "per_split"):
        assert one[key] == two[key], key
    assert sorted(p.name for p in (tmp_path / "c1").rglob("*.npz")) == sorted(
        p.name for p in (tmp_path / "c2").rglob("*.npz")
    )
