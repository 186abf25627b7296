"""Dispatch a stage, save its resolved config, report its metrics, and never lose a traceback."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from callbacks.gather import is_rank_zero
from emotiw.artifacts import save_json

log = logging.getLogger(__name__)

Runner = Callable[[DictConfig], dict[str, Any]]


def resolve_runner(dotted: str) -> Runner:
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"runner={dotted!r} must be a dotted path like 'stages.lightning_fit.fit_and_test'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"runner={dotted!r}: cannot import module {module_name!r} ({err})") from err
    if not hasattr(module, attr):
        raise ValueError(f"runner={dotted!r}: module {module_name!r} has no function {attr!r}")
    return getattr(module, attr)


def run_stage(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.runner`` on ``cfg``; write ``resolved_config.yaml`` and ``metrics.json`` to the output dir."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
    runner = resolve_runner(cfg.runner)
    start = time.time()
    try:
        metrics = runner(cfg) or {}
    except Exception:
        log.exception("stage %s failed; partial outputs are in %s", cfg.task_name, out)
        raise
    finally:
        _close_wandb()
    metrics = {k: _to_python(v) for k, v in metrics.items()}
    metrics["seconds"] = round(time.time() - start, 2)
    if is_rank_zero():
        save_json(out / "metrics.json", metrics)
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"[{cfg.task_name}] {shown}")
        print(f"[{cfg.task_name}] outputs in {out}")
    return metrics


def _to_python(v: Any) -> Any:
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return v.tolist()
    return v


def _close_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
