"""AFEW look-alike clips: NOT WRITTEN YET (step 2); generate() currently writes no AFEW tree."""

from __future__ import annotations


def write_afew(root, preset, *, seed, difficulty, workers=None) -> dict:
    return {}
