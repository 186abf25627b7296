"""The trained models of a run as clip models of :class:`emotiw.pipeline.EmotionPipeline`, and its combiner.

Each one turns what the pipeline found in a clip into the model's 7 probabilities (and, where the fusion network reads
it, the clip feature the stage writes beside them in ``probs/<model>_<Split>.npz``) with the functions its stage calls:

- ``aggcnn``: :func:`emotiw.aggcnn.k_average_pool` of the CNN's per-frame logits, the RBF SVM;
- ``audio``: the IS10 functionals, :func:`emotiw.audio.whitening.whiten_clips`, the RBF SVM;
- ``irnn``: the per-frame CNN features rounded as ``stage=features`` stores them, the IRNN (a callable: the network
  lives in the Lightning layer);
- ``activity``: :func:`emotiw.activity.read_gray`, :func:`emotiw.activity.encode_clip`, the bag of words, the
  chi-squared SVM;
- ``fusion``: :func:`emotiw.fusion.fuse_features` of the clip features above, the fusion network (a callable);
- :class:`RunCombiner`: the combine stage's per-model, per-class weights over the models' probabilities.

An SVM stage is fed float32 features (its batches are FloatTensors), so every SVM here is too. A model that cannot
score a clip raises :class:`~emotiw.pipeline.ModelSkipped`, as its stage leaves the clip out of its probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from emotiw.aggcnn import PAPER_K, k_average_pool
from emotiw.artifacts import FRAME_FEATURE_DTYPE
from emotiw.labels import NUM_CLASSES
from emotiw.pipeline import ClipInputs, ClipScore, ModelSkipped

__all__ = [
    "AggregatedCnn",
    "AudioSvm",
    "ActivitySvm",
    "FusionNet",
    "Irnn",
    "ModelLeftOut",
    "RunCombiner",
]


def _svm_probs(svm, feature: np.ndarray) -> np.ndarray:
    return svm.predict_proba(np.asarray(feature, dtype=np.float32)[None])[0]


class AggregatedCnn:
    """``aggcnn``: the k-average-pooled per-frame logits (k bins x 7) and the RBF SVM of ``stage=aggcnn``."""

    name = "aggcnn"
    needs = frozenset({"frame_logits"})

    def __init__(self, svm, k: int = PAPER_K) -> None:
        self.svm, self.k = svm, k

    def predict(self, clip: ClipInputs) -> ClipScore:
        if len(clip.frame_logits) == 0:
            raise ModelSkipped("no face")
        feature = k_average_pool(np.asarray(clip.frame_logits, dtype=np.float32), self.k).astype(np.float32)
        return ClipScore(_svm_probs(self.svm, feature), feature)


class AudioSvm:
    """``audio``: IS10, the fitted column filter, z-score and PCA-whitening, the RBF SVM of ``stage=audio``.

    ``missing_audio`` is the stage's: ``skip`` leaves a clip without usable audio out, ``zeros`` scores it on the
    all-zero whitened vector. ``is10``: the stage's keyword arguments of :func:`~emotiw.audio.is10.clip_is10`
    (sample rate, shortest and quietest usable audio), the pipeline's ``audio_settings``."""

    name = "audio"
    needs = frozenset({"audio"})

    def __init__(self, scaler, whitener, svm, missing_audio: str = "skip", is10: dict | None = None) -> None:
        if missing_audio not in ("skip", "zeros"):
            raise ValueError(f"missing_audio={missing_audio!r} must be 'skip' or 'zeros'")
        self.scaler, self.whitener, self.svm, self.missing_audio = scaler, whitener, svm, missing_audio
        self.is10 = dict(is10 or {})

    def predict(self, clip: ClipInputs) -> ClipScore:
        from emotiw.audio.whitening import whiten_clips

        audio = clip.audio
        if audio is None or audio.status != "ok":
            if self.missing_audio == "skip":
                reason = "no audio" if audio is None else (audio.detail or audio.status.replace("_", " "))
                raise ModelSkipped(reason)
            feature = np.zeros(int(self.whitener.n_components_), np.float32)
        else:
            feature = whiten_clips(self.scaler, self.whitener, audio.features[None])[0]
        return ClipScore(_svm_probs(self.svm, feature), feature)


