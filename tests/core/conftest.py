from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.afew_tree import write_clip, write_tiny_afew


@pytest.fixture(scope="session")
def afew_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("afew")
    return root, write_tiny_afew(root)


@pytest.fixture()
def clip_factory(tmp_path: Path):
    def make(name: str = "clip.avi", n_frames: int = 5, **kw) -> Path:
        path = tmp_path / name
        write_clip(path, n_frames, **kw)
        return path

    return make
