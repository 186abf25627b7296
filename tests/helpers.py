"""Compose and run the project's Hydra config from tests, with every path under a temporary root."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")


def compose_cfg(overrides: list[str], root: Path | str) -> DictConfig:
    """Compose ``train.yaml`` as ``python train.py <overrides>`` would, with ``paths.root_dir=root``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"paths.root_dir={root}", "logger=csv", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def run(overrides: list[str], root: Path | str) -> dict[str, Any]:
    """Run a stage in-process, as ``python train.py <overrides>`` would."""
    from stages.runtime import run_stage

    cfg = compose_cfg(overrides, root)
    with open_dict(cfg):
        del cfg["hydra"]
    return run_stage(cfg)


def _has_gpus(n: int) -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() >= n


def run_if(*, min_gpus: int = 0, module: str | None = None) -> pytest.MarkDecorator:
    """Skip unless the machine has ``min_gpus`` CUDA devices and ``module`` is importable (RunIf-style)."""
    reasons = []
    if min_gpus and not _has_gpus(min_gpus):
        reasons.append(f"needs {min_gpus} CUDA device(s)")
    if module and importlib.util.find_spec(module) is None:
        reasons.append(f"needs the {module!r} package")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "ok")


def env_for_subprocess(root: Path | str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "EMOTIW_ROOT": str(root)})
    return env


def train_py(
    overrides: list[str], root: Path | str, *, timeout: float = 600, one_thread: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python train.py logger=csv *overrides`` in its own process (how DDP and signals are tested), output kept."""
    env = env_for_subprocess(root)
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared 2-core box
    return subprocess.run(
        [sys.executable, "train.py", "logger=csv", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_exit(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """``done`` exited with ``code``; its stdout and stderr, joined."""
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def generated_clip_ids(root: Path | str) -> list[str]:
    """Every clip of the generated AFEW tree under ``root``, Train then Val then Test."""
    from emotiw.io.afew import list_splits

    afew = Path(root) / "data" / "generated" / "afew"
    return [clip.clip_id for clip in list_splits(afew, ["Train", "Val", "Test"])]


def assert_split_once(ranks_json: Path | str, kind: str, expected: list[str], world_size: int = 2) -> None:
    """``ranks.json`` (``callbacks.gather.record_work_split``) shows ``kind`` done for every item of ``expected``
    exactly once, shared by ``world_size`` ranks that each did some."""
    import json

    record = json.loads(Path(ranks_json).read_text())
    by_rank = record["by_rank"][kind]
    assert record["world_size"] == world_size and len(by_rank) == world_size, record
    assert all(by_rank), f"{kind}: a rank did nothing: {by_rank}"
    done = [item for items in by_rank for item in items]
    assert sorted(done) == sorted(expected), f"{kind}: {by_rank} vs {sorted(expected)}"
