"""AfewFeaturesDataModule on fake per-frame feature files in the stage=features format (docs/pipeline.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.afew_features import AfewFeaturesDataModule, collate_sequences
from emotiw.aggcnn import k_average_pool
from emotiw.artifacts import save_npz
from emotiw.partitions import Partition

STANDARD = Partition("standard", fit=("Train",), tune=("Val",))


def write_fake_features(
    run_dir: Path,
    *,
    n_per_class: int = 4,
    dim: int = 3872,
    lengths: tuple[int, int] = (3, 20),
    signal: float = 1.0,
    logit_signal: float | None = None,
    seed: int = 0,
    empty_clips: int = 0,
) -> Path:
    """Write ``<run_dir>/features/{Train,Val,Test}.npz`` where every frame carries its clip's class.

    Frame features are N(0, 1) plus ``signal`` times a per-class direction; logits are N(0, 1) plus ``logit_signal``
    (default ``signal``) on the clip's class. Test labels are -1. ``empty_clips`` Train clips have no frames (no face found).
    """
    rng = np.random.default_rng(seed)
    logit_signal = signal if logit_signal is None else logit_signal
    directions = rng.normal(size=(7, dim)).astype(np.float32)
    clip_no = 0
    for split in ("Train", "Val", "Test"):
        ids, labels, feats, logits, offsets = [], [], [], [], [0]
        for c in np.tile(np.arange(7), n_per_class):
            n = int(rng.integers(lengths[0], lengths[1] + 1))
            if split == "Train" and len(ids) < empty_clips:
                n = 0
            feats.append(rng.normal(size=(n, dim)).astype(np.float32) + signal * directions[c])
            lg = rng.normal(size=(n, 7)).astype(np.float32)
            lg[:, c] += logit_signal
            logits.append(lg)
            ids.append(f"{clip_no:09d}")
            labels.append(c if split != "Test" else -1)
            offsets.append(offsets[-1] + n)
            clip_no += 1
        feats_all = np.concatenate(feats)
        save_npz(
            run_dir / "features" / f"{split}.npz",
            clip_ids=np.array(ids),
            labels=np.array(labels, np.int64),
            offsets=np.array(offsets, np.int64),
            feats=feats_all.astype(np.float16),
            logits=np.concatenate(logits),
            frame_idx=np.arange(len(feats_all), dtype=np.int64),
        )
    return run_dir / "features"


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory) -> Path:
    return write_fake_features(tmp_path_factory.mktemp("run"), n_per_class=3, dim=16, empty_clips=2)


def make_dm(features_dir, **kw) -> AfewFeaturesDataModule:
    dm = AfewFeaturesDataModule(str(features_dir), partition=kw.pop("partition", STANDARD), **kw)
    dm.setup("fit")
    return dm


def test_sequence_batches_are_padded_with_lengths(features_dir):
    dm = make_dm(features_dir, batch_size=8)
    with np.load(features_dir / "Val.npz") as z:
        offsets, feats, ids = z["offsets"], z["feats"], z["clip_ids"]
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"clip_id", "label", "split", "frames", "lengths", "norm_len"}
    assert batch["frames"].dtype == torch.float32 and batch["frames"].shape[0] == 8
    assert batch["frames"].shape[1] == int(batch["lengths"].max())
    for b, cid in enumerate(batch["clip_id"]):
        i = list(ids).index(cid)
        n = offsets[i + 1] - offsets[i]
        assert batch["lengths"][b] == n
        assert np.array_equal(
            batch["frames"][b, :n].numpy(), feats[offsets[i] : offsets[i + 1]].astype(np.float32)
        )
        assert not batch["frames"][b, n:].any()
    assert batch["split"] == ["Val"] * 8
    assert int(batch["norm_len"][0]) == int(np.diff(offsets).max())


def test_train_norm_len_is_the_fit_splits_longest_clip(features_dir):
    both = Partition("retrain", fit=("Train", "Val"), tune=(), from_run="x")
    dm = make_dm(features_dir, partition=both, batch_size=4)
    longest = max(int(np.diff(np.load(features_dir / f"{s}.npz")["offsets"]).max()) for s in ("Train", "Val"))
    assert dm.fit_norm_len() == longest
    assert {int(b["norm_len"][0]) for b in dm.train_dataloader()} == {longest}
    assert len(dm.train_dataloader().dataset) == 21 - 2 + 21
    assert dm.val_dataloader() == []


def test_empty_clips_are_skipped_and_counted(features_dir):
    dm = make_dm(features_dir, pad_to_batch=False)
    assert dm.skipped == {"Train": ["000000000", "000000001"]}
    assert len(dm.train_dataloader().dataset) == 19


def test_train_epoch_is_padded_with_duplicates_to_whole_batches(features_dir):
    # the authors' loader: 19 fit clips with batch 8 -> 24 items, every clip once plus 5 duplicates
    dm = make_dm(features_dir, batch_size=8, seed=3)
    ids = [cid for b in dm.train_dataloader() for cid in b["clip_id"]]
    assert len(ids) == 24 and len(set(ids)) == 19
    assert [len(b["clip_id"]) for b in dm.train_dataloader()] == [8, 8, 8]
    again = [
        cid for b in make_dm(features_dir, batch_size=8, seed=3).train_dataloader() for cid in b["clip_id"]
    ]
    assert sorted(ids) == sorted(again)  # the duplicates come from the seed
    plain = make_dm(features_dir, batch_size=8, pad_to_batch=False)
    assert [len(b["clip_id"]) for b in plain.train_dataloader()] == [8, 8, 3]


def test_pooled_features_are_k_average_pooled_logits(features_dir):
    dm = make_dm(features_dir, representation="pooled", batch_size=64)
    loaders = dm.predict_dataloader()
    assert len(loaders) == 3
    test = next(iter(loaders[2]))
    assert test["features"].shape == (21, 105) and test["split"] == ["Test"] * 21
    assert (test["label"] == -1).all()
    with np.load(features_dir / "Test.npz") as z:
        o, lg = z["offsets"], z["logits"]
    assert np.allclose(test["features"][4].numpy(), k_average_pool(lg[o[4] : o[5]], 15), atol=1e-6)


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Train.npz: no per-frame features .* run stage=features"):
        make_dm(tmp_path)


def test_nan_frames_name_the_clip(tmp_path):
    d = write_fake_features(tmp_path, n_per_class=1, dim=4)
    z = dict(np.load(d / "Val.npz"))
    z["feats"][z["offsets"][2]] = np.nan
    save_npz(d / "Val.npz", **z)
    with pytest.raises(ValueError, match=r"Val.npz: 1 frames of 1 clips contain NaN .*clip ids: 000000009"):
        make_dm(d)


def test_bad_offsets_and_batch_size_are_named(tmp_path):
    d = write_fake_features(tmp_path, n_per_class=1, dim=4)
    z = dict(np.load(d / "Train.npz"))
    z["offsets"] = z["offsets"][:-1]
    save_npz(d / "Train.npz", **z)
    with pytest.raises(ValueError, match=r"7 clip ids but labels \(7,\) and offsets \(7,\)"):
        make_dm(d)
    with pytest.raises(ValueError, match="representation='frames'"):
        make_dm(d, representation="frames")


def test_collate_pads_to_the_batch_longest():
    items = [
        {"clip_id": "a", "label": 1, "split": "Train", "frames": torch.ones(2, 3), "norm_len": 9},
        {"clip_id": "b", "label": 2, "split": "Train", "frames": torch.ones(4, 3), "norm_len": 9},
    ]
    batch = collate_sequences(items)
    assert batch["frames"].shape == (2, 4, 3) and batch["lengths"].tolist() == [2, 4]
    assert batch["frames"][0, 2:].abs().sum() == 0


def test_frames_are_memory_mapped_from_the_file(features_dir):
    dm = make_dm(features_dir)
    file = dm.files["Train"]
    assert isinstance(file.feats, np.memmap)
    with np.load(features_dir / "Train.npz") as z:
        np.testing.assert_array_equal(
            file.frames(3), z["feats"][file.starts[3] : file.starts[3] + file.lengths[3]]
        )
