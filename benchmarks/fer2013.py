"""Accuracy of the face CNN on a FER2013-layout folder (``DIR/<emotion>/*.jpg``, e.g. the PublicTest images).

    python benchmarks/fer2013.py --test-dir data/fer2013_real/test [--weights FILE | --run RUN_DIR] [--no-tta]

Faces are read as 48x48 gray, equalised to 64 levels (as in training) and classified with the model's own
test-time averaging (its ``tta_flip`` / ``tta_crops``; the centre crop with --no-tta). Prints the machine, throughput
and accuracy of the centre crop, of flip alone when the model flips and of the model's own view, then the reported
accuracy as a plain number on the last line.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-dir", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    ap.add_argument("--run", type=Path, default=None, help="use <run>/cnn/best.ckpt instead")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--no-tta", action="store_true", help="score the centre crop only, without test-time averaging"
    )
    args = ap.parse_args(argv)

    from emotiw.faces.histeq import equalize_hist
    from emotiw.io import read_fer_images
    from lightning_modules.cnn import load_cnn

    test_dir = args.test_dir.resolve()
    faces = read_fer_images(test_dir.parent, test_dir.name)
    images = np.stack([equalize_hist(im, 64) for im in faces.images])
    model = load_cnn(run_dir=args.run, weights=args.weights)
    torch.set_grad_enabled(False)

    def score(flip: bool, crops: bool) -> tuple[np.ndarray, float]:
        model.hparams.tta_flip, model.hparams.tta_crops = flip, crops
        start = time.perf_counter()
        preds = []
        for i in range(0, len(images), args.batch_size):
            logits, _ = model.embed(torch.from_numpy(images[i : i + args.batch_size]))
            preds.append(logits.argmax(-1).numpy())
        return np.concatenate(preds), time.perf_counter() - start

    # The model's own test-time averaging (hparams) decides the reported number; the others are printed beside it.
    own = (bool(model.hparams.tta_flip), bool(model.hparams.get("tta_crops", False)))
    views = {
        "centre crop": (False, False),
        "flip": (True, False),
        "five crops": (False, True),
        "flip + five crops": (True, True),
    }
    # the centre crop (the timings' baseline), flip alone when the model flips, and the model's own view
    wanted = {(False, False), (own[0], False), own}
    results = {name: score(*setting) for name, setting in views.items() if setting in wanted}
    chosen = "centre crop" if args.no_tta else next(name for name, setting in views.items() if setting == own)
    preds = results[chosen][0]
    n = len(images)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"images: {n} in {test_dir}")
    base = results["centre crop"][1]
    print(
        "images/s: "
        + ", ".join(f"{n / t:.0f} ({name}, x{t / base:.1f} the time)" for name, (_, t) in results.items())
    )
    print(
        "accuracy: "
        + ", ".join(f"{np.mean(p == faces.labels):.4f} ({name})" for name, (p, _) in results.items())
    )
    print(f"reported: {chosen}")
    acc = float(np.mean(preds == faces.labels))
    print(f"{acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
