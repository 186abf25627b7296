"""End-to-end speed of predict.py's video path on a 640x480 clip: frames per second and each step's share.

Decode (two streaming passes), detect (CenterFace on keyframes), follow (optical flow between them), align
(+ histogram equalisation) and the face CNN (on a worker thread, overlapping the rest) are timed inside one
end-to-end run of :class:`emotiw.pipeline.EmotionPipeline` as ``predict.py`` builds it. The baseline, measured in the
same run on the same clip, runs the detector on the whole of every frame. The last line is the end-to-end frames per second.

    python benchmarks/predict.py [--clip FILE] [--frames 240] [--every 5] [--repeats 2]

The clip: ``shared/data/real_faces/WolfgangLanger_Pexels.mp4`` (one face, 640x360, letterboxed to 640x480, H.264)
when the shared folder is beside the repository (or ``$EMOTIW_SHARED``); otherwise a generated one (the portrait
from matplotlib's sample data drifting over a generated scene).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from machine import describe, figure

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480


def _shared_clip() -> Path | None:
    shared = Path(os.environ.get("EMOTIW_SHARED") or REPO.parent / "shared")
    clip = shared / "data" / "real_faces" / "WolfgangLanger_Pexels.mp4"
    return clip if clip.is_file() else None


def _letterbox(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = min(WIDTH / w, HEIGHT / h)
    small = cv2.resize(rgb, (round(w * s) // 2 * 2, round(h * s) // 2 * 2), interpolation=cv2.INTER_AREA)
    out = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    y, x = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def _source_frames(n: int) -> tuple[list[np.ndarray], float, str]:
    from emotiw.io.video import VideoReader

    clip = _shared_clip()
    if clip is not None:
        reader = VideoReader(clip)
        frames = []
        for f in reader.frames():
            frames.append(_letterbox(f.rgb()))
            if len(frames) == n:
                break
        return frames, reader.fps, f"{clip.name} (real), letterboxed to {WIDTH}x{HEIGHT}"
    sys.path.insert(0, str(REPO))
    from tests.predict_media import face_frames

    frames, _ = face_frames(n, size=(WIDTH, HEIGHT), face_width=220, drift=(0.8, 0.2))
    return frames, 25.0, f"generated {WIDTH}x{HEIGHT} (matplotlib's sample portrait over a generated scene)"


def _encode(frames: list[np.ndarray], fps: float, path: Path) -> Path:
    """H.264 in MP4, as phone and web clips are (its decoding cost is part of what is measured)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


class _Timer:
    """Wall and CPU seconds (of the calling thread) per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def add(self, name: str, wall: float, cpu: float) -> None:
        acc = self.seconds.setdefault(name, [0.0, 0.0])
        acc[0] += wall
        acc[1] += cpu

    def wrap(self, name: str, fn):
        def timed(*args, **kw):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                self.add(name, time.perf_counter() - wall, time.thread_time() - cpu)

        return timed


def measure(
    path: Path, every: int, model, batch_size: int
) -> tuple[float, float, int, dict[str, list[float]]]:
    """One end-to-end run as predict.py does it: (wall seconds, CPU seconds of all threads, frames, per step
    [wall, CPU] seconds)."""
    import emotiw.pipeline as pipeline_mod
    from emotiw.faces.detect import CenterFaceSource
    from emotiw.faces.track import FaceTracker, TrackConfig, TrackedFaceSource
    from emotiw.io.video import VideoReader
    from emotiw.pipeline import EmotionPipeline, TorchFaceModel

    timer = _Timer()
    detector = CenterFaceSource()
    detector.detect = timer.wrap("detect", detector.detect)
    face_model = TorchFaceModel(model)
    pipe = EmotionPipeline(
        timer.wrap("cnn (worker thread)", face_model),
        front_end=TrackedFaceSource(detector, TrackConfig(every=every)),  # every=1: the whole of every frame
        batch_size=batch_size,
    )
    original_follow, original_align = FaceTracker._follow, pipeline_mod.align_face
    FaceTracker._follow = timer.wrap("follow (optical flow)", original_follow)
    pipeline_mod.align_face = timer.wrap("align + histeq", original_align)
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        pred = pipe.predict(path)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        FaceTracker._follow, pipeline_mod.align_face = original_follow, original_align
    if pred.probs is None:
        raise SystemExit(f"{path}: no prediction ({pred.status}); the benchmark needs a clip with a face")
    # Decoding happens inside the pipeline's two passes; time the same two passes on their own.
    start, cpu_start = time.perf_counter(), time.thread_time()
    reader = VideoReader(path, autorotate=True)
    for f in reader.frames():
        f.rgb()
    for f in reader.frames():
        f.gray()
    decode = [time.perf_counter() - start, time.thread_time() - cpu_start]
    return wall, cpu, pred.n_frames, {"decode (2 passes)": decode, **timer.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, help="any video (used as it is, not resized)")
    ap.add_argument("--frames", type=int, default=240, help="frames of the default clip (default 240)")
    ap.add_argument("--every", type=int, default=5, help="detector every N frames (predict.py's default 5)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each setting; the fastest is reported")
    ap.add_argument(
        "--views",
        choices=("centre", "own"),
        default="centre",
        help="the CNN's views a face (predict.py's --views)",
    )
    args = ap.parse_args()

    import torch

    from lightning_modules.cnn import load_cnn

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # as predict.py: the CNN's thread beside the decoding/tracking thread
    model = load_cnn()
    if args.views == "centre":
        model.use_views(flip=False, crops=False)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        if args.clip is not None:
            path, what = args.clip, str(args.clip)
        else:
            frames, fps, what = _source_frames(args.frames)
            path = _encode(frames, fps, Path(tmp) / "clip.mp4")
        print(f"machine: {describe()}")
        print(f"clip: {what}; {path.stat().st_size / 1e6:.1f} MB")
        results = {}
        for every in (args.every, 1):
            best = None
            for _ in range(args.repeats):
                load = os.getloadavg()[0]
                run = measure(path, every, model, args.batch_size)
                if best is None or run[0] < best[0][0]:
                    best = (run, load)
            (wall, cpu, n, steps), load = best
            results[every] = n / wall
            label = f"detect every {every} frame{'s' if every > 1 else ''}"
            print(
                f"\n{label}: {n} frames in {wall:.2f} s = {n / wall:.1f} fps end to end (load {load:.1f}); "
                f"CPU {1000 * cpu / n:.1f} ms/frame over all threads = {n / cpu:.1f} fps per core"
            )
            print(
                f"  {'step':24s} {'wall ms/frame':>14s} {'% of wall':>10s} {'CPU ms/frame':>13s} {'% of CPU':>9s}"
            )
            for name, (sec, cpu_sec) in steps.items():
                print(
                    f"  {name:24s} {1000 * sec / n:14.2f} {100 * sec / wall:10.1f} "
                    f"{1000 * cpu_sec / n:13.2f} {100 * cpu_sec / cpu:9.1f}"
                )
        print(
            f"\nspeed-up of every {args.every} over every frame (baseline): "
            f"{results[args.every] / results[1]:.2f}x; load average now {os.getloadavg()[0]:.1f}"
        )
        figure(
            f"predict.py end to end, detector every {args.every} frames",
            results[args.every],
            "frames/s",
            "detector every frame",
            results[1],
            goal=">= 30 frames/s",
        )
        print(f"{results[args.every]:.1f}")


if __name__ == "__main__":
    main()
