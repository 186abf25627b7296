"""A deeper face CNN for users with a GPU (beyond the paper): VGG-style 3x3 conv pairs with batch norm.

Four stages of two 3x3 convs (64-128-256-512) with BN + ReLU, 2x2 max-pool after each, then global average
pooling, dropout and a 2-layer head. ``forward`` returns ``(logits, feature)`` like :class:`PaperCNN`; the feature is
the pooled 512-d vector before the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeepCNN(nn.Module):
    def __init__(
        self,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        dropout: float = 0.4,
        hidden: int = 256,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for w in widths:
            for _ in range(2):
                layers += [
                    nn.Conv2d(c_in, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                ]
                c_in = w
            layers.append(nn.MaxPool2d(2, 2))
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c_in, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.body(x).mean(dim=(2, 3))
        return self.head(feature), feature
