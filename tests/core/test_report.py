"""The report: accuracies and confusion matrices against hand-computed values, tables, figures, markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotiw.artifacts import ClipProbs, save_json, save_probs
from emotiw.report import PAPER_TABLE2, accuracy, build_report, confusion, table2_rows

C = 7


def one_hot_probs(pred: list[int]) -> np.ndarray:
    p = np.full((len(pred), C), 0.01)
    p[np.arange(len(pred)), pred] = 0.94
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def write(run_dir: Path, model: str, split: str, labels: list[int], pred: list[int]) -> None:
    ids = np.array([f"{split[0]}{i:08d}" for i in range(len(labels))])
    save_probs(run_dir, model, split, ClipProbs(ids, np.array(labels), one_hot_probs(pred)))


def test_accuracy_and_confusion_by_hand(tmp_path: Path) -> None:
    write(tmp_path, "audio", "Val", [0, 0, 1, 1, -1], [0, 1, 1, 1, 3])  # the -1 clip is ignored
    assert accuracy(tmp_path, "audio", "Val") == pytest.approx(0.75)
    cm = confusion(tmp_path, "audio", "Val")
    assert cm.shape == (C, C)
    np.testing.assert_allclose(cm[0, :2], [0.5, 0.5])
    np.testing.assert_allclose(cm[1, :2], [0.0, 1.0])
    assert cm[2:].sum() == 0
    assert accuracy(tmp_path, "audio", "Test") is None  # no file
    write(tmp_path, "irnn", "Test", [-1, -1], [0, 1])
    assert accuracy(tmp_path, "irnn", "Test") is None  # withheld labels


def test_build_report_tables_figures_and_markdown(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for n, acc_test in ((1, [0, 1, 2, 3]), (6, [0, 1, 2, 0])):
        run_dir = runs / f"submission{n}"
        for split in ("Train", "Val", "Test"):
            write(run_dir, "combine", split, [0, 1, 2, 3], acc_test)
    run_dir = runs / "submission1"
    for model, pred in (
        ("aggcnn", [0, 1, 0, 0]),
        ("audio", [0, 0, 0, 0]),
        ("irnn", [0, 1, 2, 0]),
        ("fusion", [0, 1, 2, 3]),
    ):
        for split in ("Train", "Val", "Test"):
            write(run_dir, model, split, [0, 1, 2, 3], pred)
    save_json(
        run_dir / "fusion" / "curves.json",
        [{"epoch": e, "train/acc": 0.1 * e, "val/acc": 0.05 * e} for e in range(1, 6)],
    )
    rep = build_report(run_dir, runs)
    t1 = {r["model"]: r for r in rep.table1}
    assert set(t1) == {"aggcnn", "audio", "irnn", "fusion", "combine"}
    assert t1["irnn"]["val"] == pytest.approx(0.75) and t1["irnn"]["paper_val"] == 0.396
    assert t1["audio"]["val"] == pytest.approx(0.25) and t1["audio"]["paper_train"] == 0.418
    t2 = {r["submission"]: r for r in rep.table2}
    assert set(t2) == {1, 6}
    assert t2[1]["test"] == pytest.approx(1.0) and t2[6]["test"] == pytest.approx(0.75)
    assert t2[6]["paper_test"] == PAPER_TABLE2[6]["Test"] == 52.875
    for key in ("fig4_confusion", "fig5_fusion_curves"):
        path = rep.figures[key]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run_dir / "report.md").read_text()
    assert "| RNN | 75.0 | 84.8 | 75.0 | 39.6 | 75.0 |" in md
    assert (
        "| 6 | refit T+V, hyper-parameters and weights of 4 (combine) | 75.0 | – | 75.0 | – | 75.0 | 52.9 |"
        in md
    )
    assert "![fig4_confusion](report/fig4_confusion_val.png)" in md


def test_report_says_which_combination_was_searched(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "submission2"
    for split in ("Train", "Val", "Test"):
        write(run_dir, "combine", split, [0, 1, 2, 3], [0, 1, 2, 3])
    chosen = {"models": ["aggcnn", "audio", "irnn"], "subset": ["aggcnn", "irnn"], "search_subsets": False}
    save_json(run_dir / "combine" / "chosen.json", {**chosen, "subset": chosen["models"]})
    build_report(run_dir, tmp_path / "runs")
    md = (run_dir / "report.md").read_text()
    assert "weights of all models together (the paper's choice): aggcnn + audio + irnn." in md
    save_json(run_dir / "combine" / "chosen.json", {**chosen, "search_subsets": True, "frozen_from": "sub"})
    build_report(run_dir, tmp_path / "runs")
    md = (run_dir / "report.md").read_text()
    assert (
        "the best of every subset of the models (the authors' script), here aggcnn + irnn, frozen from run sub."
        in md
    )


def test_mean_of_frame_probabilities_baseline_by_hand(tmp_path: Path) -> None:
    """Table 1's paper baseline (23.7 % val): argmax of the mean of each clip's per-frame softmax probabilities."""
    from emotiw.artifacts import save_npz

    def frame(c: int, p: float) -> list[float]:  # logits whose softmax puts p on class c, the rest evenly
        return [float(np.log(p / ((1 - p) / 6))) if k == c else 0.0 for k in range(C)]

    sure = [frame(c, 1 - 1e-9) for c in range(C)]
    frames = [
        *(frame(0, 0.9), frame(0, 0.9), frame(1, 0.9)),  # clip a, label 1: mean says 0 (wrong)
        *(sure[2], frame(5, 0.9), frame(5, 0.9)),  # clip b, label 5: mean 0.6 on 5 vs 0.34 on 2 (right)
        *(frame(3, 0.3), frame(3, 0.3), sure[6]),  # clip c, label 6: mean 0.41 on 6 vs 0.2 on 3 (right)
        frame(4, 0.9),  # clip e, label withheld
    ]
    save_npz(
        tmp_path / "features" / "Val.npz",
        clip_ids=np.array(["a", "b", "c", "d", "e"]),
        labels=np.array([1, 5, 6, 3, -1]),
        offsets=np.array([0, 3, 6, 9, 9, 10]),  # clip d has no frames (no face): not counted
        logits=np.array(frames, np.float32),
    )
    # 2 of 3; the mean of the logits would get 1 (b goes to 2), a majority vote of the frames 1 (c goes to 3)
    assert accuracy(tmp_path, "frame_mean", "Val") == pytest.approx(2 / 3)
    assert accuracy(tmp_path, "frame_mean", "Test") is None
    write(tmp_path, "aggcnn", "Val", [1, 2], [1, 2])
    rows = {r["model"]: r for r in build_report(tmp_path, tmp_path).table1}
    assert rows["frame_mean"]["paper_val"] == 0.237 and rows["frame_mean"]["val"] == pytest.approx(2 / 3)
    assert (
        "| Mean of per-frame CNN probabilities | – | – | 66.7 | 23.7 | – |"
        in (tmp_path / "report.md").read_text()
    )


def test_table2_skips_missing_runs(tmp_path: Path) -> None:
    assert table2_rows(tmp_path) == []
    rep = build_report(tmp_path / "runs" / "empty", tmp_path / "runs")
    assert rep.table1 == [] and rep.figures == {}
    assert "No per-model probabilities" in rep.markdown


@pytest.mark.slow
def test_report_stage_logs_tables_and_images_to_offline_wandb(tmp_path: Path) -> None:
    from tests.helpers import run

    run_dir = tmp_path / "runs" / "rep"
    for model in ("aggcnn", "irnn", "fusion"):
        for split in ("Train", "Val", "Test"):
            write(run_dir, model, split, [0, 1, 2, 3], [0, 1, 1, 3])
    metrics = run(["stage=report", "experiment_name=rep", "logger=wandb"], tmp_path)
    assert metrics["report/wandb"] is True and metrics["val/irnn_acc"] == pytest.approx(0.75)
    offline = list((run_dir / "report" / "wandb").glob("offline-run-*"))
    assert offline and any(p.suffix == ".wandb" for p in offline[0].iterdir())
    media = list((offline[0] / "files" / "media").rglob("*"))
    assert any(p.suffix == ".png" for p in media) and any(p.name.endswith(".table.json") for p in media)
