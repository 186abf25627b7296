from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.afew_frames import AfewFramesDataModule
from emotiw.partitions import Partition


@pytest.fixture()
def dm(afew_tree, tmp_path):
    root, _ = afew_tree

    def make(**kw):
        kw.setdefault("partition", Partition("standard", ("Train",), ("Val",)))
        module = AfewFramesDataModule(str(root), str(tmp_path / "cache"), face_workers=0, batch_size=4, **kw)
        module.prepare_data()
        module.setup("predict")
        return module

    return make


def test_frames_mode_predict_loaders(dm, afew_tree):
    _, info = afew_tree
    module = dm()
    loaders = module.predict_dataloader()
    assert len(loaders) == 3
    val = list(loaders[1])
    # Val: 200000001 has 9 faces; 200000002 has none and is absent.
    assert sum(len(b["clip_id"]) for b in val) == 9
    first = val[0]
    assert first["face"].shape == (4, 48, 48) and first["face"].dtype == torch.uint8
    assert first["clip_id"] == ["200000001"] * 4 and first["split"] == ["Val"] * 4
    assert first["label"].tolist() == [0] * 4 and first["index"].tolist() == [0, 1, 2, 3]
    assert first["frame_idx"].tolist() == [0, 1, 2, 3]
    assert module.report.without_faces.keys() == {"100000004", "200000002"}


def test_train_and_val_follow_the_partition(dm):
    module = dm()
    train_ids = {c for b in module.train_dataloader() for c in b["clip_id"]}
    val_ids = {c for b in module.val_dataloader() for c in b["clip_id"]}
    assert train_ids == {"100000001", "100000002", "100000003"} and val_ids == {"200000001"}
    swapped = dm(partition=Partition("swapped", ("Val",), ("Train",)))
    assert {c for b in swapped.train_dataloader() for c in b["clip_id"]} == {"200000001"}


def test_clips_mode_concatenates_with_offsets(dm):
    module = dm(mode="clips")
    batch = next(iter(module.predict_dataloader()[0]))  # Train
    assert batch["clip_id"] == ["100000001", "100000002", "100000003"]
    assert batch["offsets"].tolist() == [0, 12, 17, 18]
    assert batch["faces"].shape == (18, 48, 48)
    np.testing.assert_array_equal(batch["frame_idx"][12:17].numpy(), [0, 1, 2, 5, 6])
    assert batch["label"].tolist() == [3, 3, 4]


def test_bad_mode_named(dm):
    with pytest.raises(ValueError, match="mode='video'"):
        dm(mode="video")


def test_loaders_without_partition_explain(afew_tree, tmp_path):
    root, _ = afew_tree
    module = AfewFramesDataModule(str(root), str(tmp_path), face_workers=0, predict_splits=["Val"])
    module.setup("predict")
    with pytest.raises(ValueError, match="need `partition`"):
        module.train_dataloader()


def test_frames_are_read_clip_by_clip_from_the_cache(dm, afew_tree, tmp_path):
    from emotiw.faces import CachedFaces, load_afew_faces

    module = dm()
    # the datamodule holds no faces: each clip's stay in its cache file until served
    assert all(isinstance(c.faces, CachedFaces) for clips in module.clips.values() for c in clips)
    root, _ = afew_tree
    loaded, _ = load_afew_faces(root, ["Train"], tmp_path / "cache", num_workers=0)
    expected = np.concatenate([c.faces for c in loaded])
    served = torch.cat([b["face"] for b in module.predict_dataloader()[0]]).numpy()
    np.testing.assert_array_equal(served, expected)
    data = module.dataset(["Train"])
    assert len(data) == len(expected)
    np.testing.assert_array_equal(data[len(expected) - 1]["face"].numpy(), expected[-1])
    np.testing.assert_array_equal(data[0]["face"].numpy(), expected[0])
