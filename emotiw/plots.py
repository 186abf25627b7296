"""Figures, drawn with plain matplotlib on the Agg backend (no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emotiw.artifacts import atomic_path  # noqa: E402
from emotiw.labels import EMOTIONS  # noqa: E402


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str] = EMOTIONS, title: str = "") -> Figure:
    """Row-normalised confusion matrix (rows = true class) with the counts written in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k} for {k} class names, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / cm.sum() if cm.sum() else float("nan")
    ax.set_title(f"{title} (acc {acc:.3f})".strip())
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def timeline_figure(prediction, title: str = "") -> Figure:
    """The 7 class probabilities of a clip's frames over time, frames without a face shaded grey, the clip's
    decision in the title. ``prediction`` is an :class:`emotiw.pipeline.ClipPrediction`."""
    n = max(1, int(prediction.n_frames))
    times = np.asarray(prediction.frame_times, dtype=np.float64)
    if len(times) != n:  # a still, or no timestamps: frame numbers
        times = np.arange(n, dtype=np.float64)
        xlabel = "frame"
    else:
        xlabel = "time (s)"
    step = float(np.median(np.diff(times))) if n > 1 else 1.0
    edges = np.r_[times, times[-1] + step]  # frame i shows over [edges[i], edges[i + 1])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    has_face = np.zeros(n, dtype=bool)
    has_face[np.asarray(prediction.frame_idx, dtype=np.int64)] = True
    runs = np.flatnonzero(np.diff(np.r_[0, (~has_face).astype(np.int8), 0]))
    for k, (a, b) in enumerate(zip(runs[::2], runs[1::2], strict=True)):
        ax.axvspan(edges[a], edges[b], color="0.85", lw=0, label="no face" if k == 0 else None)
    colours = plt.get_cmap("tab10").colors
    probs = np.asarray(prediction.frame_probs)
    for c, name in enumerate(EMOTIONS):
        # A line through the frames with a face, broken (NaN) across the frames without one.
        y = np.full(n, np.nan)
        y[prediction.frame_idx] = probs[:, c]
        style = {"marker": "o"} if len(prediction.frame_idx) == 1 else {}
        ax.plot(times, y, color=colours[c], lw=1.4, label=name, **style)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability")
    decision = (
        f"{prediction.emotion} ({prediction.confidence:.2f})"
        if prediction.probs is not None
        else "no prediction"
    )
    faces = f"face in {len(prediction.frame_idx)}/{prediction.n_frames} frames"
    ax.set_title(f"{title}: {decision}, {faces}" if title else f"{decision}, {faces}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def save_timeline(path: str | os.PathLike, prediction, title: str = "") -> Path:
    """Write :func:`timeline_figure` as a PNG, atomically."""
    return save_figure(timeline_figure(prediction, title), path)
