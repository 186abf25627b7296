"""The frame-level face CNN as a LightningModule (paper-spec §2).

The module owns everything between an aligned, hist-equalised uint8 face and the logits: the normaliser (training
mean and std image, buffers saved in the checkpoint), the crop (random 44x44 in training, centre at eval) and the
horizontal flip. Built from primitive hparams, so ``CNNModule.load_from_checkpoint(path)`` needs no Hydra.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from emotiw.checks import check_number, check_numbers
from lightning_modules.components.cnn_deep import DeepCNN
from lightning_modules.components.cnn_paper import PaperCNN
from lightning_modules.components.cnn_res import ResCNN
from lightning_modules.components.losses import clipped_cross_entropy
from lightning_modules.integrity import (
    CHECKSUM_KEY,
    ChecksummedCheckpoints,
    check_finite,
    tensor_digest,
    verify_tensors,
)

IMAGE_SIZE = 48
# Test-time views by their command-line name: (tta_flip, tta_crops), cheapest first.
VIEWS = {"centre": (False, False), "flip": (True, False), "five": (False, True), "flip+five": (True, True)}


class CNNModule(ChecksummedCheckpoints, L.LightningModule):
    def __init__(
        self,
        *,
        arch: Literal["paper", "deep", "res"] = "paper",
        channels: Sequence[int] = (32, 32, 64),
        kernels: Sequence[int] = (9, 5, 5),
        dropout: float = 0.25,
        deep_widths: Sequence[int] = (64, 128, 256, 512),
        res_stem_width: int = 32,
        res_widths: Sequence[int] = (32, 64, 128, 256),
        res_blocks: Sequence[int] = (1, 1, 2, 1),
        num_classes: int = 7,
        crop_size: int = 44,
        crop_per_batch: bool = True,
        flip_p: float = 0.5,
        rotate_deg: float = 0.0,
        scale_jitter: float = 0.0,
        erase_p: float = 0.0,
        erase_max: float = 0.4,
        mixup_alpha: float = 0.0,
        tta_flip: bool = False,
        tta_crops: bool = False,
        lr: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        lr_schedule: Literal["constant", "onecycle"] = "constant",
        max_lr: float = 0.05,
        prob_clip: float = 1e-6,
        label_smoothing: float = 0.0,
        distil_targets: str | None = None,
        distil_weight: float = 0.5,
        channels_last: bool = False,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Plain containers only: checkpoints must load with torch.load(weights_only=True), which refuses OmegaConf types.
        for key, value in self.hparams.items():
            if isinstance(value, (ListConfig, DictConfig)):
                self.hparams[key] = OmegaConf.to_container(value)
        if not 0 < crop_size <= IMAGE_SIZE:
            raise ValueError(f"crop_size must be in 1..{IMAGE_SIZE}, got {crop_size}")
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0: no mixup), got {mixup_alpha}")
        if not (0 <= erase_p <= 1 and 0 < erase_max <= 1):
            raise ValueError(f"erase_p must be in [0, 1] and erase_max in (0, 1], got {erase_p}, {erase_max}")
        if rotate_deg < 0 or not 0 <= scale_jitter < 1:
            raise ValueError(
                f"rotate_deg must be >= 0 and scale_jitter in [0, 1), got {rotate_deg}, {scale_jitter}"
            )
        if lr_schedule not in ("constant", "onecycle"):
            raise ValueError(f"lr_schedule must be 'constant' or 'onecycle', got {lr_schedule!r}")
        check_numbers("model.channels", channels, min_val=1, integer=True)
        check_numbers("model.kernels", kernels, min_val=1, integer=True)
        check_numbers("model.deep_widths", deep_widths, min_val=1, integer=True)
        check_number("model.num_classes", num_classes, min_val=2, integer=True)
        check_number("model.dropout", dropout, min_val=0, max_val=1, closed="left")
        check_number("model.flip_p", flip_p, min_val=0, max_val=1)
        check_number("model.lr", lr, min_val=0)  # 0 freezes the weights; below 0 climbs the loss
        check_number("model.momentum", momentum, min_val=0, max_val=1, closed="left")
        check_number("model.weight_decay", weight_decay, min_val=0)
        check_number("model.max_lr", max_lr, min_val=0, closed="neither")
        check_number("model.prob_clip", prob_clip, min_val=0, max_val=0.5, closed="left")
        check_number("model.label_smoothing", label_smoothing, min_val=0, max_val=1, closed="left")
        check_number("model.distil_weight", distil_weight, min_val=0, max_val=1)
        if arch == "paper":
            self.net = PaperCNN(
                in_size=crop_size,
                channels=tuple(channels),
                kernels=tuple(kernels),
                dropout=dropout,
                num_classes=num_classes,
            )
        elif arch == "deep":
            self.net = DeepCNN(widths=tuple(deep_widths), dropout=dropout, num_classes=num_classes)
        elif arch == "res":
            self.net = ResCNN(
                stem_width=res_stem_width,
                widths=tuple(res_widths),
                blocks=tuple(res_blocks),
                dropout=dropout,
                num_classes=num_classes,
            )
        else:
            raise ValueError(f"arch must be 'paper', 'deep' or 'res', got {arch!r}")
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # Identity until the datamodule's training statistics are copied in (set_normaliser).
        self.register_buffer("norm_mean", torch.zeros(IMAGE_SIZE, IMAGE_SIZE))
        self.register_buffer("norm_std", torch.ones(IMAGE_SIZE, IMAGE_SIZE))
        self.register_buffer("norm_fitted", torch.tensor(False))
        # distillation targets per training face (setup reads them); never part of a checkpoint
        self._teacher_probs: torch.Tensor | None = None

        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes=num_classes)
        self.test_confmat = MulticlassConfusionMatrix(num_classes=num_classes)

    # ----------------------------------------------------------------- normaliser and crop
    def set_normaliser(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (IMAGE_SIZE, IMAGE_SIZE) or std.shape != mean.shape:
            raise ValueError(
                f"normaliser images must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        self.norm_mean.copy_(mean)
        self.norm_std.copy_(std)
        self.norm_fitted.fill_(True)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        stats = getattr(dm, "normaliser", None)
        if stage == "fit" and stats is not None:
            self.set_normaliser(torch.from_numpy(stats.mean_), torch.from_numpy(stats.std_))
        if stage == "fit" and self.hparams.distil_targets:
            train = getattr(dm, "data", {}).get("train") if dm is not None else None
            if train is None:
                raise ValueError(
                    "model.distil_targets needs a datamodule with a 'train' split (FerTfdDataModule)"
                )
            probs = read_teacher_targets(self.hparams.distil_targets, train.images, self.hparams.num_classes)
            self._teacher_probs = probs.to(self.norm_mean.device)
        if stage == "fit" and self.hparams.init_weights:
            # Here, not in __init__: a resumed run's checkpoint is restored after setup and wins, and loading a
            # finished run's checkpoint never needs the warm-start file to still exist.
            self.warm_start(self.hparams.init_weights)

    def warm_start(self, source: str | Path) -> None:
        """Copy the net's weights (not the normaliser, which stays this data's) from a weights file of
        :func:`save_weights`, a Lightning checkpoint, or ``"shipped"`` (the package's FER2013 weights of this
        architecture)."""
        if str(source) == "shipped":
            from emotiw.assets import BY_ARCH, asset_path

            if self.hparams.arch not in BY_ARCH:
                raise ValueError(
                    f"no shipped weights for arch={self.hparams.arch!r}; shipped: {', '.join(BY_ARCH)}"
                )
            source = asset_path(BY_ARCH[self.hparams.arch])
        path = Path(source)
        state = read_weights(path, "model.init_weights")["state_dict"]
        net_state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        try:
            self.net.load_state_dict(net_state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise ValueError(f"{path}: weights do not fit this CNN ({first})") from None

    def preprocess(
        self, faces: torch.Tensor, *, train: bool, offset: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """uint8 (B,48,48) faces -> z-scored, cropped (and in training augmented) float (B,1,c,c). Eval crops at
        ``offset`` (row, col), the centre by default."""
        x = self._zscore(faces)
        if train and (self.hparams.rotate_deg > 0 or self.hparams.scale_jitter > 0):
            x = self._random_similarity(x)
        c, span = self.hparams.crop_size, IMAGE_SIZE - self.hparams.crop_size
        if train and span > 0:
            b = x.shape[0]
            if self.hparams.crop_per_batch:  # the authors' quirk: one offset for the whole minibatch
                oy, ox = (int(v) for v in torch.randint(0, span + 1, (2,)))
                x = x[:, :, oy : oy + c, ox : ox + c]
            else:
                oy, ox = torch.randint(0, span + 1, (2, b), device=x.device)
                rows = (oy[:, None] + torch.arange(c, device=x.device))[:, :, None]
                cols = (ox[:, None] + torch.arange(c, device=x.device))[:, None, :]
                x = x[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
        else:
            x = self._eval_crop(x, offset)
        if train and self.hparams.flip_p > 0:
            flip = torch.rand(x.shape[0], device=x.device) < self.hparams.flip_p
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if train and self.hparams.erase_p > 0:
            x = self._random_erase(x)
        return self._layout(x)

    def _random_erase(self, x: torch.Tensor) -> torch.Tensor:
        """Beyond the paper: with probability ``erase_p`` per face, set a random rectangle (each side
        U(0.1, erase_max) of the crop) to 0, the mean face, so that no single region decides the class."""
        b, c = x.shape[0], x.shape[-1]
        dev = x.device
        lo, hi = 0.1 * c, self.hparams.erase_max * c
        h = (lo + torch.rand(b, device=dev) * (hi - lo)).long().clamp(min=1)
        w = (lo + torch.rand(b, device=dev) * (hi - lo)).long().clamp(min=1)
        top = (torch.rand(b, device=dev) * (c - h + 1)).long()
        left = (torch.rand(b, device=dev) * (c - w + 1)).long()
        pos = torch.arange(c, device=dev)
        rows = (pos[None] >= top[:, None]) & (pos[None] < (top + h)[:, None])
        cols = (pos[None] >= left[:, None]) & (pos[None] < (left + w)[:, None])
        on = torch.rand(b, device=dev) < self.hparams.erase_p
        hole = rows[:, :, None] & cols[:, None, :] & on[:, None, None]
        return x.masked_fill(hole[:, None], 0.0)

    def _zscore(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.ndim != 3 or faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"faces must be (B, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(faces.shape)}")
        return ((faces.float() - self.norm_mean) / self.norm_std).unsqueeze(1)

    def _eval_crop(self, x: torch.Tensor, offset: tuple[int, int] | None) -> torch.Tensor:
        c, span = self.hparams.crop_size, IMAGE_SIZE - self.hparams.crop_size
        oy, ox = offset if offset is not None else (span // 2, span // 2)
        return x[:, :, oy : oy + c, ox : ox + c]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def _random_similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Beyond the paper: rotate each face by U(-r, r) degrees and scale it by U(1-s, 1+s) about the centre,
        batched on the device; the z-scored border is filled with 0, the mean face."""
        b = x.shape[0]
        angle = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(self.hparams.rotate_deg)
        scale = 1 + (torch.rand(b, device=x.device) * 2 - 1) * self.hparams.scale_jitter
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # ----------------------------------------------------------------- inference
    @property
    def feature_dim(self) -> int:
        """Width of the per-frame feature ``forward`` and ``embed`` return (the IRNN's input size)."""
        return int(self.net.feature_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed input (B,1,c,c) -> (logits (B,7), feature (B,D))."""
        return self.net(x)

    def use_views(self, *, flip: bool, crops: bool) -> CNNModule:
        """Classify with these test-time views from now on (the mirror, the four corner crops); returns self."""
        self.hparams.tta_flip, self.hparams.tta_crops = bool(flip), bool(crops)
        return self

    def _eval_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feature = self(x)
        if self.hparams.tta_flip:  # beyond the paper: average with the mirrored face
            logits = 0.5 * (logits + self(x.flip(-1))[0])
        return logits, feature

    def _eval_logits_faces(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval logits from uint8 faces: the centre crop, or with ``tta_crops`` (beyond the paper) the mean over the
        centre and four corner crops (each with its mirror if ``tta_flip``); the feature is always the centre crop's."""
        z = self._zscore(faces)  # once for every crop
        logits, feature = self._eval_logits(self._layout(self._eval_crop(z, None)))
        if self.hparams.tta_crops:
            span = IMAGE_SIZE - self.hparams.crop_size
            for corner in ((0, 0), (0, span), (span, 0), (span, span)):
                logits = logits + self._eval_logits(self._layout(self._eval_crop(z, corner)))[0]
            logits = logits / 5
        return logits, feature

    @torch.no_grad()
    def embed(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned uint8 faces (B,48,48) -> (logits (B,7), feature (B,D)) in eval mode with the centre crop."""
        was_training = self.training
        self.eval()
        try:
            logits, feature = self._eval_logits_faces(faces.to(self.norm_mean.device))
        finally:
            self.train(was_training)
        return check_finite(logits.float(), self.weights_file), feature.float()

    # ----------------------------------------------------------------- training
    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy against the (smoothed) labels or, with ``teacher`` probabilities (distillation, beyond the
        paper), against ``(1 - distil_weight) * labels + distil_weight * teacher``."""
        logits = logits.float()
        eps, smooth = self.hparams.prob_clip, self.hparams.label_smoothing
        if teacher is None and eps == 0:
            return F.cross_entropy(logits, target, label_smoothing=smooth)
        if teacher is None and smooth == 0:
            return clipped_cross_entropy(logits, target, eps)
        k = logits.shape[-1]
        soft = F.one_hot(target, k).float() * (1 - smooth) + smooth / k
        if teacher is not None:
            soft = (1 - self.hparams.distil_weight) * soft + self.hparams.distil_weight * teacher.float()
        # eps > 0: the authors' loss, cross-entropy on probabilities clipped to [eps, 1 - eps]
        log_probs = logits.softmax(-1).clamp(eps, 1 - eps).log() if eps > 0 else logits.log_softmax(-1)
        return -(soft * log_probs).sum(-1).mean()

    def on_train_start(self) -> None:
        # The sanity check must not leak into the best-so-far value.
        self.val_acc.reset()
        self.val_acc_best.reset()
        # Resume: continue the random streams (shuffling, crops, flips, dropout) where the saved run left them, after
        # the sanity check has drawn from them, so that a resumed run repeats an uninterrupted one exactly.
        states = getattr(self, "_resume_rng_states", None)
        if states is not None:
            torch.set_rng_state(states["torch"])
            name, keys, pos, has_gauss, gauss = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(states["python"])
            self._resume_rng_states = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # Tensors and plain Python values only, so the checkpoint still loads with torch.load(weights_only=True).
        numpy_state = (
            str(name),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        )
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": numpy_state,
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resume_rng_states = checkpoint.get("rng_states")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = self.preprocess(batch["image"], train=True)
        teacher = None
        if self._teacher_probs is not None:
            teacher = self._teacher_probs[batch["index"].to(self._teacher_probs.device)]
        if self.hparams.mixup_alpha > 0:
            # Beyond the paper: mixup, each face blended with another of the batch, the loss blended alike.
            lam = float(torch.distributions.Beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha).sample())
            other = torch.randperm(x.shape[0], device=x.device)
            logits, _ = self(lam * x + (1 - lam) * x[other])
            other_teacher = None if teacher is None else teacher[other]
            loss = lam * self.loss(logits, batch["label"], teacher) + (1 - lam) * self.loss(
                logits, batch["label"][other], other_teacher
            )
        else:
            logits, _ = self(x)
            loss = self.loss(logits, batch["label"], teacher)
        # update() only, logged once per epoch: self.log of a Metric in every step moves the metric to the device on
        # each call, and calling it computes a per-batch value nobody reads (benchmarks/cnn_train.py).
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.argmax(-1), batch["label"])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        self.val_confmat.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, _ = self._eval_logits_faces(batch["image"])
        preds = logits.argmax(-1)
        self.val_acc.update(preds, batch["label"])
        self.val_confmat.update(preds, batch["label"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_confmat.reset()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, _ = self._eval_logits_faces(batch["image"])
        preds = logits.argmax(-1)
        self.test_acc(preds, batch["label"])
        self.test_confmat(preds, batch["label"])
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        logits, feature = self._eval_logits_faces(batch["image"])
        return {"logits": logits.float(), "feature": feature.float(), "index": batch["index"]}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.SGD(
            self.parameters(),
            lr=hp.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            nesterov=hp.nesterov,
        )
        if hp.lr_schedule == "constant":
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=hp.max_lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def images_digest(images: np.ndarray) -> str:
    """sha256 of a face array's pixels: what teacher targets are keyed by."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


@torch.no_grad()
def teacher_probs(teachers: Sequence[CNNModule], images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The mean over ``teachers`` of each one's class probabilities (softmax of its logits under its own test-time
    views) for uint8 faces (N,48,48): the soft targets of ``model.distil_targets``."""
    if not teachers:
        raise ValueError("teacher_probs needs at least one teacher")
    total = np.zeros((len(images), teachers[0].hparams.num_classes), dtype=np.float64)
    for teacher in teachers:
        for i in range(0, len(images), batch_size):
            logits, _ = teacher.embed(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])))
            total[i : i + batch_size] += logits.softmax(-1).double().numpy()
    return (total / len(teachers)).astype(np.float32)


