"""Classify the emotion of faces in still images (or a video) with the face CNN.

    python predict.py --images FOLDER_OR_FILE [--out preds.csv] [--run RUN_DIR | --weights FILE]
    python predict.py --video FILE [--out preds.csv] [--every 5]

Without ``--run``/``--weights`` the weights shipped in ``emotiw/assets`` are used (checksum verified).
A 48x48 gray image is taken as an aligned face (FER2013 style). Any other image goes through the CenterFace
detector and the same 5-point alignment as the AFEW frames; when no face is found, the centre square is resized
to 48x48 instead (column ``face`` says which). Every face is equalised to 64 levels like the training data.
A video gets one row: the mean of the per-frame probabilities over the frames with a detected face.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from emotiw.faces.histeq import equalize_hist
from emotiw.labels import EMOTIONS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HISTEQ_LEVELS = 64


def list_images(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"{target}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        return files
    raise FileNotFoundError(f"{target}: no such file or folder")


def centre_square(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(gray[y : y + s, x : x + s], (48, 48), interpolation=cv2.INTER_AREA)


class FaceFinder:
    """48x48 aligned, equalised uint8 face of an image, and how it was found."""

    def __init__(self, detect: bool = True) -> None:
        self.detect = detect
        self._source = None

    def _detector(self):
        if self._source is None:
            from emotiw.faces.detect import CenterFaceSource

            self._source = CenterFaceSource()
        return self._source

    def __call__(self, image: np.ndarray, *, bgr: bool = True) -> tuple[np.ndarray, str]:
        gray = (
            image
            if image.ndim == 2
            else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
        )
        if gray.shape == (48, 48):
            return equalize_hist(gray, HISTEQ_LEVELS), "aligned"
        if self.detect:
            from emotiw.faces.detect import align_largest_face

            face = align_largest_face(image, self._detector(), bgr=bgr, levels=HISTEQ_LEVELS)
            if face is not None:
                return face, "detected"
        return equalize_hist(centre_square(gray), HISTEQ_LEVELS), "centre-crop"


def classify(model, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    probs = []
    for i in range(0, len(faces), batch):
        logits, _ = model.embed(torch.from_numpy(faces[i : i + batch]))
        probs.append(logits.softmax(-1).numpy())
    return np.concatenate(probs) if probs else np.zeros((0, len(EMOTIONS)), np.float32)


def predict_images(model, paths: list[Path], finder: FaceFinder) -> list[dict]:
    faces, kinds, ok_paths = [], [], []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            print(f"skipped {p}: cannot decode image", file=sys.stderr)
            continue
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.dtype != np.uint8:
            img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
        face, kind = finder(img)
        faces.append(face)
        kinds.append(kind)
        ok_paths.append(p)
    probs = classify(model, np.stack(faces)) if faces else np.zeros((0, 7))
    return [_row(str(p), k, pr) for p, k, pr in zip(ok_paths, kinds, probs, strict=True)]


def predict_video(model, path: Path, finder: FaceFinder, every: int = 5) -> dict:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video")
    faces, t = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if t % every == 0:
            face, kind = finder(frame)
            if kind != "centre-crop":
                faces.append(face)
        t += 1
    cap.release()
    if t == 0:
        raise ValueError(f"{path}: no frames decoded")
    if not faces:
        raise ValueError(f"{path}: no face found in {t} frames (every {every}th frame searched)")
    probs = classify(model, np.stack(faces)).mean(0)
    return _row(str(path), f"video:{len(faces)}/{t} frames", probs)


def _row(path: str, kind: str, probs: np.ndarray) -> dict:
    row = {"path": path, "emotion": EMOTIONS[int(np.argmax(probs))], "face": kind}
    row.update({f"p_{e}": f"{float(v):.6f}" for e, v in zip(EMOTIONS, probs, strict=True)})
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="an image file or a folder (searched recursively)")
    src.add_argument("--video", type=Path, help="a video file: per-frame CNN, mean of the probabilities")
    ap.add_argument("--out", type=Path, default=Path("preds.csv"), help="CSV to write (default preds.csv)")
    model_src = ap.add_mutually_exclusive_group()
    model_src.add_argument("--run", type=Path, help="a run directory whose cnn/best.ckpt to use")
    model_src.add_argument(
        "--weights", type=Path, help="a weights file written by lightning_modules.cnn.save_weights"
    )
    ap.add_argument(
        "--no-detect", action="store_true", help="never run the face detector (centre crop instead)"
    )
    ap.add_argument("--every", type=int, default=5, help="video: classify every n-th frame (default 5)")
    args = ap.parse_args(argv)

    from emotiw.artifacts import atomic_path
    from lightning_modules.cnn import load_cnn

    torch.set_grad_enabled(False)
    model = load_cnn(run_dir=args.run, weights=args.weights)
    finder = FaceFinder(detect=not args.no_detect)
    if args.images is not None:
        rows = predict_images(model, list_images(args.images), finder)
    else:
        rows = [predict_video(model, args.video, finder, every=args.every)]
    fields = ["path", "emotion", "face", *[f"p_{e}" for e in EMOTIONS]]
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    counts = {k: sum(r["face"] == k for r in rows) for k in ("aligned", "detected", "centre-crop")}
    print(f"{len(rows)} predictions -> {args.out} ({', '.join(f'{k}: {v}' for k, v in counts.items() if v)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
