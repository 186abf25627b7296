"""Read the audio track of a video file in-process with PyAV: mono float32 at a fixed sample rate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class AudioReadError(RuntimeError):
    """A file's audio could not be read; the message names the file and the reason."""


class NoAudioTrackError(AudioReadError):
    """The file decodes but holds no audio stream (silent films, a dropped track)."""


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path``, downmixed to mono and resampled to ``sample_rate``.

    Returns a 1-D float32 array in [-1, 1] (possibly empty when the track holds no samples).
    Raises ``NoAudioTrackError`` when the container has no audio stream and ``AudioReadError`` when it cannot be
    opened or decoded; both name the file.
    """
    import av

    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise AudioReadError(f"{path}: cannot open as a media file ({err})") from err
    with container:
        if not container.streams.audio:
            raise NoAudioTrackError(f"{path}: has no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            raise AudioReadError(f"{path}: audio decoding failed ({err})") from err
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
