"""Knobs of the generator: how hard the data is (``Difficulty``) and how much of it there is (``Preset``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotiw.labels import EMOTIONS, NUM_CLASSES
from emotiw.synth.faces import StillStyle


@dataclass(frozen=True)
class Difficulty:
    """How informative each item is. ``easy`` learns in seconds; ``paper`` keeps every model well below 100%."""

    name: str
    intensity: tuple[float, float]  # expression intensity of an expressive item, uniform in this range
    faint: float  # chance that an item's face is uninformative (intensity near zero)
    au_jitter: float  # per-unit multiplicative variation of the prototype
    resting: float  # scale of each subject's idiosyncratic resting action units
    label_noise: float  # chance that the item shows another emotion than its label
    still: StillStyle  # crop jitter and image degradation of stills
    # Clips only.
    face_loss: float  # chance that a clip has a stretch of frames without a visible face
    face_uninformative: float  # chance that a clip's face stays (almost) neutral, on top of ``faint``
    pose_motion: float  # head yaw/roll amplitude scale
    audio_uninformative: float  # chance that the voice carries no emotion (flat prosody or silence)
    silent: float  # chance that a clip has no speech at all
    motion_uninformative: float  # chance that a clip has no motion cue
    motion_bias: float  # how strongly the kind of motion follows the emotion (0 none, 1 fully)


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        name="easy",
        intensity=(0.8, 1.0),
        faint=0.0,
        au_jitter=0.1,
        resting=0.0,
        label_noise=0.0,
        still=StillStyle(shift=0.5, roll=2.0, yaw=4.0, scale=0.03, blur=0.3, noise=(0.5, 2.0), light=0.15),
        face_loss=0.1,
        face_uninformative=0.0,
        pose_motion=0.5,
        audio_uninformative=0.0,
        silent=0.0,
        motion_uninformative=0.0,
        motion_bias=0.9,
    ),
    "paper": Difficulty(
        name="paper",
        intensity=(0.3, 1.0),
        faint=0.1,
        au_jitter=0.3,
        resting=0.25,
        label_noise=0.05,
        still=StillStyle(shift=1.2, roll=5.0, yaw=10.0, scale=0.07, blur=0.8, noise=(1.0, 7.0), light=0.4),
        face_loss=0.35,
        face_uninformative=0.15,
        pose_motion=1.0,
        audio_uninformative=0.25,
        silent=0.1,
        # 0.2 / 0.7: a perfect motion model would reach about 40 % on demo clips (chance 16.7 %), near the
        # paper's activity accuracy once the model's own errors are counted (26.6 % Val, paper Table 1).
        motion_uninformative=0.2,
        motion_bias=0.7,
    ),
}


def get_difficulty(name: str | Difficulty) -> Difficulty:
    if isinstance(name, Difficulty):
        return name
    if name not in DIFFICULTIES:
        raise ValueError(f"difficulty={name!r} is unknown; expected one of {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[name]


# Relative class frequencies in canonical order (angry, disgust, fear, happy, sad, surprise, neutral).
# FER2013 training counts, softened so that disgust is rare (as in FER) but still learnable on small sets.
FER_BALANCE = (1.0, 0.3, 1.0, 1.5, 1.1, 0.8, 1.1)
# TFD labelled counts (437, 457, 424, 758, 441, 459, 1202) relative to the mean.
TFD_BALANCE = (0.74, 0.77, 0.71, 1.27, 0.74, 0.77, 2.01)
# AFEW 5.0 validation per class (paper-spec §10): 64/40/46/63/61/46/63; disgust and surprise are rare.
AFEW_BALANCE = (64, 40, 46, 63, 61, 46, 63)
UNIFORM_BALANCE = (1,) * NUM_CLASSES


def apportion(total: int, weights: tuple[float, ...]) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder; sums exactly)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


@dataclass(frozen=True)
class Preset:
    """How much data to write. AFEW sizes are totals per split, spread over classes by ``afew_balance``."""

    name: str
    fer_per_class: int  # mean FER images per class over all usages (spread by FER_BALANCE)
    tfd: int  # TFD images (labelled and unlabelled)
    tfd_labelled: float  # fraction of TFD images with an expression label
    afew_train: int
    afew_val: int
    afew_test: int
    afew_min_s: float
    afew_max_s: float
    afew_balance: str = "afew"  # afew | uniform
    frame_size: tuple[int, int] = (160, 128)  # width, height; multiples of 16 for the codec

    def afew_counts(self) -> dict[str, list[int]]:
        weights = AFEW_BALANCE if self.afew_balance == "afew" else UNIFORM_BALANCE
        return {
            "Train": apportion(self.afew_train, weights),
            "Val": apportion(self.afew_val, weights),
            "Test": apportion(self.afew_test, weights),
        }

    def fer_counts(self) -> list[int]:
        return apportion(self.fer_per_class * NUM_CLASSES, FER_BALANCE)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Preset:
        if not overrides:
            return self
        fields = {f.name for f in dataclasses.fields(self)} - {"name"}
        unknown = set(overrides) - fields
        if unknown:
            raise ValueError(f"counts has unknown keys {sorted(unknown)}; expected some of {sorted(fields)}")
        if overrides.get("afew_balance", self.afew_balance) not in ("afew", "uniform"):
            raise ValueError(f"afew_balance={overrides['afew_balance']!r}; expected 'afew' or 'uniform'")
        clean = {k: (tuple(v) if k == "frame_size" else v) for k, v in overrides.items()}
        out = dataclasses.replace(self, **clean)
        w, h = out.frame_size
        if w % 16 or h % 16:
            raise ValueError(f"frame_size={out.frame_size}: width and height must be multiples of 16")
        if not 0 < out.afew_min_s <= out.afew_max_s:
            raise ValueError(f"afew_min_s={out.afew_min_s}, afew_max_s={out.afew_max_s}: need 0 < min <= max")
        return out


PRESETS: dict[str, Preset] = {
    # For unit tests and scale=quick: the smallest tree that holds every kind of item.
    "tiny": Preset(
        "tiny",
        fer_per_class=30,
        tfd=100,
        tfd_labelled=0.7,
        afew_train=14,
        afew_val=14,
        afew_test=14,
        afew_min_s=1.0,
        afew_max_s=2.0,
        afew_balance="uniform",
    ),
    # For the demo: the paper CNN learns well above chance in minutes; generated in under a minute on 2 cores.
    "demo": Preset(
        "demo",
        fer_per_class=1500,
        tfd=1000,
        tfd_labelled=0.7,
        afew_train=168,
        afew_val=84,
        afew_test=84,
        afew_min_s=1.0,
        afew_max_s=6.0,
    ),
    # AFEW 5.0 sizes (paper §10); FER at about a third of the real 35,887.
    "paper": Preset(
        "paper",
        fer_per_class=1700,
        tfd=4000,
        tfd_labelled=0.7,
        afew_train=723,
        afew_val=383,
        afew_test=539,
        afew_min_s=1.0,
        afew_max_s=6.0,
    ),
}

# For benchmarks/scaling.py: 100, 400 and 1,600 clips of one length (2 s), split into Train/Val/Test in AFEW 5.0's
# proportions, beside tiny's FER and TFD (the face CNN's cost does not depend on the clips). Only the clip count grows.
SCALING_CLIPS = (100, 400, 1600)


def _scaling_preset(clips: int) -> Preset:
    paper = PRESETS["paper"]
    train, val, test = apportion(clips, (paper.afew_train, paper.afew_val, paper.afew_test))
    return Preset(
        f"scale{clips}",
        fer_per_class=30,
        tfd=100,
        tfd_labelled=0.7,
        afew_train=train,
        afew_val=val,
        afew_test=test,
        afew_min_s=2.0,
        afew_max_s=2.0,
    )


PRESETS.update({f"scale{n}": _scaling_preset(n) for n in SCALING_CLIPS})


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


assert len(FER_BALANCE) == len(TFD_BALANCE) == len(AFEW_BALANCE) == len(EMOTIONS)
