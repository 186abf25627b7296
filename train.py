"""Entry point: `python train.py stage=<name> [overrides]`.

Each stage config names a `runner` (a function `(cfg) -> dict` of metrics); this script only resolves the config,
saves it in the run directory and dispatches. See conf/stage/ for the stages and README.md for the pipeline.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from stages.runtime import run_stage

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


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    label_sweep_job(cfg)
    run_stage(cfg)


if __name__ == "__main__":
    main()
