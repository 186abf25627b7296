"""``stage=faces``: fill the face cache for every AFEW split and write the face report.

Under ``trainer=ddp`` each rank builds the entries of its share of the clips; ``ranks.json`` records which.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from callbacks.gather import is_rank_zero, launch_ranks, record_work_split


def run(cfg: DictConfig) -> dict[str, Any]:
    # under trainer=ddp: one process per device, each building its share of the clips
    launch_ranks(cfg.trainer)
    datamodule = hydra.utils.instantiate(cfg.data)
    start = time.perf_counter()
    datamodule.setup()  # each rank builds its share of the missing entries, then reads them all
    built, report = datamodule.built, datamodule.report
    seconds = time.perf_counter() - start
    by_rank = record_work_split(Path(cfg.paths.output_dir) / "ranks.json", {"faces": built})["faces"]
    if is_rank_zero():
        report.save(Path(cfg.paths.output_dir) / "face_report.json")
        print(f"[faces] {report.summary()} in {seconds:.1f} s")
        for split, counts in report.per_split.items():
            print(
                f"[faces] {split}: {counts['with_faces']}/{counts['clips']} clips with faces, {counts['frames']} frames"
            )
        for clip_id, message in {**report.decode_errors, **report.without_faces}.items():
            print(f"[faces] skipped {clip_id}: {message}")
    built = sum(len(ids) for ids in by_rank)
    return {
        "clips": report.clips,
        "clips_with_faces": report.with_faces,
        "clips_without_faces": len(report.without_faces),
        "decode_errors": len(report.decode_errors),
        "frames": report.frames,
        "cache_built": built,
        "clips_per_second": built / seconds if built else float("nan"),
    }
