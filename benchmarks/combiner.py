"""Benchmark the random-search combiner on a problem of the paper's size: 383 validation clips, 5 models, 7 classes.

Prints, for this machine (CPU, cores, load average beside every figure: others' jobs slow every figure):
- the first call's numba time (compiling the kernel, or loading it from numba's cache where an earlier run compiled
  it);
- the per-candidate cost of the plain numpy loop (one Python iteration per candidate: draw, rescale, score), timed
  on a slice for each subset size, with and without missing clips;
- the wall time of the paper's whole schedule (100k global + 81 x 100k local = 8.2 M evaluations per subset) for all
  five models (the default), then for all 26 subsets (``search_subsets``), then for all 26 subsets with 10 % of the
  clips missing one model, each beside the numpy loop extrapolated to the same evaluations (the ratio) and the CPU
  time of the process (all threads); each also as a ``figure {json}`` line for ``run_all.py``.

    python benchmarks/combiner.py                     # the paper's schedule, on every core
    python benchmarks/combiner.py --n-samples 10000   # a 10x shorter schedule (quick look; labelled)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, describe, figure  # noqa: E402

from emotiw.combine import RandomSearchCombiner, _scan, model_subsets  # noqa: E402

N_CLIPS, N_MODELS, N_CLASSES = 383, 5, 7


def load() -> str:
    return "load average " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def paper_sized_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five models of different skill on 383 clips."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, N_CLIPS)
    blocks = []
    for strength in (0.9, 0.6, 1.2, 0.4, 1.5):
        logits = rng.normal(size=(N_CLIPS, N_CLASSES))
        logits[np.arange(N_CLIPS), y] += strength
        p = np.exp(logits)
        blocks.append(p / p.sum(axis=1, keepdims=True))
    return np.hstack(blocks), y


def with_missing(X: np.ndarray, fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """A copy with ``fraction`` of the clips missing one model (NaN columns), as silent audio or no face give."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    rows = rng.choice(len(X), round(fraction * len(X)), replace=False)
    for row, model in zip(rows, rng.integers(0, N_MODELS, len(rows)), strict=True):
        X[row, model * N_CLASSES : (model + 1) * N_CLASSES] = np.nan
    return X


def loop_seconds_per_candidate(X: np.ndarray, y: np.ndarray, models: tuple[int, ...], n: int) -> float:
    """The straightforward search: one Python iteration per candidate (draw, rescale, score, keep if better)."""
    probs = X.reshape(len(y), N_MODELS, N_CLASSES)[:, list(models)]
    present = ~np.isnan(probs).all(axis=2)
    probs = np.nan_to_num(probs)
    rng = np.random.default_rng(1)
    best = -1.0
    start = time.process_time()
    for _ in range(n):
        w = rng.random((len(models), N_CLASSES))
        w /= w.sum(axis=0, keepdims=True)
        scores = np.einsum("nmc,mc->nc", probs, w) / np.maximum(np.einsum("nm,mc->nc", present, w), 1e-12)
        acc = np.mean(np.argmax(scores, axis=1) == y)
        if acc > best:
            best = acc
    return (time.process_time() - start) / n


def timed_fit(est: RandomSearchCombiner, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of one fit."""
    start, cpu = time.perf_counter(), time.process_time()
    est.fit(X, y)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n-samples", type=int, default=100_000, help="candidates per round (paper: 100,000)"
    )
    parser.add_argument("--loop-slice", type=int, default=1000, help="candidates timed in the numpy loop")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count(), help="threads of the search")
    args = parser.parse_args()

    print(f"machine: {describe()}; {load()} (1/5/15 min)")
    X, y = paper_sized_problem()
    X_missing = with_missing(X)
    start = time.perf_counter()
    for m in range(2, N_MODELS + 1):  # one kernel per subset size
        RandomSearchCombiner(n_samples=8, decay=0.5, sigma_min=0.2).fit(X_missing[:, : m * N_CLASSES], y)
    hits, misses = sum(_scan.stats.cache_hits.values()), sum(_scan.stats.cache_misses.values())
    print(
        f"first calls (one numba kernel per subset size): {time.perf_counter() - start:.1f} s wall, {misses} "
        f"kernels compiled, {hits} loaded from numba's cache (an earlier run compiled them); {load()}"
    )

    est = RandomSearchCombiner(n_samples=args.n_samples, n_jobs=args.n_jobs)
    per_subset = est.n_evaluations_per_subset
    paper = RandomSearchCombiner().n_evaluations_per_subset
    scaled = "" if per_subset == paper else f" (SHORTENED: --n-samples {args.n_samples}; paper {paper:,})"
    subsets = model_subsets(N_MODELS)
    print(
        f"problem: {N_CLIPS} clips x {N_MODELS} models x {N_CLASSES} classes; {per_subset:,} evaluations per "
        f"subset{scaled}; {args.n_jobs} threads"
    )
    loop = {
        (m, missing): loop_seconds_per_candidate(
            X_missing if missing else X, y, tuple(range(m)), args.loop_slice
        )
        for m in range(2, N_MODELS + 1)
        for missing in (False, True)
    }
    print(
        "numpy loop (CPU time per candidate, 2..5 models): "
        + ", ".join(f"{loop[m, False] * 1e6:.0f}" for m in range(2, N_MODELS + 1))
        + " us; with missing clips "
        + ", ".join(f"{loop[m, True] * 1e6:.0f}" for m in range(2, N_MODELS + 1))
        + f" us; {load()}"
    )

    def report(label: str, est: RandomSearchCombiner, X: np.ndarray, subsets: list, missing: bool) -> None:
        wall, cpu = timed_fit(est, X, y)
        loop_s = sum(loop[len(s), missing] for s in subsets) * per_subset
        print(
            f"{label}: {wall:.1f} s wall (CPU {cpu:.1f} s), {loop_s / wall:.0f}x the per-candidate loop "
            f"({loop_s / 3600:.1f} h extrapolated){scaled}; chosen {est.subset_}, acc {est.best_score_:.4f}; "
            f"{cpu_name()}, {os.cpu_count()} cores, {args.n_jobs} threads; {load()}"
        )
        schedule = "the paper's schedule" if not scaled else f"{args.n_samples} candidates per round"
        figure(
            f"random search, {label} ({schedule})",
            wall,
            "s",
            "numpy loop, one candidate per iteration (CPU time, extrapolated from a slice)",
            loop_s,
            goal="<= 30 s and >= 100x the loop at the paper's schedule (26 subsets)",
        )

    report("all 5 models (the default)", est, X, [tuple(range(N_MODELS))], False)
    every = RandomSearchCombiner(n_samples=args.n_samples, n_jobs=args.n_jobs, search_subsets=True)
    report(f"all {len(subsets)} subsets", every, X, subsets, False)
    report(f"all {len(subsets)} subsets, 10% missing", every, X_missing, subsets, True)


if __name__ == "__main__":
    main()
