"""The FER/TFD face cache: keyed by every setting that changes its content, verified on read, rebuilt when damaged."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from tests.datamodules.test_fer_tfd import _dm, faces  # noqa: F401 (the module-scoped generated FER/TFD files)


def _splits(dm) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {s: (f.images, f.labels, f.keys) for s, f in dm.data.items()}


def _assert_same(a, b) -> None:
    assert a.keys() == b.keys()
    for split in a:
        for x, y in zip(a[split], b[split], strict=True):
            np.testing.assert_array_equal(x, y)


def _fresh(faces, **kw):  # noqa: F811
    dm = _dm(faces, **kw)
    dm.setup("fit")
    return dm


def test_no_bad_cache_hit_after_holdout_or_seed_change(faces, tmp_path):  # noqa: F811
    _fresh(faces, cache_dir=str(tmp_path))
    for change in ({"holdout_fraction": 0.5, "seed": 7}, {"seed": 7}, {"holdout_fraction": 0.5}):
        cached = _fresh(faces, cache_dir=str(tmp_path), **change)
        _assert_same(_splits(cached), _splits(_fresh(faces, **change)))  # what an uncached run reads
    assert len(list((tmp_path / "fer_tfd").glob("*.npz"))) == 4


def test_no_bad_cache_hit_after_afew_splits_or_tree_change(faces, tiny_root, tmp_path):  # noqa: F811
    afew = tmp_path / "afew"
    shutil.copytree(tiny_root / "data" / "generated" / "afew", afew)
    cache = str(tmp_path / "cache")
    kw = dict(val_source="afew", afew_root=str(afew), cache_dir=cache)
    both = _fresh(faces, **kw)
    train_only = _fresh(faces, afew_splits=("Train",), **kw)
    assert set(k.split("/")[0] for k in train_only.data["val"].keys) == {"Train"}
    assert len(train_only.data["val"]) < len(both.data["val"])
    # a clip removed from the tree: the early-stopping set shrinks, not served from the cache
    clip_id = next(k for k in both.data["val"].keys if k.startswith("Val/")).split("/")[1].split(":")[0]
    next((afew / "Val").rglob(f"{clip_id}.*")).unlink()
    shrunk = _fresh(faces, **kw)
    assert not any(f"/{clip_id}:" in k for k in shrunk.data["val"].keys)
    assert len(shrunk.data["val"]) < len(both.data["val"])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_corrupt_fer_tfd_cache_entry_is_rebuilt_and_logged(faces, tmp_path, caplog, damage):  # noqa: F811
    first = _fresh(faces, cache_dir=str(tmp_path))
    (entry,) = (tmp_path / "fer_tfd").glob("*.npz")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"not a zip at all")
    else:  # a whole npz, but not this cache's entry
        np.savez(entry, train_images=np.zeros((2, 48, 48), np.uint8))
    with caplog.at_level(logging.WARNING):
        again = _fresh(faces, cache_dir=str(tmp_path))
    _assert_same(_splits(again), _splits(first))
    assert any(entry.name in r.getMessage() and "rebuil" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        _assert_same(_splits(_fresh(faces, cache_dir=str(tmp_path))), _splits(first))
    assert not caplog.records  # the rebuilt entry is whole again: a plain hit
