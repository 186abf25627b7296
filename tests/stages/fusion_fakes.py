"""Fake upstream artifacts for the fusion/combine/report tests, written with the real contract (`save_probs`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotiw.artifacts import ClipProbs, save_probs

DIMS = {"aggcnn": 105, "audio": 10, "irnn": 200, "activity": 0}
# Which classes each model "knows": the modalities carry independent, partial information.
KNOWS = {"aggcnn": (0, 1, 2), "audio": (3, 4), "irnn": (5, 6, 3), "activity": (0, 6)}
SIZES = {"Train": 210, "Val": 140, "Test": 140}


def write_fake_run(
    run_dir: Path,
    seed: int = 0,
    missing: dict[str, int] | None = None,
    models: tuple[str, ...] = ("aggcnn", "audio", "irnn", "activity"),
    sizes: dict[str, int] | None = None,
) -> dict[str, dict[str, float]]:
    """Write ``probs/<model>_<split>.npz`` for every model and split; return each model's accuracy per split.

    A model's features put a class signal on a few dimensions only for the classes it knows; its probabilities are
    peaked on the true class for those clips and random otherwise. ``missing[model] = k`` drops that model's first k
    clips of every split (no face / no audio).
    """
    rng = np.random.default_rng(seed)
    accs: dict[str, dict[str, float]] = {m: {} for m in models}
    for split, n in (sizes or SIZES).items():
        prefix = {"Train": 1, "Val": 2, "Test": 3}[split]  # clip ids are unique across splits (the contract)
        ids = np.array([f"{prefix}{i:08d}" for i in range(n)])
        y = np.arange(n) % 7
        rng.shuffle(y)
        for m in models:
            knows = np.isin(y, KNOWS[m])
            logits = rng.normal(size=(n, 7))
            logits[knows, y[knows]] += 3.0
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            feats = None
            if DIMS[m]:
                feats = rng.normal(size=(n, DIMS[m])).astype(np.float32)
                code = np.zeros((n, 7), dtype=np.float32)
                code[knows, y[knows]] = 3.0
                reps = max(1, min(3, DIMS[m] // 7))
                feats[:, : 7 * reps] += np.tile(code, reps)
            keep = np.arange(n) >= (missing or {}).get(m, 0)
            save_probs(
                run_dir,
                m,
                split,
                ClipProbs(
                    ids[keep], y[keep], p[keep].astype(np.float32), None if feats is None else feats[keep]
                ),
            )
            accs[m][split] = float(np.mean(p[keep].argmax(1) == y[keep]))
    return accs
