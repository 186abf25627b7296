"""Per-item randomness and an order-preserving worker pool: every item depends only on (seed, kind, index)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from emotiw.forking import fork_context
from emotiw.labels import NUM_CLASSES
from emotiw.synth.presets import Difficulty

T = TypeVar("T")

# Stream tags: one independent random stream per kind of item, so adding items of one kind never shifts another.
FER_ITEM, FER_ORDER, FER_IDS = 11, 12, 13
TFD_ITEM, TFD_SUBJECT, TFD_PLAN = 21, 22, 23
AFEW_CLIP, AFEW_PLAN, AFEW_SUBJECT = 31, 32, 33


def item_rng(seed: int, tag: int, index: int) -> np.random.Generator:
    """The random stream of one item: independent of how many items there are and of the order they are made."""
    return np.random.default_rng([int(seed), tag, int(index)])


def shown_expression(rng: np.random.Generator, label: int, diff: Difficulty) -> tuple[int, float]:
    """What the face actually shows: (emotion, intensity), with label noise and faint (uninformative) faces."""
    shown = label
    if rng.random() < diff.label_noise:
        shown = int((label + rng.integers(1, NUM_CLASSES)) % NUM_CLASSES)
    intensity = rng.uniform(*diff.intensity)
    if rng.random() < diff.faint:
        intensity = rng.uniform(0.0, 0.08)
    return shown, float(intensity)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def map_items(
    fn: Callable[..., T], args: Sequence[tuple[Any, ...]], workers: int | None = None, *, min_items: int = 64
) -> list[T]:
    """``[fn(*a) for a in args]``, on a process pool when there are ``min_items`` or more; results in input order."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(args) < min_items:
        return [fn(*a) for a in args]
    with fork_context() as ctx, ctx.Pool(workers) as pool:
        return pool.starmap(fn, args, chunksize=max(1, len(args) // (workers * 32)))
