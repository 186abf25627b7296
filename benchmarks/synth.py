"""Generator speed: ``emotiw.synth.generate`` on one process (the baseline) and on a pool, same run, same bytes.

The goal: the ``demo`` preset in under a minute on 2 cores. Prints wall and CPU seconds per phase, frames per
second for the clips, the pool's speed-up against one process, and the machine (CPU, cores, load).

    python benchmarks/synth.py [--preset demo] [--workers 2] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from machine import describe, figure

from emotiw.synth import generate


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(out: Path, preset: str, workers: int) -> dict:
    cpu, wall = _cpu_seconds(), time.perf_counter()
    generate(out, preset=preset, seed=0, workers=workers, force=True)
    marker = json.loads((out / ".complete").read_text())
    return {
        "wall": time.perf_counter() - wall,
        "cpu": _cpu_seconds() - cpu,
        "phases": marker["seconds"],
        "frames": marker["counts"]["afew"]["frames"],
        "sha256": marker["sha256"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true", help="only time the pool")
    args = ap.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        if not args.skip_baseline:
            runs[1] = _timed(Path(tmp) / "one", args.preset, 1)
        runs[args.workers] = _timed(Path(tmp) / "pool", args.preset, args.workers)
    for workers, r in runs.items():
        print(
            f"{args.preset}, {workers} process(es): wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, "
            f"clips {r['frames'] / r['phases']['afew']:.0f} frames/s, phases {r['phases']}"
        )
    if len(runs) == 2:
        one, pool = runs[1], runs[args.workers]
        print(
            f"speed-up with {args.workers} processes: {one['wall'] / pool['wall']:.2f}x; "
            f"same bytes: {one['sha256'] == pool['sha256']}"
        )
        figure(
            f"generate {args.preset}, {args.workers} processes", pool["wall"], "s", "1 process", one["wall"]
        )
    else:
        figure(f"generate {args.preset}, {args.workers} processes", runs[args.workers]["wall"], "s")


if __name__ == "__main__":
    main()