def save_teacher_targets(
    path: str | Path, probs: np.ndarray, images: np.ndarray, teachers: Sequence[str]
) -> Path:
    """Write distillation targets keyed by the faces they were made for (atomic, no pickles)."""
    from emotiw.artifacts import save_npz

    return save_npz(path, probs=probs, key=np.array(images_digest(images)), teachers=np.array(list(teachers)))


def read_teacher_targets(path: str | Path, images: np.ndarray, num_classes: int) -> torch.Tensor:
    """The (N, num_classes) teacher probabilities of ``path`` for exactly these training faces, or a one-line error
    naming the file, the fault and the fix."""
    from emotiw.artifacts import read_cache_npz

    path = Path(path)
    fix = "make them for this run's data with scripts/teacher_targets.py"
    if not path.is_file():
        raise FileNotFoundError(f"model.distil_targets: {path} does not exist; {fix}")
    try:
        probs = np.asarray(read_cache_npz(path, images_digest(images), ["probs"])["probs"])
    except ValueError as err:  # unreadable, or made for other faces (another root, hold-out slice or seed)
        raise ValueError(
            f"{err}; teacher targets must be made for this run's training faces: {fix}"
        ) from None
    if probs.shape != (len(images), num_classes) or not np.isfinite(probs).all():
        raise ValueError(
            f"{path}: probs must be finite, shape ({len(images)}, {num_classes}), got {probs.shape}"
        )
    if probs.min() < 0 or np.abs(probs.sum(1) - 1).max() > 1e-3:
        raise ValueError(f"{path}: probs rows must be distributions (>= 0, summing to 1); {fix}")
    return torch.from_numpy(probs.astype(np.float32))


