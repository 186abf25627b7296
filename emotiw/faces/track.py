"""The face front end for real video: detect every few frames, follow the faces in between, keep one track.

Per clip, :class:`FaceTracker` runs the detector (CenterFace) on every ``every``-th frame (the keyframes) and follows
each face between keyframes by sparse optical flow: Lucas-Kanade on corner points inside the face box, checked
forwards and backwards, and a RANSAC similarity transform that moves the 5 points and the box. At each keyframe a
detection continues the track whose box it overlaps most (IoU >= ``min_iou``); the drift the flow gathered since the
previous detection is spread linearly back over those frames, so every followed frame ends on the detector's points.
A track that the detector no longer confirms ends, and its flow-only frames after its last detection are dropped.

One track per clip is kept: the **most persistent** (the most frames with a face), ties going to the **largest**
(mean box area). Its 5 points are smoothed over time (a Gaussian of ``smooth_sigma`` frames within each unbroken
run of frames) before alignment, which removes the detector's frame-to-frame jitter.

A face that appears between keyframes is found at the next keyframe, so up to ``every - 1`` of its first frames are
missed; ``every=1`` detects on every frame (the speed baseline).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import cv2
import numpy as np

from emotiw.faces.detect import Face

__all__ = [
    "CentreSquareSource",
    "FaceTrack",
    "FaceTracker",
    "TrackConfig",
    "TrackedFaceSource",
    "box_iou",
    "smooth_points",
]

# Flow runs on the face region scaled so that the box is at most this wide: the cost stays flat on large frames.
_FLOW_BOX_WIDTH = 160.0


class Detector(Protocol):
    def detect(self, image: np.ndarray, *, bgr: bool = True) -> list[Face]: ...

    def cache_id(self) -> str: ...


@dataclass(frozen=True)
class TrackConfig:
    """How faces are found and followed (part of the face-cache key through :meth:`key`).

    Args:
        every: run the detector on every n-th frame (1 = every frame), follow the faces by optical flow between.
        min_iou: a detection continues a track when its box overlaps the track's current box by at least this.
        max_faces: faces followed at once (the largest detections of a keyframe).
        smooth_sigma: Gaussian smoothing of the 5 points over time, in frames (0 = none).
        flow_points: corner points followed inside a face box.
    """

    every: int = 5
    min_iou: float = 0.3
    max_faces: int = 4
    smooth_sigma: float = 1.5
    flow_points: int = 40
    version: int = 1

    def __post_init__(self) -> None:
        checks = {
            "every": self.every >= 1,
            "min_iou": 0 < self.min_iou <= 1,
            "max_faces": self.max_faces >= 1,
            "smooth_sigma": self.smooth_sigma >= 0,
            "flow_points": self.flow_points >= 8,
        }
        needs = {
            "every": "an integer >= 1",
            "min_iou": "in (0, 1]",
            "max_faces": ">= 1",
            "smooth_sigma": ">= 0",
            "flow_points": ">= 8",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"track {name} must be {needs[name]}, got {getattr(self, name)!r}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FaceTrack:
    """The kept face track of a clip, in frame order.

    ``frame_idx`` (K,) int64 frames with the face; ``points`` (K,5,2) the smoothed 5 points used for alignment;
    ``boxes`` (K,4) x1,y1,x2,y2; ``detected`` (K,) True where the detector saw the face (else followed by flow);
    ``n_frames`` frames read; ``n_tracks`` face tracks seen in the clip (1 kept).
    """

    frame_idx: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    n_frames: int
    n_tracks: int

    @classmethod
    def empty(cls, n_frames: int, n_tracks: int = 0) -> FaceTrack:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 5, 2)),
            np.zeros((0, 4)),
            np.zeros(0, bool),
            n_frames,
            n_tracks,
        )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1,y1,x2,y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def smooth_points(frame_idx: np.ndarray, points: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth (K,5,2) points over time within each run of consecutive frames (edges repeat the end value)."""
    from scipy.ndimage import gaussian_filter1d

    points = np.asarray(points, dtype=np.float64)
    if sigma <= 0 or len(points) < 2:
        return points.copy()
    out = np.empty_like(points)
    breaks = np.flatnonzero(np.diff(frame_idx) != 1) + 1
    for run in np.split(np.arange(len(points)), breaks):
        out[run] = gaussian_filter1d(points[run], sigma, axis=0, mode="nearest")
    return out


