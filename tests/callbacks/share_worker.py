"""One rank of a 2-process gloo group for test_gather_share.py: ``python -m tests.callbacks.share_worker CASE OUT``
with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from callbacks.gather import gather_share, rank_share

ITEMS = [f"clip{i:02d}" for i in range(11)]


def main(case: str, out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    done: list[str] = []

    def work() -> dict[str, int]:
        for item in rank_share(ITEMS):
            done.append(item)  # the items this rank worked on, once each
        if case == "fail" and rank == 1:
            raise ValueError("clip07.avi: cannot decode (test failure)")
        return {item: len(item) * (rank + 1) for item in done}

    try:
        parts = gather_share(work, "test: the share")
        result = {"rank": rank, "done": done, "parts": parts}
    except RuntimeError as err:
        result = {"rank": rank, "done": done, "error": str(err)}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1], Path(sys.argv[2]))
