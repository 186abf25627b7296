"""scripts/gpu_check.sh end to end on the CPU with its tiny setting (GPU_CHECK_TINY=1), so that a GPU run never dies
of a typo: every step runs, and the output folder holds the numbers, the log, the logs archive and loadable weights."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from emotiw.synth import make_fer, write_fer_images
from lightning_modules.cnn import load_cnn

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_step_tiny_on_cpu(tmp_path):
    # a FER2013-layout tarball, as the script takes on the GPU machine
    write_fer_images(tmp_path / "fer", make_fer(12, seed=0, workers=1))
    tarball = tmp_path / "fer.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / "fer" / split, arcname=split)
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_TINY": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out), str(tarball)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=5400,
    )
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").is_file() else proc.stdout
    assert proc.returncode == 0, log[-4000:]
    numbers = json.loads((out / "numbers.json").read_text())
    for name in ("preflight", "cnn_deep", "irnn", "speed_cnn_deep", "speed_cnn_res", "stage_all"):
        assert numbers[f"{name}/status"] == "ok", (name, numbers)
    assert numbers["data"].startswith("FER2013 Training + PublicTest from")
    assert 0.0 <= float(numbers["cnn_deep/test_acc"]) <= 1.0
    assert float(numbers["irnn/cell_loop_over_fused"]) > 0
    assert float(numbers["speed_cnn_res/train_images_per_s"]) > 0
    weights = load_cnn(weights=out / "cnn_deep_fer2013.pt")
    assert weights.hparams.arch == "deep" and weights.embed(torch.zeros(2, 48, 48, dtype=torch.uint8))[
        0
    ].shape == (2, 7)
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("fer2013_deep/cnn/metrics.json") for n in names)
    assert any(n.endswith("submission2/report/report.md") or n.endswith("report.md") for n in names)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["numbers.json", "gpu_check.log", "logs.tar.gz", "cnn_deep_fer2013.pt"]
    )
