"""Audio model of the paper (§3): openSMILE IS10 paralinguistic features per clip, then PCA-whitening.

``is10`` turns clips into 1582-d feature vectors (cached, parallel, with a report of the clips it could not score);
``whitening`` holds the contrast-normalised PCA-whitening of the authors' ``Audio/pca.py`` (also used for the
activity model's space-time blocks).
"""

from emotiw.audio.is10 import IS10_DIM, AudioFeatureReport, ClipAudioFeatures, extract_is10, is10_features
from emotiw.audio.whitening import ContrastPCAWhitener, FeatureScaler

__all__ = [
    "IS10_DIM",
    "AudioFeatureReport",
    "ClipAudioFeatures",
    "ContrastPCAWhitener",
    "FeatureScaler",
    "extract_is10",
    "is10_features",
]
