"""Weights shipped inside the package, each with the sha256 it must have (see MODEL_CARD.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent

# The paper's face CNN trained on the real FER2013 Training images (MODEL_CARD.md).
CNN_PAPER_FER2013 = "cnn_paper_fer2013.pt"
# The residual CPU net (model=cnn_res) trained on the same images (MODEL_CARD.md): the stronger and faster model.
CNN_RES_FER2013 = "cnn_res_fer2013.pt"
SHA256: dict[str, str] = {
    CNN_PAPER_FER2013: "8ca6ecf3a4b7185fad4dbd7bfbbca483e4f45656e33e3283e2a7ed195006ca3b",
    CNN_RES_FER2013: "ad2d5bb8944016c3c9daf9986e137fecdd18723647e6975cfd7afc260da8e8af",
}
# The face model that load_cnn() (and so predict.py) uses when given no weights.
DEFAULT_CNN = CNN_RES_FER2013
# The shipped weights for each CNN architecture (CNNModule.warm_start("shipped")).
BY_ARCH = {"paper": CNN_PAPER_FER2013, "res": CNN_RES_FER2013}


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def asset_path(name: str = DEFAULT_CNN, *, verify: bool = True) -> Path:
    """Path of a shipped asset; with ``verify``, raise ``ValueError`` if its checksum is not the recorded one."""
    if name not in SHA256:
        raise ValueError(f"unknown asset {name!r}; shipped: {', '.join(SHA256)}")
    path = ASSETS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shipped asset missing (reinstall the package)")
    if verify:
        got = sha256_of(path)
        if got != SHA256[name]:
            raise ValueError(f"{path}: sha256 {got} does not match the recorded {SHA256[name]}")
    return path
