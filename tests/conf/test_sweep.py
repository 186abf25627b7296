"""A Hydra multirun (``train.py -m``) gives one offline W&B run per job, in one group, told apart by name and config."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from tests.helpers import env_for_subprocess

REPO = Path(__file__).resolve().parents[2]


def wandb_run_records(path: Path):
    """The ``run`` records of an offline ``run-<id>.wandb`` file (W&B's LevelDB-style log of protobuf records:
    a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, kind)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "run":
                yield record.run


def test_two_value_multirun_makes_two_grouped_offline_runs(tiny_root: Path):
    root = tiny_root
    overrides = [
        "stage=cnn",
        "experiment_name=sweep",
        "data.val_source=fer_holdout",
        "data.afew_root=null",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model.lr=0.001,0.01",
    ]
    env = {**env_for_subprocess(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((root / "runs" / "sweep" / "cnn" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2, files
    runs = [next(wandb_run_records(f)) for f in files]
    assert [r.run_group for r in runs] == ["sweep/cnn", "sweep/cnn"]
    names = sorted(r.display_name for r in runs)
    assert names[0].startswith("sweep/cnn/0 ") and names[1].startswith("sweep/cnn/1 ")
    assert "model.lr=0.001" in names[0] and "model.lr=0.01" in names[1]
    sweeps = sorted(
        (json.loads(next(u.value_json for u in r.config.update if u.key == "sweep")) for r in runs),
        key=lambda s: s["job"],
    )
    assert [s["job"] for s in sweeps] == [0, 1]
    assert [s["model.lr"] for s in sweeps] == [0.001, 0.01]  # typed, not strings
