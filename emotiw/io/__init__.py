"""Readers for the face data sets in their real on-disk formats; every label goes through :mod:`emotiw.labels`."""

from emotiw.io.fer import FaceSet, read_fer_csv, read_fer_images
from emotiw.io.tfd import read_tfd_mat

__all__ = ["FaceSet", "read_fer_csv", "read_fer_images", "read_tfd_mat"]
