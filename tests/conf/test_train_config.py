"""The root config composes, every stage file composes and resolves, and train.py prints the resolved config."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stages.runtime import resolve_runner
from tests.helpers import CONF_DIR, compose_cfg, env_for_subprocess

REPO = Path(__file__).resolve().parents[2]
STAGES = sorted(p.stem for p in (Path(CONF_DIR) / "stage").glob("*.yaml"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_composes_and_names_an_importable_runner(stage: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"stage={stage}"], tmp_path)
    assert cfg.task_name == stage or cfg.task_name
    assert callable(resolve_runner(cfg.runner))
    # the run directory layout: <root>/runs/<experiment>/<task>
    assert Path(cfg.paths.output_dir) == tmp_path / "runs" / cfg.experiment_name / cfg.task_name
    # everything but deliberately required values resolves
    OmegaConf.to_container(cfg.paths, resolve=True)


def test_unknown_runner_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot import module 'nope'"):
        resolve_runner("nope.run")
    with pytest.raises(ValueError, match="has no function 'missing'"):
        resolve_runner("stages.runtime.missing")


def test_cfg_job_prints_the_resolved_config(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "--resolve", "experiment_name=probe"],
        cwd=REPO,
        env=env_for_subprocess(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = OmegaConf.create(out.stdout)
    assert cfg.experiment_name == "probe"
    assert cfg.task_name == "cnn"
    assert cfg.paths.root_dir == str(tmp_path)
