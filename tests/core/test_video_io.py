from __future__ import annotations

import numpy as np
import pytest

from emotiw.io.video import VideoDecodeError, VideoNotFoundError, read_fps, read_video


@pytest.mark.parametrize("n", [1, 2, 17])
def test_frame_count_equals_frames_written(clip_factory, n):
    video = read_video(clip_factory(n_frames=n))
    assert video.num_frames == n
    assert video.gray.shape == (n, 80, 96) and video.gray.dtype == np.uint8
    assert video.rgb is None


def test_rgb_and_fps(clip_factory):
    path = clip_factory(n_frames=3)
    video = read_video(path, rgb=True)
    assert video.rgb.shape == (3, 80, 96, 3) and video.rgb.dtype == np.uint8
    assert read_fps(path) == pytest.approx(25.0)
    # The face (bright ellipse) is drawn in the centre: grey there is brighter than the dark eye.
    assert video.gray[0, 40, 48] > 100


def test_missing_file(tmp_path):
    path = tmp_path / "nope.avi"
    with pytest.raises(VideoNotFoundError, match="nope.avi: video file not found"):
        read_video(path)
    with pytest.raises(FileNotFoundError):
        read_fps(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty.avi: empty file"):
        read_video(path)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.avi"
    path.write_text("this is text, not a video\n" * 10)
    with pytest.raises(VideoDecodeError, match=r"notes.avi: not a readable video"):
        read_video(path)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated(clip_factory, keep):
    path = clip_factory(n_frames=30)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoDecodeError, match=r"clip.avi: truncated file"):
        read_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="sound.wav: no video stream"):
        read_video(path)
