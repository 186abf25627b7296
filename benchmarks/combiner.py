"""Benchmark the random-search combiner on a problem of the paper's size: 383 validation clips, 5 models, 7 classes.

Prints, for this machine (processor, cores, load average: others' jobs slow every figure, the ratios share the load):
- the per-candidate cost of a plain numpy loop (one Python iteration per candidate), measured on a slice;
- the per-candidate cost of the scorers (``native`` C kernel, optionally the previous default ``compiled``),
  measured on a slice of chunks;
- the wall time of the paper's whole schedule (100k global + 81 x 100k local = 8.2 M evaluations) for the full
  5-model subset, and, with ``--subsets all`` (the default), for all 26 subsets (what ``stage=combine`` runs);
- the ratio of each against the numpy loop extrapolated to the same number of evaluations.

    python benchmarks/combiner.py                         # 5-model subset + all 26 subsets
    python benchmarks/combiner.py --subsets full          # 5-model subset only
    python benchmarks/combiner.py --n-samples 10000       # a 10x shorter schedule (quick look; labelled)
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


def backend_seconds_per_candidate(X: np.ndarray, y: np.ndarray, backend: str, n: int, chunk: int,
                                  threads: int) -> float:
    """Scoring only (draws excluded), through the same table the search uses (pruning included)."""
    probs = X.reshape(len(y), N_MODELS, N_CLASSES).transpose(1, 0, 2)
    table = _ScoreTable(probs, np.ones((N_MODELS, len(y)), bool), y, torch.device("cpu"), backend,
                        n_threads=threads)
    gen = torch.Generator().manual_seed(0)
    wts = [normalise_columns(torch.rand((N_CLASSES, chunk, N_MODELS), generator=gen)) for _ in range(4)]
    table.correct(wts[0])  # warm-up / compile
    start = time.perf_counter()
    done = 0
    while done < n:
        table.correct(wts[(done // chunk) % len(wts)]).argmax()
        done += chunk
    table.close()
    return (time.perf_counter() - start) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subsets", choices=["full", "all"], default="all")
    parser.add_argument("--backend", default="native", choices=["native", "bmm", "fused", "compiled"])
    parser.add_argument("--baseline-backend", default="compiled", choices=["none", "bmm", "fused", "compiled"],
                        help="the previous default scorer, timed on a slice in the same run")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--n-samples", type=int, default=100_000, help="candidates per round (paper: 100,000)")
    parser.add_argument("--loop-slice", type=int, default=2000, help="candidates timed in the numpy loop")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads {args.threads}, torch {torch.__version__}, load average "
          + "/".join(f"{x:.1f}" for x in os.getloadavg()) + " (1/5/15 min; others' jobs slow every figure)")
    X, y = paper_sized_problem()
    est = RandomSearchCombiner(backend=args.backend, chunk_size=args.chunk_size, n_samples=args.n_samples)
    per_subset = est.n_evaluations_per_subset
    paper = RandomSearchCombiner().n_evaluations_per_subset
    scaled = "" if per_subset == paper else f" (SHORTENED: --n-samples {args.n_samples}; paper {paper:,})"
    print(f"problem: {N_CLIPS} clips x {N_MODELS} models x {N_CLASSES} classes; "
          f"{per_subset:,} evaluations per subset{scaled}, {len(model_subsets(N_MODELS))} subsets")

    loop = numpy_loop_seconds_per_candidate(X, y, args.loop_slice)
    print(f"numpy loop: {loop * 1e6:.1f} us/candidate (slice of {args.loop_slice}) "
          f"-> {loop * per_subset:.0f} s per 5-model subset (extrapolated)")
    for backend in dict.fromkeys([b for b in (args.baseline_backend, args.backend) if b != "none"]):
        start = time.perf_counter()
        t = backend_seconds_per_candidate(X, y, backend, 20 * args.chunk_size if backend == "native"
                                          else 4 * args.chunk_size, args.chunk_size, args.threads)
        print(f"{backend:>8} scorer only: {t * 1e6:.3f} us/candidate (chunk {args.chunk_size}; "
              f"{time.perf_counter() - start:.0f} s incl. warm-up) -> {t * per_subset:.1f} s of scoring per 5-model "
              f"subset, {loop / t:.0f}x the loop")

    start = time.perf_counter()
    est.set_params(search_subsets=False).fit(X, y)
    full = time.perf_counter() - start
    print(f"whole schedule, 5-model subset ({args.backend}, draws included): {full:.2f} s = "
          f"{full / per_subset * 1e6:.3f} us/candidate, {loop * per_subset / full:.0f}x the loop{scaled}; "
          f"val acc {est.best_score_:.4f}")
    if args.subsets == "all":
        evals = sum(len(s) for s in model_subsets(N_MODELS)) / N_MODELS * per_subset  # loop cost scales with m
        start = time.perf_counter()
        est.set_params(search_subsets=True).fit(X, y)
        total = time.perf_counter() - start
        print(f"whole schedule, all 26 subsets ({args.backend}): {total:.1f} s, {loop * evals / total:.0f}x the "
              f"loop (loop extrapolated, scaled by subset size){scaled}; chosen subset {est.subset_}, "
              f"acc {est.best_score_:.4f}")
        if scaled:
            print(f"  -> at the paper's 100,000 per round: about {total * paper / per_subset:.0f} s "
                  "(EXTRAPOLATED linearly from the shortened run)")


if __name__ == "__main__":
    main()
