"""Benchmark the random-search combiner on a problem of the paper's size: 383 validation clips, 5 models, 7 classes.

Prints, for this machine:
- the per-candidate cost of a plain numpy loop (one Python iteration per candidate), measured on a slice;
- the per-candidate cost of each vectorised backend (``bmm``, ``compiled``), measured on a slice;
- the wall time of the paper's whole schedule (100k global + 81 x 100k local = 8.2 M evaluations) for the full
  5-model subset, and, with ``--subsets all``, for all 26 subsets (what ``stage=combine`` runs);
- the ratio of each against the numpy loop extrapolated to the same number of evaluations.

    python benchmarks/combiner.py                 # full-model subset only
    python benchmarks/combiner.py --subsets all   # all 26 subsets (the paper's protocol)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from emotiw.combine import RandomSearchCombiner, _ScoreTable, model_subsets, normalise_columns

N_CLIPS, N_MODELS, N_CLASSES = 383, 5, 7


def paper_sized_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five models of different skill (about 25-40 % accurate, like Table 1) on 383 clips."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, N_CLIPS)
    blocks = []
    for strength in (0.9, 0.6, 1.2, 0.4, 1.5):
        logits = rng.normal(size=(N_CLIPS, N_CLASSES))
        logits[np.arange(N_CLIPS), y] += strength
        p = np.exp(logits)
        blocks.append(p / p.sum(axis=1, keepdims=True))
    return np.hstack(blocks), y


def numpy_loop_seconds_per_candidate(X: np.ndarray, y: np.ndarray, n: int) -> float:
    """The straightforward implementation: draw one W, score it, keep it if better."""
    rng = np.random.default_rng(1)
    probs = X.reshape(len(y), N_MODELS, N_CLASSES)
    best = -1.0
    start = time.perf_counter()
    for _ in range(n):
        w = rng.random((N_MODELS, N_CLASSES))
        w /= w.sum(axis=0, keepdims=True)
        acc = np.mean(np.argmax(np.einsum("nmc,mc->nc", probs, w), axis=1) == y)
        if acc > best:
            best = acc
    return (time.perf_counter() - start) / n


def backend_seconds_per_candidate(X: np.ndarray, y: np.ndarray, backend: str, n: int, chunk: int) -> float:
    probs = X.reshape(len(y), N_MODELS, N_CLASSES).transpose(1, 0, 2)
    table = _ScoreTable(probs, np.ones((N_MODELS, len(y)), bool), y, torch.device("cpu"), backend)
    gen = torch.Generator().manual_seed(0)
    table.correct(normalise_columns(torch.rand((N_CLASSES, chunk, N_MODELS), generator=gen)))  # warm-up / compile
    start = time.perf_counter()
    done = 0
    while done < n:
        wt = normalise_columns(torch.rand((N_CLASSES, chunk, N_MODELS), generator=gen))
        table.correct(wt).argmax()
        done += chunk
    return (time.perf_counter() - start) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subsets", choices=["full", "all"], default="full")
    parser.add_argument("--backend", default="compiled", choices=["bmm", "fused", "compiled"])
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--loop-slice", type=int, default=3000, help="candidates timed in the numpy loop")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} (others' processes slow every figure; the ratios share the load)")
    X, y = paper_sized_problem()
    est = RandomSearchCombiner(backend=args.backend, chunk_size=args.chunk_size)
    per_subset = est.n_evaluations_per_subset
    print(f"problem: {N_CLIPS} clips x {N_MODELS} models x {N_CLASSES} classes; "
          f"{per_subset:,} evaluations per subset, {len(model_subsets(N_MODELS))} subsets")

    loop = numpy_loop_seconds_per_candidate(X, y, args.loop_slice)
    print(f"numpy loop: {loop * 1e6:.1f} us/candidate (slice of {args.loop_slice}) "
          f"-> {loop * per_subset:.0f} s per 5-model subset (extrapolated)")
    for backend in ("bmm", args.backend):
        t = backend_seconds_per_candidate(X, y, backend, 10 * args.chunk_size, args.chunk_size)
        print(f"{backend:>8}: {t * 1e6:.3f} us/candidate (chunk {args.chunk_size}) -> "
              f"{t * per_subset:.1f} s per 5-model subset, {loop / t:.0f}x the loop")
        if backend == args.backend:
            break

    start = time.perf_counter()
    est.set_params(search_subsets=False).fit(X, y)
    full = time.perf_counter() - start
    print(f"whole schedule, full 5-model subset ({args.backend}, compile included): {full:.1f} s, "
          f"{loop * per_subset / full:.0f}x the loop; val acc {est.best_score_:.4f}")
    if args.subsets == "all":
        evals = sum(len(s) for s in model_subsets(N_MODELS)) / N_MODELS * per_subset  # loop cost scales with m
        start = time.perf_counter()
        est.set_params(search_subsets=True).fit(X, y)
        total = time.perf_counter() - start
        print(f"whole schedule, all 26 subsets ({args.backend}): {total:.1f} s, {loop * evals / total:.0f}x the "
              f"loop (extrapolated, scaled by subset size); chosen subset {est.subset_}, acc {est.best_score_:.4f}")


if __name__ == "__main__":
    main()
