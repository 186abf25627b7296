"""When a stage's outputs are complete, and still what its config and inputs would make now.

A stage run removes ``<run_dir>/<stage>/complete.json`` before it writes anything and writes it again, atomically,
as its very last step. So a run that fails, is stopped or is killed leaves no record, and ``stage=all`` reruns it
however much of its output it left. The record holds:

- ``config``: a hash of the stage's resolved config (``ckpt_path`` left out: resuming changes no result);
- ``inputs``: a hash of each input as it was when the stage finished: the records of the stages before it in the
  pipeline (in this run, linked shared stages included), the tuned run's record of the same stage under a retrain
  partition, the records of other runs' combine sources, and a fingerprint (path, size, modification time of every
  file) of each data file or folder its config names outside the runs and cache folders.

A stage is complete when its record exists and both hashes equal the ones computed now. A rerun upstream writes a new
record (it holds its finishing time), so every stage after it reruns too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emotiw.artifacts import load_json, save_json

RECORD = "complete.json"
# The pipeline in order: a stage's upstream is every stage before it.
PIPELINE = (
    "make_data",
    "cnn",
    "faces",
    "features",
    "irnn",
    "aggcnn",
    "audio",
    "activity",
    "fusion",
    "combine",
    "report",
)
# Config keys that resume a run without changing what it makes.
RESUME_KEYS = ("ckpt_path",)


def record_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / RECORD


def begin(output_dir: str | os.PathLike) -> None:
    """Mark the stage incomplete before it writes anything (rank zero)."""
    record_path(output_dir).unlink(missing_ok=True)


def config_hash(cfg: DictConfig) -> str | None:
    """A hash of the resolved config without :data:`RESUME_KEYS`; None when it does not resolve."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # a required value missing: never complete
        return None
    for key in (*RESUME_KEYS, "hydra"):
        resolved.pop(key, None)
    return _sha256(json.dumps(resolved, sort_keys=True, default=str).encode())


def finish(cfg: DictConfig, config: str | None, seconds: float) -> Path:
    """Write the completion record, the stage's last write (rank zero)."""
    record = {
        "stage": str(cfg.task_name),
        "config": config,
        "inputs": input_hashes(cfg),
        "finished": dt.datetime.now().astimezone().isoformat(),
        "seconds": seconds,
    }
    return save_json(record_path(cfg.paths.output_dir), record)


def incomplete_reason(cfg: DictConfig) -> str | None:
    """None when the stage of ``cfg`` is complete and current; else why not, in a few words."""
    path = record_path(cfg.paths.output_dir)
    if not path.is_file():
        return "not finished (never run, failed or stopped)"
    try:
        record = load_json(path)
    except ValueError:
        return f"unreadable {path}"
    config = config_hash(cfg)
    if config is None or record.get("config") != config:
        return "its config changed"
    recorded, now = record.get("inputs") or {}, input_hashes(cfg)
    changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
    if changed:
        return f"its input changed: {', '.join(changed)}"
    return None


def input_hashes(cfg: DictConfig) -> dict[str, str]:
    """``{input name: hash}`` for every input of the stage of ``cfg`` that exists now."""
    paths = cfg.paths
    run_dir, runs_dir = Path(paths.run_dir), Path(paths.runs_dir)
    stage = str(cfg.task_name)
    records: dict[str, Path] = {}
    for name in PIPELINE[: PIPELINE.index(stage)] if stage in PIPELINE else ():
        records[f"stage {name}"] = record_path(run_dir / name)
    from_run = (cfg.get("partition") or {}).get("from_run")
    if from_run:
        records[f"run {from_run}/{stage}"] = record_path(runs_dir / str(from_run) / stage)
    for source in (cfg.get("combine") or {}).get("sources") or ():
        other, _, model = str(source).rpartition("/")
        if other:
            records[f"run {other}/{model}"] = record_path(runs_dir / other / model)
    hashes = {name: _sha256(p.read_bytes()) for name, p in records.items() if p.is_file()}
    outside = [Path(paths.runs_dir).resolve(), Path(paths.cache_dir).resolve()]
    for data in sorted(set(_data_paths(cfg))):
        if not any(data.is_relative_to(o) for o in outside):
            hashes[f"data {data}"] = fingerprint(data)
    return hashes


def fingerprint(path: Path) -> str:
    """A hash of the relative path, size and modification time of ``path`` and every file under it."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(_files_under(path))
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _files_under(folder: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(folder, followlinks=True):
        for name in names:
            yield Path(dirpath) / name


def _data_paths(cfg: DictConfig) -> Iterator[Path]:
    """Absolute paths named anywhere in the config (the ``paths`` group and :data:`RESUME_KEYS` aside) that exist."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return
    for key in ("paths", "hydra", *RESUME_KEYS):  # a resume checkpoint is not an input
        resolved.pop(key, None)
    stack: list[Any] = [resolved]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and os.path.isabs(node) and os.path.exists(node):
            yield Path(node).resolve()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
