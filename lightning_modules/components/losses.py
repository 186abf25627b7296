"""The authors' classification cost (paper-spec §2.1, §7): cross-entropy on softmax probabilities clipped to
[eps, 1 - eps] (Theano ``T.clip``): a clipped probability passes no gradient, so a sample the net already gets
right with probability above 1 - eps stops pulling, and one it gets badly wrong stops pushing."""

from __future__ import annotations

import torch


def clipped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean of ``-log(clip(softmax(logits), eps, 1 - eps)[target])``."""
    probs = logits.float().softmax(-1).clamp(eps, 1 - eps)
    return -probs.gather(1, target[:, None]).log().mean()
