"""IRNN: paper init, last-real-frame loss against a hand computation, padding invariance, paper config defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modules.components.irnn import IRNN
from lightning_modules.irnn import IRNNModule
from tests.helpers import compose_cfg


def test_paper_init_and_size():
    torch.manual_seed(0)
    net = IRNN()
    assert torch.equal(net.rnn.weight_hh_l0, torch.eye(200))
    w_in = net.input_proj.weight
    assert w_in.shape == (200, 3872)
    assert w_in.mean().abs() < 1e-4 and w_in.std().item() == pytest.approx(0.001, rel=0.02)
    assert net.out.weight.abs().max() <= 0.01 and net.out.weight.abs().max() > 0.009
    assert not net.out.bias.any()
    assert net.rnn.bias is False and net.rnn.nonlinearity == "relu" and net.input_proj.bias is None
    # the RNN's own input matrix is a frozen identity (the projection is input_proj)
    assert torch.equal(net.rnn.weight_ih_l0, torch.eye(200)) and not net.rnn.weight_ih_l0.requires_grad
    # trainable: 3872*200 + 200^2 + 200*7 + 7 (paper-spec §3)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 815_807
    assert torch.equal(
        IRNN(input_size=4, hidden_size=3, rec_init_scale=0.5).rnn.weight_hh_l0, 0.5 * torch.eye(3)
    )


def hand_module() -> IRNNModule:
    m = IRNNModule(input_size=2, hidden_size=2, num_classes=3)
    with torch.no_grad():
        m.net.input_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))
        m.net.rnn.weight_hh_l0.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        m.net.out.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        m.net.out.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    return m


def numpy_reference(frames: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Logits at each clip's last real frame, by the recurrence written out."""
    w_in = np.array([[1.0, 0.0], [0.5, -1.0]])
    w_out = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b_out = np.array([0.0, 0.5, -1.0])
    out = []
    for clip, n in zip(frames, lengths, strict=True):
        h = np.zeros(2)
        for t in range(n):
            h = np.maximum(w_in @ clip[t] + h, 0.0)
        out.append(w_out @ h + b_out)
    return np.array(out)


def test_last_real_frame_loss_matches_hand_computation():
    m = hand_module()
    # clip 0: 3 real frames; clip 1: 1 real frame then padding (T_max of the batch = 3)
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]], [[1.0, -2.0], [0.0, 0.0], [0.0, 0.0]]])
    lengths, labels = torch.tensor([3, 1]), torch.tensor([2, 1])
    # By hand: clip 0: h1 = relu([1, .5]) = [1, .5]; h2 = relu([0, -1] + h1) = [1, 0]; h3 = relu([2, 2] + h2) = [3, 2]
    #   logits = [3, 2.5, 4]; clip 1: h1 = relu([1, 2.5]) -> logits = [1, 3, 2.5]
    logits, hidden = m(frames, lengths)
    assert np.allclose(logits.detach().numpy(), [[3.0, 2.5, 4.0], [1.0, 3.0, 2.5]])
    assert np.allclose(hidden.detach().numpy(), [[3.0, 2.0], [1.0, 2.5]])
    assert np.allclose(logits.detach().numpy(), numpy_reference(frames.numpy(), [3, 1]))
    lse = lambda z: np.log(np.exp(z).sum())  # noqa: E731
    ce = np.array([lse([3, 2.5, 4]) - 4, lse([1, 3, 2.5]) - 3])
    # paper: sum / (B * T_max), T_max = the training set's longest clip (norm_len), here 5
    paper = m.loss(logits, labels, torch.tensor([5, 5]))
    assert paper.item() == pytest.approx(ce.sum() / (2 * 5), rel=1e-6)
    batch = {"frames": frames, "lengths": lengths, "label": labels, "norm_len": torch.tensor([5, 5])}
    assert m.model_step(batch)[0].item() == pytest.approx(ce.sum() / 10, rel=1e-6)
    m.hparams.loss_normalization = "clip_mean"
    assert m.loss(logits, labels, 5).item() == pytest.approx(ce.mean(), rel=1e-6)


def test_padding_does_not_change_outputs_at_the_last_real_frame():
    torch.manual_seed(0)
    net = IRNN(input_size=8, hidden_size=5)
    clips = [torch.randn(n, 8) for n in (4, 1, 7)]
    alone = torch.cat([net(c[None], torch.tensor([len(c)]))[0] for c in clips])
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    lengths = torch.tensor([4, 1, 7])
    assert torch.allclose(net(padded, lengths)[0], alone, atol=1e-6)
    # longer, non-zero padding: causality means it is never read
    garbage = torch.cat([padded, 100 * torch.randn(3, 5, 8)], dim=1)
    garbage[0, 4:7] = 100
    assert torch.allclose(net(garbage, lengths)[0], alone, atol=1e-6)
    # and the reference recurrence agrees
    with torch.no_grad():
        w_in, w_rec = net.input_proj.weight.numpy(), net.rnn.weight_hh_l0.numpy()
        h = np.zeros(5)
        for x in clips[2].numpy():
            h = np.maximum(w_in @ x + w_rec @ h, 0)
        assert np.allclose(net.out.weight.numpy() @ h + net.out.bias.numpy(), alone[2].numpy(), atol=1e-5)


def test_frozen_identity_gets_no_gradient_and_the_rest_do():
    m = IRNNModule(input_size=4, hidden_size=3)
    frames, lengths = torch.randn(2, 5, 4), torch.tensor([5, 2])
    m.loss(m(frames, lengths)[0], torch.tensor([0, 1]), 5).backward()
    assert m.net.rnn.weight_ih_l0.grad is None
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_bad_lengths_are_named():
    net = IRNN(input_size=2, hidden_size=2)
    with pytest.raises(ValueError, match=r"lengths must be in 1..3, got 0..3"):
        net(torch.zeros(2, 3, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="loss_normalization='mean'"):
        IRNNModule(loss_normalization="mean")


def test_paper_defaults_are_pinned_in_the_config(tmp_path):
    cfg = compose_cfg(["stage=irnn"], tmp_path)
    m = cfg.model
    assert m._target_ == "lightning_modules.irnn.IRNNModule"
    assert (m.input_size, m.hidden_size, m.num_classes) == (3872, 200, 7)
    assert (m.rec_init_scale, m.in_init_std, m.out_init_range) == (1.0, 0.001, 0.01)
    assert (m.lr, m.momentum, m.loss_normalization) == (0.005, 0.0, "paper")
    assert cfg.data.batch_size == 64 and cfg.data.representation == "sequence"
    assert cfg.trainer.max_epochs == 1000
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.mode == "max"
    )
    # the class defaults equal the config (load_from_checkpoint needs no Hydra)
    module = IRNNModule()
    for key in (
        "input_size",
        "hidden_size",
        "rec_init_scale",
        "in_init_std",
        "out_init_range",
        "lr",
        "momentum",
    ):
        assert module.hparams[key] == m[key]
    opt = module.configure_optimizers()
    assert (
        isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.005 and opt.defaults["momentum"] == 0.0
    )
