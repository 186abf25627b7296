"""Weights that are what was written, and outputs that are numbers.

Every weights file and Lightning checkpoint the project writes carries ``tensor_sha256``, a sha256 over its state
dict's tensors (names, dtypes, shapes, bytes); loading recomputes it, so flipped bytes are an error naming the file
instead of a silently different prediction. :func:`check_finite` turns NaN or inf outputs (diverged or damaged
weights) into an error naming the weights file rather than a confident argmax.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CHECKSUM_KEY = "tensor_sha256"


def tensor_digest(state: Mapping[str, Any]) -> str:
    """sha256 over the tensors of a state dict in key order: each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class WeightsError(ValueError):
    """A weights file or checkpoint that must not be used; the message starts with the file (when known)."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path if path is not None else 'checkpoint'}: {problem}")


def verify_tensors(blob: Mapping[str, Any], path: str | Path | None, *, required: bool = False) -> None:
    """Raise :class:`WeightsError` naming ``path`` if the blob's tensors do not match its recorded checksum.

    A blob without a checksum passes unless ``required`` (checkpoints written before checksums still load)."""
    recorded = blob.get(CHECKSUM_KEY)
    if recorded is None:
        if required:
            raise WeightsError(
                path,
                f"no {CHECKSUM_KEY} (written before weights carried checksums); export it again with "
                "lightning_modules.cnn.save_weights",
            )
        return
    if tensor_digest(blob["state_dict"]) != recorded:
        raise WeightsError(
            path,
            "tensor checksum mismatch: the weights changed after they were written (damaged copy or disk); "
            "copy the file again or retrain",
        )


def check_finite(outputs: torch.Tensor, weights: str | Path | None) -> torch.Tensor:
    """Return ``outputs`` if every value is finite; else raise ``ValueError`` naming the weights file."""
    bad = ~torch.isfinite(outputs)
    if bool(bad.any()):
        rows = int(bad.reshape(len(outputs), -1).any(1).sum()) if outputs.ndim else 1
        raise ValueError(
            f"{weights if weights is not None else 'the model'}: weights give NaN or inf outputs for {rows} of "
            f"{len(outputs) if outputs.ndim else 1} inputs (a diverged or damaged model); retrain or use other weights"
        )
    return outputs


class ChecksummedCheckpoints:
    """LightningModule mixin: checkpoints carry :data:`CHECKSUM_KEY`, verified on every load (resume, test, predict
    and ``load_from_checkpoint``); ``weights_file`` remembers where the weights came from, for error messages."""

    weights_file: str | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKSUM_KEY] = tensor_digest(checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        trainer = getattr(self, "_trainer", None)
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        verify_tensors(checkpoint, path)
        if path is not None:
            self.weights_file = str(path)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        try:
            module = super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except WeightsError as err:
            if err.path is None:  # the hook cannot see the file: name it here
                raise WeightsError(checkpoint_path, err.problem) from None
            raise
        module.weights_file = str(checkpoint_path)
        return module
