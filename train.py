"""Entry point: `python train.py stage=<name> [overrides]`.

Each stage config names a `runner` (a function `(cfg) -> dict` of metrics); this script only resolves the config,
saves it in the run directory and dispatches. See conf/stage/ for the stages and README.md for the pipeline.

Exit status: 0 done; 1 the stage failed (one line here, the traceback in the stage's log file); 2 the overrides do not
compose (one line); 3 another run holds the stage's folder; 130 / 143 stopped by SIGINT / SIGTERM (the message is the
command that resumes it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from callbacks.gather import is_rank_zero
from emotiw.locks import LockHeld
from stages.runtime import StageStopped, describe, run_stage

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
# Lines of Hydra's composition errors that repeat what the first lines say.
_DETAIL = ("full_key:", "object_type=", "reference_type=")

# Overrides that the W&B group already names (experiment and stage), left out of a sweep job's run name.
_GROUPED = ("stage=", "experiment=", "experiment_name=")


def label_sweep_job(cfg: DictConfig) -> None:
    """Under ``-m`` (multirun), name each job's W&B run ``<experiment>/<stage>/<job number> <swept values>`` and log
    the job number and its overrides as the ``sweep`` config, so the runs of one sweep sit side by side in their group
    (``<experiment>/<stage>``, conf/logger/wandb.yaml)."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    overrides = [o for o in hc.overrides.task if not o.lstrip("+~").startswith(_GROUPED)]
    sweep: dict = {"job": hc.job.num}
    for key, _, text in (o.lstrip("+~").partition("=") for o in overrides):
        # typed as the config holds it (model.lr=0.01 is a float), so the dashboard can plot against it; a group
        # choice (data=fer_images) stays the chosen name
        value = OmegaConf.select(cfg, key, default=None)
        sweep[key] = text if value is None or OmegaConf.is_config(value) else value
    with open_dict(cfg):
        for logger in (cfg.get("logger") or {}).values():
            if isinstance(logger, DictConfig) and str(logger.get("_target_", "")).endswith("WandbLogger"):
                logger.name = f"{logger.name}/{hc.job.num} {' '.join(overrides)}".rstrip()
                logger.config = {"sweep": sweep}


def bad_overrides(argv: list[str]) -> str | None:
    """Why the command-line overrides do not compose (a mistyped key, an unknown option), on one line; else None.
    Hydra's own flags and settings (``-m``, ``--cfg``, ``hydra.*``) are left to Hydra."""
    if any(a.startswith("-") or a.lstrip("+~").startswith("hydra") for a in argv):
        return None
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name="train", overrides=argv)
    except Exception as err:
        lines = (line.strip() for line in str(err).splitlines())
        return " ".join(line for line in lines if line and not line.startswith(_DETAIL))
    return None


def _exit(status: int, message: str) -> None:
    if is_rank_zero():
        print(f"train.py: {message}", file=sys.stderr)
    sys.exit(status)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    label_sweep_job(cfg)
    try:
        run_stage(cfg)
    except StageStopped as stop:
        _exit(stop.exit_status, str(stop))
    except LockHeld as err:
        _exit(3, f"error: {err}")
    except Exception as err:
        files = getattr(err, "log_files", None)
        _exit(
            1,
            f"error: stage {cfg.task_name}: {describe(err)}"
            + (f" (traceback in {files[0]})" if files else ""),
        )


if __name__ == "__main__":
    problem = bad_overrides(sys.argv[1:])
    if problem:
        print(f"train.py: error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
