"""Accuracy of the face CNN on a FER2013-layout folder (``DIR/<emotion>/*.jpg``, e.g. the PublicTest images).

    python benchmarks/fer2013.py --test-dir data/fer2013_real/test [--weights FILE | --run RUN_DIR] [--no-tta]

Faces are read as 48x48 gray, equalised to 64 levels (as in training) and classified with the centre crop.
Prints the machine, throughput (with and without flip test-time augmentation, as a ratio), then the accuracy as a
plain number on the last line.
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
    ap.add_argument("--no-tta", action="store_true", help="score without flip test-time augmentation")
    args = ap.parse_args(argv)

    from emotiw.faces.histeq import equalize_hist
    from emotiw.io import read_fer_images
    from lightning_modules.cnn import load_cnn

    test_dir = args.test_dir.resolve()
    faces = read_fer_images(test_dir.parent, test_dir.name)
    images = np.stack([equalize_hist(im, 64) for im in faces.images])
    model = load_cnn(run_dir=args.run, weights=args.weights)
    torch.set_grad_enabled(False)

    def score(tta: bool) -> tuple[np.ndarray, float]:
        model.hparams.tta_flip = tta
        start = time.perf_counter()
        preds = []
        for i in range(0, len(images), args.batch_size):
            logits, _ = model.embed(torch.from_numpy(images[i : i + args.batch_size]))
            preds.append(logits.argmax(-1).numpy())
        return np.concatenate(preds), time.perf_counter() - start

    trained_tta = bool(model.hparams.tta_flip)
    plain, t_plain = score(False)
    flipped, t_tta = score(True)
    preds = plain if args.no_tta or not trained_tta else flipped
    n = len(images)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"images: {n} in {test_dir}")
    print(f"images/s: {n / t_plain:.0f} (centre crop), {n / t_tta:.0f} (with flip TTA); TTA costs x{t_tta / t_plain:.2f}")
    print(f"accuracy: {np.mean(plain == faces.labels):.4f} (centre crop), {np.mean(flipped == faces.labels):.4f} (flip TTA)")
    acc = float(np.mean(preds == faces.labels))
    print(f"{acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
