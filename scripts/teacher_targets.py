"""Soft targets for distilling face CNNs into a student: each training face's class probabilities, averaged over
the teachers, each under the same test-time views (``--views``).

    python scripts/teacher_targets.py --out runs/teachers/fer2013_res.npz \\
        --teacher emotiw/assets/cnn_res_fer2013.pt --teacher runs/fer2013_res_ft \\
        data=fer_images data.root=data/fer2013_real experiment=fer2013_res

The trailing Hydra overrides are the student's training command's: the faces are the training split exactly as that
run's datamodule builds it (hold-out slice excluded), and the file is keyed by their pixels, so a run on other faces
refuses it. A teacher is a weights file (``save_weights``), a run directory (its ``cnn/best.ckpt``) or a Lightning
checkpoint. Teachers must not have seen the student's hold-out slice (train them with the same slice and seed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import hydra

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightning_modules.cnn import VIEWS, load_cnn, save_teacher_targets, teacher_probs  # noqa: E402
from stages.all import compose_stage  # noqa: E402


def load_teacher(spec: str):
    path = Path(spec)
    if path.is_dir():
        return load_cnn(run_dir=path)
    if path.suffix == ".ckpt":
        return load_cnn(checkpoint=path)
    return load_cnn(weights=path)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the .npz to write (model.distil_targets=...)")
    ap.add_argument("--teacher", action="append", required=True, help="weights file, run dir or checkpoint")
    ap.add_argument(
        "--views",
        choices=list(VIEWS),
        default="flip+five",
        help="each teacher's test-time views (default: the centre and four corner crops, each with its mirror)",
    )
    ap.add_argument("overrides", nargs="*", help="the student's Hydra overrides (data=..., experiment=...)")
    args = ap.parse_args(argv)
    # relative paths as `python train.py` run here reads them (EMOTIW_ROOT, else the working directory)
    cfg = compose_stage(
        "cnn", [f"paths.root_dir={os.environ.get('EMOTIW_ROOT', os.getcwd())}", *args.overrides]
    )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    images = dm.data["train"].images
    flip, crops = VIEWS[args.views]
    teachers = [load_teacher(spec).use_views(flip=flip, crops=crops) for spec in args.teacher]
    start = time.perf_counter()
    probs = teacher_probs(teachers, images)
    labels = dm.data["train"].labels
    print(
        f"{len(images)} training faces, {len(teachers)} teacher(s) under {args.views}, {time.perf_counter() - start:.0f} s; "
        f"teachers' mean agrees with the labels on {(probs.argmax(1) == labels).mean():.4f}"
    )
    out = save_teacher_targets(args.out, probs, images, args.teacher)
    print(out)
    return out


if __name__ == "__main__":
    main()
