"""Generated inputs for the prediction tests: a real photographed face moving over a generated scene, with a
generated voice.

The generator's cartoon faces are not what CenterFace finds (it finds none in most of their frames), so the face is
the portrait that ships with matplotlib (``sample_data/grace_hopper.jpg``); the scene comes from
``emotiw.synth.faces.smooth_texture``, the voice from ``emotiw.synth.voice.speech`` and the files are written by
``emotiw.synth.write_avi``, as the generated AFEW clips are.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np

FPS = 25
# Where the face is in grace_hopper.jpg (a CenterFace box with a margin), x0, y0, x1, y1.
_HEAD = (120, 70, 410, 390)


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def head(width: int) -> np.ndarray:
    """The photographed head, RGB, ``width`` pixels wide (height in proportion)."""
    x0, y0, x1, y1 = _HEAD
    crop = _photo()[y0:y1, x0:x1]
    height = round(width * (y1 - y0) / (x1 - x0))
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    from emotiw.synth.faces import smooth_texture

    rng = np.random.default_rng(seed)
    tex = smooth_texture(rng, (h, w), cells=5, lo=40, hi=200, channels=3)
    return np.clip(tex + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def face_frames(
    n: int,
    size: tuple[int, int] = (320, 240),
    *,
    face_width: int = 110,
    visible: np.ndarray | None = None,
    drift: tuple[float, float] = (1.5, 0.5),
    seed: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` RGB frames (``size`` = width, height) with the head drifting ``drift`` px a frame; where ``visible`` is
    False the frame is the bare scene. Returns the frames and the head's top-left corner per frame (n, 2)."""
    w, h = size
    bg = scene(h, w, seed)
    face = head(face_width)
    fh, fw = face.shape[:2]
    visible = np.ones(n, bool) if visible is None else np.asarray(visible, bool)
    x0, y0 = (w - fw) / 2 - drift[0] * n / 2, (h - fh) / 2 - drift[1] * n / 2
    corners = np.array([[x0 + drift[0] * t, y0 + drift[1] * t] for t in range(n)])
    frames = []
    for t in range(n):
        frame = bg.copy()
        if visible[t]:
            x, y = np.rint(corners[t]).astype(int)
            xa, ya, xb, yb = max(0, x), max(0, y), min(w, x + fw), min(h, y + fh)
            frame[ya:yb, xa:xb] = face[ya - y : yb - y, xa - x : xb - x]
        frames.append(frame)
    return frames, corners


def voice(n_frames: int, seed: int = 0) -> np.ndarray:
    from emotiw.synth.voice import SAMPLE_RATE, speech

    wave, _ = speech(np.random.default_rng(seed), "happy", n_frames * SAMPLE_RATE // FPS)
    return wave


def write_clip(path: str | os.PathLike, frames, *, audio: bool = True, seed: int = 0) -> Path:
    """An AVI (MPEG-4, PCM audio unless ``audio=False``) as the generated AFEW clips are written."""
    from emotiw.synth import write_avi

    frames = list(frames)
    return write_avi(path, frames, FPS, voice(len(frames), seed) if audio else None)


def face_clip(path: str | os.PathLike, n: int = 30, **kw) -> Path:
    audio = kw.pop("audio", True)
    frames, _ = face_frames(n, **kw)
    return write_clip(path, frames, audio=audio)
