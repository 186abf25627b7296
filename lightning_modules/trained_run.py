"""A trained run as one :class:`emotiw.pipeline.EmotionPipeline` (``EmotionPipeline.from_run`` calls :func:`load_run`).

It lives in the Lightning layer because the run's networks (face CNN, IRNN, fusion network, the synchrony
autoencoder) are Lightning checkpoints rebuilt by their LightningModule classes, whose evaluation code (the CNN's
normaliser and crop, the IRNN's prediction step, the fusion network's ``predict_proba``, the SAE's folded encoder) is
the code the stages ran; everything else is the plain package's (:mod:`emotiw.clip_models`).

What it reads, per model (the stage that writes it in brackets); a model whose files are absent is left out
(:class:`~emotiw.clip_models.ModelLeftOut`: None to the combiner, and every prediction's status says why):

- the face CNN ``cnn/best.ckpt`` (cnn; required) and the face source, alignment and ``min_frames`` the run's faces
  were made with (``features/`` or ``faces/``: ``face_report.json`` and ``resolved_config.yaml``);
- ``aggcnn``: ``aggcnn/svm.skops`` and its ``data.k`` (aggcnn);
- ``audio``: ``audio/preprocess.skops``, ``audio/svm.skops`` and the IS10 and ``missing_audio`` settings (audio);
- ``irnn``: ``irnn/best.ckpt`` (irnn);
- ``activity``: ``activity/sae.ckpt``, ``activity/codebook.npz``, ``activity/svm.skops`` (activity);
- ``fusion``: ``fusion/best.ckpt`` and its ``data.models``, ``data.missing`` (fusion); left out when one of those
  models is;
- the decision: ``combine/chosen.json``'s models and weights (combine); without it, the mean of the models present.

Loading never runs code from a file: checkpoints through ``torch.load(weights_only=True)`` with their tensor checksum
verified (:mod:`lightning_modules.integrity`), estimators through skops with exact trusted types
(:func:`emotiw.artifacts.load_skops`), configs as YAML, the codebook as plain arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from emotiw.artifacts import best_ckpt_path, load_json
from emotiw.clip_models import (
    ActivitySvm,
    AggregatedCnn,
    AudioSvm,
    FusionNet,
    Irnn,
    ModelLeftOut,
    RunCombiner,
)
from emotiw.faces.align import AlignConfig
from emotiw.pipeline import EmotionPipeline, MeanFrameProbs, TorchFaceModel

log = logging.getLogger(__name__)

# The paper's models in the combine stage's order (the CSV columns follow it, after the CNN's frame mean).
RUN_MODELS = ("aggcnn", "audio", "irnn", "activity", "fusion")


class RunLayoutError(ValueError):
    """A run folder that cannot be predicted with; the message names the file and the fix."""


def load_run(
    run_dir: str | Path,
    *,
    every: int = 5,
    front_end=None,
    batch_size: int = 256,
    max_pixels: int = 100_000_000,
    work_side: int = 2048,
) -> EmotionPipeline:
    """The run's models as one pipeline.

    Args:
        run_dir: ``runs/<experiment>`` of a trained run (its ``cnn/best.ckpt`` at least).
        every: the detector's frame interval where faces are tracked (runs trained on ``centerface_track``, and
            videos without landmark files under a run trained on landmark files).
        front_end: replaces the run's face source (e.g. ``CentreSquareSource`` for face crops).
        batch_size, max_pixels, work_side: as :class:`~emotiw.pipeline.EmotionPipeline`.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunLayoutError(f"{run}: no such run folder (train one with `python train.py experiment=...`)")
    from lightning_modules.cnn import load_cnn

    cnn = load_cnn(run_dir=run)  # FileNotFoundError naming the file and `stage=cnn` when absent
    faces = _face_settings(run)
    loaders: dict[str, Callable[[Path], Any]] = {
        "aggcnn": _aggcnn,
        "audio": _audio,
        "irnn": _irnn,
        "activity": _activity,
        "fusion": _fusion,
    }
    models: list = [MeanFrameProbs()]
    audio_settings: dict[str, Any] = {}
    for name, loader in loaders.items():
        missing = _missing_files(run, name)
        if missing:
            models.append(ModelLeftOut(name, f"the run has no {missing} (run stage={name})"))
            continue
        model = loader(run)
        if name == "audio":
            audio_settings = model.is10
        if name == "fusion":
            absent = [s for s in model.uses if not _loaded(models, s)]
            if absent:
                model = ModelLeftOut(name, f"it reads {', '.join(absent)}, which the run lacks")
        models.append(model)
    combiner = _combiner(run, models)
    left = {m.name: m.reason for m in models if isinstance(m, ModelLeftOut)}
    log.info(
        "run %s: models %s%s; faces: %s",
        run,
        ", ".join(m.name for m in models if m.name not in left),
        "".join(f"; {k} left out ({v})" for k, v in left.items()),
        faces["source"],
    )
    return EmotionPipeline(
        TorchFaceModel(cnn),
        front_end=front_end if front_end is not None else _front_end(faces["source"], every),
        clip_models=models,
        combiner=combiner,
        align=AlignConfig(levels=faces["levels"], seed=faces["seed"]),
        batch_size=batch_size,
        max_pixels=max_pixels,
        work_side=work_side,
        audio_settings=audio_settings,
        min_frames=faces["min_frames"],
    )


