"""The scale group: the one size vocabulary. Every scale is the paper's with some values changed, and a single-stage
run reads the same values as stage=all."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR, compose_cfg

SCALES = sorted(p.stem for p in (Path(CONF_DIR) / "scale").glob("*.yaml"))


def _keys(node, prefix=""):
    out = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        out |= _keys(value, f"{path}.") if isinstance(value, dict) else {path}
    return out


def test_the_paper_scale_is_the_default(tmp_path: Path) -> None:
    cfg = compose_cfg(["stage=cnn"], tmp_path)
    assert cfg.hydra.runtime.choices.scale == "paper" and "paper" in SCALES and "quick" in SCALES


@pytest.mark.parametrize("scale", SCALES)
def test_a_scale_sets_only_what_the_paper_scale_defines(scale: str, tmp_path: Path) -> None:
    paper = OmegaConf.to_container(compose_cfg(["stage=cnn"], tmp_path).scale, resolve=True)
    other = OmegaConf.to_container(compose_cfg(["stage=cnn", f"scale={scale}"], tmp_path).scale, resolve=True)
    assert _keys(other) == _keys(paper), f"conf/scale/{scale}.yaml sets keys the configs never read"


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_both_activity_presets_set_the_same_keys(preset: str, tmp_path: Path) -> None:
    cfg = compose_cfg(["stage=activity", f"scale/activity={preset}"], tmp_path)
    small = compose_cfg(["stage=activity", "scale/activity=small"], tmp_path)
    assert set(cfg.scale.activity) == set(small.scale.activity)


def test_every_scale_value_is_read_by_some_config() -> None:
    """Each key of the paper scale appears as ${scale.<key>} in a config file, so no scale value is dead."""
    text = "\n".join(p.read_text() for p in Path(CONF_DIR).rglob("*.yaml") if "scale" not in p.parts)
    paper = OmegaConf.load(Path(CONF_DIR) / "scale" / "paper.yaml")
    paper.pop("defaults")
    keys = _keys(OmegaConf.to_container(paper)) | {
        f"activity.{k}" for k in OmegaConf.load(Path(CONF_DIR) / "scale" / "activity" / "paper.yaml")
    }
    unread = sorted(k for k in keys if "${scale." + k + "}" not in text)
    assert not unread, f"scale values no config reads: {unread}"
