"""CNNModule: the paper's architecture, its input pipeline, checkpoints, and training through `stage=cnn`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.cnn import CNNModule, save_weights
from lightning_modules.components.cnn_deep import DeepCNN
from lightning_modules.components.cnn_paper import PaperCNN
from lightning_modules.integrity import tensor_digest
from tests.fer_stills import write_face_root
from tests.helpers import run

# Overrides that keep a stage=cnn run small: no AFEW tree in these roots, so early-stop on a FER+TFD slice.
SMALL = [
    "stage=cnn",
    "data.val_source=fer_holdout",
    "data.afew_root=null",
    "data.batch_size=32",
    "++trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def test_paper_net_shapes_and_parameter_count():
    net = PaperCNN()
    # conv 32x1x9x9 + conv 32x32x5x5 + conv 64x32x5x5 + linear 1600x7, with biases (paper-spec: ~90.7k)
    assert sum(p.numel() for p in net.parameters()) == (32 * 81 + 32) + (32 * 32 * 25 + 32) + (
        64 * 32 * 25 + 64
    ) + (1600 * 7 + 7)
    assert [c.kernel_size for c in net.convs] == [(9, 9), (5, 5), (5, 5)]
    assert [c.padding for c in net.convs] == [(4, 4), (2, 2), (2, 2)]
    assert net.fc.in_features == 1600 and net.feature_dim == 3872
    net.eval()
    x = torch.randn(3, 1, 44, 44)
    logits, feature = net(x)
    assert logits.shape == (3, 7) and feature.shape == (3, 3872)
    # feature tap = block 2 after max-pool (bias included), before ReLU: it has negative values
    h = torch.relu(F.max_pool2d(net.convs[0](x), 2))
    np.testing.assert_allclose(
        feature.detach(), F.max_pool2d(net.convs[1](h), 2).flatten(1).detach(), rtol=1e-5, atol=1e-6
    )
    assert (feature < 0).any()


def test_paper_init_uniform_fan_in_and_zero_bias():
    net = PaperCNN()
    for layer in [*net.convs, net.fc]:
        bound = 1 / math.sqrt(layer.weight[0].numel())
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # spread over the whole interval, not a narrower init
        assert torch.count_nonzero(layer.bias) == 0


def test_deep_net_shapes():
    logits, feature = DeepCNN(widths=(8, 8, 8, 16)).eval()(torch.randn(2, 1, 44, 44))
    assert logits.shape == (2, 7) and feature.shape == (2, 16)


def _module(**kw) -> CNNModule:
    torch.manual_seed(0)
    m = CNNModule(**kw)
    g = torch.Generator().manual_seed(1)
    m.set_normaliser(torch.rand(48, 48, generator=g) * 100, torch.rand(48, 48, generator=g) * 50 + 10)
    return m


def test_embed_is_normaliser_then_centre_crop():
    m = _module()
    faces = torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)
    logits, feature = m.embed(faces)
    z = (faces.float() - m.norm_mean) / m.norm_std
    m.eval()
    exp_logits, exp_feature = m.net(z[:, None, 2:46, 2:46])
    torch.testing.assert_close(logits, exp_logits)
    torch.testing.assert_close(feature, exp_feature)
    assert not m.training  # the module was in eval mode (set above) and stays so
    m.train()
    m.embed(faces)
    assert m.training  # embed leaves the mode as it found it
    assert feature.shape == (4, 3872) and feature.dtype == torch.float32


def _crop_offsets(m: CNNModule, faces: torch.Tensor) -> list[tuple[int, int]]:
    z = ((faces.float() - m.norm_mean) / m.norm_std)[:, None]
    out = m.preprocess(faces, train=True)
    offsets = []
    for b in range(len(faces)):
        hits = [
            (oy, ox)
            for oy in range(5)
            for ox in range(5)
            if torch.equal(out[b], z[b, :, oy : oy + 44, ox : ox + 44])
        ]
        assert len(hits) == 1
        offsets.append(hits[0])
    return offsets


def test_one_crop_offset_per_minibatch_vs_per_sample():
    faces = torch.randint(0, 256, (16, 48, 48), dtype=torch.uint8)
    per_batch = _module(crop_per_batch=True, flip_p=0.0)
    torch.manual_seed(3)
    assert len(set(_crop_offsets(per_batch, faces))) == 1
    per_sample = _module(crop_per_batch=False, flip_p=0.0)
    torch.manual_seed(3)
    offs = _crop_offsets(per_sample, faces)
    assert len(set(offs)) > 3 and all(0 <= o <= 4 for oy_ox in offs for o in oy_ox)


def test_flip_is_per_sample_with_p():
    m = _module(crop_size=48, flip_p=0.5)
    faces = torch.randint(0, 256, (400, 48, 48), dtype=torch.uint8)
    z = ((faces.float() - m.norm_mean) / m.norm_std)[:, None]
    torch.manual_seed(0)
    out = m.preprocess(faces, train=True)
    flipped = torch.tensor([torch.equal(out[b], z[b].flip(-1)) for b in range(400)])
    kept = torch.tensor([torch.equal(out[b], z[b]) for b in range(400)])
    assert bool((flipped ^ kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_similarity_augmentation_rotates_per_sample():
    m = _module(crop_size=48, flip_p=0.0, rotate_deg=90.0)
    faces = torch.zeros(64, 48, 48, dtype=torch.uint8)
    faces[:, 10:20, 4:44] = 255  # a horizontal bar: a rotation turns it, the normaliser alone would not
    torch.manual_seed(0)
    out = m.preprocess(faces, train=True)
    z = ((faces.float() - m.norm_mean) / m.norm_std)[:, None]
    changed = (out - z).abs().flatten(1).amax(1) > 1.0
    assert int(changed.sum()) >= 60  # almost every face turned, each by its own angle
    assert len({round(float(v), 3) for v in out.flatten(1).sum(1)}) > 50
    # angle 0 and scale 1 is the identity (up to bilinear rounding), so the warp keeps the face where it was
    m0 = _module(crop_size=48, flip_p=0.0, rotate_deg=1e-9)
    torch.testing.assert_close(m0.preprocess(faces, train=True), z, atol=1e-3, rtol=0)
    # evaluation never warps
    torch.testing.assert_close(m.preprocess(faces, train=False), z)
    with pytest.raises(ValueError, match="scale_jitter in \\[0, 1\\), got 0.0, 1.5"):
        CNNModule(scale_jitter=1.5)


def test_five_crop_tta_is_mean_of_centre_and_corner_logits():
    m = _module(tta_crops=True).eval()
    faces = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    logits, feature = m.embed(faces)
    z = ((faces.float() - m.norm_mean) / m.norm_std)[:, None]
    crops = [z[:, :, 2:46, 2:46], z[:, :, :44, :44], z[:, :, :44, 4:], z[:, :, 4:, :44], z[:, :, 4:, 4:]]
    with torch.no_grad():
        expected = torch.stack([m.net(c)[0] for c in crops]).mean(0)
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(feature, m.net(crops[0])[1])


def test_loss_is_clipped_cross_entropy():
    m = CNNModule()
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 0.0], [0.0, 40.0, -40.0, 0, 0, 0, 0]])
    target = torch.tensor([0, 2])
    # row 0 is unclipped plain cross-entropy; row 1's target probability is clipped to 1e-6
    expected = (F.cross_entropy(logits[:1], target[:1]) + (-math.log(1e-6))) / 2
    torch.testing.assert_close(m.loss(logits, target), expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch must be 'paper', 'deep' or 'res', got 'vgg'"):
        CNNModule(arch="vgg")
    with pytest.raises(ValueError, match="crop_size must be in 1..48, got 50"):
        CNNModule(crop_size=50)
    with pytest.raises(ValueError, match=r"normaliser images must be 48x48"):
        CNNModule().set_normaliser(torch.zeros(44, 44), torch.ones(44, 44))
    with pytest.raises(ValueError, match=r"faces must be \(B, 48, 48\)"):
        CNNModule().embed(torch.zeros(2, 44, 44, dtype=torch.uint8))


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn_root")
    write_face_root(root, per_class=40, tfd=60, seed=0, difficulty="easy")
    return root


def test_fast_dev_run(face_root):
    metrics = run([*SMALL, "++trainer.fast_dev_run=true", "experiment_name=fdr"], face_root)
    # the paper's data (fer_train=all) trains on every FER2013 face: no test split, no test accuracy
    assert "val/acc" in metrics and "test/acc" not in metrics
    held_out = [*SMALL, "++trainer.fast_dev_run=true", "experiment_name=fdr", "data.fer_train=training"]
    assert 0.0 <= run(held_out, face_root)["test/acc"] <= 1.0


def test_short_training_beats_twice_chance_and_exports_best(face_root):
    metrics = run(
        [
            *SMALL,
            "experiment=demo",
            "trainer.max_epochs=8",
            "data.holdout_fraction=0.15",
            "model.max_lr=0.05",
        ],
        face_root,
    )
    assert metrics["test/acc"] > 2 / 7, metrics
    best = face_root / "runs" / "demo" / "cnn" / "best.ckpt"
    assert best.is_file() and metrics["best_ckpt_copy"] == str(best)
    # the copy loads without Hydra and carries the training normaliser
    m = CNNModule.load_from_checkpoint(best, map_location="cpu")
    assert bool(m.norm_fitted) and float(m.norm_std.min()) >= 1.0
    assert (face_root / "runs" / "demo" / "cnn" / "figures" / "test_confusion.png").stat().st_size > 1000


def test_warm_start_copies_net_weights_but_keeps_this_datas_normaliser(face_root, tmp_path):
    torch.manual_seed(3)
    source = CNNModule()
    source.set_normaliser(torch.full((48, 48), 7.0), torch.full((48, 48), 2.0))
    weights = save_weights(source, tmp_path / "source.pt")
    # lr 0: the one epoch cannot move the weights, so the exported net must be the warm-start file's
    metrics = run(
        [
            *SMALL,
            "experiment_name=warm",
            "trainer.max_epochs=1",
            "model.lr=0.0",
            f"model.init_weights={weights}",
        ],
        face_root,
    )
    trained = CNNModule.load_from_checkpoint(metrics["best_ckpt_copy"], map_location="cpu")
    for (name, got), want in zip(
        trained.net.state_dict().items(), source.net.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name
    assert float(trained.norm_mean.mean()) != 7.0  # the normaliser is the training data's, not the source's
    # a Lightning checkpoint works as a source too, and loading it needs no warm-start file any more
    again = CNNModule()
    again.warm_start(metrics["best_ckpt_copy"])
    assert torch.equal(again.net.convs[0].weight, source.net.convs[0].weight)


def test_warm_start_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: model.init_weights file not found"):
        CNNModule().warm_start(tmp_path / "nope.pt")
    deep = save_weights(CNNModule(arch="deep", deep_widths=(8, 8, 8, 8)), tmp_path / "deep.pt")
    with pytest.raises(ValueError, match=r"deep\.pt: weights do not fit this CNN"):
        CNNModule().warm_start(deep)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a CNN weights file or checkpoint"):
        CNNModule().warm_start(tmp_path / "other.pt")


def test_warm_start_from_shipped_weights():
    from emotiw.assets import CNN_PAPER_FER2013, asset_path
    from lightning_modules.cnn import load_cnn

    module = CNNModule(dropout=0.1)
    module.warm_start("shipped")  # the shipped weights of this architecture (the default model is another)
    assert torch.equal(module.net.fc.weight, load_cnn(weights=asset_path(CNN_PAPER_FER2013)).net.fc.weight)


@pytest.mark.slow
def test_resume_from_last_ckpt_matches_uninterrupted(tmp_path_factory):
    roots = []
    for name in ("straight", "resumed"):
        root = tmp_path_factory.mktemp(name)
        write_face_root(root, per_class=10, tfd=20)
        roots.append(root)
    # paper defaults (constant lr): a killed run resumed with a larger max_epochs follows the same schedule;
    # every epoch's checkpoint is kept so the two runs can be compared at the same epoch.
    common = [*SMALL, "experiment_name=resume", "callbacks.model_checkpoint.save_top_k=-1"]
    ckpts = "runs/resume/cnn/checkpoints"
    run([*common, "trainer.max_epochs=3"], roots[0])
    run([*common, "trainer.max_epochs=2"], roots[1])  # "killed" after two epochs
    run([*common, "trainer.max_epochs=3", f"ckpt_path={roots[1] / ckpts / 'epoch_001.ckpt'}"], roots[1])
    a = torch.load(roots[0] / ckpts / "epoch_002.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(roots[1] / ckpts / "epoch_002.ckpt", map_location="cpu", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["global_step"] > 0
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_load_cnn_bad_weights(tmp_path):
    from lightning_modules.cnn import load_cnn

    with pytest.raises(FileNotFoundError, match=r"nope\.pt: weights file not found"):
        load_cnn(weights=tmp_path / "nope.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a CNN weights file or checkpoint"):
        load_cnn(weights=tmp_path / "other.pt")
    torch.save(
        {"state_dict": CNNModule().state_dict()}, tmp_path / "bare.pt"
    )  # a checkpoint has no "hparams"
    with pytest.raises(ValueError, match=r"bare\.pt: no hparams"):
        load_cnn(weights=tmp_path / "bare.pt")
    blob = torch.load(save_weights(CNNModule(), tmp_path / "ok.pt"), weights_only=True)
    blob["state_dict"]["net.extra"] = torch.zeros(1)
    blob["tensor_sha256"] = tensor_digest(blob["state_dict"])  # a whole file, written for another net
    torch.save(blob, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"extra\.pt: weights do not fit the CNN .*net\.extra"):
        load_cnn(weights=tmp_path / "extra.pt")
