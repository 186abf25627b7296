"""FusionFeaturesDataModule: clip features of several models aligned by clip id, missing modalities, padded epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.fusion_features import FusionFeaturesDataModule, load_fused_split, padded_index
from emotiw.artifacts import ClipProbs, load_probs, save_probs
from tests.helpers import compose_cfg
from tests.stages.fusion_fakes import write_fake_run

SIZES = {"Train": 21, "Val": 14, "Test": 7}
MODELS = ("aggcnn", "audio", "irnn")


def test_padded_index_keeps_every_clip_once_then_pads_with_random_duplicates() -> None:
    idx = padded_index(5, 4, seed=0)
    assert len(idx) == 8 and list(idx[:5]) == [0, 1, 2, 3, 4]
    assert len(set(idx[5:].tolist())) == 3 and set(idx[5:].tolist()) <= set(
        range(5)
    )  # distinct while possible
    assert list(padded_index(8, 4, seed=0)) == list(range(8))  # already a multiple: nothing added
    many = padded_index(3, 128, seed=1)
    assert len(many) == 128 and set(many.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(padded_index(70, 128, seed=2), padded_index(70, 128, seed=2))
    assert not np.array_equal(padded_index(70, 128, seed=2), padded_index(70, 128, seed=3))
    with pytest.raises(ValueError, match="multiple=0"):
        padded_index(5, 0, seed=0)


def test_missing_modality_is_zeros_or_dropped(tmp_path: Path) -> None:
    write_fake_run(tmp_path, models=MODELS, missing={"audio": 3}, sizes=SIZES)
    fused = load_fused_split(tmp_path, MODELS, "Val", in_dims=(105, 10, 200))
    assert fused.features.shape == (14, 315) and len(fused.clip_ids) == 14
    audio = load_probs(tmp_path, "audio", "Val")
    missing = ~np.isin(fused.clip_ids, audio.clip_ids)
    assert missing.sum() == 3
    np.testing.assert_array_equal(fused.features[missing, 105:115], 0.0)
    np.testing.assert_array_equal(fused.present[:, 1], ~missing)
    row = int(np.flatnonzero(~missing)[0])
    src = int(np.flatnonzero(audio.clip_ids == fused.clip_ids[row])[0])
    np.testing.assert_array_equal(
        fused.features[row, 105:115], audio.features[src]
    )  # the audio block, in place
    dropped = load_fused_split(tmp_path, MODELS, "Val", missing="drop")
    assert len(dropped.clip_ids) == 11 and dropped.present.all()
    with pytest.raises(ValueError, match=r"in_dims\[1\]=12"):
        load_fused_split(tmp_path, MODELS, "Val", in_dims=(105, 12, 200))


def test_a_label_that_disagrees_between_models_is_named(tmp_path: Path) -> None:
    write_fake_run(tmp_path, models=MODELS, sizes=SIZES)
    irnn = load_probs(tmp_path, "irnn", "Val")
    labels = irnn.labels.copy()
    labels[0] = (labels[0] + 1) % 7
    save_probs(tmp_path, "irnn", "Val", ClipProbs(irnn.clip_ids, labels, irnn.probs, irnn.features))
    with pytest.raises(
        ValueError, match=rf"irnn_Val.npz: clip {irnn.clip_ids[0]} has a label that disagrees"
    ):
        load_fused_split(tmp_path, MODELS, "Val")


def test_training_epoch_is_padded_to_whole_batches_validation_is_not(tmp_path: Path) -> None:
    write_fake_run(tmp_path, models=MODELS, sizes=SIZES)
    dm = FusionFeaturesDataModule(
        str(tmp_path), batch_size=8, fit_splits=["Train", "Val"], tune_splits=[], seed=0
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(b["clip_id"]) for b in batches] == [8] * 5  # 35 fit clips + 5 duplicates
    seen = [c for b in batches for c in b["clip_id"]]
    assert set(seen) == set(dm.data["Train"].clip_ids) | set(dm.data["Val"].clip_ids) and len(set(seen)) == 35
    assert dm.val_dataloader() == []  # retrain: nothing tunes
    plain = FusionFeaturesDataModule(str(tmp_path), batch_size=8, pad_to_batch=False)
    plain.setup("fit")
    assert len(plain.train_dataloader().dataset) == 21 and len(plain.val_dataloader().dataset) == 14


def test_fusion_data_config_pins_the_authors_batch_and_padding(tmp_path: Path) -> None:
    data = compose_cfg(["stage=fusion", "seed=5"], tmp_path).data
    assert (data.batch_size, data.pad_to_batch, data.seed) == (128, True, 5)
    assert list(data.models) == ["aggcnn", "audio", "irnn"] and data.missing == "zeros"
