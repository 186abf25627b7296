"""openSMILE INTERSPEECH-2010 paralinguistic functionals (1582 per clip), computed in-process and cached per clip.

A clip that cannot be scored (no audio track, silence, audio too short, unreadable file, all-NaN functionals) is
never a crash: it gets a status in an ``AudioFeatureReport`` and no feature vector; the stage decides what to do
with it (``missing_audio: skip | zeros``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotiw.artifacts import read_cache_npz, save_npz
from emotiw.io.audio import AudioReadError, NoAudioTrackError, read_audio

log = logging.getLogger(__name__)

IS10_DIM = 1582
OK = "ok"
# Statuses of clips without a feature vector, in the order a report lists them.
MISSING_STATUSES = ("no_audio", "silent", "too_short", "unreadable")
# Bump when decoding or scoring changes what a cache entry holds.
CACHE_VERSION = 2


@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.IS10, feature_level=opensmile.FeatureLevel.Functionals
    )


def is10_features(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 1582 IS10 functionals of a mono signal as float32 (NaN where openSMILE had too little audio)."""
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    with warnings.catch_warnings():
        # openSMILE warns "Segment too short, filling with NaN"; the caller counts NaNs instead.
        warnings.simplefilter("ignore", UserWarning)
        values = _smile().process_signal(signal, sample_rate).to_numpy(dtype=np.float32).reshape(-1)
    if values.shape != (IS10_DIM,):
        raise RuntimeError(f"openSMILE IS10 returned {values.shape[0]} features, expected {IS10_DIM}")
    return values


@dataclass(frozen=True)
class ClipAudioFeatures:
    """IS10 features of one clip; ``features`` is None unless ``status == "ok"``."""

    clip_id: str
    status: str
    features: np.ndarray | None
    detail: str = ""
    rebuilt: str = ""  # why a damaged cache entry was rebuilt
    extracted: bool = False  # computed by this call (not read from the cache)


@dataclass
class AudioFeatureReport:
    """What happened to every clip: counts per status and the clips without features."""

    statuses: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    nan_clips: list[str] = field(default_factory=list)
    cache_rebuilt: dict[str, str] = field(default_factory=dict)
    extracted: list[str] = field(default_factory=list)  # clips computed by this call, not read from the cache

    def merge(self, other: AudioFeatureReport) -> AudioFeatureReport:
        """This report and ``other``'s, over both their clips (e.g. two ranks' shares of the clips)."""
        return AudioFeatureReport(
            {**self.statuses, **other.statuses},
            {**self.details, **other.details},
            [*self.nan_clips, *other.nan_clips],
            {**self.cache_rebuilt, **other.cache_rebuilt},
            [*self.extracted, *other.extracted],
        )

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(self.statuses.values())
        return {s: counts.get(s, 0) for s in (OK, *MISSING_STATUSES)} | {"nan_imputed": len(self.nan_clips)}

    @property
    def missing(self) -> list[str]:
        return sorted(c for c, s in self.statuses.items() if s != OK)

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counts.items())


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _config_key(sample_rate: int, min_duration_s: float, silence_rms: float) -> str:
    import av
    import opensmile

    text = (
        f"IS10|Functionals|v{CACHE_VERSION}|opensmile={opensmile.__version__}|av={av.__version__}|"
        f"sr={sample_rate}|min={min_duration_s}|rms={silence_rms}"
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _read_entry(path: Path, key: str, clip_id: str) -> ClipAudioFeatures:
    """A cached clip, verified; raises ValueError naming the file when it is damaged or not this key's."""
    z = read_cache_npz(path, key, ("features", "status", "detail"))
    status, feats = str(z["status"]), z["features"]
    if status not in (OK, *MISSING_STATUSES):
        raise ValueError(f"{path}: cache file has unknown status {status!r}")
    if status == OK and (feats.shape != (IS10_DIM,) or feats.dtype != np.float32):
        raise ValueError(
            f"{path}: cache file has features {feats.dtype} {feats.shape}, expected ({IS10_DIM},)"
        )
    return ClipAudioFeatures(clip_id, status, feats if status == OK else None, str(z["detail"]))


def _clip_features(
    clip_id: str,
    path: Path,
    sample_rate: int,
    min_duration_s: float,
    silence_rms: float,
    cache_dir: Path | None,
) -> ClipAudioFeatures:
    cache_file, key, rebuilt = None, "", ""
    if cache_dir is not None:
        try:
            key = f"{_file_digest(path)}_{_config_key(sample_rate, min_duration_s, silence_rms)}"
        except OSError as err:
            return ClipAudioFeatures(clip_id, "unreadable", None, f"{path}: {err}")
        cache_file = cache_dir / f"{key}.npz"
        if cache_file.is_file():
            try:
                return _read_entry(cache_file, key, clip_id)
            except ValueError as err:
                rebuilt = str(err)
    result = _compute(clip_id, path, sample_rate, min_duration_s, silence_rms)
    if cache_file is not None and result.status != "unreadable":
        feats = result.features if result.features is not None else np.zeros(0, np.float32)
        save_npz(
            cache_file,
            key=np.asarray(key),
            features=feats,
            status=np.array(result.status),
            detail=np.array(result.detail),
        )
    return dataclasses.replace(result, rebuilt=rebuilt, extracted=True)


def _compute(
    clip_id: str, path: Path, sample_rate: int, min_duration_s: float, silence_rms: float
) -> ClipAudioFeatures:
    try:
        signal = read_audio(path, sample_rate)
    except NoAudioTrackError as err:
        return ClipAudioFeatures(clip_id, "no_audio", None, str(err))
    except AudioReadError as err:
        return ClipAudioFeatures(clip_id, "unreadable", None, str(err))
    seconds = signal.size / sample_rate
    if seconds < min_duration_s:
        return ClipAudioFeatures(
            clip_id, "too_short", None, f"{path}: {seconds:.3f} s of audio < {min_duration_s} s"
        )
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))
    if rms < silence_rms:
        return ClipAudioFeatures(clip_id, "silent", None, f"{path}: audio RMS {rms:.2e} < {silence_rms:.0e}")
    feats = is10_features(signal, sample_rate)
    if np.isnan(feats).all():
        return ClipAudioFeatures(clip_id, "too_short", None, f"{path}: openSMILE returned only NaN")
    return ClipAudioFeatures(clip_id, OK, feats)


