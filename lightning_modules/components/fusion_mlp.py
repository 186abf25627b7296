"""The feature-fusion MLP of Kahou et al. 2015 (§5.1, Fig. 3) and its structured regularisers (paper-spec §7)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FUSION_REGULARISERS = ("code_bug", "block_fixed", "wu2015")


class RectTanh(nn.Module):
    """max(0, tanh(z)): the activation of the authors' final fusion code (``_rectifiedtanh_dropout``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x).clamp_min(0.0)


def _uniform_fan_in_(layer: nn.Linear) -> None:
    # The authors' init: U(-1/sqrt(n_in), 1/sqrt(n_in)) weights, zero biases.
    bound = layer.in_features**-0.5
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)


class FusionMLP(nn.Module):
    """One dense layer per modality -> concatenation -> shared dense layer + dropout -> class logits.

    Input: the modality features concatenated in ``in_dims`` order (aggregated CNN 105 | audio 10 | RNN 200).
    """

    def __init__(
        self,
        in_dims: Sequence[int] = (105, 10, 200),
        hidden_dims: Sequence[int] = (100, 10, 50),
        shared_dim: int = 70,
        n_classes: int = 7,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if len(in_dims) != len(hidden_dims):
            raise ValueError(
                f"in_dims={list(in_dims)} and hidden_dims={list(hidden_dims)} must have one entry per "
                "modality"
            )
        self.in_dims = tuple(int(d) for d in in_dims)
        self.modality = nn.ModuleList(nn.Linear(i, h) for i, h in zip(self.in_dims, hidden_dims, strict=True))
        self.shared = nn.Linear(sum(hidden_dims), shared_dim)
        self.out = nn.Linear(shared_dim, n_classes)
        self.act = RectTanh()
        self.dropout = nn.Dropout(dropout)
        for layer in (*self.modality, self.shared, self.out):
            _uniform_fan_in_(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != sum(self.in_dims):
            raise ValueError(
                f"fusion input has {x.shape[-1]} features, expected {sum(self.in_dims)} "
                f"(modalities {list(self.in_dims)})"
            )
        parts = torch.split(x, self.in_dims, dim=-1)
        h = torch.cat([self.act(layer(p)) for layer, p in zip(self.modality, parts, strict=True)], dim=-1)
        return self.out(self.dropout(self.act(self.shared(h))))

    def weight_matrices(self) -> list[torch.Tensor]:
        """Every weight matrix (no biases), in the (n_in, n_out) orientation of the authors' code."""
        return [layer.weight.T for layer in (*self.modality, self.shared, self.out)]


def _row_norms(m: torch.Tensor) -> torch.Tensor:
    # sqrt with a tiny floor: all-zero rows (e.g. the unused rows of the code_bug matrix) must not give NaN grads.
    return torch.sqrt((m * m).sum(dim=1) + 1e-12) - 1e-6


def l2_penalty(net: FusionMLP) -> torch.Tensor:
    """Sum of squared weights of all weight matrices (modality, shared, output)."""
    return sum((w * w).sum() for w in net.weight_matrices())


def code_bug_matrix(net: FusionMLP) -> torch.Tensor:
    """The (sum in, sum hidden) matrix the authors meant to fill block-diagonally with the modality weights.

    Their loop never advanced the offsets, so every block lands at (0, 0) and later blocks overwrite earlier ones.
    """
    mods = [layer.weight.T for layer in net.modality]
    m = mods[0].new_zeros(sum(w.shape[0] for w in mods), sum(w.shape[1] for w in mods))
    for w in mods:
        m = m.clone()
        m[: w.shape[0], : w.shape[1]] = w
    return m


def structured_penalty(net: FusionMLP, kind: str) -> torch.Tensor:
    """L1 + L21 (sum of row 2-norms, rows = input units) of the chosen regulariser (paper-spec §7)."""
    if kind == "code_bug":
        m = code_bug_matrix(net)
        return m.abs().sum() + _row_norms(m).sum()
    if kind == "block_fixed":
        return sum(w.abs().sum() + _row_norms(w).sum() for w in (layer.weight.T for layer in net.modality))
    if kind == "wu2015":
        # Rows of the torch weight = shared units; each unit's incoming weights across all modalities form a group.
        w = net.shared.weight
        return w.abs().sum() + _row_norms(w).sum()
    raise ValueError(f"fusion_reg={kind!r} must be one of {', '.join(FUSION_REGULARISERS)}")


def fusion_penalty(net: FusionMLP, kind: str) -> torch.Tensor:
    """L2 + L1 + L21: the term the authors' loss adds with one weight (3e-5)."""
    return l2_penalty(net) + structured_penalty(net, kind)
