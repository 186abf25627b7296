"""model=cnn_res: the residual CPU net's shapes, its folded eval copy, random erasing, export, training and resume."""

from __future__ import annotations

import signal
import subprocess
import sys
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
    # the default widths: torch 2.13 on this CPU corrupts its heap in the backward of a channels-last 1x1 stride-2
    # conv from 8 to 16 channels on 2 threads (the shipped widths are not affected)
    module = CNNModule(arch="res", channels_last=channels_last)
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
        net.load_state_dict(_trained_bn(ResCNN(), seed=5).state_dict())
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
    # SIGKILL after the third epoch's second batch: mid-epoch however fast the machine is
    kill = "+callbacks.kill={_target_: tests.stages.stage_hooks.SignalAt, epoch: 2, batch: 1, signum: 9}"
    killed = subprocess.run(command(roots[1], kill), cwd=REPO, env=env_for_subprocess(roots[1]), timeout=900)
    assert killed.returncode == -signal.SIGKILL
    assert (roots[1] / ckpts / "epoch_001.ckpt").is_file()
    assert not (roots[1] / ckpts / "epoch_002.ckpt").exists()
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


def test_mixup_blends_the_faces_and_the_losses():
    common = dict(arch="res", crop_size=48, flip_p=0.0, dropout=0.0, prob_clip=0.0, label_smoothing=0.1)
    module = CNNModule(**common, mixup_alpha=0.4).train()
    module.set_normaliser(torch.full((48, 48), 120.0), torch.full((48, 48), 60.0))
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 256, (16, 48, 48), dtype=torch.uint8, generator=g)}
    batch["label"] = torch.randint(0, 7, (16,), generator=g)
    torch.manual_seed(5)
    loss = module.training_step(batch, 0)
    # reference: the same draws (mixing weight, partner permutation), by hand
    torch.manual_seed(5)
    x = module.preprocess(batch["image"], train=True)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    other = torch.randperm(16)
    assert 0 < lam < 1 and not torch.equal(other, torch.arange(16))
    logits = module(lam * x + (1 - lam) * x[other])[0]
    ce = torch.nn.functional.cross_entropy
    y = batch["label"]
    expected = lam * ce(logits, y, label_smoothing=0.1) + (1 - lam) * ce(
        logits, y[other], label_smoothing=0.1
    )
    torch.testing.assert_close(loss, expected)
    # mixup_alpha=0: the plain loss on the plain faces
    plain = CNNModule(**common).train()
    plain.load_state_dict(module.state_dict())
    torch.testing.assert_close(plain.training_step(batch, 0), ce(plain(x)[0], y, label_smoothing=0.1))
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        CNNModule(mixup_alpha=-1.0)


# Softmax of the shipped res model (emotiw/assets/cnn_res_fer2013.pt) on tests.test_predict.reference_faces(), recorded
# when the weights were packaged: with its own test-time views (flip + five crops) and with the centre crop alone.
SHIPPED_PROBS_OWN_VIEWS = [
    [0.04391, 0.02204, 0.1527, 0.13784, 0.63423, 0.00493, 0.00435],
    [0.07761, 0.02024, 0.23681, 0.09797, 0.55672, 0.00595, 0.0047],
    [0.02576, 0.02033, 0.36647, 0.15175, 0.10745, 0.03116, 0.29707],
    [0.02513, 0.03073, 0.41831, 0.11181, 0.0699, 0.0817, 0.26241],
]
SHIPPED_PROBS_CENTRE = [
    [0.01681, 0.01176, 0.05891, 0.07192, 0.83488, 0.00308, 0.00265],
    [0.05758, 0.02567, 0.31986, 0.09872, 0.48477, 0.00812, 0.00529],
    [0.0143, 0.01599, 0.44835, 0.15484, 0.09834, 0.02139, 0.24679],
    [0.02373, 0.03465, 0.38793, 0.12987, 0.0645, 0.08447, 0.27485],
]


def test_shipped_res_weights_are_the_default_checksum_verified_with_reference_outputs(monkeypatch):
    from emotiw import assets
    from tests.test_predict import reference_faces

    path = assets.asset_path(assets.CNN_RES_FER2013)  # verifies the recorded sha256
    assert assets.DEFAULT_CNN == assets.CNN_RES_FER2013
    assert path.stat().st_size < 8_000_000  # 1.5 M fp32 parameters
    model = load_cnn()  # no weights given: the default shipped model
    assert Path(model.weights_file) == path
    assert model.hparams.arch == "res" and not model.training and bool(model.norm_fitted)
    assert (model.hparams.tta_flip, model.hparams.tta_crops) == (True, True)  # chosen on the hold-out slice
    logits, feature = model.embed(reference_faces())
    assert feature.shape == (4, 256)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), SHIPPED_PROBS_OWN_VIEWS, atol=1e-4)
    model.hparams.tta_flip = model.hparams.tta_crops = False
    logits, centre_feature = model.embed(reference_faces())
    np.testing.assert_allclose(logits.softmax(-1).numpy(), SHIPPED_PROBS_CENTRE, atol=1e-4)
    torch.testing.assert_close(centre_feature, feature)  # the feature is always the centre crop's
    # the folded eval copy and the batch-norm net (with autograd on) agree on the shipped weights
    x = model._layout(model._eval_crop(model._zscore(reference_faces()), None))
    with torch.enable_grad():
        plain = model.net(x)[0].detach()
    np.testing.assert_allclose(plain.softmax(-1).numpy(), SHIPPED_PROBS_CENTRE, atol=1e-4)
    # a changed file is refused
    monkeypatch.setitem(assets.SHA256, assets.CNN_RES_FER2013, "0" * 64)
    with pytest.raises(ValueError, match="does not match the recorded"):
        load_cnn()
