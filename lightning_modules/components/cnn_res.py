"""A small residual face CNN for the CPU (beyond the paper): more accuracy per multiply-add at 48x48 than the paper net.

A strided 5x5 stem halves the 44x44 crop at once (full-resolution feature maps cost memory passes, not FLOPs, and
dominate the time on a CPU), then stages of basic residual blocks (two 3x3 convs with batch norm, a 1x1 projection
where the shape changes), each stage after the first halving the side and widening: with the defaults 22x22x32 ->
11x11x64 -> 6x6x128 (two blocks) -> 3x3x256, global average pooling, dropout and one linear layer. About 43 M
multiply-adds and 1.5 M parameters per face. ``forward`` returns ``(logits, feature)`` like :class:`PaperCNN`; the
feature is the pooled vector before the head (``feature_dim`` = the last width).

In eval mode without autograd the forward pass runs a copy with every batch norm folded into the conv before it (the
same function, fewer memory passes); the copy is rebuilt whenever a parameter or buffer has changed since it was made.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(h + self.shortcut(x))


class ResCNN(nn.Module):
    def __init__(
        self,
        *,
        stem_width: int = 32,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (1, 1, 2, 1),
        dropout: float = 0.2,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self._arch = {
            "stem_width": stem_width,
            "widths": tuple(widths),
            "blocks": tuple(blocks),
            "dropout": dropout,
            "num_classes": num_classes,
        }
        if len(widths) != len(blocks) or not widths or min(blocks) < 1:
            raise ValueError(
                f"widths and blocks need one entry per stage, blocks >= 1; got {list(widths)} and {list(blocks)}"
            )
        self.stem = _conv_bn(1, stem_width, 5, 2)
        stages: list[nn.Module] = []
        c_in = stem_width
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stages.append(BasicBlock(c_in, w, 2 if i > 0 and j == 0 else 1))
                c_in = w
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._folded: list[tuple[tuple, ResCNN]] = []  # a plain list: the copy is not a registered submodule

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(torch.relu(self.stem(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            self.training or torch.is_grad_enabled()
        ):  # the folded copy's tensors are not this net's parameters
            feature = self._features(x)
            return self.fc(self.drop(feature)), feature
        folded = self.folded()
        feature = folded._features(x)
        return folded.fc(feature), feature

    def _tensor_versions(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in self.state_dict(keep_vars=True).values())

    def folded(self) -> ResCNN:
        """An eval-mode copy with each batch norm folded into its conv (cached until a tensor of this net changes)."""
        key = self._tensor_versions()
        if not self._folded or self._folded[0][0] != key:
            twin = ResCNN(**self._arch)
            twin.stem = _fold(self.stem)
            for i, block in enumerate(self.stages):
                twin.stages[i].conv1, twin.stages[i].conv2 = _fold(block.conv1), _fold(block.conv2)
                twin.stages[i].shortcut = _fold(block.shortcut)
            twin.fc = copy.deepcopy(self.fc)
            layout = (
                torch.channels_last
                if self.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format
            )
            twin = twin.to(device=self.fc.weight.device, memory_format=layout).eval()
            self._folded[:] = [(key, twin)]
        return self._folded[0][1]


def _fold(seq: nn.Module) -> nn.Module:
    if isinstance(seq, nn.Sequential):
        conv, bn = seq
        return fuse_conv_bn_eval(conv, bn)
    return seq
