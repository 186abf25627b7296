"""data.device: faces held on a device and indexed a whole batch at a time give exactly the batches of the default
loader (same order every epoch, padded last batch included), without per-face collation."""

from __future__ import annotations

import pytest
import torch

from datamodules.fer_tfd import FerTfdDataModule
from emotiw.synth import make_fer, write_fer_images


@pytest.mark.parametrize("pad_to_batch", [True, False])
def test_device_batches_equal_the_default_loaders(tmp_path, pad_to_batch):
    write_fer_images(tmp_path / "fer", make_fer(12, seed=0, workers=1))
    common = dict(
        root=str(tmp_path / "fer"),
        fer_format="images",
        fer_train="training",
        val_source="fer_holdout",
        holdout_fraction=0.2,
        batch_size=16,
        pad_to_batch=pad_to_batch,
        seed=3,
    )
    plain, on_device = FerTfdDataModule(**common), FerTfdDataModule(**common, device="cpu")
    for dm in (plain, on_device):
        dm.setup("fit")
    for epoch in (0, 1):
        loaders = []
        for dm in (plain, on_device):
            loader = dm.train_dataloader()
            loader.sampler.set_epoch(epoch)  # what Lightning calls each epoch
            loaders.append(list(loader))
        a, b = loaders
        assert len(a) == len(b) > 1
        for x, y in zip(a, b, strict=True):
            for key in ("image", "label", "index"):
                assert torch.equal(torch.as_tensor(x[key]), y[key]), (epoch, key)
    if pad_to_batch:
        assert all(len(batch["label"]) == 16 for batch in a)
    for x, y in zip(plain.val_dataloader(), on_device.val_dataloader(), strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