class ActivitySvm:
    """``activity``: every grey frame of the clip in 16x16x10 blocks through the SAE's folded encoder, the
    motion-weighted bag of words, the chi-squared SVM of ``stage=activity``. It decodes the file itself (the
    stage's :func:`~emotiw.activity.read_gray`): the blocks tile whole frames, not faces."""

    name = "activity"
    needs = frozenset()

    def __init__(self, encoder, bow, svm) -> None:
        self.encoder, self.bow, self.svm = encoder, bow, svm

    def predict(self, clip: ClipInputs) -> ClipScore:
        from emotiw.activity import encode_clip, read_gray

        if clip.kind != "video":
            raise ModelSkipped("a still has no motion")
        try:
            frames = read_gray(clip.path)
        except ValueError as err:  # VideoDecodeError: truncated or corrupt data, as the stage skips it
            raise ModelSkipped(str(err)) from None
        encodings = encode_clip(frames, self.encoder)
        if len(encodings) == 0:
            raise ModelSkipped(
                f"no full 16x16x10 block in {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}"
            )
        hist = self.bow.histograms([encodings])[0]
        return ClipScore(_svm_probs(self.svm, hist), hist.astype(np.float32))


class Irnn:
    """``irnn``: the per-frame CNN features in the precision ``stage=features`` stores them, through ``net``:
    (T, D) float32 -> (probabilities (7,), last hidden state (H,)), the IRNN's own prediction step."""

    name = "irnn"
    needs = frozenset({"frame_features"})

    def __init__(self, net: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.net = net

    def predict(self, clip: ClipInputs) -> ClipScore:
        if len(clip.frame_idx) == 0:
            raise ModelSkipped("no face")
        frames = np.asarray(clip.frame_features).astype(FRAME_FEATURE_DTYPE).astype(np.float32)
        probs, hidden = self.net(frames)
        return ClipScore(np.asarray(probs), np.asarray(hidden, dtype=np.float32))


class FusionNet:
    """``fusion``: the clip features of ``sources`` (the fusion stage's ``data.models``) side by side
    (:func:`emotiw.fusion.fuse_features`, ``missing`` as in its ``data.missing``) through ``net``:
    (1, sum(in_dims)) float32 -> (7,) probabilities."""

    name = "fusion"
    needs = frozenset()

    def __init__(
        self,
        net: Callable[[np.ndarray], np.ndarray],
        sources: Sequence[str] = ("aggcnn", "audio", "irnn"),
        in_dims: Sequence[int] = (105, 10, 200),
        missing: str = "zeros",
    ) -> None:
        if len(sources) != len(in_dims):
            raise ValueError(
                f"{len(sources)} sources {list(sources)} but {len(in_dims)} in_dims {list(in_dims)}"
            )
        self.net, self.uses, self.in_dims, self.missing = net, tuple(sources), tuple(in_dims), missing

    def predict(self, clip: ClipInputs) -> ClipScore:
        from emotiw.fusion import fuse_features

        feats = [clip.model_features.get(s) for s in self.uses]
        present = np.array([[f is not None for f in feats]])
        if not present.any():
            raise ModelSkipped(f"none of {', '.join(self.uses)} scored the clip")
        blocks = [
            np.zeros((1, d), np.float32) if f is None else np.asarray(f, np.float32).reshape(1, d)
            for f, d in zip(feats, self.in_dims, strict=True)
        ]
        x, keep = fuse_features(blocks, present, self.missing)
        if not keep[0]:
            absent = [s for s, f in zip(self.uses, feats, strict=True) if f is None]
            raise ModelSkipped(f"{', '.join(absent)} did not score the clip (missing=drop)")
        return ClipScore(np.asarray(self.net(x))[0])


class ModelLeftOut:
    """A model the run lacks: never scores (the combiner sees it missing, like a clip it cannot score), and every
    prediction's status says why."""

    needs = frozenset()

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def predict(self, clip: ClipInputs) -> np.ndarray:
        raise ModelSkipped(self.reason)


class RunCombiner:
    """The combine stage's decision: ``estimator`` (a fitted :class:`emotiw.combine.RandomSearchCombiner`) over the
    probabilities of ``sources`` (``chosen.json``'s ``models``, in its column order), a model that did not score the
    clip passed as NaN, as the stage passes it. None when no source scored the clip (the stage has no row for it)."""

    def __init__(self, estimator, sources: Sequence[str]) -> None:
        self.estimator, self.sources = estimator, list(sources)

    def __call__(self, models: Mapping[str, np.ndarray | None]) -> np.ndarray | None:
        from emotiw.combine import hstack_probs

        rows = [models.get(s) for s in self.sources]
        if all(p is None for p in rows):
            return None
        # float32 first: the stage reads the models' probabilities from their float32 files
        blocks = [
            np.full((1, NUM_CLASSES), np.nan)
            if p is None
            else np.asarray(p, np.float32).reshape(1, NUM_CLASSES)
            for p in rows
        ]
        return self.estimator.predict_proba(hstack_probs(blocks))[0]
