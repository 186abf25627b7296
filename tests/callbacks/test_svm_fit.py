"""FitSVMOnFeatures: gathers dict batches from predict, fits on the fit splits, tunes on the tune split, writes
chosen.json / svm.skops / probs for every split; the 2-process gathered fit equals the 1-process fit."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from callbacks.gather import ClipTable
from callbacks.svm_fit import FitSVMOnFeatures
from emotiw.artifacts import load_json, load_probs
from emotiw.partitions import Partition
from emotiw.svm import GridSearchSVM, load_svm
from lightning_modules.pass_through import FeaturePassThrough

STANDARD = Partition("standard", fit=("Train",), tune=("Val",))


def make_clips(n_per_class: int = 6, dim: int = 8, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(7, dim)) * 2.5
    clips, k = [], 0
    for split in ("Train", "Val", "Test"):
        for c in range(7):
            for _ in range(n_per_class):
                clips.append(
                    {
                        "clip_id": f"{k:09d}",
                        "split": split,
                        "label": c if split != "Test" else -1,
                        "features": (centres[c] + rng.normal(size=dim)).astype(np.float32),
                    }
                )
                k += 1
    return clips


class ClipDataset(Dataset):
    def __init__(self, clips):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        c = self.clips[i]
        return {
            "clip_id": c["clip_id"],
            "split": c["split"],
            "label": torch.tensor(c["label"]),
            "features": torch.from_numpy(c["features"]),
        }


class ClipDataModule(L.LightningDataModule):
    def __init__(self, clips, batch_size: int = 16):
        super().__init__()
        self.clips, self.batch_size = clips, batch_size

    def predict_dataloader(self):
        return [
            DataLoader(ClipDataset([c for c in self.clips if c["split"] == s]), batch_size=self.batch_size)
            for s in ("Train", "Val", "Test")
        ]


def small_svm():
    return GridSearchSVM(C_grid=(1e-3, 10.0), gamma_grid=(), gamma_per_dim_grid=(0.1, 1.0))


def predict(run_dir, clips, partition=STANDARD, **trainer_kw):
    cb = FitSVMOnFeatures("aggcnn", small_svm(), run_dir=run_dir, partition=partition)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, callbacks=[cb], enable_progress_bar=False, **trainer_kw
    )
    trainer.predict(FeaturePassThrough(), datamodule=ClipDataModule(clips), return_predictions=False)
    return cb, trainer


def test_fit_tune_and_write_every_split(tmp_path):
    clips = make_clips()
    cb, trainer = predict(tmp_path, clips)
    chosen = load_json(tmp_path / "aggcnn" / "chosen.json")
    assert chosen["C"] == 10.0 and chosen["gamma"] in (0.1 / 8, 1.0 / 8)
    assert chosen["fit"] == ["Train"] and chosen["tune"] == ["Val"] and chosen["n_fit"] == 42
    assert cb.metrics["val/acc"] == pytest.approx(chosen["tune_score"])  # tuned on Val, scored on Val
    assert cb.metrics["val/acc"] > 0.6 and cb.metrics["train/acc"] > 0.6
    assert "test/acc" not in cb.metrics  # Test labels withheld
    assert float(trainer.callback_metrics["aggcnn/C"]) == 10.0
    for split in ("Train", "Val", "Test"):
        p = load_probs(tmp_path, "aggcnn", split)
        assert p.probs.shape == (42, 7) and np.allclose(p.probs.sum(1), 1, atol=1e-5)
        assert p.features.shape == (42, 8)
        want = {c["clip_id"]: c for c in clips if c["split"] == split}
        assert sorted(want) == list(p.clip_ids)
        assert np.allclose(p.features, np.stack([want[i]["features"] for i in p.clip_ids]))
    svm = load_svm(tmp_path / "aggcnn" / "svm.skops")
    test = load_probs(tmp_path, "aggcnn", "Test")
    assert np.allclose(svm.predict_proba(test.features), test.probs, atol=1e-6)


def test_retrain_reuses_the_frozen_choice(tmp_path):
    clips = make_clips()
    predict(tmp_path / "runs" / "tuned", clips)
    tuned = load_json(tmp_path / "runs" / "tuned" / "aggcnn" / "chosen.json")
    retrain = Partition("retrain", fit=("Train", "Val"), tune=(), from_run="tuned")
    cb, _ = predict(tmp_path / "runs" / "final", clips, partition=retrain)
    chosen = load_json(tmp_path / "runs" / "final" / "aggcnn" / "chosen.json")
    assert (chosen["C"], chosen["gamma"]) == (tuned["C"], tuned["gamma"])
    assert chosen["n_fit"] == 84 and chosen["tune_score"] is None


def test_retrain_without_the_tuned_run_names_the_file(tmp_path):
    retrain = Partition("retrain", fit=("Train", "Val"), tune=(), from_run="missing")
    with pytest.raises(RuntimeError, match="missing/aggcnn/chosen.json"):
        predict(tmp_path / "runs" / "final", make_clips(2), partition=retrain)


def test_nan_features_fail_naming_the_clip(tmp_path):
    clips = make_clips(2)
    clips[3]["features"][0] = np.nan
    with pytest.raises(RuntimeError, match=r"1 of 42 rows contain NaN or inf \(clip ids: 000000003\)"):
        predict(tmp_path, clips)


def test_fast_dev_run_is_cheap_and_still_writes(tmp_path):
    cb, _ = predict(tmp_path, make_clips(), fast_dev_run=True)
    chosen = load_json(tmp_path / "aggcnn" / "chosen.json")
    assert chosen["C"] == 1e-3  # only the first grid point under fast_dev_run
    assert load_probs(tmp_path, "aggcnn", "Test").probs.shape == (16, 7)  # one batch per split


def test_merge_deduplicates_padded_clips():
    a, b = ClipTable(), ClipTable()
    a.add(
        {
            "clip_id": ["2", "1"],
            "label": torch.tensor([0, 1]),
            "split": ["Train"] * 2,
            "features": torch.tensor([[2.0], [1.0]]),
        }
    )
    b.add(
        {
            "clip_id": ["3", "2"],
            "label": torch.tensor([2, 0]),
            "split": ["Train"] * 2,
            "features": torch.tensor([[3.0], [2.0]]),
        }
    )
    merged = ClipTable.merge([a.arrays(), b.arrays()])
    assert merged["clip_id"].tolist() == ["1", "2", "3"]
    assert merged["features"][:, 0].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(KeyError, match="lacks"):
        a.add({"clip_id": ["4"], "label": torch.tensor([0])})


@pytest.mark.slow
def test_two_process_gather_equals_one_process(tmp_path):
    clips = make_clips(n_per_class=5)  # 35 clips per split: odd, so DistributedSampler pads a duplicate
    predict(tmp_path / "one", clips)
    cb = FitSVMOnFeatures("aggcnn", small_svm(), run_dir=tmp_path / "two", partition=STANDARD)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        callbacks=[cb],
        enable_progress_bar=False,
    )
    trainer.predict(FeaturePassThrough(), datamodule=ClipDataModule(clips), return_predictions=False)
    assert load_json(tmp_path / "one" / "aggcnn" / "chosen.json") == load_json(
        tmp_path / "two" / "aggcnn" / "chosen.json"
    )
    for split in ("Train", "Val", "Test"):
        one, two = (
            load_probs(tmp_path / "one", "aggcnn", split),
            load_probs(tmp_path / "two", "aggcnn", split),
        )
        assert list(one.clip_ids) == list(two.clip_ids) and len(one.clip_ids) == 35
        assert np.array_equal(one.probs, two.probs) and np.array_equal(one.features, two.features)
