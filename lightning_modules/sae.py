"""SAEModule: trains the synchrony autoencoder on whitened space-time blocks (paper-spec §6.1).

The block whitening (fitted by the datamodule on the fitting split) is stored in the module as buffers, so a
checkpoint alone turns raw 16x16x10 pixel blocks into features: ``SAEModule.load_from_checkpoint(p).folded_encoder()``.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torchmetrics import MeanMetric, MinMetric

from emotiw.activity.encode import FoldedEncoder
from emotiw.checks import check_number
from lightning_modules.components.synchrony_ae import SynchronyAutoencoder
from lightning_modules.integrity import ChecksummedCheckpoints


class SAEModule(ChecksummedCheckpoints, L.LightningModule):
    monitor = "val/loss"
    mode = "min"

    def __init__(
        self,
        n_visible: int,
        n_hidden: int = 300,
        n_pixels: int = 2560,
        contraction: float = 0.1,
        lr: float = 1e-3,
        momentum: float = 0.9,
        init_scale: float = 0.01,
    ):
        super().__init__()
        for key, value in (("n_visible", n_visible), ("n_hidden", n_hidden), ("n_pixels", n_pixels)):
            check_number(f"model.{key}", value, min_val=1, integer=True)
        check_number("model.contraction", contraction, min_val=0)
        check_number("model.lr", lr, min_val=0)
        check_number("model.momentum", momentum, min_val=0, max_val=1, closed="left")
        check_number("model.init_scale", init_scale, min_val=0, closed="neither")
        self.save_hyperparameters()
        self.net = SynchronyAutoencoder(n_visible, n_hidden, init_scale)
        # Whitening folded in: whitened = rownorm(pixels) @ pixel_map + pixel_bias (see emotiw.audio.whitening).
        self.register_buffer("pixel_map", torch.zeros(n_pixels, n_visible))
        self.register_buffer("pixel_bias", torch.zeros(n_visible))
        self.register_buffer("row_constant", torch.zeros(()))
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_loss_best = MinMetric()

    def set_whitening(self, pixel_map: np.ndarray, pixel_bias: np.ndarray, row_constant: float) -> None:
        """Store the fitted block whitening (``ContrastPCAWhitener.affine_map()`` and ``row_constant_``)."""
        pixel_map = torch.as_tensor(np.asarray(pixel_map), dtype=torch.float32)
        if pixel_map.shape != self.pixel_map.shape:
            raise ValueError(
                f"pixel_map has shape {tuple(pixel_map.shape)}, expected {tuple(self.pixel_map.shape)}"
            )
        self.pixel_map.copy_(pixel_map)
        self.pixel_bias.copy_(torch.as_tensor(np.asarray(pixel_bias), dtype=torch.float32))
        self.row_constant.fill_(float(row_constant))

    def folded_encoder(self) -> FoldedEncoder:
        """The encoder on raw pixel blocks: one (n_pixels x n_hidden) matrix and a bias."""
        if float(self.row_constant) <= 0:
            raise RuntimeError("SAEModule has no block whitening; call set_whitening() before training")
        W = self.net.weight.detach().double().cpu()
        matrix = self.pixel_map.double().cpu() @ W
        bias = self.pixel_bias.double().cpu() @ W
        return FoldedEncoder(matrix.numpy(), bias.numpy(), float(self.row_constant))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)

    def model_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x_hat, h, s = self.net(x)
        recon = ((x - x_hat) ** 2).sum(dim=1).mean()
        contractive = self.net.contractive_penalty(s, h).mean()
        return {
            "loss": recon + self.hparams.contraction * contractive,
            "recon": recon,
            "contractive": contractive,
        }

    def on_train_start(self) -> None:
        self.val_loss.reset()
        self.val_loss_best.reset()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model_step(batch["blocks"])
        self.train_loss(out["loss"])
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/recon", out["recon"], on_step=False, on_epoch=True)
        self.log("train/contractive", out["contractive"], on_step=False, on_epoch=True)
        return out["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.model_step(batch["blocks"])
        self.val_loss(out["loss"])
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_loss_best(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
