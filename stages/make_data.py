"""stage=make_data: write the generated AFEW / FER2013 / TFD look-alikes that the default data configs read."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emotiw.artifacts import load_json
from emotiw.synth import COMPLETE, generate, is_complete

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Generate ``cfg.synth.preset`` with ``cfg.synth.seed`` into ``cfg.synth.out``, unless it is already there.

    The tree is written beside ``out`` and renamed into place (an interrupted run leaves no half tree); an existing
    tree made with the same preset, seed, difficulty and counts is kept unless ``synth.force``.
    """
    s = cfg.synth
    out = Path(s.out)
    counts = OmegaConf.to_container(s.counts, resolve=True) if s.get("counts") else None
    kwargs = {"preset": s.preset, "seed": int(s.seed), "difficulty": s.get("difficulty"), "counts": counts}
    skipped = not s.force and is_complete(out, **kwargs)
    start = time.perf_counter()
    if skipped:
        log.info(
            "make_data: %s already holds preset=%s seed=%s; kept (synth.force=true regenerates)",
            out,
            s.preset,
            s.seed,
        )
    else:
        generate(out, workers=s.get("workers"), force=bool(s.force), **kwargs)
    marker = load_json(out / COMPLETE)
    afew = marker["counts"]["afew"]
    fer = marker["counts"]["fer2013"]
    metrics: dict[str, Any] = {
        "skipped": int(skipped),
        "generate_seconds": round(time.perf_counter() - start, 2),
        "afew/frames": afew["frames"],
        "tfd/images": sum(marker["counts"]["tfd"]["labelled"].values())
        + marker["counts"]["tfd"]["unlabelled"],
    }
    for split in ("Train", "Val", "Test"):
        metrics[f"{split.lower()}/afew_clips"] = sum(afew[split].values())
    for usage, per_class in fer.items():
        metrics[f"fer2013/{usage}"] = sum(per_class.values())
    log.info("make_data: %s (sha256 %s)", out, marker["sha256"][:12])
    return metrics
