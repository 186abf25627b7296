"""Small FER2013 / TFD trees written with the generator's own format writers, for the face-CNN tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotiw.synth import make_fer, make_tfd, write_fer_csv, write_fer_images, write_tfd_mat


def write_face_root(
    root: Path, *, per_class: int = 12, tfd: int = 40, seed: int = 0, difficulty: str = "easy"
) -> dict:
    """``<root>/data/generated/{fer2013/fer2013.csv, fer2013/images/, tfd/TFD_48x48.mat}``; returns the stills."""
    gen = root / "data" / "generated"
    fer = make_fer(per_class, seed=seed, difficulty=difficulty, workers=1)
    write_fer_csv(gen / "fer2013" / "fer2013.csv", fer)
    write_fer_images(gen / "fer2013" / "images", fer)
    tfd_set = make_tfd(tfd, seed=seed, difficulty=difficulty, workers=1)
    write_tfd_mat(gen / "tfd" / "TFD_48x48.mat", tfd_set)
    return {"fer": fer, "tfd": tfd_set[0], "folds": tfd_set[1], "gen": gen}


def usage_count(fer, usage: str) -> int:
    return int(np.sum(fer.usage == usage))
