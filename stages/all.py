"""stage=all: run the whole pipeline of the current experiment, in order, skipping stages that are complete.

Each stage is composed with Hydra's compose API from the user's own overrides plus ``stage=<name>`` and run
in-process through :func:`stages.runtime.run_stage`, exactly as ``python train.py stage=<name> <overrides>`` would.

A stage is *current*, and skipped, when its completion record (``<run_dir>/<stage>/complete.json``, written last by a
run that finished; see :mod:`stages.completion`) holds the hash of the config just composed and the hashes of its
inputs as they are now: the records of the stages before it and the data it reads. A changed hyperparameter reruns
that stage and everything after it; a run that failed, was stopped or was killed left no record and is rerun.
``report`` is never skipped: its Table 2 reads the other submission runs.

Dependencies on other runs (a retrain partition's tuned run, submission 7's sources) are checked before any stage
runs; a missing one stops the run with a one-line error naming the command that makes it.

Shared stages: the face CNN is never retrained in the paper (it is trained on FER+TFD), and faces/features only
depend on it and on the clips. With ``all.reuse_from=<experiment>`` (submissions 2-6 name ``submission1``) the stages in
``all.shared_stages`` are not run here: their folders in the base run are linked into this run's directory (the base
run is completed first if needed, with the same overrides and ``experiment_name`` pointing at it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from emotiw.artifacts import SPLITS, probs_path
from emotiw.partitions import Partition, chosen_path
from stages.completion import PIPELINE, incomplete_reason
from stages.runtime import StageStopped, run_stage, shell_command, started_with

log = logging.getLogger(__name__)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# Rerun every time: the report also reads the other submission runs (Table 2), which the skip rule does not track,
# and it is quick.
ALWAYS_RUN = ("report",)
# The stages that, under partition=retrain, reuse what the tuned run chose (its <stage>/chosen.json).
FROZEN_STAGES = ("irnn", "aggcnn", "audio", "activity", "fusion", "combine")


def user_overrides(cfg: DictConfig) -> list[str]:
    """The overrides this run was started with (command line or tests), minus the stage choice."""
    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    overrides += list(cfg.get("all", {}).get("overrides") or [])
    return [o for o in overrides if not o.lstrip("+~").startswith(("stage=", "all."))]


def _compose(overrides: list[str]) -> DictConfig:
    # inside `python train.py` Hydra is initialised and compose() reuses it; from tests it is not
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def compose_stage(name: str, overrides: list[str]) -> DictConfig:
    """``train.yaml`` with ``overrides`` and ``stage=name``, as ``python train.py stage=name <overrides>``."""
    return _compose([*overrides, f"stage={name}"])


def _run_selector(run_name: str) -> str:
    """The override that names a run: its experiment file when there is one (so that its stage configs compare
    equal to the ones it saved), else just its name."""
    if (Path(CONF_DIR) / "experiment" / f"{run_name}.yaml").is_file():
        return f"experiment={run_name}"
    return f"experiment_name={run_name}"


def _other_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith(("experiment_name=", "experiment="))]


def base_run_overrides(overrides: list[str], reuse_from: str) -> list[str]:
    """The overrides that compose the base run's own stages."""
    return [*_other_overrides(overrides), _run_selector(reuse_from)]


def link_shared(stage: str, base_run: Path, run_dir: Path) -> Path:
    """Link ``<base_run>/<stage>`` as ``<run_dir>/<stage>`` (relative link; a stale folder is left alone)."""
    target, link = base_run / stage, run_dir / stage
    run_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == Path(os.path.relpath(target, run_dir)):
        return link
    if link.exists() or link.is_symlink():
        if link.is_symlink():
            link.unlink()
        else:
            log.warning("all: %s exists as a folder; keeping it instead of linking %s", link, target)
            return link
    link.symlink_to(os.path.relpath(target, run_dir), target_is_directory=True)
    return link


def _command_for(run_name: str, overrides: list[str]) -> str:
    return " ".join(["python train.py", _run_selector(run_name), *_other_overrides(overrides)])


