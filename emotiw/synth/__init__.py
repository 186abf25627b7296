"""Procedural data in the real on-disk formats of AFEW, FER2013 and TFD (see docs/pipeline.md, "Data formats").

``generate(out_dir, preset=..., seed=...)`` writes the whole tree; the format writers (``write_fer_csv``,
``write_fer_images``, ``write_tfd_mat``, ``write_avi``, ``write_afew``) are public so that tests can craft their own
(and broken) inputs. The same seed gives the same bytes: every item draws from its own random stream, and every
encoder runs single-threaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emotiw.artifacts import load_json, save_json
from emotiw.labels import EMOTIONS
from emotiw.synth.presets import DIFFICULTIES, PRESETS, Difficulty, Preset, get_difficulty, get_preset
from emotiw.synth.stills import make_fer, make_tfd, write_fer_csv, write_fer_images, write_tfd_mat

log = logging.getLogger(__name__)

__all__ = [
    "DIFFICULTIES",
    "PRESETS",
    "Difficulty",
    "Preset",
    "content_hash",
    "generate",
    "is_complete",
    "make_fer",
    "make_tfd",
    "write_afew",
    "write_avi",
    "write_fer_csv",
    "write_fer_images",
    "write_tfd_mat",
]

COMPLETE = ".complete"
# Bump when the renderer or a writer changes its output, so that existing generated trees are rewritten.
# 2: eight emotion-leaning kinds of motion instead of four; 3: face_points.csv beside the stills; 4: a random
# recording gain per clip and a 10 dB vocal-effort span (no loudness shortcut)
GENERATOR_VERSION = 4
_TOP_LEVEL = frozenset({"afew", "fer2013", "tfd", COMPLETE})


def __getattr__(name: str) -> Any:
    # The video writers pull in PyAV; import them only when asked for.
    if name in ("write_avi", "write_afew"):
        from emotiw.synth import afew

        return getattr(afew, name)
    raise AttributeError(f"module 'emotiw.synth' has no attribute {name!r}")


def content_hash(root: str | os.PathLike) -> str:
    """sha256 over every file under ``root`` but ``.complete``, in sorted relative-path order (names and bytes)."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != COMPLETE)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _spec(preset: Preset, seed: int, difficulty: Difficulty) -> dict[str, Any]:
    # Everything that decides the bytes: a tree made by another generator version or other knobs is regenerated.
    knobs = json.loads(json.dumps(dataclasses.asdict(difficulty)))
    return {
        "preset": preset.name,
        "seed": int(seed),
        "difficulty": difficulty.name,
        "version": GENERATOR_VERSION,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(preset).items()},
        "difficulty_settings": knobs,
    }


def is_complete(
    out_dir: str | os.PathLike,
    *,
    preset: str = "demo",
    seed: int = 0,
    difficulty: str | None = None,
    counts: Mapping[str, Any] | None = None,
) -> bool:
    """Whether ``out_dir`` holds a finished tree made with exactly these arguments."""
    marker = Path(out_dir) / COMPLETE
    if not marker.is_file():
        return False
    p = get_preset(preset).with_overrides(counts)
    d = get_difficulty(difficulty or _default_difficulty(preset))
    try:
        done = load_json(marker)
    except ValueError:
        return False
    want = _spec(p, seed, d)
    return all(done.get(k) == v for k, v in want.items())


def _default_difficulty(preset: str) -> str:
    return "easy" if preset == "tiny" else "paper"


