"""``stage=cnn``: fit the face CNN, test the best checkpoint, and leave a stable copy at ``<run_dir>/cnn/best.ckpt``
(the path downstream stages read), written atomically by rank zero."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from callbacks.gather import is_rank_zero
from emotiw.artifacts import atomic_copy, best_ckpt_path
from stages.lightning_fit import fit_and_test


def fit_test_export(cfg: DictConfig) -> dict[str, Any]:
    metrics = fit_and_test(cfg)
    best = metrics.get("best_ckpt")
    if best and is_rank_zero():
        dest = best_ckpt_path(cfg.paths.run_dir, "cnn")
        metrics["best_ckpt_copy"] = str(atomic_copy(best, dest))
    if "test/acc" in metrics and is_rank_zero():
        print(f"test accuracy: {float(metrics['test/acc']):.4f}")
    return metrics
