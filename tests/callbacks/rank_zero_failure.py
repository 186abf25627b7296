"""One process of a 2-process gloo group, started per rank by test_rank_zero_failure.py the way torchrun starts
them (``LOCAL_RANK`` etc. in the environment, so Lightning launches nothing): a gathering callback fails on rank zero
only. ``python -m tests.callbacks.rank_zero_failure {clip_probs|feature_shards|svm_fit} OUT_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from callbacks.clip_probs import WriteClipProbs
from callbacks.feature_writer import FeatureShardWriter
from callbacks.svm_fit import FitSVMOnFeatures
from emotiw.partitions import Partition
from emotiw.svm import GridSearchSVM
from lightning_modules.frame_embedder import FrameEmbedder
from lightning_modules.pass_through import FeaturePassThrough

N = 28  # clips (or frames) per split; 4 per class


class Rows(Dataset):
    def __init__(self, split: str, with_probs: bool) -> None:
        rng = np.random.default_rng(0)
        self.split, self.with_probs = split, with_probs
        self.features = rng.normal(size=(N, 4)).astype(np.float32)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        row = {"clip_id": f"{self.split}{i:03d}", "split": self.split, "label": torch.tensor(i % 7)}
        row["features"] = torch.from_numpy(self.features[i])
        if self.with_probs:
            row["probs"] = torch.full((7,), 1 / 7)
        return row


class RowsDataModule(L.LightningDataModule):
    def __init__(self, with_probs: bool) -> None:
        super().__init__()
        self.with_probs = with_probs

    def predict_dataloader(self) -> list[DataLoader]:
        return [DataLoader(Rows(s, self.with_probs), batch_size=8) for s in ("Train", "Val", "Test")]


class Faces(Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        # the keys of datamodules.afew_frames' frames that the writer reads (four frames a clip)
        return {"face": torch.full((48, 48), i, dtype=torch.uint8), "clip_id": f"clip{i // 4:03d}"}


class FacesDataModule(L.LightningDataModule):
    def predict_dataloader(self) -> list[DataLoader]:
        return [DataLoader(Faces(), batch_size=8)]

    def dataset(self, splits):
        raise RuntimeError("no frame table on rank zero (test failure)")


class ZeroCNN(torch.nn.Module):
    feature_dim = 3872

    def embed(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(faces), 7), torch.zeros(len(faces), self.feature_dim)


def main(which: str, out: Path) -> None:
    # A file where the run directory should be: only rank zero writes there, so only rank zero fails.
    blocked = out / "blocked"
    blocked.write_text("")
    if which == "clip_probs":
        module, datamodule = FeaturePassThrough(), RowsDataModule(with_probs=True)
        callback = WriteClipProbs("irnn", blocked / "run")
    elif which == "svm_fit":
        module, datamodule = FeaturePassThrough(), RowsDataModule(with_probs=False)
        svm = GridSearchSVM(C_grid=(1.0,), gamma_grid=(), gamma_per_dim_grid=(1.0,))
        callback = FitSVMOnFeatures(
            "aggcnn", svm, blocked / "run", Partition("standard", ("Train",), ("Val",))
        )
    elif which == "feature_shards":
        module, datamodule = FrameEmbedder(ZeroCNN()), FacesDataModule()
        callback = FeatureShardWriter(out / "features", ["Train"])
    else:
        raise SystemExit(f"unknown case {which!r}")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(module, datamodule=datamodule, return_predictions=False)
    print(f"rank {trainer.global_rank} returned", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
