"""Predict the emotion shown in videos and stills with the trained system.

    python predict.py PATH [PATH ...] [--out DIR] [--every N] [--run RUN_DIR | --weights FILE]

Each PATH is a video, an image, or a folder searched recursively for both. Writes, as results come in:
``DIR/predictions.csv`` (one row per input: path, predicted emotion, its probability, every model's 7
probabilities, frames read, frames with a face, status), ``DIR/predictions.json`` (the same plus per-frame boxes,
5 points and CNN probabilities), ``DIR/timelines/<name>.png`` per video (the 7 probabilities over time, frames
without a face shaded) and ``DIR/predict.log``. Bad input is reported in the status column and the log, and the
other inputs go on; the exit status is 1 only when nothing could be predicted (2 for a bad command line).

``--run runs/<experiment>`` predicts with every model the run trained (``EmotionPipeline.from_run``): the face CNN's
frame mean, the aggregated CNN, audio, IRNN, activity and fusion models each give their 7 probabilities (CSV
columns ``<model>_<emotion>``), and the combine stage's weights give the decision (``combined_<emotion>``, the
predicted emotion); faces come from the face source the run was trained with. A model the run lacks, or one that
cannot score an input (no face, no audio track, too short for the activity blocks), is left out of that input's
decision and its status says why. Without ``--run``/``--weights`` the face CNN shipped in ``emotiw/assets`` is used
(checksum verified); ``--weights`` takes another CNN weights file.

Faces are found by CenterFace every ``--every`` frames and followed by optical flow in between; one face per clip is
kept (the most persistent, then the largest), its 5 points smoothed over time, aligned and equalised like the
training data. A 48x48 grey still is taken as an aligned face (FER2013 style); ``--no-detect`` takes the centre
square of every image and frame as the face.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path

VIDEO_SUFFIXES = (
    ".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts", ".ogv",
)  # fmt: skip
OUTPUT_NAMES = ("predictions.csv", "predictions.json", "predict.log", "timelines")

log = logging.getLogger("predict")


class UsageError(ValueError):
    """A bad command line: one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------- arguments
def positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1, got {value}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, not argparse's usage block: ``predict.py: error: <what and the fix>``."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="videos, images or folders (recursive)"
    )
    ap.add_argument("--video", action="append", type=Path, default=[], help="alias of PATH (repeatable)")
    ap.add_argument("--images", action="append", type=Path, default=[], help="alias of PATH (repeatable)")
    ap.add_argument(
        "--out", type=Path, default=Path("predictions"), help="output folder (default ./predictions)"
    )
    model_src = ap.add_mutually_exclusive_group()
    model_src.add_argument(
        "--run", type=Path, help="a trained run (runs/<experiment>): every model it holds and its combiner"
    )
    model_src.add_argument(
        "--weights", type=Path, help="a weights file written by lightning_modules.cnn.save_weights"
    )
    ap.add_argument(
        "--every",
        type=positive_int("--every"),
        default=5,
        help="run the face detector on every N-th frame, follow the faces by optical flow in between "
        "(1: detect on every frame, slowest; default 5)",
    )
    ap.add_argument(
        "--batch-size",
        type=positive_int("--batch-size"),
        default=256,
        help="faces per CNN call (default 256)",
    )
    ap.add_argument(
        "--max-pixels",
        type=positive_int("--max-pixels"),
        default=100_000_000,
        help="refuse stills with more pixels than this (default 100 M); larger than 2048 a side are downscaled",
    )
    ap.add_argument(
        "--no-detect", action="store_true", help="inputs are face crops: take the centre square as the face"
    )
    ap.add_argument(
        "--views",
        choices=("centre", "own"),
        default="centre",
        help="without --run: classify each face at one view, the centre crop (default: every frame of a video "
        "at full speed), or at the weights' own test-time views (the shipped net: flip + five crops, ten "
        "times the CNN's cost, a few points more accurate on stills; README, face model)",
    )
    ap.add_argument("--no-timelines", action="store_true", help="do not draw the per-video timeline PNGs")
    args = ap.parse_args(argv)
    args.paths = [*args.paths, *args.video, *args.images]
    if not args.paths:
        ap.error("give at least one video, image or folder")
    return args


# ---------------------------------------------------------------------------------------------------- inputs
def _media_kind(path: Path) -> str | None:
    from emotiw.io.image import IMAGE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return "video" if suffix in VIDEO_SUFFIXES else None


