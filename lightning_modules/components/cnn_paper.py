"""The paper's frame-level face CNN (Kahou et al. 2015, final "ShallowLargeFilter" net; paper-spec §2.1).

Three conv blocks conv -> 2x2 max-pool -> ReLU -> dropout on a 44x44 crop, then one linear layer to 7 classes.
The conv bias is added before pooling, which equals the authors' bias-after-pool (max commutes with a per-channel
constant). ``forward`` also returns the RNN feature: block 2 after pooling, before its ReLU (32x11x11 = 3872).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def uniform_fan_in_(module: nn.Module) -> None:
    """Authors' init: weights U(-1/sqrt(fan_in), +1/sqrt(fan_in)), biases zero, for every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PaperCNN(nn.Module):
    def __init__(
        self,
        *,
        in_size: int = 44,
        channels: Sequence[int] = (32, 32, 64),
        kernels: Sequence[int] = (9, 5, 5),
        dropout: float = 0.25,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        if len(channels) != 3 or len(kernels) != 3:
            raise ValueError(
                f"channels and kernels need 3 entries each, got {list(channels)} and {list(kernels)}"
            )
        c_in = 1
        self.convs = nn.ModuleList()
        for c_out, k in zip(channels, kernels, strict=True):
            if k % 2 != 1:
                raise ValueError(f"kernel sizes must be odd ('same' padding), got {k}")
            self.convs.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))
            c_in = c_out
        self.pool = nn.MaxPool2d(2, 2)  # floor: 11 -> 5 at the last block
        self.drop = nn.Dropout(dropout)
        side = in_size // 2 // 2
        self.feature_shape = (channels[1], side, side)
        side //= 2
        self.fc = nn.Linear(channels[2] * side * side, num_classes)
        uniform_fan_in_(self)

    @property
    def feature_dim(self) -> int:
        return math.prod(self.feature_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(torch.relu(self.pool(self.convs[0](x))))
        tap = self.pool(self.convs[1](h))
        h = self.drop(torch.relu(tap))
        h = self.drop(torch.relu(self.pool(self.convs[2](h))))
        return self.fc(h.flatten(1)), tap.flatten(1)
