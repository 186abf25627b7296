"""model=cnn_res: the residual CPU net's shapes, its folded eval copy, random erasing, export, training and resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.cnn import CNNModule, load_cnn, save_weights
from lightning_modules.components.cnn_res import ResCNN
from tests.fer_stills import write_face_root
from tests.helpers import env_for_subprocess, run

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "stage=cnn",
    "model=cnn_res",
    "data.val_source=fer_holdout",
    "data.fer_train=training",  # PublicTest held out: the test accuracy
    "data.afew_root=null",
    "data.batch_size=32",
    "++trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _trained_bn(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters, as training would."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net


def test_shapes_and_parameter_count():
    net = ResCNN()

    # stem conv 5x5 1->32 + BN; per block two 3x3 convs + BNs, a 1x1 projection + BN where the width changes
    def conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out

    def block(c_in, c_out):
        return (
            conv_bn(c_in, c_out, 3)
            + conv_bn(c_out, c_out, 3)
            + (conv_bn(c_in, c_out, 1) if c_in != c_out else 0)
        )

    expected = (
        conv_bn(1, 32, 5)
        + block(32, 32)
        + block(32, 64)
        + block(64, 128)
        + block(128, 128)
        + block(128, 256)
        + 256 * 7
        + 7
    )
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net.feature_dim == 256
    h = torch.relu(net.stem(torch.randn(2, 1, 44, 44)))
    sides = [h.shape[-1]]
    for b in net.stages:
        h = b(h)
        sides.append(h.shape[-1])
    assert sides == [22, 22, 11, 6, 6, 3]
    logits, feature = net.eval()(torch.randn(3, 1, 44, 44))
    assert logits.shape == (3, 7) and feature.shape == (3, 256) and (feature >= 0).all()
    with pytest.raises(ValueError, match="one entry per stage"):
        ResCNN(widths=(8, 16), blocks=(1,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_eval_copy_equals_the_batch_norm_net(channels_last):
    torch.manual_seed(0)
    module = CNNModule(arch="res", channels_last=channels_last, res_widths=(8, 16, 16, 32))
    net = _trained_bn(module.net).eval()
    x = torch.randn(5, 1, 44, 44)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        folded_logits, folded_feature = net(x)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.folded().modules())
    with torch.enable_grad():  # with autograd on, the BN net itself runs (its parameters get the gradients)
        logits, feature = net(x)
    torch.testing.assert_close(folded_logits, logits.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded_feature, feature.detach(), rtol=1e-4, atol=1e-5)
    logits.sum().backward()
    assert net.stem[0].weight.grad is not None and net.stem[0].weight.grad.abs().sum() > 0
    # a changed weight or BN statistic rebuilds the folded copy
    with torch.no_grad():
        first = net.folded()
        net.stem[1].running_mean.add_(1.0)
        assert net.folded() is not first
        torch.testing.assert_close(net(x)[0], net.folded().fc(net.folded()._features(x)))
        net.load_state_dict(_trained_bn(ResCNN(widths=(8, 16, 16, 32)), seed=5).state_dict())
        with torch.enable_grad():
            expected = net(x)[0].detach()
        torch.testing.assert_close(net(x)[0], expected, rtol=1e-4, atol=1e-5)


def test_random_erase_sets_one_rectangle_per_face_to_the_mean():
    module = CNNModule(arch="res", erase_p=1.0, erase_max=0.4, flip_p=0.0, crop_size=48)
    module.set_normaliser(torch.zeros(48, 48), torch.ones(48, 48))
    faces = torch.full((64, 48, 48), 200, dtype=torch.uint8)
    torch.manual_seed(1)
    x = module.preprocess(faces, train=True)[:, 0]
    for face in x:
        zero = (face == 0).nonzero()
        rows, cols = zero[:, 0], zero[:, 1]
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(zero) == h * w  # one filled rectangle
        assert int(0.1 * 48) <= h <= int(0.4 * 48) and int(0.1 * 48) <= w <= int(0.4 * 48)
    module.hparams.erase_p = 0.0
    assert (module.preprocess(faces, train=True) == 200).all()
    module.hparams.erase_p = 0.5
    erased = (module.preprocess(faces, train=True)[:, 0] == 0).flatten(1).any(1).float().mean()
    assert 0.25 < float(erased) < 0.75
    assert (module.preprocess(faces, train=False) == 200).all()  # never at eval
    with pytest.raises(ValueError, match="erase_p must be in"):
        CNNModule(erase_p=1.5)


def test_weights_file_round_trip(tmp_path):
    torch.manual_seed(2)
    module = CNNModule(arch="res", channels_last=True)
    _trained_bn(module.net)
    module.set_normaliser(torch.full((48, 48), 110.0), torch.full((48, 48), 50.0))
    path = save_weights(module, tmp_path / "res.pt")
    torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and values only
    loaded = load_cnn(weights=path)
    faces = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    torch.testing.assert_close(loaded.embed(faces), module.embed(faces))
    assert loaded.feature_dim == 256


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("res_root")
    write_face_root(root, per_class=40, tfd=60, seed=0, difficulty="easy")
    return root


def test_short_training_beats_twice_chance(face_root):
    metrics = run([*SMALL, "trainer.max_epochs=6", "data.holdout_fraction=0.15"], face_root)
    assert metrics["test/acc"] > 2 / 7, metrics
    best = Path(metrics["best_ckpt_copy"])
    blob = torch.load(best, map_location="cpu", weights_only=True)  # loads without running code
    assert blob["hyper_parameters"]["arch"] == "res"
    assert load_cnn(checkpoint=best).feature_dim == 256


@pytest.mark.slow
def test_killed_run_resumed_from_last_ckpt_matches_uninterrupted(tmp_path_factory):
    """A run killed (SIGKILL) during its third epoch and restarted by the same command plus
    ``ckpt_path=<last.ckpt>`` ends with the weights of an uninterrupted run (one-cycle schedule, erasing, dropout)."""
    roots = []
    for name in ("straight", "killed"):
        root = tmp_path_factory.mktemp(name)
        write_face_root(root, per_class=30, tfd=0, seed=1)
        roots.append(root)
    common = [
        *SMALL,
        "experiment_name=resume",
        "model.erase_p=0.5",
        "trainer.max_epochs=4",
        "callbacks.model_checkpoint.save_top_k=-1",
        "logger=csv",
    ]
    ckpts = "runs/resume/cnn/checkpoints"

    def command(root: Path, *extra: str) -> list[str]:
        return [sys.executable, "train.py", *common, f"paths.root_dir={root}", *extra]

    subprocess.run(command(roots[0]), cwd=REPO, env=env_for_subprocess(roots[0]), check=True, timeout=900)
    proc = subprocess.Popen(command(roots[1]), cwd=REPO, env=env_for_subprocess(roots[1]))
    target = roots[1] / ckpts / "epoch_001.ckpt"
    deadline = time.time() + 900
    while not target.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # into the third epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (roots[1] / ckpts / "epoch_003.ckpt").exists()
    last = roots[1] / ckpts / "last.ckpt"
    subprocess.run(
        command(roots[1], f"ckpt_path={last}"),
        cwd=REPO,
        env=env_for_subprocess(roots[1]),
        check=True,
        timeout=900,
    )
    a = torch.load(roots[0] / ckpts / "epoch_003.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(roots[1] / ckpts / "epoch_003.ckpt", map_location="cpu", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (3, a["global_step"])
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(a["lr_schedulers"][0]["last_epoch"], b["lr_schedulers"][0]["last_epoch"])
