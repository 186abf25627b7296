"""IRNNModule: trains the IRNN on per-frame CNN features of AFEW clips (paper-spec §3).

Defaults are the paper's: hidden 200, SGD lr 0.005 without momentum, batch 64 (datamodule), global-norm gradient
clipping 1.0 (trainer ``gradient_clip_val``), up to 1000 epochs keeping the best ``val/acc`` (checkpoint callback).

Loss at each clip's last real frame. ``loss_normalization="paper"`` reproduces the authors' masked cross-entropy
averaged over all B x T_max cells of the padded batch (T_max = the longest clip of the training set, the length they
padded to): ``ce_last.sum() / (B * T_max)``. Their gradient is therefore 1/T_max of a per-clip mean, and the clipping
threshold acts on that scaled gradient, so the choice changes training. ``"clip_mean"`` is the plain per-clip mean.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from emotiw.checks import check_number
from lightning_modules.components.irnn import IRNN
from lightning_modules.integrity import ChecksummedCheckpoints, check_finite

LOSS_NORMALIZATIONS = ("paper", "clip_mean")


class IRNNModule(ChecksummedCheckpoints, L.LightningModule):
    def __init__(
        self,
        input_size: int = 3872,
        hidden_size: int = 200,
        num_classes: int = 7,
        rec_init_scale: float = 1.0,
        in_init_std: float = 0.001,
        out_init_range: float = 0.01,
        lr: float = 0.005,
        momentum: float = 0.0,
        loss_normalization: str = "paper",
    ) -> None:
        super().__init__()
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"loss_normalization={loss_normalization!r} must be one of {LOSS_NORMALIZATIONS}"
            )
        for key, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            check_number(f"model.{key}", value, min_val=1, integer=True)
        check_number("model.num_classes", num_classes, min_val=2, integer=True)
        for key, value in (
            ("rec_init_scale", rec_init_scale),
            ("in_init_std", in_init_std),
            ("out_init_range", out_init_range),
            ("lr", lr),
        ):
            check_number(f"model.{key}", value, min_val=0)
        check_number("model.momentum", momentum, min_val=0, max_val=1, closed="left")
        self.save_hyperparameters()
        self.net = IRNN(input_size, hidden_size, num_classes, rec_init_scale, in_init_std, out_init_range)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits (B, 7), last hidden state (B, 200))."""
        return self.net(frames, lengths)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, norm_len: torch.Tensor | int) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels, reduction="none")
        if self.hparams.loss_normalization == "clip_mean":
            return ce.mean()
        t_max = norm_len.max() if isinstance(norm_len, torch.Tensor) else torch.tensor(norm_len)
        return ce.sum() / (len(ce) * t_max.to(ce.dtype))

    def model_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, _ = self(batch["frames"], batch["lengths"])
        norm_len = batch.get("norm_len", batch["frames"].shape[1])
        return self.loss(logits, batch["label"], norm_len), logits.argmax(1), batch["label"]

    def on_train_start(self) -> None:
        # The sanity check must not leak into the best-so-far accuracy.
        self.val_acc.reset()
        self.val_acc_best.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, preds, labels = self.model_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, preds, labels = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        logits, hidden = self(batch["frames"], batch["lengths"])
        return {
            "clip_id": batch["clip_id"],
            "label": batch["label"],
            "split": batch["split"],
            "probs": check_finite(logits.float(), self.weights_file).softmax(1),
            "features": hidden.float(),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