@dataclass
class _Track:
    frames: list[int] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    flow: np.ndarray | None = None  # (n,1,2) float32 corner points in frame pixels at the last followed frame
    alive: bool = True
    lost: bool = False  # the flow gave up since the last keyframe

    @property
    def box(self) -> np.ndarray:
        return self.boxes[-1]

    def add(self, t: int, points: np.ndarray, box: np.ndarray, detected: bool) -> None:
        if self.frames and self.frames[-1] == t:  # a detection replaces the flow estimate of its frame
            self.points[-1], self.boxes[-1], self.detected[-1] = points, box, detected
        else:
            self.frames.append(t)
            self.points.append(points)
            self.boxes.append(box)
            self.detected.append(detected)

    def last_detection(self) -> int:
        """Index (into the lists) of the last detected frame, -1 if none."""
        for i in range(len(self.detected) - 1, -1, -1):
            if self.detected[i]:
                return i
        return -1

    def correct_drift(self, face: Face, t: int) -> None:
        """Spread the gap between the flow's and the detector's points at frame ``t`` back to the last detection."""
        k0 = self.last_detection()
        if k0 < 0 or self.frames[-1] != t:
            return
        t0 = self.frames[k0]
        delta_pts = face.points5 - self.points[-1]
        delta_box = face.box - self.boxes[-1]
        for i in range(k0 + 1, len(self.frames) - 1):
            w = (self.frames[i] - t0) / (t - t0)
            self.points[i] = self.points[i] + w * delta_pts
            self.boxes[i] = self.boxes[i] + w * delta_box

    def drop_unconfirmed(self) -> None:
        """Forget the flow-only frames after the last detection (the detector did not see the face again)."""
        keep = self.last_detection() + 1
        del self.frames[keep:], self.points[keep:], self.boxes[keep:], self.detected[keep:]


