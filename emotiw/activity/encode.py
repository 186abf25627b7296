"""The SAE encoder on raw pixel blocks, with the block whitening folded into one matrix (paper-spec §6.2)."""

from __future__ import annotations

import numpy as np

from emotiw.audio.whitening import ContrastPCAWhitener


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


class FoldedEncoder:
    """h = sigmoid(s^2), s = rownorm(x) @ A + b, where A = (whitening map) @ W and b = (whitening offset) @ W.

    Built from a fitted ``ContrastPCAWhitener`` and SAE filters ``W`` (n_whitened x K): one matmul per batch of
    blocks instead of whitening then encoding.
    """

    def __init__(self, matrix: np.ndarray, bias: np.ndarray, row_constant: float):
        self.matrix = np.asarray(matrix, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32).reshape(-1)
        if self.matrix.ndim != 2 or self.bias.shape != (self.matrix.shape[1],):
            raise ValueError(f"matrix {self.matrix.shape} and bias {self.bias.shape} do not fit together")
        if not row_constant > 0:
            raise ValueError(f"row_constant={row_constant!r} must be > 0")
        self.row_constant = float(row_constant)

    @classmethod
    def from_whitener(cls, whitener: ContrastPCAWhitener, filters: np.ndarray) -> FoldedEncoder:
        A, b = whitener.affine_map()
        filters = np.asarray(filters, dtype=np.float64)
        if filters.shape[0] != A.shape[1]:
            raise ValueError(
                f"filters have {filters.shape[0]} rows, but the whitener outputs {A.shape[1]} dims"
            )
        return cls(A @ filters, b @ filters, whitener.row_constant_)

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    def responses(self, blocks: np.ndarray) -> np.ndarray:
        x = np.asarray(blocks, dtype=np.float32)
        x = x - x.mean(axis=1, keepdims=True)
        x = x / (x.std(axis=1, keepdims=True) + np.float32(self.row_constant))
        return x @ self.matrix + self.bias

    def encode(self, blocks: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(n, 2560) raw pixel blocks -> (n, K) float32 features in [0.5, 1)."""
        blocks = np.asarray(blocks)
        out = np.empty((blocks.shape[0], self.n_features), dtype=np.float32)
        for i in range(0, blocks.shape[0], batch_size):
            s = self.responses(blocks[i : i + batch_size])
            out[i : i + batch_size] = _sigmoid(s * s)
        return out
