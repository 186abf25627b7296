"""stage=aggcnn: the aggregated CNN (paper §2.3, paper-spec §4).

The face CNN's per-frame logits (``<run_dir>/features/<Split>.npz``, stage=features) are k-average-pooled into one
15 x 7 = 105-d vector per clip (:mod:`emotiw.aggcnn`, served by ``AfewFeaturesDataModule(representation="pooled")``)
and classified by an RBF SVM (``conf/svm/rbf.yaml``). Writes ``aggcnn/chosen.json``, ``aggcnn/svm.skops`` and
``probs/aggcnn_<Split>.npz`` (features = the pooled vector, the fusion network's CNN input).
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from stages.svm import run_svm_stage


def run(cfg: DictConfig) -> dict[str, Any]:
    return run_svm_stage(cfg, hydra.utils.instantiate(cfg.data))
