"""The reproduction report: the paper's Table 1 and Table 2 next to ours, Figure 4 (confusion matrices of the single
models) and Figure 5 (fusion learning curves), from the artifacts of the run directories.

Accuracies are computed from ``probs/<model>_<split>.npz`` over the clips whose label is known (AFEW Test labels are
-1 in the challenge data; the generated data ships ``Test_labels.csv``, so its Test files carry labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotiw.artifacts import SPLITS, atomic_path, load_probs, probs_path, save_json
from emotiw.labels import EMOTIONS, UNLABELLED

# Table 1 of the paper (models trained on Train), accuracy; fusion MLP and mean-of-frame-probabilities from the text.
PAPER_TABLE1: dict[str, dict[str, float | None]] = {
    "activity": {"Train": 0.983, "Val": 0.266},
    "audio": {"Train": 0.418, "Val": 0.332},
    "aggcnn": {"Train": 0.505, "Val": 0.350},
    "irnn": {"Train": 0.848, "Val": 0.396},
    "fusion": {"Train": None, "Val": 0.437},
    "frame_mean": {"Train": None, "Val": 0.237},
}
# Table 2 of the paper, %; for submissions 4-5 "Train" is the search/stopping partition and "Valid" the fitting one.
PAPER_TABLE2: dict[int, dict[str, float | None]] = {
    1: {"Train": 86.216, "Val": 54.716, "Test": 44.341},
    2: {"Train": 81.997, "Val": 54.447, "Test": 48.979},
    3: {"Train": None, "Val": None, "Test": 50.463},
    4: {"Train": 52.320, "Val": 71.967, "Test": 50.092},
    5: {"Train": 52.742, "Val": 68.463, "Test": 47.680},
    6: {"Train": None, "Val": None, "Test": 52.875},
    7: {"Train": None, "Val": None, "Test": 49.907},
}
SUBMISSION_METHOD = {
    1: "fit T, stop/search V, fusion lr 0.1",
    2: "as 1, stabilised fusion",
    3: "refit T+V, hyper-parameters and weights of 2",
    4: "fit V, stop/search T, fusion lr 0.1",
    5: "as 4, stabilised fusion",
    6: "refit T+V, hyper-parameters and weights of 4",
    7: "random search over 3 + 6 on T+V",
}
MODEL_TITLES = {
    "activity": "Activity",
    "audio": "Audio",
    "aggcnn": "Aggregated CNN",
    "frame_mean": "Mean of per-frame CNN probabilities",
    "irnn": "RNN",
    "fusion": "Fusion MLP",
    "combine": "Random-search combination",
}
SINGLE_MODELS = ("activity", "audio", "aggcnn", "irnn")


def _labelled_predictions(
    run_dir: str | Path, model: str, split: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """(true labels, predicted labels) of the labelled clips; None when the file or the labels are absent."""
    if not probs_path(run_dir, model, split).is_file():
        return None
    cp = load_probs(run_dir, model, split)
    known = cp.labels != UNLABELLED
    if not known.any():
        return None
    return cp.labels[known], cp.probs[known].argmax(1)


def frame_mean_predictions(run_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The paper's baseline (§2.2): per clip, the argmax of the mean of its frames' CNN softmax probabilities, from
    ``<run_dir>/features/<split>.npz``; (true labels, predicted labels) of the labelled clips, or None."""
    path = Path(run_dir) / "features" / f"{split}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        labels, offsets, logits = z["labels"].astype(np.int64), z["offsets"], z["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    lengths = np.diff(offsets)
    keep = (labels != UNLABELLED) & (lengths > 0)
    if not keep.any():
        return None
    means = np.add.reduceat(probs, offsets[:-1][keep], axis=0) / lengths[keep, None]
    return labels[keep], means.argmax(1)


def accuracy(run_dir: str | Path, model: str, split: str) -> float | None:
    """Accuracy of ``model`` on ``split`` over labelled clips; None when the file or the labels are absent.
    ``frame_mean`` is the mean-of-frame-probabilities baseline (:func:`frame_mean_predictions`)."""
    if model == "frame_mean":
        pair = frame_mean_predictions(run_dir, split)
    else:
        pair = _labelled_predictions(run_dir, model, split)
    return None if pair is None else float(np.mean(pair[0] == pair[1]))


