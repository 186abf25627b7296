"""Accuracy and speed of the face CNN on FER2013 faces; and the choice of test-time views on the hold-out slice.

    python benchmarks/fer2013.py --test-dir data/fer2013_real/test [--weights FILE | --run RUN_DIR]
                                 [--view own|centre|flip|five|flip+five] [--no-tta]
                                 [--exclude-duplicates-of data/fer2013_real/train]
    python benchmarks/fer2013.py --val data/fer2013_real [--weights FILE | --run RUN_DIR]

``--test-dir DIR`` (a FER2013-layout folder, ``DIR/<emotion>/*.jpg``, e.g. PublicTest): faces are read as 48x48 gray,
equalised to 64 levels (as in training) and classified with the model's own test-time views (its ``tta_flip`` /
``tta_crops``), another ``--view``, or the centre crop alone (``--no-tta``). ``--exclude-duplicates-of TRAIN_DIR``
leaves out the test faces whose pixels equal a face of TRAIN_DIR. Prints the machine, the load, images per second and
accuracy of the centre crop, of flip alone when the view flips and of the reported view, then the reported accuracy as
a plain number on the last line.

``--val ROOT``: the stratified hold-out slice of ``ROOT/train`` that ``data.val_source=fer_holdout`` validates on
(same ``--holdout-fraction`` and ``--seed`` as the training run: 0.1 and 1 in every fer2013 experiment); scores all
four views there and names the best (the fewest views on a tie). This is how test-time views are chosen: never on the
test set. The last line is the chosen view's hold-out accuracy.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lightning_modules.cnn import VIEWS as VIEW_SETTINGS
from lightning_modules.cnn import load_cnn

# --view name -> the name printed
VIEW_LABELS = {
    "centre": "centre crop",
    "flip": "flip",
    "five": "five crops",
    "flip+five": "flip + five crops",
}
# printed name -> (tta_flip, tta_crops), cheapest first
VIEWS = {VIEW_LABELS[name]: setting for name, setting in VIEW_SETTINGS.items()}


def duplicate_mask(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """True where a face of ``images`` has exactly the pixels of some face of ``reference`` (both (N,48,48) uint8)."""
    seen = {face.tobytes() for face in np.ascontiguousarray(reference)}
    return np.array([face.tobytes() in seen for face in np.ascontiguousarray(images)], dtype=bool)


def holdout_slice(root: Path, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The equalised hold-out faces and labels exactly as the training run's datamodule builds them."""
    from datamodules.fer_tfd import FerTfdDataModule

    dm = FerTfdDataModule(
        root=str(root),
        fer_format="images",
        fer_train="training",  # as data=fer_images: test/ (PublicTest) never enters training or the slice
        val_source="fer_holdout",
        holdout_fraction=fraction,
        seed=seed,
    )
    dm.setup("validate")
    val = dm.data["val"]
    return np.asarray(val.images), np.asarray(val.labels)


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--test-dir", type=Path, help="a FER2013-layout folder to score")
    where.add_argument(
        "--val", type=Path, metavar="ROOT", help="choose the views on ROOT/train's hold-out slice"
    )
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    ap.add_argument("--run", type=Path, default=None, help="use <run>/cnn/best.ckpt instead")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--view", choices=["own", *VIEW_SETTINGS], default="own", help="views to report (--test-dir)"
    )
    ap.add_argument(
        "--no-tta", action="store_true", help="score the centre crop only, without test-time averaging"
    )
    ap.add_argument("--exclude-duplicates-of", type=Path, default=None, metavar="TRAIN_DIR")
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1, help="the data seed of the training run (--val)")
    args = ap.parse_args(argv)

    from emotiw.faces.histeq import equalize_hist
    from emotiw.io import read_fer_images

    if args.val is not None:
        source = f"the hold-out slice ({args.holdout_fraction:g}, seed {args.seed}) of {args.val.resolve() / 'train'}"
        images, labels = holdout_slice(args.val.resolve(), args.holdout_fraction, args.seed)
    else:
        test_dir = args.test_dir.resolve()
        faces = read_fer_images(test_dir.parent, test_dir.name)
        raw, labels = faces.images, faces.labels
        source = str(test_dir)
        if args.exclude_duplicates_of is not None:
            ref_dir = args.exclude_duplicates_of.resolve()
            dup = duplicate_mask(raw, read_fer_images(ref_dir.parent, ref_dir.name).images)
            raw, labels = raw[~dup], labels[~dup]
            source += f", less {int(dup.sum())} faces whose pixels equal a face of {ref_dir}"
        images = np.stack([equalize_hist(im, 64) for im in raw])
    model = load_cnn(run_dir=args.run, weights=args.weights)

    @torch.no_grad()
    def score(flip: bool, crops: bool) -> tuple[np.ndarray, float]:
        model.use_views(flip=flip, crops=crops)
        model.embed(torch.from_numpy(images[: args.batch_size]))  # warm-up (and the folded copy of a res net)
        start = time.perf_counter()
        preds = []
        for i in range(0, len(images), args.batch_size):
            logits, _ = model.embed(torch.from_numpy(images[i : i + args.batch_size]))
            preds.append(logits.argmax(-1).numpy())
        return np.concatenate(preds), time.perf_counter() - start

    own = (bool(model.hparams.tta_flip), bool(model.hparams.get("tta_crops", False)))
    if args.val is not None:
        wanted = set(VIEWS.values())
    else:
        if args.no_tta:
            chosen = "centre crop"
        elif args.view == "own":
            chosen = next(name for name, setting in VIEWS.items() if setting == own)
        else:
            chosen = VIEW_LABELS[args.view]
        # the centre crop (the timings' baseline), flip alone when the view flips, and the reported view
        flip, crops = VIEWS[chosen]
        wanted = {(False, False), (flip, False), (flip, crops)}
    results = {name: score(*setting) for name, setting in VIEWS.items() if setting in wanted}
    accuracy = {name: float(np.mean(p == labels)) for name, (p, _) in results.items()}
    if args.val is not None:
        chosen = max(results, key=lambda name: (accuracy[name], -list(VIEWS).index(name)))
    n = len(images)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch_size}, load average {load}"
    )
    print(f"images: {n} in {source}")
    base = results["centre crop"][1]
    print(
        "images/s: "
        + ", ".join(f"{n / t:.0f} ({name}, x{t / base:.1f} the time)" for name, (_, t) in results.items())
    )
    print("accuracy: " + ", ".join(f"{acc:.4f} ({name})" for name, acc in accuracy.items()))
    print(f"{'chosen on the hold-out slice' if args.val is not None else 'reported'}: {chosen}")
    acc = accuracy[chosen]
    print(f"{acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
