"""stage=fusion and stage=combine under 2-process CPU DDP (trainer=ddp_sim, gloo) against a 1-process run.

The fusion net is trained full-batch with dropout off: one batch (every Train clip plus the seeded padding) per epoch
in one process, one half-batch per rank under DDP whose gradients DDP averages: the same mean gradient. So the two
runs must give the same weights, the same best epoch and the same per-clip probabilities up to float rounding, which
a rank that trained on its shard only, a missing all-reduce or a rank-one write would break. The combiner then
gathers the sharded rows (Test has an odd count, so the sampler pads a duplicate that the gather must drop) and
searches on rank zero: identical weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotiw.artifacts import load_json, load_probs
from tests.helpers import assert_exit, train_py
from tests.stages.fusion_fakes import write_fake_run

# Even Train and Val counts: each rank holds exactly half (no padded duplicate in the gradient or in val/acc).
SIZES = {"Train": 70, "Val": 36, "Test": 35}
EPOCHS = 15
FULL_BATCH = [f"trainer.max_epochs={EPOCHS}", "data.batch_size=128", "model.dropout=0.0", "seed=0"]
SMALL_SEARCH = [
    "combine.estimator.n_samples=300",
    "combine.estimator.decay=0.5",
    "combine.estimator.sigma_min=0.1",
]


def _train_py(args: list[str], root: Path) -> str:
    return assert_exit(train_py(args, root, timeout=900, one_thread=True))


@pytest.mark.slow
@pytest.mark.ddp
def test_fusion_and_combine_under_two_process_ddp_equal_one_process(tmp_path: Path) -> None:
    for exp in ("one", "two"):
        write_fake_run(tmp_path / "runs" / exp, missing={"audio": 5}, sizes=SIZES)
    logs = {}
    for exp, trainer in (("one", "cpu"), ("two", "ddp_sim")):
        logs[exp] = _train_py(
            ["stage=fusion", f"experiment_name={exp}", f"trainer={trainer}", *FULL_BATCH], tmp_path
        )
        logs[exp] += _train_py(
            ["stage=combine", f"experiment_name={exp}", f"trainer={trainer}", *SMALL_SEARCH], tmp_path
        )
    assert "MEMBER: 2/2" in logs["two"] and "MEMBER: 2/2" not in logs["one"]  # rank 1 joined the DDP runs
    # runtime.py prints the outputs line on rank zero only: one per stage
    assert logs["two"].count("[fusion] outputs in") == 1 and logs["two"].count("[combine] outputs in") == 1

    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    c1, c2 = load_json(one / "fusion" / "chosen.json"), load_json(two / "fusion" / "chosen.json")
    assert c1["best_epoch"] == c2["best_epoch"]
    curves1, curves2 = load_json(one / "fusion" / "curves.json"), load_json(two / "fusion" / "curves.json")
    assert len(curves1) == len(curves2) == EPOCHS
    for r1, r2 in zip(curves1, curves2, strict=True):
        # train/acc and val/acc are synced over the ranks: the DDP values cover every clip, not one rank's half
        assert r1["train/acc"] == pytest.approx(r2["train/acc"]) and r1["val/acc"] == pytest.approx(
            r2["val/acc"]
        )
        assert r1["train/loss"] == pytest.approx(r2["train/loss"], rel=1e-4)
    for split, n in SIZES.items():
        a, b = load_probs(one, "fusion", split), load_probs(two, "fusion", split)
        assert len(b.clip_ids) == len(set(b.clip_ids.tolist())) == n  # every clip, once
        np.testing.assert_array_equal(a.clip_ids, b.clip_ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.probs, b.probs, atol=2e-5)
    m1, m2 = load_json(one / "fusion" / "metrics.json"), load_json(two / "fusion" / "metrics.json")
    assert m1["val/acc"] == pytest.approx(m2["val/acc"]) and m1["test/acc"] == pytest.approx(m2["test/acc"])

    w1, w2 = load_json(one / "combine" / "chosen.json"), load_json(two / "combine" / "chosen.json")
    assert w2["models"] == ["aggcnn", "audio", "irnn", "activity", "fusion"]
    assert w2["n_search"] == w1["n_search"] == SIZES["Val"]  # every Val clip gathered once from the two ranks
    np.testing.assert_allclose(w2["weights"], w1["weights"])
    assert w2["search_score"] == w1["search_score"]
    for split, n in SIZES.items():
        a, b = load_probs(one, "combine", split), load_probs(two, "combine", split)
        assert len(b.clip_ids) == len(set(b.clip_ids.tolist())) == n
        np.testing.assert_array_equal(a.clip_ids, b.clip_ids)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
