"""FusionModule: the feature-fusion MLP trained with the authors' loss and optimiser (paper-spec §7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from emotiw.checks import check_number, check_numbers
from lightning_modules.components.fusion_mlp import FUSION_REGULARISERS, FusionMLP, fusion_penalty
from lightning_modules.components.losses import clipped_cross_entropy
from lightning_modules.integrity import ChecksummedCheckpoints, check_finite


class FusionModule(ChecksummedCheckpoints, L.LightningModule):
    """Per-modality dense layers -> shared layer -> softmax over 7 emotions.

    Batches are dicts with ``features`` (B, sum(in_dims)) and ``label`` (B,) (-1 = withheld, ignored by metrics).
    Loss = cross-entropy + ``reg_lambda`` * (L2 + L1 + L21), the L1/L21 part chosen by ``fusion_reg``; with
    ``prob_clip`` > 0 the cross-entropy is the authors' (on probabilities clipped to [prob_clip, 1 - prob_clip]).
    """

    def __init__(
        self,
        in_dims: Sequence[int] = (105, 10, 200),
        hidden_dims: Sequence[int] = (100, 10, 50),
        shared_dim: int = 70,
        n_classes: int = 7,
        dropout: float = 0.3,
        lr: float = 0.1,
        momentum: float = 0.0,
        reg_lambda: float = 3e-5,
        fusion_reg: str = "code_bug",
        max_epochs: int = 500,
        variant: str = "fusion",
        prob_clip: float = 1e-6,
    ) -> None:
        super().__init__()
        # plain lists, so the checkpoint's hparams need no omegaconf types (weights_only loading)
        in_dims, hidden_dims = [int(d) for d in in_dims], [int(d) for d in hidden_dims]
        if fusion_reg not in FUSION_REGULARISERS:
            raise ValueError(f"fusion_reg={fusion_reg!r} must be one of {', '.join(FUSION_REGULARISERS)}")
        check_numbers("model.in_dims", in_dims, min_val=1, integer=True)
        check_numbers("model.hidden_dims", hidden_dims, min_val=1, integer=True)
        check_number("model.shared_dim", shared_dim, min_val=1, integer=True)
        check_number("model.n_classes", n_classes, min_val=2, integer=True)
        check_number("model.dropout", dropout, min_val=0, max_val=1, closed="left")
        check_number("model.lr", lr, min_val=0)
        check_number("model.momentum", momentum, min_val=0, max_val=1, closed="left")
        check_number("model.reg_lambda", reg_lambda, min_val=0)
        check_number("model.max_epochs", max_epochs, min_val=1, integer=True)
        self.save_hyperparameters()
        self.net = FusionMLP(in_dims, hidden_dims, shared_dim, n_classes, dropout)
        self.train_acc = MulticlassAccuracy(n_classes, average="micro", ignore_index=-1)
        self.val_acc = MulticlassAccuracy(n_classes, average="micro", ignore_index=-1)
        self.test_acc = MulticlassAccuracy(n_classes, average="micro", ignore_index=-1)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def penalty(self) -> torch.Tensor:
        return fusion_penalty(self.net, self.hparams.fusion_reg)

    def model_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["features"])
        labels = batch["label"]
        known = labels >= 0
        if not bool(known.any()):
            ce = logits.sum() * 0.0
        elif self.hparams.prob_clip > 0:
            ce = clipped_cross_entropy(logits[known], labels[known], self.hparams.prob_clip)
        else:
            ce = F.cross_entropy(logits[known], labels[known])
        return ce, logits, labels

    def on_train_start(self) -> None:
        self.val_acc.reset()
        self.val_acc_best.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        ce, logits, labels = self.model_step(batch)
        loss = ce + self.hparams.reg_lambda * self.penalty()
        self.train_loss(loss)
        self.train_acc(logits, labels)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ce, logits, labels = self.model_step(batch)
        self.val_loss(ce)
        self.val_acc(logits, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, logits, labels = self.model_step(batch)
        if bool((labels >= 0).any()):
            self.test_acc(logits, labels)
            self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Plain SGD as in the authors' Theano code; torch's momentum form equals their classic momentum at constant lr.
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(check_finite(self(features.to(self.device)), self.weights_file), dim=-1)
        finally:
            self.train(was_training)
