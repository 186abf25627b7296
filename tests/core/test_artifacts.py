from pathlib import Path

import numpy as np
import pytest

from emotiw.artifacts import ClipProbs, atomic_path, load_probs, probs_path, save_json, save_probs


def _probs(n: int = 3) -> ClipProbs:
    rng = np.random.default_rng(0)
    p = rng.random((n, 7)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    return ClipProbs(
        np.array(["c", "a", "b"][:n]), np.array([2, -1, 6][:n]), p, rng.random((n, 4)).astype(np.float32)
    )


def test_probs_round_trip_sorted_by_clip_id(tmp_path: Path) -> None:
    original = _probs()
    path = save_probs(tmp_path, "irnn", "Val", original)
    assert path == probs_path(tmp_path, "irnn", "Val") == tmp_path / "probs" / "irnn_Val.npz"
    back = load_probs(tmp_path, "irnn", "Val")
    assert back.clip_ids.tolist() == ["a", "b", "c"]
    assert back.labels.tolist() == [-1, 6, 2]
    np.testing.assert_allclose(back.probs[2], original.probs[0])
    np.testing.assert_allclose(back.features[0], original.features[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probs": np.zeros((3, 6), np.float32)}, r"probs must have shape \(3, 7\)"),
        ({"labels": np.zeros(2, np.int64)}, r"labels must have shape \(3,\)"),
        ({"clip_ids": np.array(["a", "a", "b"])}, "unique"),
        ({"probs": np.full((3, 7), np.nan, np.float32)}, "NaN"),
    ],
)
def test_probs_validation(kwargs: dict, match: str) -> None:
    base = dict(
        clip_ids=np.array(["a", "b", "c"]),
        labels=np.zeros(3, np.int64),
        probs=np.ones((3, 7), np.float32) / 7,
    )
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ClipProbs(**base)


def test_missing_probs_names_file_and_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"audio_Test\.npz.*stage=audio"):
        load_probs(tmp_path, "audio", "Test")


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    save_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    """Results are shared on multi-user machines: a written file gets 0666 minus the umask, not mkstemp's 0600."""
    import os

    old = os.umask(0o022)
    try:
        save_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        save_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary left behind


def test_npz_memmap_reads_a_member_in_place(tmp_path: Path) -> None:
    from emotiw.artifacts import npz_memmap, save_npz

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 33)).astype(np.float16)
    fortran = np.asfortranarray(rng.normal(size=(4, 3)))
    path = save_npz(
        tmp_path / "f.npz", ids=np.array(["a", "bb"]), feats=feats, f=fortran, none=np.zeros((0, 5))
    )
    mapped = npz_memmap(path, "feats")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float16
    np.testing.assert_array_equal(mapped, feats)
    np.testing.assert_array_equal(npz_memmap(path, "f"), fortran)
    assert npz_memmap(path, "none").shape == (0, 5)
    np.testing.assert_array_equal(npz_memmap(path, "ids"), ["a", "bb"])
    # a compressed member cannot be mapped: it is read whole, same values
    np.savez_compressed(tmp_path / "c.npz", feats=feats)
    np.testing.assert_array_equal(npz_memmap(tmp_path / "c.npz", "feats"), feats)
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "o.npz", "w") as zf:
        zf.write(tmp_path / "o.npy", "o.npy")
    with pytest.raises(ValueError, match="Python objects"):
        npz_memmap(tmp_path / "o.npz", "o")
