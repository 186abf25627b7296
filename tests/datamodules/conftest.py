from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.afew_tree import write_tiny_afew


@pytest.fixture(scope="session")
def afew_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("afew")
    return root, write_tiny_afew(root)
