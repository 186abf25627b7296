"""The synchrony autoencoder (Konda et al., ICLR 2014) as used by the paper's activity model (paper-spec §6.1)."""

from __future__ import annotations

import torch
from torch import nn


class SynchronyAutoencoder(nn.Module):
    """Encoder h = sigmoid((W^T x)^2) without hidden bias; decoder x_hat = W (h * s) + b_vis with s = W^T x.

    Squaring the summed response of a filter spread over the frames of a block multiplies its per-frame responses
    pairwise: a unit fires when the frames move in step with the filter (a motion-energy detector).
    """

    def __init__(self, n_visible: int, n_hidden: int = 300, init_scale: float = 0.01):
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"n_visible={n_visible} and n_hidden={n_hidden} must be positive")
        self.weight = nn.Parameter(torch.empty(n_visible, n_hidden).uniform_(-init_scale, init_scale))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        s = self.responses(x)
        return torch.sigmoid(s * s)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (x_hat, h, s)."""
        s = self.responses(x)
        h = torch.sigmoid(s * s)
        x_hat = (h * s) @ self.weight.T + self.visible_bias
        return x_hat, h, s

    def contractive_penalty(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Per-sample ||dh/dx||_F^2 in closed form: h_k depends on x only through s_k = w_k^T x, so
        dh_k/dx = sigmoid'(s_k^2) 2 s_k w_k and the squared norm is sum_k (2 s_k h_k (1 - h_k))^2 ||w_k||^2."""
        grad = 2.0 * s * h * (1.0 - h)
        return (grad * grad) @ (self.weight * self.weight).sum(dim=0)