def clip_is10(
    path: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    min_duration_s: float = 0.25,
    silence_rms: float = 1e-4,
) -> ClipAudioFeatures:
    """IS10 features of one file, uncached (prediction on any video), with the same checks and statuses as
    :func:`extract_is10`; ``clip_id`` is the file name."""
    path = Path(path)
    return _compute(path.name, path, sample_rate, min_duration_s, silence_rms)


def extract_is10(
    clips: Sequence[tuple[str, str | os.PathLike]],
    *,
    cache_dir: str | os.PathLike | None = None,
    sample_rate: int = 16000,
    min_duration_s: float = 0.25,
    silence_rms: float = 1e-4,
    n_jobs: int = 1,
) -> tuple[dict[str, np.ndarray], AudioFeatureReport]:
    """IS10 features of ``clips`` (``(clip_id, video_path)`` pairs), in parallel over clips, cached by file content.

    Returns ``{clip_id: (1582,) float32}`` for the clips that could be scored (NaN entries left in place and counted
    in ``report.nan_clips``; the whitening pipeline imputes them) and the report of every clip.
    """
    from joblib import Parallel, delayed

    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / "audio_is10"
        cache.mkdir(parents=True, exist_ok=True)
    jobs = (
        delayed(_clip_features)(str(cid), Path(p), sample_rate, min_duration_s, silence_rms, cache)
        for cid, p in clips
    )
    results: Iterable[ClipAudioFeatures] = Parallel(n_jobs=n_jobs)(jobs)
    report = AudioFeatureReport()
    features: dict[str, np.ndarray] = {}
    for r in results:
        report.statuses[r.clip_id] = r.status
        if r.extracted:
            report.extracted.append(r.clip_id)
        if r.rebuilt:  # logged here: joblib workers' log records do not reach the caller
            log.warning("rebuilt the audio cache entry of clip %s: %s", r.clip_id, r.rebuilt)
            report.cache_rebuilt[r.clip_id] = r.rebuilt
        if r.status == OK:
            features[r.clip_id] = r.features
            if np.isnan(r.features).any():
                report.nan_clips.append(r.clip_id)
        else:
            report.details[r.clip_id] = r.detail
            log.info("audio: clip %s has no features (%s): %s", r.clip_id, r.status, r.detail)
    log.info("audio features: %s", report.summary())
    return features, report
