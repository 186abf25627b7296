"""Audio track reading and IS10 features: counts, bad input, caching."""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.audio import IS10_DIM, extract_is10, is10_features
from emotiw.io.audio import AudioReadError, NoAudioTrackError, read_audio
from tests.core.audio_clips import moving_frames, voiced, write_avi

SR = 16000


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    frames = moving_frames(25, size=(32, 32))
    return {
        "speech": write_avi(d / "speech.avi", frames, audio=voiced(1.0, 140.0), sample_rate=SR),
        "speech8k": write_avi(
            d / "speech8k.avi", frames, audio=voiced(1.0, 140.0, sample_rate=8000), sample_rate=8000
        ),
        "noaudio": write_avi(d / "noaudio.avi", frames, audio=None),
        "silent": write_avi(d / "silent.avi", frames, audio=np.zeros(SR, np.float32), sample_rate=SR),
        "short": write_avi(d / "short.avi", frames, audio=voiced(0.05, 140.0), sample_rate=SR),
    }


def test_read_audio_is_mono_float32_at_the_requested_rate(clips):
    x = read_audio(clips["speech"], SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - SR) <= 1024  # 1 s, up to one codec frame of padding
    y = read_audio(clips["speech8k"], SR)  # resampled 8 kHz -> 16 kHz
    assert abs(y.size - SR) <= 1024
    np.testing.assert_allclose(np.sqrt(np.mean(x**2)), np.sqrt(np.mean(y**2)), rtol=0.1)


def test_read_audio_errors_name_the_file(clips, tmp_path):
    with pytest.raises(NoAudioTrackError, match=r"noaudio\.avi: has no audio track"):
        read_audio(clips["noaudio"])
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(AudioReadError, match=r"broken\.avi: cannot open"):
        read_audio(bad)
    with pytest.raises(AudioReadError, match=r"missing\.avi: no such file"):
        read_audio(tmp_path / "missing.avi")


def test_is10_has_1582_finite_features_on_speech(clips):
    f = is10_features(read_audio(clips["speech"], SR), SR)
    assert f.shape == (IS10_DIM,) == (1582,)
    assert np.isfinite(f).all()


def test_extract_reports_every_bad_clip_and_never_raises(clips, tmp_path):
    pairs = [(name, path) for name, path in clips.items()]
    pairs.append(("ghost", tmp_path / "ghost.avi"))
    feats, report = extract_is10(pairs, cache_dir=tmp_path / "cache", sample_rate=SR)
    assert sorted(feats) == ["speech", "speech8k"]
    assert report.statuses == {
        "speech": "ok",
        "speech8k": "ok",
        "noaudio": "no_audio",
        "silent": "silent",
        "short": "too_short",
        "ghost": "unreadable",
    }
    assert report.counts["ok"] == 2 and report.counts["no_audio"] == 1
    assert report.missing == ["ghost", "noaudio", "short", "silent"]
    assert "noaudio.avi" in report.details["noaudio"]


def test_features_are_cached_by_content(clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = extract_is10([("a", clips["speech"])], cache_dir=cache, sample_rate=SR)
    assert len(list((cache / "audio_is10").glob("*.npz"))) == 1

    import emotiw.audio.is10 as is10

    monkeypatch.setattr(is10, "_compute", lambda *a, **k: pytest.fail("cache miss"))
    # Same bytes under another clip id and path: served from the cache.
    copy = tmp_path / "copy.avi"
    copy.write_bytes(clips["speech"].read_bytes())
    again, report = extract_is10([("b", copy)], cache_dir=cache, sample_rate=SR)
    np.testing.assert_array_equal(first["a"], again["b"])
    assert report.statuses == {"b": "ok"}


def test_partial_nan_features_are_kept_and_counted_all_nan_is_too_short(clips, monkeypatch):
    import emotiw.audio.is10 as is10

    partial = np.ones(IS10_DIM, np.float32)
    partial[7] = np.nan
    monkeypatch.setattr(is10, "is10_features", lambda signal, sr: partial.copy())
    feats, report = extract_is10([("p", clips["speech"])], cache_dir=None, sample_rate=SR)
    assert report.nan_clips == ["p"] and report.counts["nan_imputed"] == 1 and np.isnan(feats["p"][7])
    monkeypatch.setattr(is10, "is10_features", lambda signal, sr: np.full(IS10_DIM, np.nan, np.float32))
    feats, report = extract_is10([("n", clips["speech"])], cache_dir=None, sample_rate=SR)
    assert feats == {} and report.statuses == {"n": "too_short"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_corrupt_audio_cache_entry_is_rebuilt_and_logged(clips, tmp_path, monkeypatch, caplog, damage):
    import logging

    import emotiw.audio.is10 as is10

    cache = tmp_path / "cache"
    first, _ = extract_is10([("a", clips["speech"])], cache_dir=cache, sample_rate=SR)
    (entry,) = (cache / "audio_is10").glob("*.npz")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 100)
    else:  # a whole npz holding another clip's entry
        np.savez(entry, features=np.zeros(IS10_DIM, np.float32), status=np.array("ok"), detail=np.array(""))
    with caplog.at_level(logging.WARNING):
        again, report = extract_is10([("a", clips["speech"])], cache_dir=cache, sample_rate=SR)
    np.testing.assert_array_equal(again["a"], first["a"])
    assert entry.name in report.cache_rebuilt["a"]
    assert any(entry.name in r.getMessage() and "rebuil" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(is10, "_compute", lambda *a, **k: pytest.fail("cache miss"))
    hit, report = extract_is10([("a", clips["speech"])], cache_dir=cache, sample_rate=SR)
    np.testing.assert_array_equal(hit["a"], first["a"])  # the rebuilt entry is whole again
    assert report.cache_rebuilt == {}


def test_audio_cache_key_no_bad_hit_across_settings(clips, tmp_path, monkeypatch):
    # every setting that changes a clip's entry is in its key: another one misses instead of reusing it
    import emotiw.audio.is10 as is10

    cache = tmp_path / "cache"
    extract_is10([("a", clips["speech"])], cache_dir=cache, sample_rate=SR)
    calls = []
    real = is10._compute
    monkeypatch.setattr(is10, "_compute", lambda *a, **k: calls.append(a) or real(*a, **k))
    for kw in ({"sample_rate": 8000}, {"min_duration_s": 2.0}, {"silence_rms": 0.5}):
        extract_is10([("a", clips["speech"])], cache_dir=cache, **{"sample_rate": SR, **kw})
    assert len(calls) == 3
    assert len(list((cache / "audio_is10").glob("*.npz"))) == 4
