"""FeatureShardWriter streams each rank's features to disk and merges the shards in dataset order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from callbacks.feature_writer import FeatureShardWriter, merge_shards


class Frames:
    """What merge_shards reads of AfewFrameDataset: the clips (id, label), their offsets and frame indices."""

    def __init__(self, lengths):
        self.clips = [SimpleNamespace(clip_id=f"{i:09d}", label=i % 7) for i in range(len(lengths))]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.frame_idx = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)

    def __len__(self):
        return int(self.offsets[-1])


def test_ranks_stream_their_rows_and_the_merge_restores_dataset_order(tmp_path, monkeypatch):
    import callbacks.feature_writer as fw

    monkeypatch.setattr(fw, "MERGE_ROWS", 5)  # several chunks per shard
    dataset, dim = Frames([7, 3, 12]), 6
    n = len(dataset)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, dim)).astype(np.float16)
    logits = rng.normal(size=(n, 7)).astype(np.float32)
    # DistributedSampler over 2 ranks: rank r gets r, r+2, ...; the shorter rank repeats its first sample
    world = 2
    per_rank = [list(range(r, n, world)) for r in range(world)]
    longest = max(len(p) for p in per_rank)
    per_rank = [p + p[: longest - len(p)] for p in per_rank]
    shards = []
    for rank, indices in enumerate(per_rank):
        writer = FeatureShardWriter(tmp_path / "features", ["Val"])
        trainer = SimpleNamespace(global_rank=rank)
        writer.on_predict_epoch_start(trainer, None)
        raw = writer._raw("Val", rank)
        for b in range(0, len(indices), 4):
            idx = indices[b : b + 4]
            prediction = {
                "feature": torch.from_numpy(feats[idx].astype(np.float32)),
                "logits": torch.from_numpy(logits[idx]),
            }
            writer.write_on_batch_end(trainer, None, prediction, idx, None, b, 0)
            writer._feats[0].flush()
            assert raw.stat().st_size == (b + len(idx)) * dim * 2  # on disk as it comes, not held
        assert sum(len(i) for i in writer._index[0]) == len(indices)
        writer._write_shards(rank)
        shards.append(writer._shard("Val", rank))
    out = merge_shards(shards, dataset, tmp_path / "features" / "Val.npz")
    with np.load(out) as z:
        np.testing.assert_array_equal(z["feats"], feats)
        np.testing.assert_array_equal(z["logits"], logits)
        np.testing.assert_array_equal(z["offsets"], dataset.offsets)
        assert z["clip_ids"].tolist() == [c.clip_id for c in dataset.clips]
    assert not list((tmp_path / "features").glob(".*merging*"))


def test_an_incomplete_prediction_is_named(tmp_path):
    dataset = Frames([4])
    writer = FeatureShardWriter(tmp_path / "features", ["Test"])
    trainer = SimpleNamespace(global_rank=0)
    writer.on_predict_epoch_start(trainer, None)
    prediction = {"feature": torch.zeros(2, 3), "logits": torch.zeros(2, 7)}
    writer.write_on_batch_end(trainer, None, prediction, [0, 1], None, 0, 0)
    writer._write_shards(0)
    with pytest.raises(RuntimeError, match="cover 2 of 4 frames"):
        merge_shards([writer._shard("Test", 0)], dataset, tmp_path / "features" / "Test.npz")
