"""The streaming reader that read_video and the prediction pipeline share: lenient mode, display rotation."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from emotiw.io.video import VideoDecodeError, VideoReader, read_video
from tests.predict_media import face_frames, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, _ = face_frames(20, size=(160, 120))
    return write_clip(tmp_path_factory.mktemp("v") / "clip.avi", frames), frames


def test_frames_stream_what_read_video_stacks(clip):
    path, _ = clip
    reader = VideoReader(path)
    assert (reader.width, reader.height, reader.fps) == (160, 120, 25.0)
    frames = list(reader.frames())
    video = read_video(path, rgb=True)
    assert [f.index for f in frames] == list(range(20))
    np.testing.assert_array_equal(np.stack([f.gray() for f in frames]), video.gray)
    np.testing.assert_array_equal(np.stack([f.rgb() for f in frames]), video.rgb)
    assert len(list(reader.frames())) == 20  # every call is a new pass


def test_truncated_clip_strict_raises_lenient_yields_and_says_why(clip, tmp_path):
    path, _ = clip
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_video(cut)
    reader = VideoReader(cut, strict=False)
    n = sum(1 for _ in reader.frames())
    assert 0 < n < 20
    assert "cut.avi" in reader.problem and "truncated" in reader.problem


def _mp4(path, frames):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


def test_autorotate_turns_a_phone_video_upright(tmp_path):
    """A phone stores portrait video sideways with a display matrix in the track header; set one by hand (the
    QuickTime matrix of a 90 degree clockwise turn) and check the frames come out turned, only when asked."""
    frames, _ = face_frames(3, size=(96, 64))
    path = _mp4(tmp_path / "phone.mp4", frames)
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd") + 44  # version-0 tkhd: the 3x3 matrix starts 40 bytes after the box type
    assert struct.unpack(">9i", data[at : at + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[at : at + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    stored = next(VideoReader(path).frames()).gray()
    upright = next(VideoReader(path, autorotate=True).frames()).gray()
    assert stored.shape == (64, 96) and upright.shape == (96, 64)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # clockwise
