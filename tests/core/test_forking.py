"""Forked face workers after parallel OpenCV work in the parent: they used to wait forever inside cv2 (its thread
pool does not survive a fork), which hung `stage=faces` after `stage=make_data` and `stage=cnn` in one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.afew_tree import write_tiny_afew

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
import time
import cv2
import numpy as np
from emotiw.faces import load_afew_faces
from emotiw.synth._items import map_items

cv2.setNumThreads(2)  # the parent runs cv2 on its thread pool first, as the generator's renderer does
img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
for _ in range(5):
    cv2.GaussianBlur(img, (0, 0), 2.0)
    cv2.resize(img, (2000, 2000))
time.sleep(1.5)  # the pool's threads go from spinning to waiting on their condition variable: the state that hung
clips, report = load_afew_faces(sys.argv[1], ["Train", "Val"], sys.argv[2], num_workers=2)
assert report.cache_built == report.clips > 1, report.summary()
assert map_items(cv2.getNumThreads, [()] * 4, workers=2, min_items=2) == [1] * 4
assert cv2.getNumThreads() == 2  # the parent's pool is back
print("ok")
"""


def test_forked_workers_survive_a_busy_opencv_parent(tmp_path: Path) -> None:
    write_tiny_afew(tmp_path / "afew")
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "afew"), str(tmp_path / "cache")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one process group: a hang is killed with the workers it forked
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the forked workers hung (a cv2 thread pool inherited from the parent)")
    assert proc.returncode == 0 and stdout.strip() == "ok", stderr[-2000:]
