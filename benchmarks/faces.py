"""Speed of the face front end: decode + align + cache (faces/s), cache hits, CenterFace, and CNN feature extraction.

Baselines measured in the same run: building the face cache in one process (vs the process pool), and OpenCV's
256-level equalizeHist (vs our 64-level MATLAB-semantics histeq).

    python benchmarks/faces.py [--afew-root DIR] [--workers 4]

Without --afew-root it generates the synthetic ``tiny`` preset into a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import describe, figure

from emotiw.faces import CenterFaceSource, equalize_hist, load_afew_faces
from emotiw.io.afew import list_splits
from emotiw.io.video import read_video


def _timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--afew-root", type=Path)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    try:
        root = args.afew_root
        if root is None:
            from emotiw.synth import generate

            generate(tmp / "gen", preset="tiny", seed=0)
            root = tmp / "gen" / "afew"
        print(f"machine: {describe()}; data: {root}")

        (clips, rep), serial = _timed(
            load_afew_faces, root, ["Train", "Val", "Test"], tmp / "c1", num_workers=0
        )
        (_, _), pooled = _timed(
            load_afew_faces, root, ["Train", "Val", "Test"], tmp / "c2", num_workers=args.workers
        )
        (_, hit), cached = _timed(load_afew_faces, root, ["Train", "Val", "Test"], tmp / "c2", num_workers=0)
        print(f"faces: {rep.summary()}")
        print(
            f"decode+align, 1 process:   {rep.frames / serial:8.0f} faces/s  {rep.clips / serial:6.1f} clips/s"
        )
        print(
            f"decode+align, {args.workers} processes: {rep.frames / pooled:8.0f} faces/s  "
            f"{rep.clips / pooled:6.1f} clips/s  (x{serial / pooled:.2f} vs 1 process)"
        )
        print(f"cache hits:                {rep.frames / cached:8.0f} faces/s  ({hit.cache_hits} hits)")
        figure(
            f"face cache build, {args.workers} processes",
            rep.frames / pooled,
            "faces/s",
            "1 process",
            rep.frames / serial,
        )
        figure(
            "face cache hits",
            rep.frames / cached,
            "faces/s",
            "building the cache, 1 process",
            rep.frames / serial,
        )

        img = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
        _, ours = _timed(lambda: [equalize_hist(img) for _ in range(2000)])
        _, ocv = _timed(lambda: [cv2.equalizeHist(img) for _ in range(2000)])
        print(
            f"histeq 128x128: 64-level {2000 / ours:8.0f}/s, cv2 256-level {2000 / ocv:8.0f}/s (x{ocv / ours:.2f})"
        )
        figure(
            "histeq 128x128, 64 levels",
            2000 / ours,
            "images/s",
            "OpenCV equalizeHist, 256 levels",
            2000 / ocv,
        )

        ref = list_splits(root, ["Train"])[0]
        video = read_video(ref.video_path, rgb=True)
        source = CenterFaceSource()
        source.detect(video.rgb[0], bgr=False)
        _, det = _timed(source.clip_points, ref, video.rgb)
        print(
            f"CenterFace (cv2.dnn) {video.rgb.shape[2]}x{video.rgb.shape[1]}: {len(video.rgb) / det:6.1f} frames/s"
        )
        figure(
            f"CenterFace detection {video.rgb.shape[2]}x{video.rgb.shape[1]}",
            len(video.rgb) / det,
            "frames/s",
        )

        try:
            from lightning_modules.cnn import CNNModule
        except ImportError as err:
            print(f"CNN features: skipped ({err})")
            return
        cnn = CNNModule().eval()
        faces = torch.from_numpy(np.concatenate([c.faces for c in clips])[:1024])
        with torch.inference_mode():
            cnn.embed(faces[:256])
            _, emb = _timed(lambda: [cnn.embed(faces[i : i + 256]) for i in range(0, len(faces), 256)])
            one = faces[:64]
            _, single = _timed(lambda: [cnn.embed(one[i : i + 1]) for i in range(len(one))])
        print(f"CNN embed (fp32, batch 256): {len(faces) / emb:8.0f} frames/s")
        figure(
            "CNN embed (fp32, batch 256)",
            len(faces) / emb,
            "frames/s",
            "one frame at a time",
            len(one) / single,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