def find_inputs(paths: list[Path], out_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to predict, in the order given (folders sorted, recursive), and the paths that give none, each
    with its reason. Files inside the output folder are never inputs (a rerun would read its own timelines)."""
    out_resolved = out_dir.resolve()
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if _media_kind(p) and p.is_file() and not p.resolve().is_relative_to(out_resolved)
            )
            if not found:
                problems.append((path, "no videos or images in this folder (searched recursively)"))
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        else:
            problems.append((path, "no such file or folder"))
    return files, problems


def check_out_dir(out_dir: Path, inputs: list[Path]) -> None:
    """``--out`` must be a folder (or not exist yet) and never hold an input where an output will be written."""
    if out_dir.suffix.lower() in (".csv", ".json"):
        raise UsageError(
            f"--out {out_dir}: give a folder (predictions.csv, predictions.json and timelines/ are written in it)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: is a file, not a folder; give a folder for the results")
    outputs = [(out_dir / name).resolve() for name in OUTPUT_NAMES]
    for p in inputs:
        rp = p.resolve()
        for o in outputs:
            if rp == o or rp.is_relative_to(o):
                raise UsageError(
                    f"--out {out_dir}: would overwrite the input {p}; choose another output folder"
                )


# ---------------------------------------------------------------------------------------------------- outputs
class ResultWriter:
    """``predictions.csv`` and ``predictions.json`` written as results come in.

    Both files are created whole (atomically) with no rows; each result is then appended in one write, the CSV as
    a line, the JSON as an element before the closing bracket, so after every input both files are complete and
    valid and a crash keeps every result written before it.
    """

    def __init__(self, out_dir: Path, model_names: list[str], with_combined: bool) -> None:
        from emotiw.artifacts import atomic_path
        from emotiw.labels import EMOTIONS

        self.out_dir = out_dir
        self.model_names = model_names
        self.groups = [*model_names, *(["combined"] if with_combined else [])]
        self.fields = [
            "path",
            "emotion",
            "probability",
            *[f"{g}_{e}" for g in self.groups for e in EMOTIONS],
            "frames_read",
            "frames_with_face",
            "status",
        ]
        self.csv_path = out_dir / "predictions.csv"
        self.json_path = out_dir / "predictions.json"
        self.count = 0
        with atomic_path(self.csv_path) as tmp:
            tmp.write_text(self._csv_line(dict(zip(self.fields, self.fields, strict=True))))
        with atomic_path(self.json_path) as tmp:
            tmp.write_text("[\n]\n")

    def _csv_line(self, row: dict) -> str:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n").writerow(row)
        return buf.getvalue()

    def add(self, row: dict, record: dict) -> None:
        line = self._csv_line(row).encode()
        fd = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        tail = b"\n]\n"
        body = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        chunk = (b",\n" if self.count else b"") + body + tail
        with open(self.json_path, "r+b") as fh:
            fh.seek(-len(tail), os.SEEK_END)
            fh.write(chunk)  # one write: the closing bracket is overwritten and rewritten in the same call
        self.count += 1


def _fmt(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6f}"


def _finite_list(a) -> list:
    import numpy as np

    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, dtype=float).ravel()]


def result_row(pred, writer: ResultWriter) -> tuple[dict, dict]:
    """The CSV row and the JSON record of one prediction."""
    from emotiw.labels import EMOTIONS
    from emotiw.pipeline import display_path

    row = {
        "path": display_path(pred.path),
        "emotion": pred.emotion,
        "probability": _fmt(pred.confidence),
        "frames_read": pred.n_frames,
        "frames_with_face": len(pred.frame_idx),
        "status": pred.status,
    }
    groups = {**pred.models, **({"combined": pred.probs} if "combined" in writer.groups else {})}
    for g in writer.groups:
        probs = groups.get(g)
        for i, e in enumerate(EMOTIONS):
            row[f"{g}_{e}"] = "" if probs is None else _fmt(probs[i])
    fps = pred.fps if pred.fps and pred.fps > 0 else None
    times = pred.frame_times
    frames = [
        {
            "frame": int(t),
            "time_s": round(float(times[t]), 4) if int(t) < len(times) else None,
            "box": _finite_list(pred.boxes[i]),
            "points": _finite_list(pred.points[i]),
            "detected": bool(pred.detected[i]),
            "probs": _finite_list(pred.frame_probs[i]),
        }
        for i, t in enumerate(pred.frame_idx)
    ]
    record = {
        "path": row["path"],
        "kind": pred.kind,
        "emotion": pred.emotion or None,
        "probability": None if pred.probs is None else round(pred.confidence, 6),
        "probs": None if pred.probs is None else _finite_list(pred.probs),
        "models": {k: None if v is None else _finite_list(v) for k, v in pred.models.items()},
        "frames_read": pred.n_frames,
        "frames_with_face": len(pred.frame_idx),
        "fps": fps,
        "status": pred.status,
        "timeline": None,
        "frames": frames,
    }
    return row, record


def failed_row(path: Path, kind: str, reason: str, writer: ResultWriter) -> tuple[dict, dict]:
    from emotiw.pipeline import ClipPrediction

    return result_row(ClipPrediction(path, kind, notes=[reason]), writer)


def timeline_name(path: Path, used: set[str]) -> str:
    """A file name for the video's timeline: its stem in safe characters, numbered when two videos share it."""
    from emotiw.pipeline import display_path

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", display_path(Path(path).stem)).strip("._") or "video"
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


# ---------------------------------------------------------------------------------------------------- main
def _setup_logging(out_dir: Path) -> None:
    from tqdm import tqdm

    class TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    console = TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(out_dir / "predict.log", mode="w", encoding="utf-8", errors="backslashreplace")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(console)
    log.addHandler(file)


def log_run(run_dir: Path, pipeline) -> None:
    """Which of the run's models predict, and why any is left out (every input's status repeats it)."""
    from emotiw.clip_models import ModelLeftOut

    left = [m for m in pipeline.clip_models if isinstance(m, ModelLeftOut)]
    used = [m.name for m in pipeline.clip_models if not isinstance(m, ModelLeftOut)]
    log.info("run %s: models %s", run_dir, ", ".join(used))
    for m in left:
        log.warning("run %s: %s left out: %s", run_dir, m.name, m.reason)
    if getattr(pipeline.combiner, "note", None):
        log.warning("run %s: %s", run_dir, pipeline.combiner.note)


def run(args: argparse.Namespace) -> int:
    inputs, problems = find_inputs(args.paths, args.out)
    check_out_dir(args.out, inputs)
    for p in (args.run, args.weights):
        if p is not None and not p.exists():
            raise UsageError(f"{p}: no such {'run folder' if p is args.run else 'weights file'}")
    args.out.mkdir(parents=True, exist_ok=True)
    _setup_logging(args.out)
    from emotiw.pipeline import display_path

    if not inputs:
        writer = ResultWriter(args.out, ["cnn"], with_combined=False)
        for path, reason in problems:
            log.warning("%s: %s", display_path(path), reason)
            writer.add(*failed_row(path, "", reason, writer))
        log.error("nothing to predict: %d path(s) gave no input; see %s", len(problems), args.out)
        return 1

    # Only now the heavy part: torch, the model, the detector.
    import torch
    from tqdm import tqdm

    from emotiw.faces.detect import CenterFaceSource
    from emotiw.faces.track import CentreSquareSource, TrackConfig, TrackedFaceSource
    from emotiw.pipeline import EmotionPipeline, TorchFaceModel
    from emotiw.plots import save_timeline

    torch.set_grad_enabled(False)
    # The CNN runs on a worker thread beside decoding and tracking: one intra-op thread each keeps 2 cores busy
    # without the two thread pools spinning against each other.
    torch.set_num_threads(1)
    try:
        if args.run is not None:
            pipeline = EmotionPipeline.from_run(
                args.run,
                every=args.every,
                front_end=CentreSquareSource() if args.no_detect else None,
                batch_size=args.batch_size,
                max_pixels=args.max_pixels,
            )
            log_run(args.run, pipeline)
        else:
            from lightning_modules.cnn import load_cnn

            model = load_cnn(weights=args.weights) if args.weights is not None else load_cnn()
            if args.views == "centre":
                model.use_views(flip=False, crops=False)
            front_end = (
                CentreSquareSource()
                if args.no_detect
                else TrackedFaceSource(CenterFaceSource(), TrackConfig(every=args.every))
            )
            pipeline = EmotionPipeline(
                TorchFaceModel(model),
                front_end=front_end,
                batch_size=args.batch_size,
                max_pixels=args.max_pixels,
            )
    except (FileNotFoundError, ValueError) as err:  # the loaders name the file and what is wrong
        raise UsageError(str(err)) from None
    writer = ResultWriter(
        args.out, pipeline.model_names, with_combined=args.run is not None or len(pipeline.model_names) > 1
    )
    for path, reason in problems:
        log.warning("%s: %s", display_path(path), reason)
        writer.add(*failed_row(path, "", reason, writer))
    used_names: set[str] = set()
    predicted = 0
    start = time.perf_counter()
    frames_total = 0
    for path in tqdm(inputs, desc="predict", unit="input", file=sys.stderr, disable=None):
        shown = display_path(path)
        try:
            pred = pipeline.predict(path)
            row, record = result_row(pred, writer)
            if pred.kind == "video" and pred.n_frames and not args.no_timelines:
                name = timeline_name(path, used_names)
                save_timeline(args.out / "timelines" / name, pred, title=Path(shown).name)
                record["timeline"] = f"timelines/{name}"
        except Exception as err:  # a bug or an unforeseen file must not stop the other inputs
            log.exception("%s: internal error", shown)
            kind = "image" if _media_kind(path) == "image" else "video"
            row, record = failed_row(path, kind, f"internal error: {type(err).__name__}: {err}", writer)
            pred = None
        writer.add(row, record)
        if pred is not None:
            frames_total += pred.n_frames
        if row["emotion"]:
            predicted += 1
            if row["status"] != "ok":
                log.info("%s: %s (%s)", shown, row["emotion"], row["status"])
        else:
            log.warning("%s: not predicted: %s", shown, row["status"])
    seconds = time.perf_counter() - start
    log.info(
        "%d of %d inputs predicted (%d frames in %.1f s) -> %s",
        predicted,
        len(inputs) + len(problems),
        frames_total,
        seconds,
        writer.csv_path,
    )
    return 0 if predicted else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f"predict.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
