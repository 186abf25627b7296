"""A make_data run killed mid-write leaves its temporary tree; the next run removes it (never a live run's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emotiw.synth import generate, is_complete
from tests.core.test_synth import SMALL

REPO = Path(__file__).resolve().parents[2]


def _temp_trees(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.name.startswith(".gen."))


def test_killed_make_data_temp_tree_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "gen"
    code = (
        "from emotiw.synth import generate; "
        f"generate({str(out)!r}, preset='tiny', seed=0, counts={SMALL!r}, workers=1)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not _temp_trees(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # let it start writing into the tree
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    left = _temp_trees(tmp_path)
    assert left and not out.exists(), "the run finished before it could be killed"

    # a live generator's tree (another process writing the same folder) must survive
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = tmp_path / f".gen.{sleeper.pid}.live.partial"
        live.mkdir()
        generate(out, preset="tiny", seed=0, counts=SMALL, workers=1)
        assert is_complete(out, preset="tiny", seed=0, counts=SMALL)
        assert _temp_trees(tmp_path) == [live]
    finally:
        sleeper.kill()
        sleeper.wait()
