"""stage=cnn early-stops on AFEW face frames found as stage=faces finds them: on a tree without landmark files the
CenterFace detector, with the `faces` alignment settings (histogram levels, noise seed) of the root config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emotiw.faces import AlignConfig, CenterFaceSource, FaceReport, load_afew_faces
from emotiw.faces.cache import cache_key, cache_path
from emotiw.io.afew import list_splits
from tests.helpers import compose_cfg, run


@pytest.fixture(scope="module")
def no_landmarks_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny generated tree, its AFEW copy without the landmarks/ folder (as real AFEW comes)."""
    root = tmp_path_factory.mktemp("no_landmarks")
    gen, src = root / "data" / "generated", tiny_root / "data" / "generated"
    shutil.copytree(src / "afew", gen / "afew", ignore=shutil.ignore_patterns("landmarks"))
    for name in ("fer2013", "tfd"):
        (gen / name).symlink_to(src / name, target_is_directory=True)
    return root


def test_face_source_resolves_to_centerface_without_landmark_files(no_landmarks_root: Path, tiny_root: Path):
    cfg = compose_cfg(["stage=cnn"], no_landmarks_root)
    assert (cfg.data.val_source, cfg.data.face_source) == ("afew", "auto")
    from emotiw.faces import resolve_face_source

    assert resolve_face_source("auto", cfg.data.afew_root) == "centerface"
    assert resolve_face_source("auto", tiny_root / "data" / "generated" / "afew") == "landmarks"


def test_cnn_stage_early_stops_on_centerface_frames_with_the_faces_settings(no_landmarks_root: Path):
    root = no_landmarks_root
    metrics = run(
        [
            "stage=cnn",
            "experiment_name=nolm",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "data.batch_size=64",
            "++trainer.enable_progress_bar=false",
            "faces.histeq_levels=32",
            "faces.noise_seed=7",
        ],
        root,
    )
    assert 0.0 <= metrics["val/acc"] <= 1.0 and (root / "runs" / "nolm" / "cnn" / "best.ckpt").is_file()
    # The early-stopping frames were found by CenterFace and aligned with these settings: exactly the cache
    # entries stage=faces would read with the same `faces` config (and not those of the default settings).
    afew, cache = root / "data" / "generated" / "afew", root / "cache"
    refs = list_splits(afew, ["Train", "Val"])
    detector = CenterFaceSource()
    built = [
        cache_path(cache, cache_key(r, detector, AlignConfig(levels=32, seed=7))).is_file() for r in refs
    ]
    assert all(built), built
    assert not any(cache_path(cache, cache_key(r, detector, AlignConfig())).is_file() for r in refs)
    clips, report = load_afew_faces(afew, ["Train", "Val"], cache, config=AlignConfig(levels=32, seed=7))
    assert isinstance(report, FaceReport) and report.face_source == "centerface"
    assert report.cache_hits == len(refs) and report.frames > 0
