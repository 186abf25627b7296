"""Decode video clips in-process with PyAV, counting frames by decoding (AFEW headers state wrong counts)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DecodedVideo", "VideoDecodeError", "VideoNotFoundError", "read_fps", "read_video"]


class VideoDecodeError(ValueError):
    """A clip that cannot be decoded: the message names the file and what is wrong, on one line."""


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The clip's file does not exist."""


@dataclass(frozen=True)
class DecodedVideo:
    """Every decoded frame of a clip: ``gray`` (T,H,W) uint8, ``rgb`` (T,H,W,3) uint8 or None, ``fps``."""

    path: Path
    gray: np.ndarray
    rgb: np.ndarray | None
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.gray.shape[0])


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a hard dependency in setup.cfg
        raise ImportError("reading videos needs PyAV: pip install av") from err
    return av


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise VideoNotFoundError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes), not a video")
    _check_declared_size(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"{path}: not a readable video container ({_short(err)})") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream in the file")
    return container


def _check_declared_size(path: Path) -> None:
    """Catch a truncated AVI or MP4/MOV from its own chunk sizes: decoders often drop a cut-off tail silently."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] in (b"RIFF", b"RF64") and head[4:8] != b"\xff\xff\xff\xff":
            declared = 8 + int.from_bytes(head[4:8], "little")
            if declared > size:
                raise VideoDecodeError(
                    f"{path}: truncated file ({size} bytes, the AVI header declares {declared})"
                )
        elif head[4:8] == b"ftyp":
            offset = 0
            while offset + 8 <= size:
                fh.seek(offset)
                box = fh.read(16)
                length = int.from_bytes(box[:4], "big")
                if length == 1 and len(box) == 16:
                    length = int.from_bytes(box[8:16], "big")
                elif length == 0:  # box runs to the end of the file
                    break
                if length < 8:
                    raise VideoDecodeError(f"{path}: corrupt MP4/MOV box at byte {offset}")
                if offset + length > size:
                    raise VideoDecodeError(
                        f"{path}: truncated file ({size} bytes, a box at byte {offset} ends at {offset + length})"
                    )
                offset += length


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def _stream_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def read_fps(path: str | os.PathLike) -> float:
    """Frames per second stated by the first video stream (AFEW: 25)."""
    path = Path(path)
    with _open(path) as container:
        fps = _stream_fps(container.streams.video[0])
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{path}: the video stream states no frame rate")
    return fps


def read_video(path: str | os.PathLike, *, rgb: bool = False) -> DecodedVideo:
    """Decode every frame of the first video stream to grey (and optionally RGB) uint8.

    The frame count is what decodes, not what the header says. A decoder error anywhere (truncated or corrupt
    data) fails the whole clip rather than returning a silently shortened one.

    Raises:
        VideoNotFoundError: the file does not exist.
        VideoDecodeError: not a video, corrupt or truncated data, or no decodable frame.
    """
    av = _av()
    path = Path(path)
    grays: list[np.ndarray] = []
    rgbs: list[np.ndarray] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream) or 0.0
        # One reformatter per clip keeps its scaler context; a fresh one per frame costs ~3x the decode.
        to_gray, to_rgb = av.video.reformatter.VideoReformatter(), av.video.reformatter.VideoReformatter()
        try:
            for frame in container.decode(stream):
                grays.append(to_gray.reformat(frame, format="gray").to_ndarray())
                if rgb:
                    rgbs.append(to_rgb.reformat(frame, format="rgb24").to_ndarray())
        except av.error.FFmpegError as err:
            raise VideoDecodeError(
                f"{path}: corrupt or truncated video data after {len(grays)} decoded frames ({_short(err)})"
            ) from err
    if not grays:
        raise VideoDecodeError(f"{path}: no decodable video frame")
    return DecodedVideo(
        path=path,
        gray=np.stack(grays),
        rgb=np.stack(rgbs) if rgb else None,
        fps=fps,
    )
