"""gather_share in a 2-process gloo group: each item is worked on by exactly one rank, every rank gets every rank's
result in rank order, and one rank's error is raised on every rank (none waits forever at the gather)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callbacks.gather import gather_share, rank_share

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120  # two bare torch start-ups on a loaded machine; a hang runs into it and fails the test


def test_one_process_gets_every_item_and_its_own_error():
    assert rank_share(range(5)) == [0, 1, 2, 3, 4]
    assert gather_share(lambda: 3, "one") == [3]
    with pytest.raises(ValueError, match="bad clip"):
        gather_share(lambda: (_ for _ in ()).throw(ValueError("bad clip")), "one")


def _run_two(case: str, out: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", OMP_NUM_THREADS="1"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.callbacks.share_worker", case, str(out)],
            cwd=REPO,
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        pytest.fail(f"a rank still ran after {TIMEOUT_S} s (hung at the gather?)")
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-2000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_split_the_items_and_gather_once(tmp_path):
    from tests.callbacks.share_worker import ITEMS

    zero, one = _run_two("ok", tmp_path)
    assert zero["done"] == ITEMS[0::2] and one["done"] == ITEMS[1::2]  # every item once, shared
    # every rank holds both ranks' results, in rank order
    expected = [{i: len(i) for i in ITEMS[0::2]}, {i: 2 * len(i) for i in ITEMS[1::2]}]
    assert zero["parts"] == expected and one["parts"] == expected


@pytest.mark.slow
@pytest.mark.ddp
def test_an_error_on_one_rank_is_raised_on_every_rank(tmp_path):
    for result in _run_two("fail", tmp_path):
        assert "error" in result, result
        assert "failed on rank 1" in result["error"] and "clip07.avi: cannot decode" in result["error"]
