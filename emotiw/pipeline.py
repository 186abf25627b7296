"""One inference path: a video or a still -> per-frame faces and CNN probabilities, per-model clip probabilities and
the clip's decision.

It calls the functions the training stages call, never copies of them: decode (:class:`emotiw.io.video.VideoReader`,
which ``read_video`` is built on), find and follow the face (:mod:`emotiw.faces.track`, a face source that
``stage=faces`` can use too), align and equalise (:func:`emotiw.faces.align.align_face`, the padding noise seeded by
:func:`emotiw.faces.cache.align_rng` from the clip's cache key, as the face cache does), audio
(:func:`emotiw.audio.is10.clip_is10`, the audio stage's checks). A video is read twice, streaming (no frame is held
beyond the current one): the first pass finds the face track, the second aligns its frames and runs the CNN.

The models that turn a clip into 7 probabilities are :class:`ClipModel` objects, each naming the inputs it needs
(``frame_logits``, ``frame_features``, ``faces``, ``audio``); only needed inputs are computed and kept. A model may
also give the clip feature its stage writes for the fusion network (:class:`ClipScore`), which later models read by
name (``uses``). A model that cannot score a clip (no face, no audio track) raises :class:`ModelSkipped` and is left
out of that clip's decision, with the reason in the clip's notes. Without a trained run the pipeline holds one model,
``cnn``: the mean of the per-frame probabilities of the shipped face CNN over the frames with a face.
:meth:`EmotionPipeline.from_run` loads every trained part of a run (:mod:`emotiw.clip_models`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from emotiw.faces.align import FACE_SIZE, AlignConfig, align_face
from emotiw.faces.cache import align_rng, clip_key
from emotiw.faces.histeq import equalize_hist
from emotiw.faces.track import FaceTrack
from emotiw.io.afew import LandmarkFormatError
from emotiw.io.image import IMAGE_SUFFIXES, ImageReadError, read_image
from emotiw.io.video import VideoDecodeError, VideoReader
from emotiw.labels import EMOTIONS, NUM_CLASSES

log = logging.getLogger(__name__)

__all__ = [
    "ClipInputs",
    "ClipModel",
    "ClipPrediction",
    "ClipScore",
    "EmotionPipeline",
    "MeanFrameProbs",
    "ModelSkipped",
    "TorchFaceModel",
    "display_path",
    "is_image",
]

INPUTS = frozenset({"frame_logits", "frame_features", "faces", "audio"})


def display_path(path: str | os.PathLike) -> str:
    """The path as text that any UTF-8 writer accepts (undecodable bytes of a file name shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class FaceModel(Protocol):
    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned uint8 faces (B,48,48) -> (logits (B,7), features (B,D)) as float32 arrays."""
        ...


class TorchFaceModel:
    """A face CNN with ``embed(uint8 tensor (B,48,48)) -> (logits, features)`` (e.g. ``load_cnn()``, whose ``embed``
    refuses non-finite outputs naming its weights file) as a :class:`FaceModel`."""

    def __init__(self, module) -> None:
        self.module = module

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            logits, features = self.module.embed(torch.from_numpy(np.ascontiguousarray(faces)))
        return logits.numpy(), features.numpy()


class ModelSkipped(Exception):
    """A clip model cannot score this clip; the message is the reason (one phrase)."""


@dataclass
class ClipInputs:
    """What the clip models see. ``frame_idx`` (K,) are the frames with a face; ``frame_logits`` (K,7) the CNN's;
    ``frame_features`` (K,D), ``faces`` (K,48,48) and ``audio`` are filled only when a model needs them.
    ``model_features``: the clip feature of each model that has run so far (None where it did not score the clip)."""

    path: Path
    n_frames: int
    fps: float
    frame_idx: np.ndarray
    frame_logits: np.ndarray
    frame_features: np.ndarray | None = None
    faces: np.ndarray | None = None
    audio: object | None = None  # emotiw.audio.is10.ClipAudioFeatures
    kind: str = "video"
    model_features: dict[str, np.ndarray | None] = field(default_factory=dict)


@dataclass
class ClipScore:
    """A clip model's output: ``probs`` (7,) and, where its stage writes one, the clip ``features`` (D,)."""

    probs: np.ndarray
    features: np.ndarray | None = None


class ClipModel(Protocol):
    name: str
    needs: frozenset[str]  # a subset of INPUTS
    # optional: ``uses``, names of earlier models whose clip features it reads (ClipInputs.model_features)

    def predict(self, clip: ClipInputs) -> np.ndarray | ClipScore:
        """(7,) class probabilities of the clip (or a ClipScore); raises ModelSkipped when the clip lacks what the
        model needs."""
        ...


class MeanFrameProbs:
    """``cnn``: the mean over the frames with a face of the face CNN's per-frame probabilities."""

    name = "cnn"
    needs = frozenset({"frame_logits"})

    def predict(self, clip: ClipInputs) -> np.ndarray:
        if len(clip.frame_logits) == 0:
            raise ModelSkipped("no face")
        return _softmax(clip.frame_logits).mean(0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass
class ClipPrediction:
    """Everything the pipeline found for one input.

    ``frame_idx`` (K,), ``boxes`` (K,4), ``points`` (K,5,2) (the smoothed points the faces were aligned with),
    ``detected`` (K,) (False: followed by optical flow), ``frame_probs`` (K,7): per frame with a face.
    ``frame_times`` (n_frames,): every frame's time in seconds from the first (videos; empty for a still).
    ``models``: each clip model's (7,) probabilities, None where it was left out. ``probs``: the decision's (7,)
    probabilities, None when nothing could be predicted. ``notes``: one phrase per thing worth knowing.
    """

    path: Path
    kind: str  # "video" or "image"
    n_frames: int = 0
    fps: float = 0.0
    frame_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2)))
    detected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    frame_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_CLASSES)))
    frame_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    models: dict[str, np.ndarray | None] = field(default_factory=dict)
    probs: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def emotion(self) -> str:
        return "" if self.probs is None else EMOTIONS[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float("nan") if self.probs is None else float(np.max(self.probs))

    @property
    def status(self) -> str:
        """One line: ``ok``, or the notes joined by ``; ``."""
        return "; ".join(" ".join(n.split()) for n in self.notes) if self.notes else "ok"


# The models' probabilities (None for a model left out) -> the decision's 7 scores, or None when none of the models
# it combines scored the clip.
Combiner = Callable[[Mapping[str, "np.ndarray | None"]], "np.ndarray | None"]


def mean_of_present(models: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """The decision without a fitted combiner: the mean of the models that scored the clip."""
    present = [p for p in models.values() if p is not None]
    return np.mean(present, axis=0)


class EmotionPipeline:
    """Maps a video or a still to a :class:`ClipPrediction`.

    Args:
        face_model: aligned faces -> (logits, features), e.g. ``TorchFaceModel(load_cnn())``.
        front_end: a face source with ``track(rgb_frames) -> FaceTrack``, ``cache_id()`` and ``reads_landmarks``
            (:class:`~emotiw.faces.track.TrackedFaceSource` by default: CenterFace every 5th frame, optical flow in
            between, one track); one with ``for_video(path) -> (front end, note)`` picks per video
            (:class:`~emotiw.faces.track.SidecarLandmarkSource`).
        clip_models: the models giving clip probabilities (default: :class:`MeanFrameProbs` alone).
        combiner: the models' probabilities (None for a model left out) -> the decision's 7 scores; default the mean
            of the models present.
        align: the alignment settings (the face stage's :class:`~emotiw.faces.align.AlignConfig`).
        batch_size: faces per CNN call.
        max_pixels, work_side: stills over ``max_pixels`` are refused; larger than ``work_side`` a side, downscaled
            before detection.
        audio_settings: keyword arguments of :func:`~emotiw.audio.is10.clip_is10` (the audio stage's settings).
        min_frames: a clip with fewer aligned faces has none, as the face stage's ``data.min_frames`` has it.
    """

    def __init__(
        self,
        face_model: FaceModel,
        *,
        front_end=None,
        clip_models: Sequence[ClipModel] | None = None,
        combiner: Combiner | None = None,
        align: AlignConfig | None = None,
        batch_size: int = 256,
        max_pixels: int = 100_000_000,
        work_side: int = 2048,
        audio_settings: Mapping[str, object] | None = None,
        min_frames: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        if front_end is None:
            from emotiw.faces.track import TrackedFaceSource

            front_end = TrackedFaceSource()
        self.face_model = face_model
        self.front_end = front_end
        self.clip_models = list(clip_models) if clip_models is not None else [MeanFrameProbs()]
        names = [m.name for m in self.clip_models]
        if len(set(names)) != len(names):
            raise ValueError(f"clip model names must be unique, got {names}")
        for i, m in enumerate(self.clip_models):
            if not set(m.needs) <= INPUTS:
                raise ValueError(f"clip model {m.name}: unknown inputs {sorted(set(m.needs) - INPUTS)}")
            later = [u for u in getattr(m, "uses", ()) if u not in names[:i]]
            if later:
                raise ValueError(
                    f"clip model {m.name} reads {later}, which must come before it in clip_models"
                )
        self.combiner = combiner or mean_of_present
        self.align = align or AlignConfig()
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.work_side = work_side
        self.audio_settings = dict(audio_settings or {})
        self.min_frames = min_frames
        self.needs = frozenset().union(*(m.needs for m in self.clip_models))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs) -> EmotionPipeline:
        """Every trained part of a run (face CNN, IRNN, aggregated-CNN SVM, audio, activity, fusion network, the
        combiner's weights), with the face source and settings the run was trained with; models the run lacks are
        left out, each prediction's status saying which and why. ``kwargs``: see
        :func:`lightning_modules.trained_run.load_run`.

        The run's networks are rebuilt from their Lightning checkpoints by their LightningModule classes, whose
        evaluation code (the CNN's normaliser and crop, the IRNN's and the fusion network's prediction, the SAE's
        folded encoder) is the code the stages ran; so the loading lives in the Lightning layer
        (``lightning_modules/trained_run.py``), imported only when this is called: the plain package itself never
        imports Lightning, and everything else of the pipeline runs without it."""
        from lightning_modules.trained_run import load_run

        return load_run(run_dir, **kwargs)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.clip_models]

    # ------------------------------------------------------------------ entry points
    def predict(self, path: str | os.PathLike) -> ClipPrediction:
        """A still (by its suffix) or a video. Bad input never raises: the prediction's notes say what is wrong."""
        path = Path(path)
        kind = "image" if is_image(path) else "video"
        try:
            return self.predict_image(path) if kind == "image" else self.predict_video(path)
        except (VideoDecodeError, ImageReadError, LandmarkFormatError) as err:
            return ClipPrediction(path, kind, notes=[_strip_path(str(err), path)])

    def predict_video(self, path: str | os.PathLike) -> ClipPrediction:
        """Raises VideoDecodeError when nothing decodes; a truncated video is scored on what decodes, and noted."""
        path = Path(path)
        reader = VideoReader(path, strict=False, autorotate=True)
        times: list[float] = []

        def rgb_frames():
            for f in reader.frames():
                times.append(np.nan if f.time is None else f.time)
                yield f.rgb()

        front_end, note = self._front_end_for(path)
        track = front_end.track(rgb_frames())
        notes = [note] if note else []
        if reader.problem:
            notes.append(
                f"{_strip_path(reader.problem, path)}: scored on the {track.n_frames} frames before it"
            )
        track = self._enough_faces(track, notes)
        key = self._clip_key(path, front_end)
        faces_needed = "faces" in self.needs
        if len(track.frame_idx):
            logits, features, faces = self._classify(reader, track, key, keep_faces=faces_needed)
        else:
            logits, features, faces = _empty_outputs()
        pred = self._finish(path, "video", reader.fps, track, logits, features, faces, notes)
        pred.frame_times = _frame_times(np.asarray(times, np.float64), reader.fps)
        return pred

    def predict_image(self, path: str | os.PathLike) -> ClipPrediction:
        """A still is a one-frame clip: a 48x48 grey image is taken as an aligned face (FER2013 style), any other
        goes through the same face front end and alignment as a video frame."""
        path = Path(path)
        image = read_image(path, max_pixels=self.max_pixels, work_side=self.work_side)
        notes = list(image.notes)
        rgb = image.rgb
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if gray.shape == (FACE_SIZE, FACE_SIZE) and _is_grey(rgb):
            notes.append("48x48 grey image taken as an aligned face")
            face = equalize_hist(gray, self.align.levels)[None]
            box = np.array([[0.0, 0.0, FACE_SIZE, FACE_SIZE]])
            track = FaceTrack(np.zeros(1, np.int64), np.full((1, 5, 2), np.nan), box, np.ones(1, bool), 1, 1)
            logits, features = self.face_model(face)
            faces = face if "faces" in self.needs else None
        else:
            front_end, note = self._front_end_for(path)
            notes += [note] if note else []
            track = self._enough_faces(front_end.track([rgb]), notes)
            if len(track.frame_idx):
                rng = align_rng(self.align, self._clip_key(path, front_end))
                face = align_face(gray, track.points[0], rng, levels=self.align.levels)[None]
                logits, features = self.face_model(face)
                faces = face if "faces" in self.needs else None
            else:
                logits, features, faces = _empty_outputs()
        return self._finish(path, "image", 0.0, track, logits, features, faces, notes)

    # ------------------------------------------------------------------ steps
    def _front_end_for(self, path: Path):
        pick = getattr(self.front_end, "for_video", None)
        return pick(path) if pick is not None else (self.front_end, None)

    def _clip_key(self, path: Path, front_end) -> str:
        """The face cache's key of this file under this front end and alignment (seeds the padding noise)."""
        return clip_key(path, front_end, self.align, getattr(front_end, "landmarks_path", None))

    def _enough_faces(self, track: FaceTrack, notes: list[str]) -> FaceTrack:
        if 0 < len(track.frame_idx) < self.min_frames:
            notes.append(
                f"{len(track.frame_idx)} face frame(s), fewer than the run's min_frames={self.min_frames}"
            )
            return FaceTrack.empty(track.n_frames, track.n_tracks)
        return track

    def _classify(
        self, reader: VideoReader, track: FaceTrack, key: str, *, keep_faces: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Second pass: align the track's frames in order and run the CNN a batch at a time on a worker thread
        (torch releases the GIL, so decoding and aligning the next batch overlaps it)."""
        rng = align_rng(self.align, key)
        wanted = iter(zip(track.frame_idx.tolist(), track.points, strict=True))
        t_next, pts = next(wanted)
        last = int(track.frame_idx[-1])
        batch: list[np.ndarray] = []
        kept: list[np.ndarray] = []
        futures: list[Future] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            for frame in reader.frames():
                if frame.index == t_next:
                    batch.append(align_face(frame.gray(), pts, rng, levels=self.align.levels))
                    if len(batch) == self.batch_size:
                        futures.append(pool.submit(self.face_model, np.stack(batch)))
                        if keep_faces:
                            kept.extend(batch)
                        batch = []
                    t_next, pts = next(wanted, (-1, None))
                if frame.index >= last:
                    break
            if batch:
                futures.append(pool.submit(self.face_model, np.stack(batch)))
                if keep_faces:
                    kept.extend(batch)
            outputs = [f.result() for f in futures]
        n = sum(len(o[0]) for o in outputs)
        if n != len(track.frame_idx):  # the second pass decoded fewer frames than the first
            raise VideoDecodeError(
                f"{reader.path}: the second read gave {n} of the {len(track.frame_idx)} face frames"
            )
        logits = np.concatenate([o[0] for o in outputs])
        features = np.concatenate([o[1] for o in outputs]) if "frame_features" in self.needs else None
        return logits, features, (np.stack(kept) if keep_faces else None)

    def _finish(
        self,
        path: Path,
        kind: str,
        fps: float,
        track: FaceTrack,
        logits: np.ndarray,
        features: np.ndarray | None,
        faces: np.ndarray | None,
        notes: list[str],
    ) -> ClipPrediction:
        n_face = len(track.frame_idx)
        if n_face == 0:
            notes.append("no face found" + (f" in {track.n_frames} frames" if kind == "video" else ""))
        elif kind == "video" and n_face < track.n_frames:
            notes.append(f"face in {n_face} of {track.n_frames} frames")
        if track.n_tracks > 1:
            kept = "the largest" if kind == "image" else "the most persistent"
            notes.append(f"{track.n_tracks} faces {'found' if kind == 'image' else 'tracked'}, {kept} kept")
        inputs = ClipInputs(
            path=path,
            n_frames=track.n_frames,
            fps=fps,
            frame_idx=track.frame_idx,
            frame_logits=logits,
            frame_features=features if "frame_features" in self.needs else None,
            faces=faces,
            kind=kind,
        )
        if "audio" in self.needs:
            inputs.audio = self._audio(path, kind)
        models: dict[str, np.ndarray | None] = {}
        for model in self.clip_models:
            try:
                out = model.predict(inputs)
            except ModelSkipped as why:
                if n_face or "frame_logits" not in model.needs:  # "no face found" already says it for the CNN
                    notes.append(f"{model.name} left out: {why}")
                models[model.name] = inputs.model_features[model.name] = None
                continue
            score = out if isinstance(out, ClipScore) else ClipScore(out)
            probs = np.asarray(score.probs, dtype=np.float64)
            if probs.shape != (NUM_CLASSES,) or not np.isfinite(probs).all():
                raise ValueError(f"clip model {model.name} gave {probs.shape} non-finite or misshapen output")
            models[model.name] = probs
            inputs.model_features[model.name] = score.features
        decision = None
        if any(p is not None for p in models.values()):
            scores = self.combiner(models)
            if scores is None:
                notes.append("no decision: none of the combined models scored the clip")
            else:
                scores = np.asarray(scores, dtype=np.float64)
                total = scores.sum()
                decision = scores / total if total > 0 else scores
        return ClipPrediction(
            path=path,
            kind=kind,
            n_frames=track.n_frames,
            fps=fps,
            frame_idx=track.frame_idx,
            boxes=track.boxes,
            points=track.points,
            detected=track.detected,
            frame_probs=_softmax(logits) if len(logits) else np.zeros((0, NUM_CLASSES)),
            models=models,
            probs=decision,
            notes=notes,
        )

    def _audio(self, path: Path, kind: str):
        from emotiw.audio.is10 import ClipAudioFeatures, clip_is10

        if kind == "image":
            return ClipAudioFeatures(path.name, "no_audio", None, "a still has no audio")
        result = clip_is10(path, **self.audio_settings)
        if result.detail:
            result = ClipAudioFeatures(
                result.clip_id, result.status, result.features, _strip_path(result.detail, path)
            )
        return result


def _frame_times(stamps: np.ndarray, fps: float) -> np.ndarray:
    """Seconds from the first frame: the stream's timestamps (variable-rate clips), else index / fps."""
    if len(stamps) and np.isfinite(stamps).all() and (np.diff(stamps) > 0).all():
        return stamps - stamps[0]
    return np.arange(len(stamps)) / (fps if fps > 0 else 1.0)


def _empty_outputs() -> tuple[np.ndarray, None, None]:
    return np.zeros((0, NUM_CLASSES), np.float32), None, None


def _is_grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _strip_path(message: str, path: Path) -> str:
    """Messages name their file first (``<path>: reason``); a row that already names it keeps the reason."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
