"""stage=report: ``<run_dir>/report.md`` with the paper's Tables 1 and 2 beside ours, Figure 4 and Figure 5 as PNGs,
and the same tables and images logged to W&B (offline) when the wandb logger is configured."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from callbacks.gather import is_rank_zero
from emotiw.report import build_report
from stages.lightning_fit import instantiate_loggers

log = logging.getLogger(__name__)


def log_to_wandb(cfg: DictConfig, report: Any) -> bool:
    """Log the tables and figures through the configured WandbLogger; False when none is configured."""
    loggers = [lg for lg in instantiate_loggers(cfg.get("logger")) if type(lg).__name__ == "WandbLogger"]
    if not loggers:
        return False
    wb = loggers[0]
    for name, rows in (("table1", report.table1), ("table2", report.table2)):
        if rows:
            columns = list(rows[0])
            wb.log_table(key=f"report/{name}", columns=columns, data=[[r[c] for c in columns] for r in rows])
    for key, path in report.figures.items():
        wb.log_image(key=f"report/{key}", images=[str(path)])
    wb.experiment.summary["report_md"] = report.markdown
    return True


def run(cfg: DictConfig) -> dict[str, Any]:
    if not is_rank_zero():
        # `stage=all trainer=ddp`: every rank walks the pipeline, only rank zero writes (the report has no collective)
        return {}
    report = build_report(cfg.paths.run_dir, cfg.paths.runs_dir, cfg.report.figures_dir)
    metrics: dict[str, Any] = {
        "report/figures": len(report.figures),
        "report/submissions": len(report.table2),
    }
    for row in report.table1:
        for split in ("train", "val", "test"):
            if row[split] is not None:
                metrics[f"{split}/{row['model']}_acc"] = row[split]
    metrics["report/wandb"] = log_to_wandb(cfg, report)
    log.info("report written to %s/report.md", cfg.paths.run_dir)
    return metrics
