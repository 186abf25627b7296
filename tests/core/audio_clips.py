"""Tiny .avi clips with (or without) an audio track for the audio and activity tests.

Prefers the generator's ``emotiw.synth.write_avi``; falls back to a PyAV writer with the same arguments while the
generator is being written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _write_avi_pyav(path, frames, fps=25, audio=None, sample_rate=16000):
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        v = c.add_stream("mjpeg", rate=fps)
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuvj420p"
        a = None
        if audio is not None:
            a = c.add_stream("pcm_s16le", rate=sample_rate)
            a.layout = "mono"
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1, 1) * 32767).astype(np.int16)
            for k in range(0, len(pcm), 1024):
                fr = av.AudioFrame.from_ndarray(pcm[None, k : k + 1024], format="s16", layout="mono")
                fr.sample_rate = sample_rate
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def write_avi(path, frames, fps=25, audio=None, sample_rate=16000):
    try:
        from emotiw.synth import write_avi as synth_write_avi
    except ImportError:
        return _write_avi_pyav(path, frames, fps=fps, audio=audio, sample_rate=sample_rate)
    return synth_write_avi(path, frames, fps=fps, audio=audio, sample_rate=sample_rate)


def voiced(
    seconds: float, f0: float, *, sample_rate: int = 16000, rate_hz: float = 4.0, seed: int = 0
) -> np.ndarray:
    """A speech-like signal: harmonics of ``f0`` under a syllable-rate envelope, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    src = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 * (1 + np.sin(2 * np.pi * rate_hz * t)) ** 2
    return (0.2 * src * env + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def moving_frames(n: int, size=(48, 64), speed: float = 2.0, seed: int = 0) -> np.ndarray:
    """Grey frames of a bright square moving at ``speed`` px/frame over a noisy background."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = np.empty((n, h, w), np.uint8)
    for t in range(n):
        img = rng.integers(90, 110, size=(h, w)).astype(np.uint8)
        x = int(5 + speed * t) % (w - 12)
        img[h // 3 : h // 3 + 12, x : x + 12] = 220
        out[t] = img
    return out


# Per-class pitch (Hz) and motion speed (px/frame) of the tiny tree below, canonical order.
F0 = (220.0, 110.0, 260.0, 200.0, 95.0, 240.0, 150.0)
SPEED = (4.0, 0.5, 3.5, 2.0, 0.2, 3.0, 1.0)


def write_av_afew(
    root, n_per_class=(3, 2), n_test=3, seconds=0.8, size=(48, 64), seed=0, silent_ids=(), no_audio_ids=()
):
    """A tiny AFEW tree (Train/Val/<Emotion>/*.avi, Test/*.avi) whose audio pitch and motion speed follow the label.

    ``silent_ids`` / ``no_audio_ids`` name clip ids written with digital silence / without an audio track.
    Returns {clip_id: label}.
    """
    from emotiw.labels import AFEW_FOLDERS

    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = {}
    k = 0
    layout = [("Train", n_per_class[0]), ("Val", n_per_class[1])]
    for split, n in layout:
        for label, folder in enumerate(AFEW_FOLDERS):
            for _ in range(n):
                cid = f"{k:09d}"
                k += 1
                labels[cid] = label
                _write_one(
                    root / split / folder / f"{cid}.avi",
                    cid,
                    label,
                    rng,
                    seconds,
                    size,
                    silent_ids,
                    no_audio_ids,
                )
    for _ in range(n_test):
        cid = f"{k:09d}"
        k += 1
        label = int(rng.integers(7))
        labels[cid] = label
        _write_one(root / "Test" / f"{cid}.avi", cid, label, rng, seconds, size, silent_ids, no_audio_ids)
    return labels


def _write_one(path, cid, label, rng, seconds, size, silent_ids, no_audio_ids):
    n_frames = int(25 * seconds)
    frames = moving_frames(
        n_frames, size=size, speed=SPEED[label] * rng.uniform(0.8, 1.2), seed=int(rng.integers(1 << 30))
    )
    if cid in no_audio_ids:
        audio = None
    elif cid in silent_ids:
        audio = np.zeros(int(16000 * seconds), np.float32)
    else:
        audio = voiced(
            seconds,
            F0[label] * rng.uniform(0.93, 1.07),
            rate_hz=3 + label * 0.5,
            seed=int(rng.integers(1 << 30)),
        )
    write_avi(path, frames, audio=audio, sample_rate=16000)
