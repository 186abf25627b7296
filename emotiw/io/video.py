"""Decode video clips in-process with PyAV, counting frames by decoding (AFEW headers state wrong counts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "DecodedVideo",
    "Frame",
    "VideoDecodeError",
    "VideoNotFoundError",
    "VideoReader",
    "read_fps",
    "read_video",
]


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


def _open(path: Path, *, strict: bool = True) -> tuple[object, str]:
    """The opened container, and (``strict=False``) why the file looks truncated ("" if it does not)."""
    av = _av()
    if not path.is_file():
        raise VideoNotFoundError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes), not a video")
    note = ""
    try:
        _check_declared_size(path)
    except VideoDecodeError as err:
        if strict:
            raise
        note = str(err)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"{path}: not a readable video container ({_short(err)})") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream in the file")
    return container, note


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
    # FFmpeg errors repeat the file name the message already starts with: keep their reason only.
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(text.split())[:200]


def _stream_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def read_fps(path: str | os.PathLike) -> float:
    """Frames per second stated by the first video stream (AFEW: 25)."""
    path = Path(path)
    container, _ = _open(path)
    with container:
        fps = _stream_fps(container.streams.video[0])
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{path}: the video stream states no frame rate")
    return fps


# Display rotation (degrees, as PyAV reports the stream's display matrix) -> the cv2.rotate code that shows it upright.
_ROTATE = {
    -90: cv2.ROTATE_90_CLOCKWISE,
    270: cv2.ROTATE_90_CLOCKWISE,
    90: cv2.ROTATE_90_COUNTERCLOCKWISE,
    -270: cv2.ROTATE_90_COUNTERCLOCKWISE,
    180: cv2.ROTATE_180,
    -180: cv2.ROTATE_180,
}


class Frame:
    """One decoded frame; ``gray()`` and ``rgb()`` convert on first use (a pass that needs colour on a few frames
    only pays for those)."""

    __slots__ = ("_av_frame", "_gray", "_rgb", "_reader", "index")

    def __init__(self, index: int, av_frame, reader: _PassState) -> None:
        self.index = index
        self._av_frame = av_frame
        self._reader = reader
        self._gray: np.ndarray | None = None
        self._rgb: np.ndarray | None = None

    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = self._reader.convert(self._av_frame, "gray")
        return self._gray

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._reader.convert(self._av_frame, "rgb24")
        return self._rgb

    @property
    def time(self) -> float | None:
        """Presentation time in seconds (None when the stream gives none); variable-rate clips need it."""
        return self._av_frame.time


class _PassState:
    """Per-pass converters: one reformatter per pixel format keeps its scaler context (a fresh one per frame costs
    about 3x the decode)."""

    def __init__(self, rotate: int | None) -> None:
        av = _av()
        self.rotate = rotate
        self.formatters = {
            "gray": av.video.reformatter.VideoReformatter(),
            "rgb24": av.video.reformatter.VideoReformatter(),
        }

    def convert(self, av_frame, fmt: str) -> np.ndarray:
        array = self.formatters[fmt].reformat(av_frame, format=fmt).to_ndarray()
        if self.rotate is not None:
            array = cv2.rotate(array, self.rotate)
        return array


class VideoReader:
    """Streams the frames of a clip's first video stream, one pass per ``frames()`` call (each reopens the file).

    Args:
        path: the video file.
        strict: a truncated or corrupt file raises :class:`VideoDecodeError` (training data: a shortened clip would
            be silently wrong). ``strict=False`` yields the frames that decode and says why it stopped in
            ``problem`` (prediction on any video: score what is there, flag it).
        autorotate: turn frames upright by the stream's display rotation (phone videos store portrait frames
            sideways). Off for AFEW clips, whose landmark sidecars are in stored-frame pixels.

    Raises (on construction):
        VideoNotFoundError, VideoDecodeError: missing, empty, not a video, no video stream; in strict mode also a
        file shorter than its own header declares.
    """

    def __init__(self, path: str | os.PathLike, *, strict: bool = True, autorotate: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.autorotate = autorotate
        self.problem = ""
        container, self._declared_problem = _open(self.path, strict=strict)
        with container:
            stream = container.streams.video[0]
            self.fps = _stream_fps(stream) or 0.0
            self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)

    def frames(self) -> Iterator[Frame]:
        """Every frame in decode order. In strict mode a decoder error raises; otherwise the pass ends there and
        ``problem`` says why (it is reset at the start of each pass)."""
        av = _av()
        self.problem = ""
        n = 0
        container, _ = _open(self.path, strict=self.strict)
        with container:
            stream = container.streams.video[0]
            state: _PassState | None = None
            try:
                for av_frame in container.decode(stream):
                    if state is None:
                        rotation = int(round(getattr(av_frame, "rotation", 0) or 0)) if self.autorotate else 0
                        state = _PassState(_ROTATE.get(rotation))
                    yield Frame(n, av_frame, state)
                    n += 1
            except av.error.FFmpegError as err:
                message = (
                    f"{self.path}: corrupt or truncated video data after {n} decoded frames ({_short(err)})"
                )
                if self.strict:
                    raise VideoDecodeError(message) from err
                self.problem = message
        if not self.problem and self._declared_problem:
            self.problem = self._declared_problem
        if n == 0:
            raise VideoDecodeError(self.problem or f"{self.path}: no decodable video frame")


def read_video(path: str | os.PathLike, *, rgb: bool = False) -> DecodedVideo:
    """Decode every frame of the first video stream to grey (and optionally RGB) uint8.

    The frame count is what decodes, not what the header says. A decoder error anywhere (truncated or corrupt
    data) fails the whole clip rather than returning a silently shortened one.

    Raises:
        VideoNotFoundError: the file does not exist.
        VideoDecodeError: not a video, corrupt or truncated data, or no decodable frame.
    """
    reader = VideoReader(path)
    grays: list[np.ndarray] = []
    rgbs: list[np.ndarray] = []
    for frame in reader.frames():
        grays.append(frame.gray())
        if rgb:
            rgbs.append(frame.rgb())
    return DecodedVideo(
        path=reader.path,
        gray=np.stack(grays),
        rgb=np.stack(rgbs) if rgb else None,
        fps=reader.fps,
    )
