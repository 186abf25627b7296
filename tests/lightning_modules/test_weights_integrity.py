"""Weights the project writes carry a checksum of their tensors, verified on loading; NaN outputs are an error."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.cnn import CNNModule, load_cnn, save_weights
from lightning_modules.fusion import FusionModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def flip_tensor_bytes(path: Path, n: int = 10) -> None:
    """Invert ``n`` bytes inside the largest tensor record of a torch zip file, leaving the archive readable."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(n):
        raw[start + info.file_size // 3 + 4 * k] ^= (
            0x01  # low mantissa bits: finite, slightly different weights
        )
    path.write_bytes(bytes(raw))


def faces(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 48, 48), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_corrupt_weights_file_is_refused(tmp_path):
    torch.manual_seed(0)
    path = save_weights(CNNModule(), tmp_path / "cnn.pt")
    assert torch.equal(load_cnn(weights=path).embed(faces())[0], load_cnn(weights=path).embed(faces())[0])
    flip_tensor_bytes(path)
    # torch itself still reads the file, and the flipped tensors differ: only a checksum can tell
    blob = torch.load(path, map_location="cpu", weights_only=True)
    fresh = torch.load(save_weights(CNNModule(), tmp_path / "other.pt"), weights_only=True)
    assert blob["state_dict"].keys() == fresh["state_dict"].keys()
    with pytest.raises(ValueError, match=r"cnn\.pt: tensor checksum mismatch"):
        load_cnn(weights=path)
    with pytest.raises(ValueError, match=r"cnn\.pt: tensor checksum mismatch"):
        CNNModule().warm_start(path)


def test_bad_weights_file_without_checksum_is_refused(tmp_path):
    # a weights file (it has hparams) always carries a checksum; one without was not written by save_weights
    blob = torch.load(save_weights(CNNModule(), tmp_path / "cnn.pt"), weights_only=True)
    blob.pop("tensor_sha256", None)
    torch.save(blob, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt: no tensor_sha256"):
        load_cnn(weights=tmp_path / "bare.pt")


def _tiny_fit(
    root: Path, ckpt_path: Path | None = None, max_epochs: int = 1
) -> tuple[L.Trainer, FusionModule]:
    g = torch.Generator().manual_seed(0)
    rows = [{"features": torch.randn(6, generator=g), "label": torch.tensor(i % 7)} for i in range(14)]
    loader = DataLoader(rows, batch_size=7)
    model = FusionModule(in_dims=(2, 2, 2), hidden_dims=(3, 3, 3), shared_dim=4)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        accelerator="cpu",
    )
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path)
    return trainer, model


def test_corrupt_lightning_checkpoint_is_refused_on_load_and_resume(tmp_path):
    trainer, model = _tiny_fit(tmp_path)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    again = FusionModule.load_from_checkpoint(tmp_path / "last.ckpt", map_location="cpu")
    assert torch.equal(again.net.shared.weight, model.net.shared.weight)
    assert again.weights_file == str(tmp_path / "last.ckpt")

    flip_tensor_bytes(tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"last\.ckpt: tensor checksum mismatch"):
        FusionModule.load_from_checkpoint(tmp_path / "last.ckpt", map_location="cpu")
    with pytest.raises(ValueError, match=r"last\.ckpt: tensor checksum mismatch"):
        _tiny_fit(tmp_path, ckpt_path=tmp_path / "last.ckpt", max_epochs=2)


def test_bad_nan_weights_are_an_error_naming_the_file(tmp_path):
    module = CNNModule()
    with torch.no_grad():
        module.net.fc.weight[0, 0] = float("nan")
    path = save_weights(module, tmp_path / "diverged.pt")
    model = load_cnn(weights=path)
    with pytest.raises(ValueError, match=r"diverged\.pt: weights give NaN or inf outputs for 4 of 4 inputs"):
        model.embed(faces())


def test_check_finite_names_the_weights_and_counts_rows():
    from lightning_modules.integrity import check_finite

    ok = torch.zeros(3, 7)
    assert check_finite(ok, "w.pt") is ok
    bad = torch.zeros(3, 7)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"^w\.pt: weights give NaN or inf outputs for 1 of 3 inputs"):
        check_finite(bad, "w.pt")