# ---------------------------------------------------------------------------------------------------- files
REQUIRED = {
    "aggcnn": ("aggcnn/svm.skops", "aggcnn/resolved_config.yaml"),
    "audio": ("audio/preprocess.skops", "audio/svm.skops", "audio/resolved_config.yaml"),
    "irnn": ("irnn/best.ckpt",),
    "activity": ("activity/sae.ckpt", "activity/codebook.npz", "activity/svm.skops"),
    "fusion": ("fusion/best.ckpt", "fusion/resolved_config.yaml"),
}


def _missing_files(run: Path, name: str) -> str | None:
    absent = [f for f in REQUIRED[name] if not (run / f).is_file()]
    return " or ".join(absent) if absent else None


def _loaded(models: list, name: str) -> bool:
    return any(m.name == name and not isinstance(m, ModelLeftOut) for m in models)


def _stage_config(run: Path, stage: str) -> DictConfig | None:
    path = run / stage / "resolved_config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------- faces
def _face_settings(run: Path) -> dict[str, Any]:
    """Where the run's faces came from and how they were aligned: the features stage's (the faces the CNN features
    were computed on), else the faces stage's; the face source as its report resolved it (``auto`` -> landmarks or
    centerface)."""
    for stage in ("features", "faces"):
        cfg = _stage_config(run, stage)
        if cfg is None:
            continue
        data = cfg.data
        source = str(data.get("face_source", "auto"))
        report = run / stage / "face_report.json"
        if report.is_file() and load_json(report).get("face_source"):
            source = str(load_json(report)["face_source"])
        elif source == "auto":
            from emotiw.faces.detect import resolve_face_source

            source = str(resolve_face_source(source, data.get("afew_root")))
        return {
            "source": source,
            "levels": int(data.get("histeq_levels", 64)),
            "seed": int(data.get("noise_seed", 0)),
            "min_frames": int(data.get("min_frames", 1)),
        }
    raise RunLayoutError(
        f"{run}: neither features/ nor faces/ holds a resolved_config.yaml, so the run's face source is unknown "
        "(run stage=faces and stage=features)"
    )


def _front_end(source: str, every: int):
    from emotiw.faces.detect import CenterFaceSource, make_face_source
    from emotiw.faces.track import SidecarLandmarkSource, TrackConfig, TrackedFaceSource

    def tracker():
        return TrackedFaceSource(CenterFaceSource(), TrackConfig(every=every))

    if source == "landmarks":
        return SidecarLandmarkSource(fallback=tracker())
    if source == "centerface_track":
        return tracker()
    return make_face_source(source)  # centerface: every frame, the largest face, as stage=faces


# ---------------------------------------------------------------------------------------------------- models
def _aggcnn(run: Path) -> AggregatedCnn:
    from emotiw.aggcnn import PAPER_K
    from emotiw.svm import load_svm

    cfg = _stage_config(run, "aggcnn")
    return AggregatedCnn(load_svm(run / "aggcnn" / "svm.skops"), k=int(cfg.data.get("k", PAPER_K)))


