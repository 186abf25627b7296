"""The layering of docs/pipeline.md: stages/ only composes, and the plain package never imports Lightning."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import lightning as L
import pytest

import stages

REPO = Path(__file__).resolve().parents[1]
LIGHTNING_BASES = (L.Callback, L.LightningModule, L.LightningDataModule)


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(stages.__path__)))
def test_stages_define_no_lightning_piece(name):
    module = importlib.import_module(f"stages.{name}")
    defined = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and issubclass(obj, LIGHTNING_BASES)
    ]
    assert not defined, (
        f"stages/{name}.py defines {defined}: move them to callbacks/, lightning_modules/ or datamodules/"
    )


def test_plain_package_never_imports_lightning():
    offenders = []
    for path in sorted((REPO / "emotiw").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"the plain package imports Lightning in {offenders}"
