"""Feature extraction speed of the audio and activity models.

- Audio: IS10 features per second, from .avi files (PyAV decode + resample + openSMILE), uncached, in clips/s and
  seconds of audio per second.
- Activity: SAE block encodings per second with the whitening folded into one matrix, batched (one matmul per 4096
  blocks) against a per-block loop that whitens then encodes each block on its own (the baseline), same run; the
  k-means codebook and histograms with the default thread pools against one thread.

    python benchmarks/features.py [--clips 12] [--seconds 3] [--blocks 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe, figure

from emotiw.activity import FoldedEncoder, block_whitener
from emotiw.audio import extract_is10


def _write_clips(out: Path, n: int, seconds: float) -> list[tuple[str, Path]]:
    """Clips with a harmonic voice under a syllable-rate envelope (what IS10 spends its time on) and grey frames."""
    from emotiw.synth import write_avi

    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    clips = []
    for i in range(n):
        phase = 2 * np.pi * (100 + 15 * i) * t
        voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
        audio = (0.2 * voice + 0.005 * rng.standard_normal(t.size)).astype(np.float32)
        frames = rng.integers(0, 255, size=(int(25 * seconds), 48, 64), dtype=np.uint8)
        path = out / f"{i:09d}.avi"
        write_avi(path, frames, audio=audio, sample_rate=16000)
        clips.append((f"{i:09d}", path))
    return clips


def bench_audio(n_clips: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clips = _write_clips(Path(tmp), n_clips, seconds)
        extract_is10(clips[:1], cache_dir=None)  # warm-up: openSMILE config load
        start = time.perf_counter()
        feats, report = extract_is10(clips, cache_dir=None, n_jobs=1)
        wall = time.perf_counter() - start
        cache = Path(tmp) / "cache"
        extract_is10(clips, cache_dir=cache)
        start = time.perf_counter()
        extract_is10(clips, cache_dir=cache)
        cached = time.perf_counter() - start
    assert report.counts["ok"] == n_clips
    print(
        f"audio IS10: {n_clips} clips x {seconds:.1f} s in {wall:.2f} s -> {n_clips / wall:.2f} clips/s, "
        f"{n_clips * seconds / wall:.1f} s of audio per second (1 process); cached re-read {n_clips / cached:.0f} clips/s "
        f"({wall / cached:.0f}x)"
    )
    figure("audio IS10 extraction, 1 process", n_clips * seconds / wall, "s of audio/s")
    figure("audio IS10 cached re-read", n_clips / cached, "clips/s", "extraction, 1 process", n_clips / wall)


def bench_blocks(n_blocks: int, n_loop: int) -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, size=(n_blocks, 2560)).astype(np.uint8)
    n_fit = min(3000, n_blocks)
    fit = blocks[:n_fit].astype(np.float64) + rng.normal(size=(n_fit, 2560)) * 5
    whitener = block_whitener(max_components=500).fit(fit)
    W = rng.uniform(-0.01, 0.01, size=(whitener.n_components_, 300))
    enc = FoldedEncoder.from_whitener(whitener, W)

    start = time.perf_counter()
    batched = enc.encode(blocks)
    t_batched = time.perf_counter() - start

    # Baseline: whiten each block (rownorm, column normalisation, PCA projection), then encode it, one at a time.
    A, b = whitener.affine_map()
    A32, b32, W32 = A.astype(np.float32), b.astype(np.float32), W.astype(np.float32)
    c = np.float32(whitener.row_constant_)
    loop = np.empty((n_loop, 300), np.float32)
    start = time.perf_counter()
    for i in range(n_loop):
        x = blocks[i].astype(np.float32)
        x = (x - x.mean()) / (x.std() + c)
        s = (x @ A32 + b32) @ W32
        loop[i] = 1 / (1 + np.exp(-(s * s)))
    t_loop = time.perf_counter() - start
    np.testing.assert_allclose(loop, batched[:n_loop], atol=1e-4)
    rate_b, rate_l = n_blocks / t_batched, n_loop / t_loop
    print(
        f"SAE encodings: batched folded matmul {rate_b:,.0f} blocks/s ({n_blocks} blocks, "
        f"whitened dims {whitener.n_components_}) vs per-block loop {rate_l:,.0f} blocks/s -> {rate_b / rate_l:.1f}x"
    )
    figure(
        "SAE block encodings, batched folded matmul",
        rate_b,
        "blocks/s",
        "per-block whiten-then-encode loop",
        rate_l,
    )


def bench_codebook(n_blocks: int, n_words: int) -> None:
    """k-means codebook (BagOfWords.fit) and histograms with the default thread pools against one thread
    (``cpu_threads: 1`` of the small activity preset, conf/scale/activity/small.yaml): on a machine whose cores are
    busy, spinning OpenMP threads cost more than they give on these small problems."""
    from emotiw.activity import BagOfWords, cpu_threads

    rng = np.random.default_rng(0)
    feats = (0.5 + 0.5 * rng.random((n_blocks, 300)) ** 4).astype(np.float32)  # SAE outputs lie in [0.5, 1)
    clips = np.array_split(feats, max(1, n_blocks // 400))
    times = {}
    for threads in (None, 1):
        with cpu_threads(threads):
            start = time.perf_counter()
            bow = BagOfWords(n_words=n_words, random_state=0).fit(feats)
            bow.histograms(clips)
            times[threads] = time.perf_counter() - start
    print(
        f"codebook ({n_blocks} blocks, {n_words} words) + histograms: default threads {times[None]:.2f} s, "
        f"one thread {times[1]:.2f} s -> {times[None] / times[1]:.1f}x"
    )
    figure(
        f"k-means codebook + histograms ({n_blocks} blocks, {n_words} words), one thread",
        times[1],
        "s",
        "default thread pools",
        times[None],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--loop-blocks", type=int, default=2000)
    ap.add_argument("--words", type=int, default=64)
    args = ap.parse_args()
    print(f"machine: {describe()}")
    bench_audio(args.clips, args.seconds)
    bench_blocks(args.blocks, args.loop_blocks)
    bench_codebook(args.blocks, args.words)


if __name__ == "__main__":
    main()
