"""A failure on rank zero inside a gathering callback reaches every rank: both processes of a 2-process gloo group
exit with rank zero's error instead of the other rank waiting forever at the next collective."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Generous for two Lightning start-ups on a loaded 2-core machine; a hang runs into it and fails the test.
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("clip_probs", "blocked"),
        ("svm_fit", "blocked"),
        ("feature_shards", "no frame table on rank zero"),
    ],
)
def test_rank_zero_error_ends_every_rank(tmp_path: Path, case: str, cause: str) -> None:
    env = dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2", NODE_RANK="0"
    )
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline")
    procs = []
    for rank in (0, 1):
        out = tmp_path / f"rank{rank}"
        out.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.callbacks.rank_zero_failure", case, str(tmp_path)],
                cwd=REPO,
                env={**env, "LOCAL_RANK": str(rank), "RANK": str(rank)},
                stdout=open(out / "stdout", "w"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        logs = [(tmp_path / f"rank{r}" / "stdout").read_text()[-1500:] for r in (0, 1)]
        pytest.fail(
            f"a rank still ran after {TIMEOUT_S} s (hung at a collective?):\n{logs[0]}\n---\n{logs[1]}"
        )
    for rank, code in enumerate(codes):
        log = (tmp_path / f"rank{rank}" / "stdout").read_text()
        assert code != 0, f"rank {rank} exited 0:\n{log[-2000:]}"
        assert "failed on rank zero" in log and cause in log, f"rank {rank}:\n{log[-2000:]}"
        assert "returned" not in log
