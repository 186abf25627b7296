"""Entry point: `python train.py stage=<name> [overrides]`.

Each stage config names a `runner` (a function `(cfg) -> dict` of metrics); this script only resolves the config,
saves it in the run directory and dispatches. See conf/stage/ for the stages and README.md for the pipeline.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stages.runtime import run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_stage(cfg)
    # Hydra sweepers (hparams_search) optimise the value returned here.
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


if __name__ == "__main__":
    main()