def confusion(run_dir: str | Path, model: str, split: str = "Val") -> np.ndarray | None:
    """Row-normalised confusion matrix (true x predicted, canonical label order)."""
    from sklearn.metrics import confusion_matrix

    pair = _labelled_predictions(run_dir, model, split)
    if pair is None:
        return None
    cm = confusion_matrix(*pair, labels=range(len(EMOTIONS)))
    return cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)


def _fmt(v: float | None) -> str:
    """A fraction as a percentage with one decimal; a dash when unknown."""
    return "–" if v is None else f"{v * 100:.1f}"


def _pct(v: float | None) -> str:
    """A value already in percent (the paper's Table 2)."""
    return "–" if v is None else f"{v:.1f}"


@dataclass
class Report:
    """What the report holds, for the markdown, the W&B tables and the tests."""

    table1: list[dict[str, Any]] = field(default_factory=list)
    table2: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""


def table1_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    rows = []
    for model in (*SINGLE_MODELS, "frame_mean", "fusion", "combine"):
        ours = {s: accuracy(run_dir, model, s) for s in SPLITS}
        if all(v is None for v in ours.values()):
            continue
        paper = PAPER_TABLE1.get(model, {})
        rows.append(
            {
                "model": model,
                "title": MODEL_TITLES[model],
                "train": ours["Train"],
                "val": ours["Val"],
                "test": ours["Test"],
                "paper_train": paper.get("Train"),
                "paper_val": paper.get("Val"),
            }
        )
    return rows