def missing_dependencies(
    cfg: DictConfig, stages: list[str], overrides: list[str], combine: DictConfig | None
) -> str | None:
    """What this run needs from other runs and is absent, as a one-line message (None when all is there): the
    tuned run of a retrain partition (submissions 3 and 6 read submissions 2 and 4), and the combine sources of
    other runs (submission 7 combines submissions 3 and 6; ``combine`` is the composed combine stage). Checked
    before any stage runs."""
    runs_dir = Path(cfg.paths.runs_dir)
    needed: dict[str, Path] = {}  # run name -> first missing file
    partition = Partition.from_config(cfg.partition)
    if partition.is_retrain:
        for stage in stages:
            path = chosen_path(runs_dir / str(partition.from_run), stage)
            if stage in FROZEN_STAGES and not path.is_file():
                needed.setdefault(str(partition.from_run), path)
    if combine is not None:
        for source in combine.combine.sources:
            run_name, _, model = str(source).rpartition("/")
            if not run_name:
                continue
            absent = next(
                (p for p in (probs_path(runs_dir / run_name, model, s) for s in SPLITS) if not p.is_file()),
                None,
            )
            if absent is not None:
                needed.setdefault(run_name, absent)
    if not needed:
        return None
    first = next(iter(needed.values()))
    commands = "; then ".join(f"`{_command_for(name, overrides)}`" for name in needed)
    return (
        f"{cfg.experiment_name} needs the outputs of run(s) {', '.join(needed)} ({first} is missing): "
        f"run {commands} first"
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    conf = cfg.get("all") or {}
    stages = list(conf.get("stages") or PIPELINE)
    unknown = [s for s in stages if s not in PIPELINE]
    if unknown:
        raise ValueError(f"all.stages names unknown stages {unknown}; the pipeline is {list(PIPELINE)}")
    overrides = user_overrides(cfg)
    # pin the root so that every composed stage resolves the same paths as this run
    overrides = [o for o in overrides if not o.startswith("paths.root_dir=")] + [
        f"paths.root_dir={cfg.paths.root_dir}"
    ]
    run_dir = Path(cfg.paths.run_dir)
    reuse_from = conf.get("reuse_from")
    shared = (
        set(conf.get("shared_stages") or ()) if reuse_from and reuse_from != cfg.experiment_name else set()
    )

    per_stage = conf.get("stage_overrides") or {}
    stray = sorted(set(per_stage) - set(PIPELINE))
    if stray:
        raise ValueError(
            f"all.stage_overrides names unknown stages {stray}; the pipeline is {list(PIPELINE)}"
        )
    # Every stage is composed and resolved before any runs, so a bad override or value stops the run now, not hours
    # into it. A shared stage composes as the base run composes it; per-stage overrides reach it too.
    composed: dict[str, DictConfig] = {}
    commands: dict[str, list[str]] = {}  # each stage's own command line, for the resume command of a stop
    for name in stages:
        base = base_run_overrides(overrides, reuse_from) if name in shared else overrides
        commands[name] = [f"stage={name}", *base, *per_stage.get(name, [])]
        composed[name] = compose_stage(name, commands[name][1:])
        OmegaConf.to_container(composed[name], resolve=True)
    problem = missing_dependencies(cfg, stages, overrides, composed.get("combine"))
    if problem:
        raise FileNotFoundError(problem)
    summary: dict[str, Any] = {}
    for name, stage_cfg in composed.items():
        why = incomplete_reason(stage_cfg)
        if name in shared:
            if why:
                log.info("all: shared stage %s of base run %s: %s; running it there", name, reuse_from, why)
                _run(stage_cfg, commands[name])
            link_shared(name, Path(stage_cfg.paths.run_dir), run_dir)
            summary[f"{name}/status"] = f"linked:{reuse_from}"
        elif name not in ALWAYS_RUN and not why:
            log.info("all: stage %s is current, skipped", name)
            summary[f"{name}/status"] = "current"
        else:
            log.info("all: running stage %s%s", name, f" ({why})" if why and name not in ALWAYS_RUN else "")
            metrics = _run(stage_cfg, commands[name])
            summary[f"{name}/status"] = "ran"
            for key in ("val/acc", "test/acc"):
                if key in metrics:
                    summary[f"{name}/{key}"] = metrics[key]
    return summary


def _run(cfg: DictConfig, command: list[str]) -> dict[str, Any]:
    with open_dict(cfg):
        cfg.pop("hydra", None)
    try:
        return run_stage(cfg, command)
    except StageStopped as stop:
        # after the stage itself, the rest of the pipeline: this same stage=all command
        raise StageStopped(f"{stop}; then `{shell_command(started_with())}`", stop.signum) from stop
