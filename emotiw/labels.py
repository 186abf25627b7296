"""The one label order of the project and the mapping of every data source into it.

Canonical order (the FER2013 order, used by the authors' code): angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
UNLABELLED = -1

# AFEW folder names, capitalised as the organisers ship them.
AFEW_FOLDERS: tuple[str, ...] = tuple(e.capitalize() for e in EMOTIONS)
# Folders sorted alphabetically (what a tool that enumerates directories sees) -> canonical index.
AFEW_ALPHABETICAL_TO_CANONICAL: tuple[int, ...] = tuple(
    EMOTIONS.index(name.lower()) for name in sorted(AFEW_FOLDERS)
)


def from_name(name: str) -> int:
    """Canonical index of an emotion name in any capitalisation (FER folder, AFEW folder, CSV text)."""
    key = name.strip().lower()
    if key not in EMOTIONS:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)} (any case)")
    return EMOTIONS.index(key)


def from_fer2013(code: int) -> int:
    """FER2013 CSV integers are already in canonical order (0 angry ... 6 neutral)."""
    code = int(code)
    if not 0 <= code < NUM_CLASSES:
        raise ValueError(f"FER2013 emotion code must be in 0..6, got {code}")
    return code


def from_tfd(code: int) -> int:
    """TFD ``labs_ex`` codes 1..7 (anger ... neutral) -> canonical; -1 or 0 (unlabelled) -> UNLABELLED."""
    code = int(code)
    if code in (-1, 0):
        return UNLABELLED
    if not 1 <= code <= NUM_CLASSES:
        raise ValueError(f"TFD expression code must be in 1..7 (or -1/0 for unlabelled), got {code}")
    return code - 1


def to_tfd(index: int) -> int:
    """Canonical index -> TFD ``labs_ex`` code (UNLABELLED -> -1)."""
    return -1 if index == UNLABELLED else int(index) + 1


def afew_folder(index: int) -> str:
    """Canonical index -> AFEW folder name (``Angry`` ... ``Neutral``)."""
    return AFEW_FOLDERS[index]
