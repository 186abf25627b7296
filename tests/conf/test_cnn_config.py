"""The paper's CNN numbers (paper-spec §1-§2) are the defaults of `stage=cnn`; experiments change only what they say."""

import pytest
from hydra.utils import instantiate

from tests.helpers import compose_cfg


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return compose_cfg(["stage=cnn"], tmp_path_factory.mktemp("cfg"))


def test_paper_architecture_defaults(cfg):
    m = cfg.model
    assert m._target_ == "lightning_modules.cnn.CNNModule" and m.arch == "paper"
    assert list(m.channels) == [32, 32, 64]
    assert list(m.kernels) == [9, 5, 5]
    assert m.dropout == 0.25
    assert m.num_classes == 7
    assert m.crop_size == 44 and m.crop_per_batch is True and m.flip_p == 0.5
    assert m.prob_clip == 1e-6
    assert m.tta_flip is False and m.tta_crops is False
    assert m.rotate_deg == 0.0 and m.scale_jitter == 0.0  # no warping in the paper


def test_paper_training_defaults(cfg):
    m = cfg.model
    assert m.lr == 0.001 and m.momentum == 0.9 and m.weight_decay == 0.0 and m.nesterov is False
    assert m.lr_schedule == "constant"
    assert cfg.data.batch_size == 128
    assert cfg.trainer.max_epochs == 700
    assert cfg.seed == 1
    ckpt = cfg.callbacks.model_checkpoint
    assert ckpt.monitor == "val/acc" and ckpt.mode == "max" and ckpt.save_last is True


def test_paper_data_defaults(cfg):
    d = cfg.data
    assert d.histeq_levels == 64
    assert d.val_source == "afew" and list(d.afew_splits) == ["Train", "Val"]
    assert d.fer_format == "csv" and d.tfd_mat.endswith("tfd/TFD_48x48.mat")
    assert cfg.task_name == "cnn" and cfg.runner == "stages.cnn.fit_test_export"


def test_instantiates_without_hydra_types(cfg):
    module = instantiate(cfg.model)
    assert isinstance(module.hparams.channels, list)
    dm = instantiate(cfg.data)
    assert isinstance(dm.hparams.afew_splits, list)


@pytest.mark.parametrize(
    ("overrides", "checks"),
    [
        (
            ["data=fer_images"],
            {"data.fer_format": "images", "data.val_source": "fer_holdout", "data.tfd_mat": None},
        ),
        (
            ["data=fer_csv"],
            {"data.fer_format": "csv", "data.val_source": "fer_holdout", "data.histeq_levels": 64},
        ),
        (["model=cnn_deep"], {"model.arch": "deep", "data.batch_size": 128}),
        (
            ["experiment=demo"],
            {"model.arch": "paper", "model.channels": [32, 32, 64], "data.val_source": "fer_holdout"},
        ),
        (
            ["experiment=fer2013_real"],
            {
                "model.arch": "paper",
                "data.fer_format": "images",
                "model.tta_flip": True,
                "model.tta_crops": True,
                "model.rotate_deg": 10.0,
            },
        ),
        (
            ["experiment=fer2013_deep"],
            {
                "model.arch": "deep",
                "model.deep_widths": [64, 128, 256, 512],
                "trainer.accelerator": "gpu",
                "trainer.precision": "bf16-mixed",
                "data.fer_format": "images",
                "model.tta_crops": True,
            },
        ),
    ],
)
def test_variants(tmp_path, overrides, checks):
    from omegaconf import OmegaConf

    cfg = compose_cfg(["stage=cnn", *overrides], tmp_path)
    for key, value in checks.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key
