"""Fusion MLP: shapes, init, each regulariser against hand-computed values, config defaults pinned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.components.fusion_mlp import (
    FusionMLP,
    RectTanh,
    code_bug_matrix,
    fusion_penalty,
    l2_penalty,
    structured_penalty,
)
from lightning_modules.fusion import FusionModule
from tests.helpers import compose_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net() -> FusionMLP:
    """in_dims (2, 1, 3) -> hidden (2, 1, 1) -> shared 2 -> 2 classes, with hand-set weights."""
    net = FusionMLP(in_dims=(2, 1, 3), hidden_dims=(2, 1, 1), shared_dim=2, n_classes=2, dropout=0.0)
    with torch.no_grad():
        # torch stores (out, in); the values below are given in the code's (in, out) orientation, then transposed.
        net.modality[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]).T)  # A (2x2)
        net.modality[1].weight.copy_(torch.tensor([[5.0]]).T)  # B (1x1)
        net.modality[2].weight.copy_(torch.tensor([[-1.0], [2.0], [2.0]]).T)  # C (3x1)
        net.shared.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, -3.0, 4.0, 0.0]]))  # (2 units x 4)
        net.out.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    return net


def test_forward_shapes_and_activation() -> None:
    net = FusionMLP()
    assert net(torch.randn(5, 315)).shape == (5, 7)
    assert (
        sum(p.numel() for p in net.parameters())
        == 105 * 100 + 100 + 10 * 10 + 10 + 200 * 50 + 50 + 160 * 70 + 70 + 70 * 7 + 7
    )
    with pytest.raises(ValueError, match="fusion input has 314 features, expected 315"):
        net(torch.randn(2, 314))
    np.testing.assert_allclose(
        RectTanh()(torch.tensor([-2.0, 0.0, 0.5])).numpy(), [0.0, 0.0, np.tanh(0.5)], rtol=1e-6
    )


def test_init_is_fan_in_uniform_with_zero_biases() -> None:
    torch.manual_seed(0)
    net = FusionMLP()
    for layer in (*net.modality, net.shared, net.out):
        bound = layer.in_features**-0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # fills the range, not a narrower init
        assert torch.all(layer.bias == 0)


def test_l2_covers_every_weight_matrix() -> None:
    # A: 1+4+9+16=30, B: 25, C: 1+4+4=9, shared: 1+4+9+16=30, out: 1+1+1=3
    assert float(l2_penalty(tiny_net()).detach()) == pytest.approx(97.0)


def test_code_bug_matrix_overwrites_blocks_at_the_origin() -> None:
    m = code_bug_matrix(tiny_net()).detach().numpy()
    # (6 in x 4 hidden); A at (0,0), then B overwrites M[0,0], then C overwrites M[0:3, 0]
    expected = np.zeros((6, 4))
    expected[:2, :2] = [[1, -2], [3, 4]]
    expected[0, 0] = 5
    expected[:3, 0] = [-1, 2, 2]
    np.testing.assert_array_equal(m, expected)
    # L1 = 1+2+2 + 2+4 = 11; L21 = ||(-1,-2)|| + ||(2,4)|| + ||(2,0)|| = sqrt5 + sqrt20 + 2
    net = tiny_net()
    assert float(structured_penalty(net, "code_bug")) == pytest.approx(11 + 5**0.5 + 20**0.5 + 2, rel=1e-5)


def test_block_fixed_and_wu2015_by_hand() -> None:
    net = tiny_net()
    # per modality: L1 + sum of row norms. A: 10 + sqrt5 + 5; B: 5 + 5; C: 5 + 1 + 2 + 2
    expected = 10 + 5**0.5 + 5 + 10 + 5 + 5
    assert float(structured_penalty(net, "block_fixed")) == pytest.approx(expected, rel=1e-5)
    # shared layer, rows = shared units: L1 = 10; group norms sqrt5 + 5
    assert float(structured_penalty(net, "wu2015")) == pytest.approx(10 + 5**0.5 + 5, rel=1e-5)
    assert float(fusion_penalty(net, "wu2015")) == pytest.approx(97 + 10 + 5**0.5 + 5, rel=1e-5)
    with pytest.raises(ValueError, match="fusion_reg='l3'"):
        structured_penalty(net, "l3")


def test_penalties_have_finite_gradients_on_zero_rows() -> None:
    net = FusionMLP()
    for kind in ("code_bug", "block_fixed", "wu2015"):
        net.zero_grad()
        fusion_penalty(net, kind).backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_module_loss_adds_the_weighted_penalty() -> None:
    torch.manual_seed(0)
    module = FusionModule(dropout=0.0)
    batch = {"features": torch.randn(4, 315), "label": torch.tensor([0, 3, -1, 6])}
    ce, logits, _ = module.model_step(batch)
    expected = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 3, 6]))
    assert float(ce) == pytest.approx(float(expected))
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.1 and opt.defaults["momentum"] == 0.0


def test_loss_is_the_authors_clipped_cross_entropy() -> None:
    # sample 0 is badly wrong (p(label) ~ exp(-30)): the clip holds it at -log(1e-6) and it passes no gradient
    logits = torch.tensor([[30.0, 0, 0, 0, 0, 0, 0], [0.0, 1, 2, 0, 0, 0, 0]], requires_grad=True)
    batch = {"features": torch.zeros(2, 315), "label": torch.tensor([1, 2])}
    module = FusionModule(dropout=0.0)
    module.forward = lambda features: logits
    ce, _, _ = module.model_step(batch)
    p2 = float(torch.softmax(logits[1].detach(), -1)[2])
    assert float(ce) == pytest.approx((-np.log(1e-6) - np.log(p2)) / 2, rel=1e-5)
    ce.backward()
    assert torch.all(logits.grad[0] == 0) and torch.any(logits.grad[1] != 0)
    plain = FusionModule(dropout=0.0, prob_clip=0.0)
    plain.forward = lambda features: logits
    ce0, _, _ = plain.model_step(batch)
    assert float(ce0) == pytest.approx((30.0 + np.log1p(6 * np.exp(-30.0)) - np.log(p2)) / 2, rel=1e-5)


def test_config_defaults_pin_the_paper(tmp_path: Path) -> None:
    cfg = compose_cfg(["stage=fusion"], tmp_path)
    m = cfg.model
    assert (list(m.in_dims), list(m.hidden_dims), m.shared_dim, m.n_classes) == (
        [105, 10, 200],
        [100, 10, 50],
        70,
        7,
    )
    assert (m.dropout, m.lr, m.momentum, m.reg_lambda, m.fusion_reg, m.max_epochs) == (
        0.3,
        0.1,
        0.0,
        3e-5,
        "code_bug",
        500,
    )
    assert cfg.data.batch_size == 128 and list(cfg.data.models) == ["aggcnn", "audio", "irnn"]
    assert cfg.trainer.gradient_clip_val == 10.0 and cfg.trainer.gradient_clip_algorithm == "norm"
    assert cfg.trainer.max_epochs == 500
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.mode == "max"
    )
    stable = compose_cfg(["stage=fusion", "model=fusion_stable"], tmp_path)
    assert (stable.model.lr, stable.model.momentum, stable.model.max_epochs, stable.trainer.max_epochs) == (
        0.001,
        0.9,
        5000,
        5000,
    )
    assert stable.model.dropout == 0.3 and stable.model.fusion_reg == "code_bug"


def test_fusion_beats_each_modality_when_each_knows_different_classes() -> None:
    """Three modalities, each carrying the class only for its own classes: the fused net must beat every modality's
    own best linear read-out (linear discriminant analysis on that modality alone: Bayes-optimal for these
    shared-covariance Gaussian classes)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(0)
    owner = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}
    dims = (105, 10, 200)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 7, n)
        parts = []
        for m, d in enumerate(dims):
            x = rng.normal(size=(n, d))
            for i, c in enumerate(y):
                if owner[c] == m:
                    x[i, c % d] += 4.0
            parts.append(x)
        return np.hstack(parts).astype(np.float32), y

    Xtr, ytr = make(600)
    Xva, yva = make(300)
    singles = []
    for m in range(3):
        lo, hi = sum(dims[:m]), sum(dims[: m + 1])
        clf = LinearDiscriminantAnalysis().fit(Xtr[:, lo:hi], ytr)
        singles.append(clf.score(Xva[:, lo:hi], yva))
    torch.manual_seed(0)
    module = FusionModule()
    opt = module.configure_optimizers()
    X, y = torch.as_tensor(Xtr), torch.as_tensor(ytr)
    for _ in range(30):
        for idx in torch.randperm(len(y)).split(128):
            ce, _, _ = module.model_step({"features": X[idx], "label": y[idx]})
            loss = ce + module.hparams.reg_lambda * module.penalty()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
    acc = float((module.predict_proba(torch.as_tensor(Xva)).argmax(1).numpy() == yva).mean())
    print(f"fusion val acc {acc:.3f}; single modalities {[round(a, 3) for a in singles]}")
    assert acc > max(singles) + 0.1, (acc, singles)