def _audio(run: Path) -> AudioSvm:
    from emotiw.audio.whitening import load_fitted
    from emotiw.svm import load_svm

    data = _stage_config(run, "audio").data
    fitted = load_fitted(run / "audio" / "preprocess.skops")
    return AudioSvm(
        fitted["scaler"],
        fitted["whitener"],
        load_svm(run / "audio" / "svm.skops"),
        missing_audio=str(data.get("missing_audio", "skip")),
        is10={
            "sample_rate": int(data.sample_rate),
            "min_duration_s": float(data.min_duration_s),
            "silence_rms": float(data.silence_rms),
        },
    )


def _irnn(run: Path) -> Irnn:
    from lightning_modules.irnn import IRNNModule

    module = _load_module(IRNNModule, best_ckpt_path(run, "irnn"))

    @torch.no_grad()
    def net(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = {
            "clip_id": [""],
            "label": torch.tensor([-1]),
            "split": [""],
            "frames": torch.from_numpy(frames)[None],
            "lengths": torch.tensor([len(frames)]),
        }
        out = module.predict_step(batch, 0)
        return out["probs"][0].numpy(), out["features"][0].numpy()

    return Irnn(net)


def _activity(run: Path) -> ActivitySvm:
    from emotiw.activity import load_codebook
    from emotiw.svm import load_svm
    from lightning_modules.sae import SAEModule

    sae = _load_module(SAEModule, run / "activity" / "sae.ckpt")
    return ActivitySvm(
        sae.folded_encoder(),
        load_codebook(run / "activity" / "codebook.npz"),
        load_svm(run / "activity" / "svm.skops"),
    )


def _fusion(run: Path) -> FusionNet:
    from lightning_modules.fusion import FusionModule

    module = _load_module(FusionModule, best_ckpt_path(run, "fusion"))
    data = _stage_config(run, "fusion").data

    def net(x: np.ndarray) -> np.ndarray:
        return module.predict_proba(torch.from_numpy(x)).numpy()

    return FusionNet(
        net,
        sources=[str(m) for m in data.models],
        in_dims=list(module.hparams.in_dims),
        missing=str(data.get("missing", "zeros")),
    )


def _load_module(cls, path: Path):
    """A LightningModule from one of the run's checkpoints: tensors and plain values only (``weights_only``), the
    tensor checksum verified by the module's hook (a mismatch names the file), in eval mode on the CPU."""
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


# ---------------------------------------------------------------------------------------------------- decision
def _combiner(run: Path, models: list) -> Callable:
    """The combine stage's weights over its models; without them, the mean of the run's models present (its
    ``note`` says so)."""
    chosen_file = run / "combine" / "chosen.json"
    if not chosen_file.is_file():
        paper = [m.name for m in models if m.name in RUN_MODELS and not isinstance(m, ModelLeftOut)]
        return _MeanOf(paper or ["cnn"])
    chosen = load_json(chosen_file)
    sources = [str(s) for s in chosen["models"]]
    other_runs = [s for s in sources if "/" in s]
    if other_runs:
        raise RunLayoutError(
            f"{chosen_file}: combines other runs' outputs ({', '.join(other_runs)}); predict with those runs "
            "(--run runs/<experiment>) instead"
        )
    return RunCombiner(_fitted_combiner(chosen), sources)


def _fitted_combiner(chosen: dict):
    """The combiner of ``chosen.json`` (its weights and chosen subset), as ``stage=combine`` used it."""
    from emotiw.combine import RandomSearchCombiner

    models = list(chosen["models"])
    return RandomSearchCombiner.from_weights(
        chosen["weights"],
        subset=tuple(models.index(m) for m in chosen["subset"]),
        best_score=float(chosen.get("search_score", float("nan"))),
    )


class _MeanOf:
    """The decision without combiner weights: the mean of the named models that scored the clip."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.note = (
            "the run has no combine/chosen.json (run stage=combine): the decision is the mean of "
            + ", ".join(names)
        )

    def __call__(self, models):
        present = [models[n] for n in self.names if models.get(n) is not None]
        return np.mean(present, axis=0) if present else None
