"""``stage=faces``: fill the face cache for every AFEW split and write the face report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from callbacks.gather import is_rank_zero


def run(cfg: DictConfig) -> dict[str, Any]:
    datamodule = hydra.utils.instantiate(cfg.data)
    start = time.perf_counter()
    _, report = datamodule.load_faces()
    seconds = time.perf_counter() - start
    if is_rank_zero():
        report.save(Path(cfg.paths.output_dir) / "face_report.json")
        print(f"[faces] {report.summary()} in {seconds:.1f} s")
        for split, counts in report.per_split.items():
            print(
                f"[faces] {split}: {counts['with_faces']}/{counts['clips']} clips with faces, {counts['frames']} frames"
            )
        for clip_id, message in {**report.decode_errors, **report.without_faces}.items():
            print(f"[faces] skipped {clip_id}: {message}")
    built = report.cache_built + len(report.cache_rebuilt)
    return {
        "clips": report.clips,
        "clips_with_faces": report.with_faces,
        "clips_without_faces": len(report.without_faces),
        "decode_errors": len(report.decode_errors),
        "frames": report.frames,
        "cache_built": built,
        "clips_per_second": built / seconds if built else float("nan"),
    }
