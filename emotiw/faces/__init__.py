"""Face finding, alignment to the FER 48x48 frame, and the per-clip face cache.

The single entry point for AFEW faces is :func:`load_afew_faces`.
"""

from emotiw.faces.align import (
    FACE_SIZE,
    FER_MEAN_SHAPE_48,
    AlignConfig,
    align_clip,
    align_face,
    similarity_transform,
)
from emotiw.faces.cache import CachedFaces, ClipFaces, FaceReport, load_afew_faces
from emotiw.faces.detect import (
    CenterFaceSource,
    Face,
    FaceSource,
    LandmarkFileSource,
    align_largest_face,
    make_face_source,
    resolve_face_source,
)
from emotiw.faces.histeq import equalize_hist

__all__ = [
    "FACE_SIZE",
    "FER_MEAN_SHAPE_48",
    "AlignConfig",
    "CachedFaces",
    "CenterFaceSource",
    "ClipFaces",
    "Face",
    "FaceReport",
    "FaceSource",
    "LandmarkFileSource",
    "align_clip",
    "align_face",
    "align_largest_face",
    "equalize_hist",
    "load_afew_faces",
    "make_face_source",
    "resolve_face_source",
    "similarity_transform",
]
