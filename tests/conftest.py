"""Shared fixtures: one tiny generated data set per test session, written in the real on-disk formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Two cores here: keep intra-op threads small so parallel work (data loading, DDP ranks) does not oversubscribe.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root whose ``data/generated`` holds the generator's ``tiny`` preset (seed 0)."""
    from emotiw.synth import generate

    root = tmp_path_factory.mktemp("root")
    generate(root / "data" / "generated", preset="tiny", seed=0)
    return root


@pytest.fixture
def one_torch_thread():
    """Tiny nets and searches run faster on one intra-op thread; two spinning OpenMP threads on an oversubscribed
    2-core box make a fusion step many times slower (README, Benchmarks). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real media (``data/fer2013``, ``data/real_faces``, ...): ``$EMOTIW_SHARED`` or ``<repo>/../shared``;
    the test is skipped, with the reason, where the folder is absent. Never copied into the repository."""
    shared = Path(os.environ.get("EMOTIW_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
    if not (shared / "data").is_dir():
        pytest.skip(f"real data not available: no {shared / 'data'} (set EMOTIW_SHARED to the shared folder)")
    return shared / "data"
