"""Synchrony autoencoder: shapes, the closed-form contractive penalty, learning, the folded encoder, config defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modules.components.synchrony_ae import SynchronyAutoencoder
from lightning_modules.sae import SAEModule
from tests.helpers import compose_cfg


def test_forward_backward_shapes_and_no_hidden_bias():
    net = SynchronyAutoencoder(n_visible=40, n_hidden=7)
    assert {n for n, _ in net.named_parameters()} == {"weight", "visible_bias"}
    assert net.weight.abs().max() <= 0.01  # U(+-0.01)
    x = torch.randn(5, 40)
    x_hat, h, s = net(x)
    assert x_hat.shape == (5, 40) and h.shape == s.shape == (5, 7)
    torch.testing.assert_close(h, torch.sigmoid((x @ net.weight) ** 2))
    torch.testing.assert_close(x_hat, (h * s) @ net.weight.T + net.visible_bias)
    x_hat.sum().backward()
    assert net.weight.grad.shape == (40, 7)
    assert (h >= 0.5).all()  # sigmoid of a square


def test_contractive_penalty_closed_form_equals_autograd_jacobian_norm():
    torch.manual_seed(0)
    net = SynchronyAutoencoder(n_visible=6, n_hidden=4, init_scale=0.8).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    _, h, s = net(x)
    closed = net.contractive_penalty(s, h)
    for i in range(3):
        J = torch.autograd.functional.jacobian(net.encode, x[i : i + 1]).reshape(4, 6)
        torch.testing.assert_close(closed[i], (J**2).sum())


@pytest.mark.usefixtures("one_torch_thread")
def test_reconstruction_loss_decreases_on_structured_data():
    torch.manual_seed(0)
    # Blocks made of a few moving patterns: low-rank data the autoencoder can learn.
    basis = torch.randn(5, 64)
    data = torch.randn(400, 5) @ basis
    model = SAEModule(n_visible=64, n_hidden=16, n_pixels=64, lr=1e-3)
    opt = model.configure_optimizers()
    losses = []
    for step in range(60):
        batch = data[(step % 4) * 100 : (step % 4 + 1) * 100]
        out = model.model_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["recon"].detach()))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_folded_encoder_survives_a_checkpoint_round_trip(tmp_path):
    model = SAEModule(n_visible=3, n_hidden=2, n_pixels=5)
    A, b = np.arange(15.0).reshape(5, 3) / 10, np.array([0.1, -0.2, 0.3])
    model.set_whitening(A, b, row_constant=0.5)
    path = tmp_path / "sae.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": "2.6.6",
        },
        path,
    )
    loaded = SAEModule.load_from_checkpoint(path)
    enc = loaded.folded_encoder()
    W = model.net.weight.detach().double().numpy()
    np.testing.assert_allclose(enc.matrix, A @ W, rtol=1e-6)
    np.testing.assert_allclose(enc.bias, b @ W, rtol=1e-5, atol=1e-8)
    assert enc.row_constant == 0.5
    with pytest.raises(ValueError, match="pixel_map has shape"):
        model.set_whitening(A[:4], b, 0.5)


def test_paper_defaults_are_pinned(tmp_path):
    cfg = compose_cfg(["stage=activity", "scale/activity=paper"], tmp_path)
    m = cfg.model
    assert (m.n_hidden, m.n_pixels, m.contraction, m.lr, m.momentum, m.init_scale) == (
        300,
        2560,
        0.1,
        1e-3,
        0.9,
        0.01,
    )
    assert cfg.data.batch_size == 100 and cfg.data.max_variance == 0.99 and cfg.data.max_components == 500
    assert cfg.data.contrast_offset == 0.001
    assert cfg.svm.kernel == "chi2" and list(cfg.svm.C_grid) == [100]
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/loss" and cfg.callbacks.model_checkpoint.mode == "min"
    )
    assert cfg.svm.probability == "calibrated" and cfg.cpu_threads is None
    assert cfg.bow.n_words == 3000 and cfg.bow.codebook_blocks == 200000
    assert cfg.data.n_train_blocks == 500000 and cfg.trainer.max_epochs == 50
    # The paper's preset is the default scale's; the generated-data preset is scale=quick's and scale=demo's
    # (tests/stages/test_activity.py pins what it changes).
    assert compose_cfg(["stage=activity"], tmp_path).bow.n_words == 3000
    assert compose_cfg(["stage=activity", "scale=demo"], tmp_path).bow.n_words == 64
