"""Another CNN's feature width flows through the pipeline: a model=cnn_res checkpoint gives 256-d per-frame features
in stage=features, and stage=irnn (whose config keeps the paper's 3872) sizes its input from the features files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emotiw.artifacts import load_probs
from tests.core.afew_tree import write_tiny_afew
from tests.helpers import compose_cfg, run
from tests.stages.cnn_ckpt import save_cnn_ckpt


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("res_root")
    write_tiny_afew(root / "data" / "generated" / "afew")
    cfg = compose_cfg(["model=cnn_res"], root)
    hparams = {k: v for k, v in cfg.model.items() if not k.startswith("_")}
    save_cnn_ckpt(root / "cnn.ckpt", **hparams)
    return root


def test_res_features_then_irnn(root):
    common = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    features = ["stage=features", f"cnn_ckpt={root / 'cnn.ckpt'}", "data.face_workers=0", "data.batch_size=4"]
    metrics = run([*features, *common], root)
    assert metrics["train/frames"] == 18
    with np.load(root / "runs/default/features/Train.npz") as z:
        assert z["feats"].shape == (18, 256) and z["feats"].dtype == np.float16
        assert np.isfinite(z["feats"].astype(np.float32)).all() and z["feats"].std() > 0

    assert compose_cfg(["stage=irnn"], root).model.input_size == 3872  # the paper's value stays the config's
    run(["stage=irnn", "trainer.max_epochs=2", "data.batch_size=2", *common], root)
    ckpt = next((root / "runs/default/irnn/checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state["net.input_proj.weight"].shape == (200, 256)
    for split in ("Train", "Val", "Test"):
        with np.load(root / f"runs/default/features/{split}.npz") as z:
            clips = int((np.diff(z["offsets"]) > 0).sum())  # the IRNN skips clips without a face
        p = load_probs(root / "runs/default", "irnn", split)
        assert p.probs.shape == (clips, 7) and p.features.shape == (clips, 200)