class FaceTracker:
    """Detect every ``config.every`` frames, follow by optical flow in between, keep one track (module docstring).

    Args:
        detector: has ``detect(rgb, bgr=False) -> list[Face]`` (e.g. :class:`~emotiw.faces.detect.CenterFaceSource`).
        config: :class:`TrackConfig`.
    """

    def __init__(self, detector: Detector, config: TrackConfig | None = None) -> None:
        self.detector = detector
        self.config = config or TrackConfig()

    def cache_id(self) -> str:
        return f"{self.detector.cache_id()}-track{self.config.key()}"

    def track(self, rgb_frames: Iterable[np.ndarray]) -> FaceTrack:
        """The kept face track of a clip given its RGB frames (T,H,W,3 uint8, any iterable: frames stream through)."""
        cfg = self.config
        tracks: list[_Track] = []
        prev_gray = None
        t = -1
        for t, rgb in enumerate(rgb_frames):
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
            if prev_gray is not None and cfg.every > 1:
                for tr in tracks:
                    if tr.alive and not tr.lost:
                        self._follow(tr, prev_gray, gray, t)
            if t % cfg.every == 0:
                faces = self.detector.detect(rgb, bgr=False)
                self._match(tracks, sorted(faces, key=lambda f: -f.area)[: cfg.max_faces], gray, t)
            prev_gray = gray
        n_frames = t + 1
        tracks = [tr for tr in tracks if tr.frames]
        if not tracks:
            return FaceTrack.empty(n_frames)
        best = max(tracks, key=lambda tr: (len(tr.frames), float(np.mean([_area(b) for b in tr.boxes]))))
        frame_idx = np.asarray(best.frames, np.int64)
        raw = np.stack(best.points).astype(np.float64)
        return FaceTrack(
            frame_idx=frame_idx,
            points=smooth_points(frame_idx, raw, cfg.smooth_sigma),
            boxes=np.stack(best.boxes).astype(np.float64),
            detected=np.asarray(best.detected, bool),
            n_frames=n_frames,
            n_tracks=len(tracks),
        )

    def _match(self, tracks: list[_Track], faces: list[Face], gray: np.ndarray, t: int) -> None:
        alive = [tr for tr in tracks if tr.alive]
        pairs = sorted(
            ((box_iou(tr.box, f.box), i, j) for i, tr in enumerate(alive) for j, f in enumerate(faces)),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for iou, i, j in pairs:
            if iou < self.config.min_iou:
                break
            if i in used_tracks or j in used_faces:
                continue
            used_tracks.add(i)
            used_faces.add(j)
            tr, face = alive[i], faces[j]
            tr.correct_drift(face, t)
            tr.add(t, face.points5.copy(), face.box.copy(), True)
            tr.flow, tr.lost = self._seed(gray, face.box), False
        for i, tr in enumerate(alive):
            if i not in used_tracks:  # the detector no longer sees it: the track ends at its last detection
                tr.alive = False
                tr.drop_unconfirmed()
        for j, face in enumerate(faces):
            if j not in used_faces and sum(tr.alive for tr in tracks) < self.config.max_faces:
                tr = _Track()
                tr.add(t, face.points5.copy(), face.box.copy(), True)
                tr.flow = self._seed(gray, face.box)
                tracks.append(tr)

    def _seed(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Corner points inside the inner part of the box (the border holds background), in frame pixels."""
        h, w = gray.shape
        bw, bh = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(0, box[0] + 0.15 * bw)), int(max(0, box[1] + 0.1 * bh))
        x1, y1 = int(min(w, box[2] - 0.15 * bw)), int(min(h, box[3] - 0.1 * bh))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        pts = cv2.goodFeaturesToTrack(
            gray[y0:y1, x0:x1],
            maxCorners=self.config.flow_points,
            qualityLevel=0.01,
            minDistance=max(2.0, (x1 - x0) / 12),
        )
        if pts is None or len(pts) < 6:
            return None
        return (pts + np.float32([x0, y0])).astype(np.float32)

    def _follow(self, tr: _Track, prev: np.ndarray, gray: np.ndarray, t: int) -> None:
        """Move the track from the previous frame to frame ``t`` by optical flow; mark it lost when that fails."""
        if tr.flow is None or tr.frames[-1] != t - 1:
            tr.lost = True
            return
        box = tr.box
        h, w = gray.shape
        bw, bh = box[2] - box[0], box[3] - box[1]
        # The region around the face, margin half a box each side, scaled to a bounded width.
        x0, y0 = int(max(0, box[0] - 0.5 * bw)), int(max(0, box[1] - 0.5 * bh))
        x1, y1 = int(min(w, box[2] + 0.5 * bw)), int(min(h, box[3] + 0.5 * bh))
        if x1 - x0 < 16 or y1 - y0 < 16:
            tr.lost = True
            return
        s = min(1.0, _FLOW_BOX_WIDTH / max(bw, 1.0))
        a, b = prev[y0:y1, x0:x1], gray[y0:y1, x0:x1]
        if s < 1.0:
            size = (max(16, round((x1 - x0) * s)), max(16, round((y1 - y0) * s)))
            a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
            b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
        origin = np.float32([x0, y0])
        p0 = ((tr.flow - origin) * s).astype(np.float32)
        lk = {"winSize": (15, 15), "maxLevel": 2}
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **lk)
        good = (st1.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(back - p0, axis=2).ravel() < 1.0)
        if good.sum() < 6:
            tr.lost = True
            return
        old, new = p0[good] / s + origin, p1[good] / s + origin
        m, inliers = cv2.estimateAffinePartial2D(old, new, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if m is None or inliers is None or int(inliers.sum()) < 6:
            tr.lost = True
            return
        points = tr.points[-1] @ m[:, :2].T + m[:, 2]
        corners = np.array([[box[0], box[1]], [box[2], box[3]]]) @ m[:, :2].T + m[:, 2]
        new_box = np.array([*corners.min(0), *corners.max(0)])
        tr.add(t, points, new_box, False)
        kept = new[inliers.ravel() == 1].reshape(-1, 1, 2).astype(np.float32)
        tr.flow = kept if len(kept) >= self.config.flow_points // 2 else self._seed(gray, new_box)


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


class TrackedFaceSource:
    """A :class:`~emotiw.faces.detect.FaceSource` running :class:`FaceTracker` over a decoded clip, so that
    ``stage=faces`` (``data.face_source=centerface_track``) caches exactly the faces ``predict.py`` sees."""

    needs_rgb = True
    reads_landmarks = False

    def __init__(self, detector: Detector | None = None, config: TrackConfig | None = None) -> None:
        if detector is None:
            from emotiw.faces.detect import CenterFaceSource

            detector = CenterFaceSource()
        self.tracker = FaceTracker(detector, config)

    def cache_id(self) -> str:
        return self.tracker.cache_id()

    def track(self, rgb_frames: Iterable[np.ndarray]) -> FaceTrack:
        return self.tracker.track(rgb_frames)

    def clip_points(self, ref, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        track = self.tracker.track(frames)
        return track.frame_idx, track.points


class CentreSquareSource:
    """For inputs that are already face crops (``predict.py --no-detect``): the centre square of every frame is
    taken as the face, its 5 points the FER2013 mean shape scaled into it, so alignment maps it onto 48x48."""

    needs_rgb = True
    reads_landmarks = False

    def cache_id(self) -> str:
        return "centre-square-v1"

    def track(self, rgb_frames: Iterable[np.ndarray]) -> FaceTrack:
        from emotiw.faces.align import FACE_SIZE, FER_MEAN_SHAPE_48

        boxes, points = [], []
        for rgb in rgb_frames:
            h, w = rgb.shape[:2]
            side = min(h, w)
            x0, y0 = (w - side) / 2, (h - side) / 2
            boxes.append([x0, y0, x0 + side, y0 + side])
            points.append(FER_MEAN_SHAPE_48 * (side / FACE_SIZE) + [x0, y0])
        n = len(boxes)
        if n == 0:
            return FaceTrack.empty(0)
        return FaceTrack(
            np.arange(n, dtype=np.int64),
            np.asarray(points, np.float64),
            np.asarray(boxes, np.float64),
            np.zeros(n, bool),
            n,
            1,
        )

    def clip_points(self, ref, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        track = self.track(frames)
        return track.frame_idx, track.points


class SidecarLandmarkSource:
    """The face source ``landmarks`` for any video: the 5 points of the sidecar ``landmarks/<clip_id>.csv`` that
    :func:`emotiw.io.afew.list_clips` pairs with a video of an AFEW tree (the generated data, real AFEW when provided),
    the faces ``stage=faces`` aligns for such a run. A video without one goes to ``fallback`` (e.g. a
    :class:`TrackedFaceSource`), or has no face when there is none.

    :meth:`for_video` gives the front end of one video and a note (or None) saying which was used.
    """

    needs_rgb = False
    reads_landmarks = True

    def __init__(self, fallback=None) -> None:
        from emotiw.faces.detect import LandmarkFileSource

        self.source = LandmarkFileSource()
        self.fallback = fallback

    def cache_id(self) -> str:
        return self.source.cache_id()

    def for_video(self, path) -> tuple[object, str | None]:
        from emotiw.io.afew import find_landmarks

        sidecar = find_landmarks(path)
        if sidecar is not None:
            return _Sidecar(self.source, sidecar), None
        if self.fallback is not None:
            return self.fallback, "no landmark file beside it: faces found by the detector"
        return _Sidecar(self.source, None), "no landmark file landmarks/<clip_id>.csv beside it"


class _Sidecar:
    """One video's landmark file as a front end (``landmarks_path`` None: no face)."""

    needs_rgb = False
    reads_landmarks = True

    def __init__(self, source, landmarks_path) -> None:
        self.source, self.landmarks_path = source, landmarks_path

    def cache_id(self) -> str:
        return self.source.cache_id()

    def track(self, rgb_frames: Iterable[np.ndarray]) -> FaceTrack:
        """Every frame is read (the frames count); points past the last decoded frame are dropped, as
        :func:`~emotiw.faces.align.align_clip` drops them. The box is the points' bounding square (for display)."""
        from emotiw.io.afew import read_landmarks

        n_frames = sum(1 for _ in rgb_frames)
        if self.landmarks_path is None:
            return FaceTrack.empty(n_frames)
        lm = read_landmarks(self.landmarks_path)
        keep = (lm.frame_idx >= 0) & (lm.frame_idx < n_frames)
        idx, points = lm.frame_idx[keep].astype(np.int64), np.asarray(lm.points, np.float64)[keep]
        if len(idx) == 0:
            return FaceTrack.empty(n_frames)
        centre = points.mean(axis=1)
        half = 1.2 * np.abs(points - centre[:, None]).max(axis=(1, 2))
        boxes = np.column_stack([centre - half[:, None], centre + half[:, None]])
        return FaceTrack(idx, points, boxes, np.ones(len(idx), bool), n_frames, 1)