def generate(
    out_dir: str | os.PathLike,
    *,
    preset: str = "demo",
    seed: int = 0,
    difficulty: str | None = None,
    counts: Mapping[str, Any] | None = None,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Write the AFEW, FER2013 and TFD look-alikes under ``out_dir``; return ``out_dir``.

    ``preset``: tiny | demo | paper (sizes, see ``emotiw.synth.presets.PRESETS``); ``difficulty``: easy | paper
    (default: easy for tiny, paper otherwise); ``counts`` overrides preset fields (``fer_per_class``, ``tfd``,
    ``afew_train``, ``afew_val``, ``afew_test``, ``afew_min_s``, ``afew_max_s``, ``afew_balance``, ``frame_size``);
    ``workers``: processes (default: all cores up to 8; results do not depend on it).
    An existing tree made with the same arguments is kept unless ``force``. The tree is written beside ``out_dir``
    and renamed into place, so an interrupted run never leaves a half-written tree (a killed run's temporary tree is
    removed by the next run); ``.complete`` (preset, seed, counts, content hash) is written last.
    """
    out = Path(out_dir)
    p = get_preset(preset).with_overrides(counts)
    d = get_difficulty(difficulty or _default_difficulty(preset))
    if not force and is_complete(out, preset=preset, seed=seed, difficulty=d.name, counts=counts):
        return out
    if out.exists():  # only ever replace a tree this generator wrote (or an empty folder)
        foreign = (
            sorted(p.name for p in out.iterdir() if p.name not in _TOP_LEVEL) if out.is_dir() else [out.name]
        )
        if foreign:
            raise ValueError(
                f"{out}: exists and holds {', '.join(foreign[:5])}, which the generator did not write; "
                "choose an empty or previously generated folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temp_trees(out)
    # the pid in the name tells a later run whether the writer is still alive
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))
    try:
        timings: dict[str, float] = {}
        summary = _write_tree(tmp, p, int(seed), d, workers, timings)
        start = time.perf_counter()
        digest = content_hash(tmp)
        timings["hash"] = time.perf_counter() - start
        marker = {
            **_spec(p, seed, d),
            "counts": summary,
            "sha256": digest,
            "seconds": {k: round(v, 2) for k, v in timings.items()},
        }
        save_json(tmp / COMPLETE, marker)
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_dead_temp_trees(out: Path) -> None:
    """Delete the temporary trees (``.<name>.<pid>.<rand>.partial``, ``.<name>.<pid>.old``) that killed runs left
    beside ``out``; a live writer's tree is kept. Names without a pid come from older versions and are removed."""
    for tree in out.parent.glob(f".{out.name}.*"):
        rest = tree.name[len(out.name) + 2 :]
        if not tree.is_dir() or not (rest.endswith((".partial", ".old")) or rest.startswith("old-")):
            continue
        pid = rest.split(".")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        log.warning("make_data: removing %s, left by an interrupted run", tree)
        shutil.rmtree(tree, ignore_errors=True)


def _write_tree(
    root: Path, p: Preset, seed: int, d: Difficulty, workers: int | None, timings: dict[str, float]
) -> dict[str, Any]:
    from emotiw.synth.afew import write_afew

    t0 = time.perf_counter()
    fer = make_fer(p.fer_counts(), seed=seed, difficulty=d, workers=workers)
    t1 = time.perf_counter()
    write_fer_csv(root / "fer2013" / "fer2013.csv", fer, workers=workers)
    write_fer_images(root / "fer2013" / "images", fer, workers=workers)
    t2 = time.perf_counter()
    tfd = make_tfd(p.tfd, labelled=p.tfd_labelled, seed=seed, difficulty=d, workers=workers)
    write_tfd_mat(root / "tfd" / "TFD_48x48.mat", tfd)
    t3 = time.perf_counter()
    afew = write_afew(root / "afew", p, seed=seed, difficulty=d, workers=workers)
    timings.update(fer_render=t1 - t0, fer_write=t2 - t1, tfd=t3 - t2, afew=time.perf_counter() - t3)

    def per_class(labels) -> dict[str, int]:
        return {e: int((labels == i).sum()) for i, e in enumerate(EMOTIONS)}

    return {
        "fer2013": {
            u: per_class(fer.labels[fer.usage == u]) for u in ("Training", "PublicTest", "PrivateTest")
        },
        "tfd": {"labelled": per_class(tfd[0].labels), "unlabelled": int((tfd[0].labels < 0).sum())},
        "afew": afew,
    }
