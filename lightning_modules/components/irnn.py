"""The IRNN of Kahou et al. 2015 (§2.2): a ReLU RNN with identity-initialised recurrence over per-frame CNN features.

h_t = ReLU(W_in x_t + W_rec h_{t-1}), h_0 = 0, no hidden bias; y = softmax(W_out h_{len-1} + b_out) read at each
clip's last real frame (paper-spec §3). Init (Le et al. 2015's IRNN recipe, the authors' code): W_rec = scale * I,
W_in ~ N(0, 0.001^2), W_out ~ U(-0.01, 0.01), b_out = 0.

Speed (``benchmarks/irnn.py``): the input projection W_in x_t of every frame (~99% of the FLOPs) is done here as one
(B*T, 3872) x (3872, 200) matmul on the batch-first input; the recurrence runs inside ``torch.nn.RNN`` (cuDNN on GPU,
ATen on CPU), never in a Python loop, fed the projected (B, T, 200) sequence through a frozen identity input matrix.
Handing ``nn.RNN`` the 3872-d frames directly makes it copy the whole batch to time-major order first.
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
        self.input_proj = nn.Linear(input_size, hidden_size, bias=False)  # W_in
        self.rnn = nn.RNN(
            hidden_size, hidden_size, nonlinearity="relu", bias=False, batch_first=True
        )  # W_rec
        self.out = nn.Linear(hidden_size, num_classes)
        with torch.no_grad():
            self.input_proj.weight.normal_(0.0, in_init_std)
            self.rnn.weight_ih_l0.copy_(torch.eye(hidden_size))
            self.rnn.weight_hh_l0.copy_(rec_init_scale * torch.eye(hidden_size))
            self.out.weight.uniform_(-out_init_range, out_init_range)
            self.out.bias.zero_()
        # The projection is done by input_proj; the RNN's own input matrix stays the identity.
        self.rnn.weight_ih_l0.requires_grad_(False)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, D) zero-padded at the end, lengths (B,) >= 1 -> (logits (B, C), last hidden (B, H))."""
        if frames.ndim != 3:
            raise ValueError(f"frames must be (batch, time, features), got shape {tuple(frames.shape)}")
        if lengths.min() < 1 or lengths.max() > frames.shape[1]:
            raise ValueError(f"lengths must be in 1..{frames.shape[1]}, got {lengths.min()}..{lengths.max()}")
        hidden, _ = self.rnn(self.input_proj(frames))
        # The recurrence is causal, so the state at the last real frame ignores the padding after it.
        idx = (lengths.to(hidden.device) - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        last = hidden.gather(1, idx).squeeze(1)
        return self.out(last), last
