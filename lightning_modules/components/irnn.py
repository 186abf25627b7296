"""The IRNN of Kahou et al. 2015 (§2.2): a ReLU RNN with identity-initialised recurrence over per-frame CNN features.

h_t = ReLU(W_in x_t + W_rec h_{t-1}), h_0 = 0, no hidden bias; y = softmax(W_out h_{len-1} + b_out) read at each
clip's last real frame (paper-spec §3). Init (Le et al. 2015's IRNN recipe, the authors' code): W_rec = scale * I,
W_in ~ N(0, 0.001^2), W_out ~ U(-0.01, 0.01), b_out = 0.

The time loop runs inside ``torch.nn.RNN`` (cuDNN on GPU, ATen on CPU, where the input projection of all frames is
one matmul), never in Python; see ``benchmarks/irnn.py``.
"""

from __future__ import annotations

import torch
from torch import nn


class IRNN(nn.Module):
    def __init__(
        self,
        input_size: int = 3872,
        hidden_size: int = 200,
        num_classes: int = 7,
        rec_init_scale: float = 1.0,
        in_init_std: float = 0.001,
        out_init_range: float = 0.01,
    ) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="relu", bias=False, batch_first=True)
        self.out = nn.Linear(hidden_size, num_classes)
        with torch.no_grad():
            self.rnn.weight_ih_l0.normal_(0.0, in_init_std)
            self.rnn.weight_hh_l0.copy_(rec_init_scale * torch.eye(hidden_size))
            self.out.weight.uniform_(-out_init_range, out_init_range)
            self.out.bias.zero_()

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, D) zero-padded at the end, lengths (B,) >= 1 -> (logits (B, C), last hidden (B, H))."""
        if frames.ndim != 3:
            raise ValueError(f"frames must be (batch, time, features), got shape {tuple(frames.shape)}")
        if lengths.min() < 1 or lengths.max() > frames.shape[1]:
            raise ValueError(f"lengths must be in 1..{frames.shape[1]}, got {lengths.min()}..{lengths.max()}")
        hidden, _ = self.rnn(frames)
        # The recurrence is causal, so the state at the last real frame ignores the padding after it.
        idx = (lengths.to(hidden.device) - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        last = hidden.gather(1, idx).squeeze(1)
        return self.out(last), last
