"""Partitions: which AFEW splits fit a model and which tune it, and the frozen choices of a retraining run.

The paper's swaps and retraining (Table 2) are values of one option (``conf/partition/*.yaml``), not code paths:
``standard`` fits on Train and tunes on Val, ``swapped`` the reverse, ``retrain`` fits on Train+Val with every
hyperparameter read from the stage's ``chosen.json`` in the run named by ``from_run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotiw.artifacts import SPLITS, load_json


@dataclass(frozen=True)
class Partition:
    name: str
    fit: tuple[str, ...]
    tune: tuple[str, ...]
    from_run: str | None = None

    def __post_init__(self) -> None:
        for split in (*self.fit, *self.tune):
            if split not in SPLITS[:2]:
                raise ValueError(f"partition {self.name!r}: split {split!r} is not one of Train, Val")
        if not self.fit:
            raise ValueError(f"partition {self.name!r}: `fit` names no split")
        if set(self.fit) & set(self.tune):
            raise ValueError(
                f"partition {self.name!r}: {sorted(set(self.fit) & set(self.tune))} both fits and tunes"
            )
        if self.is_retrain and not self.from_run:
            raise ValueError(f"partition {self.name!r} tunes on nothing, so it must name `from_run`")

    @property
    def is_retrain(self) -> bool:
        return not self.tune

    @classmethod
    def from_config(cls, cfg: Any) -> Partition:
        return cls(
            name=str(cfg.get("name", "custom")),
            fit=tuple(cfg.fit),
            tune=tuple(cfg.get("tune") or ()),
            from_run=cfg.get("from_run") if cfg.get("from_run") not in (None, "???") else None,
        )


def chosen_path(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / stage / "chosen.json"


def frozen_choice(partition: Partition, runs_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The hyperparameters a retraining run must reuse for ``stage``; None when the partition tunes its own."""
    if not partition.is_retrain:
        return None
    path = chosen_path(Path(runs_dir) / str(partition.from_run), stage)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: partition=retrain needs the choices of stage {stage!r} from run {partition.from_run!r}; "
            f"run that stage with experiment_name={partition.from_run} first"
        )
    return load_json(path)