def table2_rows(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per submission run present under ``runs_dir`` (its final output: combine, else fusion)."""
    rows = []
    for n in range(1, 8):
        run_dir = Path(runs_dir) / f"submission{n}"
        model = next((m for m in ("combine", "fusion") if probs_path(run_dir, m, "Test").is_file()), None)
        if model is None:
            continue
        ours = {s: accuracy(run_dir, model, s) for s in SPLITS}
        paper = PAPER_TABLE2[n]
        rows.append(
            {
                "submission": n,
                "method": SUBMISSION_METHOD[n],
                "output": model,
                "train": ours["Train"],
                "val": ours["Val"],
                "test": ours["Test"],
                "paper_train": paper["Train"],
                "paper_val": paper["Val"],
                "paper_test": paper["Test"],
            }
        )
    return rows


def plot_confusions(run_dir: str | Path, out: Path, split: str = "Val") -> Path | None:
    """Figure 4: one confusion matrix per single model, side by side."""
    mats = {m: confusion(run_dir, m, split) for m in SINGLE_MODELS}
    mats = {m: c for m, c in mats.items() if c is not None}
    if not mats:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 4.2), squeeze=False)
    short = [e[:2].capitalize() for e in EMOTIONS]
    for ax, (model, cm) in zip(axes[0], mats.items(), strict=True):
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{MODEL_TITLES[model]} ({split})")
        ax.set_xticks(range(len(EMOTIONS)), short)
        ax.set_yticks(range(len(EMOTIONS)), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(EMOTIONS)):
            for j in range(len(EMOTIONS)):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return _save_fig(fig, out)


def plot_learning_curves(curve_files: dict[str, Path], out: Path) -> Path | None:
    """Figure 5: train/val accuracy per epoch of each fusion run given (label -> curves.json)."""
    curves = {k: json.loads(p.read_text()) for k, p in curve_files.items() if p.is_file()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (label, rows) in zip(axes[0], curves.items(), strict=True):
        epochs = [r["epoch"] for r in rows]
        for key, name in (("train/acc", "train"), ("val/acc", "validation")):
            values = [r.get(key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], label=name)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend()
    fig.tight_layout()
    return _save_fig(fig, out)


def _save_fig(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def fusion_curve_files(run_dir: Path, runs_dir: Path) -> dict[str, Path]:
    """This run's fusion curves, plus those of submissions 1 and 2 (Fig. 5a lr 0.1, 5b stabilised) when present."""
    files = {f"{run_dir.name} fusion": run_dir / "fusion" / "curves.json"}
    for n, title in ((1, "Fig. 5a: lr 0.1, no momentum"), (2, "Fig. 5b: lr 0.001, momentum 0.9")):
        path = runs_dir / f"submission{n}" / "fusion" / "curves.json"
        if path.is_file() and path.parent.parent != run_dir:
            files[f"submission{n} ({title})"] = path
    return files


def build_report(run_dir: str | Path, runs_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    """Compute the tables, draw the figures into ``out_dir`` (default ``<run_dir>/report``), write ``report.md``
    into ``run_dir``; returns the :class:`Report`."""
    run_dir, runs_dir = Path(run_dir), Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    rep = Report(table1=table1_rows(run_dir), table2=table2_rows(runs_dir))
    fig4 = plot_confusions(run_dir, out_dir / "fig4_confusion_val.png")
    if fig4:
        rep.figures["fig4_confusion"] = fig4
    fig5 = plot_learning_curves(fusion_curve_files(run_dir, runs_dir), out_dir / "fig5_fusion_curves.png")
    if fig5:
        rep.figures["fig5_fusion_curves"] = fig5
    rep.markdown = render_markdown(rep, run_dir)
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(rep.markdown)
    save_json(out_dir / "tables.json", {"table1": rep.table1, "table2": rep.table2})
    return rep


def combination_note(run_dir: Path) -> str | None:
    """Which weights the random-search combination searched (``combine/chosen.json``): one line, or None."""
    path = Path(run_dir) / "combine" / "chosen.json"
    if not path.is_file():
        return None
    chosen = json.loads(path.read_text())
    how = (
        f"the best of every subset of the models (the authors' script), here {' + '.join(chosen['subset'])}"
        if chosen.get("search_subsets")
        else f"all models together (the paper's choice): {' + '.join(chosen['models'])}"
    )
    frozen = f", frozen from run {chosen['frozen_from']}" if chosen.get("frozen_from") else ""
    return f"Random-search combination: weights of {how}{frozen}."


def render_markdown(rep: Report, run_dir: Path) -> str:
    lines = [
        f"# Reproduction report: {run_dir.name}",
        "",
        "Kahou et al., *Recurrent Neural Networks for Emotion Recognition in Video*, ICMI 2015. Accuracies in %; "
        "ours are computed from `probs/<model>_<split>.npz` over clips with a known label.",
        "",
        "## Table 1: single models and fusion (this run)",
        "",
    ]
    if rep.table1:
        lines += [
            "| model | train (ours) | train (paper) | val (ours) | val (paper) | test (ours) |",
            "|---|---|---|---|---|---|",
        ]
        for r in rep.table1:
            lines.append(
                f"| {r['title']} | {_fmt(r['train'])} | {_fmt(r['paper_train'])} | {_fmt(r['val'])} | "
                f"{_fmt(r['paper_val'])} | {_fmt(r['test'])} |"
            )
        lines += [
            "",
            'The paper\'s Table 1 models are trained on Train; in a swapped run "train" is the tuning '
            'partition and "val" the fitting one. The paper gives the fusion MLP and the mean of per-frame CNN '
            "probabilities (the frame CNN's clip-level baseline) in its text, on val only.",
        ]
    else:
        lines.append("No per-model probabilities in this run yet.")
    if note := combination_note(run_dir):
        lines += ["", note]
    lines += ["", "## Table 2: submissions", ""]
    if rep.table2:
        lines += [
            "| sub | method | train (ours) | train (paper) | valid (ours) | valid (paper) | test (ours) | "
            "test (paper) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rep.table2:
            lines.append(
                f"| {r['submission']} | {r['method']} ({r['output']}) | {_fmt(r['train'])} | "
                f"{_pct(r['paper_train'])} | {_fmt(r['val'])} | {_pct(r['paper_val'])} | "
                f"{_fmt(r['test'])} | {_pct(r['paper_test'])} |"
            )
        lines += [
            "",
            "Submissions 3, 6, 7 have no held-out train/valid numbers in the paper (refit on both); ours "
            "there are in-sample. Test accuracy needs Test labels (the generated data has them).",
        ]
    else:
        lines.append("No `runs/submission<N>` run has final probabilities yet.")
    lines += ["", "## Figures", ""]
    for key, path in rep.figures.items():
        title = {
            "fig4_confusion": "Figure 4: validation confusion matrices of the single models",
            "fig5_fusion_curves": "Figure 5: fusion MLP learning curves",
        }[key]
        lines += [
            f"### {title}",
            "",
            f"![{key}]({path.relative_to(run_dir) if path.is_relative_to(run_dir) else path})",
            "",
        ]
    if not rep.figures:
        lines.append("No figures: no single-model probabilities or fusion curves yet.")
    return "\n".join(lines) + "\n"