def save_weights(module: CNNModule, path: str | Path) -> Path:
    """A small, Lightning-free weights file: hparams + state dict (normaliser buffers included), fp32, atomic."""
    from emotiw.artifacts import atomic_path

    state = {
        k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
        for k, v in module.state_dict().items()
    }
    state = {k: v for k, v in state.items() if not k.startswith(("train_", "val_", "test_"))}
    with atomic_path(path) as tmp:
        torch.save(
            {"hparams": dict(module.hparams), "state_dict": state, CHECKSUM_KEY: tensor_digest(state)}, tmp
        )
    Path(path).chmod(0o644)  # a package file: readable by every user (mkstemp creates 0600)
    return Path(path)


def read_weights(path: Path, what: str) -> dict:
    """The blob (``state_dict`` and, in a weights file, ``hparams``) of a :func:`save_weights` file or a Lightning
    checkpoint, with one-line errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"{path}: not a CNN weights file or checkpoint (no state_dict)")
    verify_tensors(
        blob, path, required="hparams" in blob
    )  # weights files always carry one, old checkpoints not
    return blob


def load_cnn(
    *,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
) -> CNNModule:
    """The face CNN in eval mode: ``<run_dir>/cnn/best.ckpt``, a Lightning ``checkpoint`` of ``stage=cnn``, a weights
    file from :func:`save_weights`, or (none given) the weights shipped in ``emotiw/assets`` with their checksum
    verified."""
    if run_dir is not None:
        from emotiw.artifacts import best_ckpt_path

        checkpoint = best_ckpt_path(run_dir, "cnn")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"{checkpoint}: no face CNN checkpoint (run `python train.py stage=cnn` first)"
            )
        # weights_only: tensors and plain values, never code; the checksum hook verifies them and sets weights_file
        return CNNModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    if weights is None:
        from emotiw.assets import asset_path

        weights = asset_path()
    blob = read_weights(Path(weights), "weights")
    if not isinstance(blob.get("hparams"), dict):
        raise ValueError(
            f"{weights}: no hparams (a Lightning checkpoint? load it with --run, or export it with save_weights)"
        )
    module = CNNModule(**blob["hparams"])
    missing, unexpected = module.load_state_dict(blob["state_dict"], strict=False)
    bad_missing = [k for k in missing if not k.startswith(("train_", "val_", "test_"))]
    if bad_missing or unexpected:
        raise ValueError(
            f"{weights}: weights do not fit the CNN (missing {bad_missing}, unexpected {unexpected})"
        )
    module.weights_file = str(weights)
    return module.eval()
