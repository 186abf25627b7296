"""Decision-level fusion: the paper's random search over per-model, per-class weights (Kahou et al. 2015, §5.2).

Every model m gives class probabilities P[m, n, c] for clip n; a weighting W (M x 7, each class column summing to
one over the models) predicts ``argmax_c sum_m W[m, c] P[m, n, c]``. The search maximises accuracy on the tune split:

1. global stage: ``n_samples`` draws W ~ U[0, 1), each class column rescaled to sum to one;
2. local stage: sigma = ``sigma0``; while sigma > ``sigma_min``: ``n_samples`` draws W ~ N(W0, sigma^2) around the
   round's starting best W0, negatives clipped to 0, columns renormalised; sigma *= ``decay``
   (0.5, 0.9, 1e-4 give 81 rounds, 8.2 M evaluations per subset, as in the paper);
3. every subset of at least ``min_models`` models is searched with the generator re-seeded to ``random_state``
   (the authors' code re-seeds for each subset); the subset with the best accuracy wins.

Ties follow the authors' code: a candidate replaces the best only when strictly better (the earliest best is kept),
and ``argmax`` over classes picks the lowest class index.

Candidates are scored in chunks, never one Python iteration per candidate: on CPU by a small C kernel (built once with
the system compiler, run on ``torch.get_num_threads()`` threads while the next chunk is drawn), elsewhere by one
batched matmul + argmax + compare. Clips whose correctness no weighting can change (every class score is a convex
combination of the models' probabilities, so it stays within their min and max) are counted once and left out of
the search; the counts, and so the chosen weights, are exactly those of the full table.

On CPU the whole search of a subset runs in C (``_FastSearch``) where it can give the same result: a C copy of
torch's CPU generator draws the very candidates ``torch.rand`` / ``torch.randn`` would (checked bit for bit against
torch once per process; otherwise the chunk-by-chunk path draws with torch), and a local round scores a candidate
only on the clips its distance from the round's centre lets change, and not at all when no clip it could turn right
would let it beat the best (bounds in ``round_order`` / ``scan_round`` of ``_combine.c``). A candidate that must be
scored is first shown hopeless, where it is, by scoring each clip's label against one rival class only (a clip is
wrong once a rival wins; ``hopeless_m``), which settles most candidates of the early rounds at a third of the cost.
Every candidate that could beat the best is counted exactly, so the chosen weights, subset and accuracy are bit for
bit those of the exhaustive search. Subsets of the same size draw the same stream (every subset re-seeds the
generator), so the subsets run on the scorer's threads in groups of one size, a group per thread, round by round in
lockstep: each chunk is drawn once for the group just before it is scored; a round the best already rules out for
every member only advances the generator.

Clips that a model cannot score (no face, no audio) are NaN in that model's 7 columns. For such a clip the score of
class c is renormalised over the models that are present: ``sum_{m present} W[m,c] P[m,n,c] / sum_{m present} W[m,c]``
(paper-spec §8.7; the authors' code silently dropped them). A clip with none of a subset's models present scores zero
for every class and so is predicted as class 0, the tie rule.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

# A column whose clipped weights sum to less than this falls back to the round's centre column (paper-spec §8.4:
# the authors' code divided by zero there, which turned the sample into NaN and so rejected it).
_ZERO_COLUMN = 1e-12


def sigma_schedule(sigma0: float = 0.5, decay: float = 0.9, sigma_min: float = 1e-4) -> list[float]:
    """The local stage's sigma per round, computed by repeated multiplication as in the authors' loop."""
    sigmas = []
    sigma = float(sigma0)
    while sigma > sigma_min:
        sigmas.append(sigma)
        sigma *= decay
    return sigmas


def model_subsets(n_models: int, min_models: int = 2) -> list[tuple[int, ...]]:
    """Every subset of ``range(n_models)`` with at least ``min_models`` members, smallest first."""
    return [s for k in range(min_models, n_models + 1) for s in itertools.combinations(range(n_models), k)]


def normalise_columns(w: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Rescale weights (..., M) so that they sum to one over the last (model) axis.

    Rows that sum to zero take ``fallback`` (broadcastable, already normalised) or, without one, equal weights.
    """
    total = w.sum(dim=-1, keepdim=True)
    dead = total <= _ZERO_COLUMN
    out = w / torch.where(dead, torch.ones_like(total), total)
    if bool(dead.any()):
        fb = fallback if fallback is not None else torch.full_like(w, 1.0 / w.shape[-1])
        out = torch.where(dead, fb.expand_as(out), out)
    return out


def _fused_correct(
    wt: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Correctly classified clips (K,) of K candidates ``wt`` (C, K, m) on probabilities ``pt`` (C, m, N).

    Written class by class so that ``torch.compile`` fuses the weighted sum, the running argmax (strict ``>``: the
    lowest class wins a tie) and the comparison with ``y`` into one loop that never materialises (K, N, C).
    ``mask`` (m, N) marks the models present per clip; the class score is then renormalised over them.
    """
    best = idx = None
    n_models = wt.shape[2]
    for c in range(wt.shape[0]):
        # unrolled over the (at most 5) models: plain multiply-adds that the compiler vectorises over (K, N)
        s = wt[c, :, 0:1] * pt[c, 0:1]
        for j in range(1, n_models):
            s = s + wt[c, :, j : j + 1] * pt[c, j : j + 1]
        if mask is not None:
            den = wt[c, :, 0:1] * mask[0:1]
            for j in range(1, n_models):
                den = den + wt[c, :, j : j + 1] * mask[j : j + 1]
            s = s / den.clamp_min(_ZERO_COLUMN)
        if best is None:
            best, idx = s, torch.zeros_like(s, dtype=torch.int32)
        else:
            gt = s > best
            best = torch.where(gt, s, best)
            idx = torch.where(gt, c, idx)
    return (idx == y).sum(1)


def _bmm_correct(
    wt: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Same as ``_fused_correct`` as one batched matmul + argmax (first maximum) + compare: the GPU path."""
    s = torch.bmm(wt, pt)  # (C, K, N)
    if mask is not None:
        s = s / torch.bmm(wt, mask.unsqueeze(0).expand(wt.shape[0], -1, -1)).clamp_min(_ZERO_COLUMN)
    return (s.argmax(dim=0) == y).sum(dim=1)


# The CPU scorer and whole search, in C (``_combine.c`` beside this file, shipped as package data): the same
# class-by-class loop as ``_fused_correct`` (same float32 operations in the same order, no FMA contraction, so the same
# counts), specialised per number of models so that the compiler unrolls the model sum and vectorises over clips.
# Built once per machine with the system C compiler and called through ctypes, which releases the GIL, so the
# candidates of a chunk are split over threads.
_NATIVE_SOURCE = Path(__file__).with_name("_combine.c").read_text(encoding="ascii")
_NATIVE_MAX_MODELS = 8
_NATIVE: dict[str, object] = {}


class _MT(ctypes.Structure):
    """State of the C copy of torch's CPU generator (``mt_t``)."""

    _fields_ = [("s", ctypes.c_uint32 * 624), ("left", ctypes.c_int32), ("next", ctypes.c_int32)]


class _Scan(ctypes.Structure):
    """Arguments of the C ``scan_round`` (``scan_t``)."""

    _p, _i, _f, _d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
    _fields_ = [
        ("z", _p),
        ("K", _i),
        ("chunk", _i),
        ("C", _i),
        ("M", _i),
        ("centre", _p),
        ("sigma", _f),
        ("t_min", _d),
        ("p", _p),
        ("y", _p),
        ("n_pad", _i),
        ("n_real", _i),
        ("pf", _p),
        ("yf", _p),
        ("theta", _p),
        ("safe_suffix", _p),
        ("phi", _p),
        ("n_phi", _i),
        ("right_total", _i),
        ("pm", _p),
        ("ym", _p),
        ("mask", _p),
        ("n_masked", _i),
        ("bests", _p),
        ("n_threads", _i),
        ("stats", _p),
        ("z_chunk0", _i),
        ("pair_p", _p),
        ("pair_pf", _p),
        ("pair_i", _p),
        ("pair_if", _p),
        ("zmax", _p),
    ]


class _Local(ctypes.Structure):
    """A search's buffers for its local rounds and its best so far (the C ``local_t`` of ``run_search``)."""

    _p = ctypes.c_void_p
    _fields_ = [
        ("p", _p),
        ("y", _p),
        ("theta", _p),
        ("phi", _p),
        ("safe", _p),
        ("p_theta", _p),
        ("y_theta", _p),
        ("p_focus", _p),
        ("y_focus", _p),
        ("pair_theta_p", _p),
        ("pair_theta_i", _p),
        ("pair_focus_p", _p),
        ("pair_focus_i", _p),
        ("centre", _p),
        ("best_w", _p),
        ("best", ctypes.c_int64),
    ]


def _build(compiler: str, c_file: Path, out: Path) -> None:
    # -march=native: the host's vector width (retried without it where the compiler refuses it);
    # -ffp-contract=off: no implicit FMA, so the float32 sums round as in the torch scorers (the generator's
    # FMAs are explicit); -fno-math-errno: a vector square root
    flags = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", "-o", str(out), str(c_file)]
    try:
        subprocess.run([compiler, "-march=native", *flags], check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError:
        subprocess.run([compiler, *flags], check=True, capture_output=True, timeout=120)


def _native_library():
    """The compiled C scorer (ctypes), built on first use and cached per source, machine and host; None when no C
    compiler works (the caller falls back to a torch backend)."""
    if "lib" in _NATIVE:
        return _NATIVE["lib"]
    lib = None
    try:
        key = hashlib.sha256(
            "\0".join([_NATIVE_SOURCE, platform.machine(), platform.node(), sys.platform]).encode()
        ).hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / f"emotiw-combine-{os.getuid() if hasattr(os, 'getuid') else 0}"
        so = cache / f"scorer-{key}.so"
        if not so.exists():
            cache.mkdir(parents=True, exist_ok=True)
            c_file = cache / f"scorer-{key}.c"
            c_file.write_text(_NATIVE_SOURCE)
            tmp = cache / f"scorer-{key}.{os.getpid()}.so"
            _build(os.environ.get("CC", "cc"), c_file, tmp)
            os.replace(tmp, so)  # atomic: concurrent builders (DDP ranks) never load a half-written library
        lib = ctypes.CDLL(str(so))
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        lib.correct_counts.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, ptr, ptr, i64, i64, i64, i64]
        lib.correct_counts.restype = ctypes.c_int
        lib.prepare.argtypes = [ptr, i64, i64, i64, ptr, ctypes.c_float, i64, i64]
        lib.prepare.restype = None
        lib.mt_seed.argtypes = [ptr, ctypes.c_uint64]
        lib.mt_seed.restype = None
        lib.mt_uniform.argtypes = [ptr, ptr, i64]
        lib.mt_uniform.restype = None
        lib.mt_normal.argtypes = [ptr, ptr, i64]
        lib.mt_normal.restype = ctypes.c_int
        lib.mt_skip.argtypes = [ptr, i64]
        lib.mt_skip.restype = None
        lib.scan_round.argtypes = [ptr, i64, i64, i64, ctypes.c_int32, ptr, ptr, ptr]
        lib.scan_round.restype = None
        lib.round_order.argtypes = [
            ptr,
            ptr,
            i64,
            i64,
            i64,
            i64,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
        ]
        lib.round_order.restype = ctypes.c_int
        lib.pair_arrays.argtypes = [ptr, ptr, i64, i64, i64, ptr, ptr, ptr]
        lib.pair_arrays.restype = None
        lib.pilot_order.argtypes = [
            ptr,
            ptr,
            i64,
            i64,
            i64,
            i64,
            ptr,
            ctypes.c_float,
            i64,
            ctypes.c_uint64,
            ptr,
            ptr,
            ptr,
            ptr,
        ]
        lib.pilot_order.restype = ctypes.c_int
        lib.run_round.argtypes = [ptr, i64, ptr, ctypes.c_int, ptr, ptr, ptr, ptr]
        lib.run_round.restype = ctypes.c_int
        lib.run_search.argtypes = [ptr, ptr, i64, ptr, ptr, i64, ptr, ptr, ptr, ptr]
        lib.run_search.restype = ctypes.c_int
    except (OSError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"could not build the combiner's C scorer ({type(err).__name__}: {err}); falling back to "
            "backend='compiled'",
            RuntimeWarning,
            stacklevel=3,
        )
        lib = None
    _NATIVE["lib"] = lib
    return lib


def _native_generator_matches_torch(lib) -> bool:
    """Whether the C generator reproduces torch.rand / torch.randn (CPU, float32) bit for bit on this machine: a
    few seeds and sizes, tails included. Checked once per process; without a match the search draws with torch."""
    if "rng_ok" not in _NATIVE:
        ok = True
        for seed in (1, 7, 2**32 + 5):
            g = _MT()
            lib.mt_seed(ctypes.byref(g), seed)
            tg = torch.Generator().manual_seed(seed)
            for kind, n in (("rand", 35), ("randn", 16), ("randn", 4099), ("rand", 1000), ("randn", 20_000)):
                out = np.empty(n, np.float32)
                (lib.mt_uniform if kind == "rand" else lib.mt_normal)(ctypes.byref(g), out.ctypes.data, n)
                ref = getattr(torch, kind)(n, generator=tg).numpy()
                ok = ok and np.array_equal(out.view(np.int32), ref.view(np.int32))
        if not ok:
            warnings.warn(
                "the combiner's C generator does not reproduce torch's random stream on this machine; "
                "drawing with torch instead (same results, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
        _NATIVE["rng_ok"] = ok
    return bool(_NATIVE["rng_ok"])


class _NativeScorer:
    """``_fused_correct`` in C on CPU tensors; the candidates of a chunk are split over ``n_threads`` threads."""

    def __init__(self, lib, n_threads: int) -> None:
        self.lib = lib
        self.n_threads = max(1, int(n_threads))
        self.pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None

    def __call__(
        self, wt: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.submit(wt, [(pt, y, mask)])()[0]

    def submit(
        self,
        wt: torch.Tensor,
        parts: list,
        prepare: tuple[torch.Tensor | None, float] | None = None,
        limits: list[tuple[int, int]] | None = None,
    ):
        """Start scoring ``wt`` (C, K, m) on every part (pt, y, mask) on the worker threads, each thread taking a
        range of candidates; with ``prepare`` = (centre (C, m) or None, sigma) the raw draws are first turned into
        candidates in place (the C ``prepare``: the steps of ``normalise_columns``). ``limits`` gives per part
        (real clips, wrong clips that make a candidate hopeless): such candidates may come back as -1.
        Returns a function that waits and gives the counts per part."""
        assert wt.is_contiguous() and wt.dtype == torch.float32
        c, k, m = wt.shape
        outs = [torch.empty(k, dtype=torch.int32) for _ in parts]
        centre = None if prepare is None or prepare[0] is None else prepare[0].contiguous()
        no_limit = [(pt.shape[2], np.iinfo(np.int64).max) for pt, _, _ in parts]
        calls = [
            (
                (
                    wt.data_ptr(),
                    k,
                    c,
                    m,
                    pt.data_ptr(),
                    y.data_ptr(),
                    pt.shape[2],
                    None if mask is None else mask.data_ptr(),
                    out.data_ptr(),
                ),
                lim,
            )
            for (pt, y, mask), out, lim in zip(parts, outs, limits or no_limit, strict=True)
        ]

        def work(k0: int, k1: int) -> None:
            if prepare is not None:
                self.lib.prepare(
                    wt.data_ptr(),
                    k,
                    c,
                    m,
                    None if centre is None else centre.data_ptr(),
                    float(prepare[1]),
                    k0,
                    k1,
                )
            for args, (n_real, limit) in calls:
                self.lib.correct_counts(*args, k0, k1, n_real, limit)

        if self.pool is None:
            work(0, k)
            return lambda: outs
        bounds = np.linspace(0, k, min(self.n_threads, k) + 1).astype(np.int64)
        futures = [self.pool.submit(work, int(bounds[i]), int(bounds[i + 1])) for i in range(len(bounds) - 1)]

        def result() -> list[torch.Tensor]:  # work() holds wt and centre until the threads are done
            for f in futures:
                f.result()
            return outs

        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _constant_clips(probs: np.ndarray, present: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clips whose correctness no weighting can change: (constant mask (N,), their correctness (N,)).

    With every class column of W non-negative and summing to one, a complete clip's class score is a convex
    combination of the models' probabilities, so it lies in [min_m P, max_m P]. A class whose minimum beats every
    other class's maximum always wins; a true class whose maximum is beaten by another class's minimum never wins.
    The inequalities are strict with a relative margin far above float32 rounding, so a clip that could tie or
    round either way is kept. A clip missing some model can score 0 for a class (all present weights zero), so only
    clips missing every model (all scores 0: class 0 wins) are constant there.
    """
    # probs (m, N, C) float32 (the values the search scores), present (m, N) bool
    complete = present.all(axis=0)
    none = ~present.any(axis=0)
    p = np.where(present[:, :, None], probs, 0.0)
    margin = 1e-5
    lo = p.min(axis=0) * (1 - margin)  # (N, C)
    hi = p.max(axis=0) * (1 + margin)
    n_classes = p.shape[2]
    # largest upper bound among the other classes, per class: top-2 of hi
    order = np.argsort(-hi, axis=1, kind="stable")
    top1 = np.take_along_axis(hi, order[:, :1], axis=1)[:, 0]
    top2 = np.take_along_axis(hi, order[:, 1:2], axis=1)[:, 0] if n_classes > 1 else np.full(len(hi), -np.inf)
    other_hi = np.where(np.arange(n_classes)[None, :] == order[:, :1], top2[:, None], top1[:, None])
    wins = lo > other_hi  # (N, C): class always wins
    decided = complete & wins.any(axis=1)
    rows = np.arange(len(y))
    never = complete & ~decided & (lo > hi[rows, y][:, None]).any(axis=1)
    constant = decided | never | none
    correct = np.zeros(len(y), dtype=bool)
    correct[decided] = wins[decided, y[decided]]
    correct[none] = y[none] == 0
    return constant, correct


_COMPILED: dict[str, object] = {}


def _scorer(backend: str):
    if backend == "bmm":
        return _bmm_correct
    if backend == "fused":
        return _fused_correct
    if (
        "compiled" not in _COMPILED
    ):  # one compile per process; dynamic shapes cover every subset size and chunk
        _COMPILED["compiled"] = torch.compile(_fused_correct, dynamic=True)
    return _COMPILED["compiled"]


class _ScoreTable:
    """Probabilities of one subset laid out for batched scoring, (C, m, N), split into the clips every model
    scores and the clips some model misses (those carry the presence mask for renormalisation).

    With ``prune`` the clips whose correctness is the same for every weighting (``_constant_clips``) are counted
    once in ``n_constant_correct`` and left out of the table; counts are unchanged."""

    def __init__(
        self,
        probs: np.ndarray,
        present: np.ndarray,
        y: np.ndarray,
        device: torch.device,
        backend: str,
        prune: bool = True,
        n_threads: int | None = None,
    ) -> None:
        # probs (m, N, C), present (m, N) bool, y (N,)
        probs = np.where(present[:, :, None], probs, 0.0).astype(np.float32)
        probs += np.float32(
            0.0
        )  # -0.0 -> +0.0 (same comparisons; the C pair test orders scores by their bits)
        y = np.asarray(y)
        keep = np.ones(len(y), dtype=bool)
        self.n_constant_correct = 0
        if prune:
            constant, correct = _constant_clips(probs, present, y)
            keep = ~constant
            self.n_constant_correct = int(correct[constant].sum())
        self.n_kept = int(keep.sum())
        complete = present.all(axis=0)
        pt = probs.transpose(2, 0, 1)

        def t(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        self.parts = []
        self.n_real = []
        self._focusable = None
        for part, mask in ((keep & complete, None), (keep & ~complete, present)):
            if not part.any():
                continue
            p_part, y_part = pt[:, :, part], y[part]
            self.n_real.append(len(y_part))
            if mask is None and backend == "native":
                self._focusable = (p_part, y_part)
                # the C scorer takes complete clips 8 at a time: pad with zero probabilities and label -1 (never
                # correct)
                pad = -len(y_part) % 8
                p_part = np.concatenate([p_part, np.zeros(p_part.shape[:2] + (pad,), np.float32)], axis=2)
                y_part = np.concatenate([y_part, np.full(pad, -1, y_part.dtype)])
            self.parts.append((t(p_part), t(y_part, torch.int64), None if mask is None else t(mask[:, part])))
        if backend == "native":
            lib = _native_library() if device.type == "cpu" and probs.shape[0] <= _NATIVE_MAX_MODELS else None
            if lib is None:
                backend = "compiled" if device.type == "cpu" else "bmm"
            else:
                self.score = _NativeScorer(lib, torch.get_num_threads() if n_threads is None else n_threads)
        if backend != "native":
            self.score = _scorer(backend)
        self.backend = backend

    def correct(self, wt: torch.Tensor) -> torch.Tensor:
        """Number of correctly classified clips (K,) for each candidate ``wt`` (C, K, m)."""
        return self.submit(wt)()

    early_stop = True  # a switch only so that a test can compare with exact counts for every candidate

    def focus(self, centre: torch.Tensor) -> None:
        """Order the complete clips for the C scorer's early stop: the clips ``centre`` (C, m) gets wrong first,
        then those it gets right by increasing margin, so that a candidate that cannot beat the best shows it
        within the first clips. Counts do not depend on the order."""
        if not self.prepares_draws or self._focusable is None:
            return
        p, y = self._focusable  # (C, m, n), (n,)
        s = np.einsum("cmn,cm->nc", p, centre.detach().cpu().numpy().astype(np.float32))
        rows = np.arange(len(y))
        truth = s[rows, y]
        s[rows, y] = -np.inf
        margin = truth - s.max(axis=1)  # < 0: wrong (ties aside), the order only matters for speed
        order = np.argsort(margin, kind="stable")
        pt, yt, mask = self.parts[0]
        n = len(y)
        pt[:, :, :n] = torch.from_numpy(np.ascontiguousarray(p[:, :, order]))
        yt[:n] = torch.from_numpy(y[order].astype(np.int64))

    @property
    def prepares_draws(self) -> bool:
        """Whether ``submit`` takes raw draws and a ``prepare`` argument (the C scorer does it on its threads)."""
        return isinstance(self.score, _NativeScorer)

    def submit(
        self,
        wt: torch.Tensor,
        prepare: tuple[torch.Tensor | None, float] | None = None,
        bar: int | None = None,
    ):
        """Start scoring ``wt``; returns a function that gives the counts. With the C scorer the work runs on
        threads, so the caller can draw the next candidates meanwhile (and ``prepare`` turns raw draws into
        candidates there, in place); otherwise it is done before returning. With ``bar`` the C scorer may stop
        early on candidates that cannot score more than ``bar`` and count them as less; every candidate that
        scores more is counted exactly."""
        total = torch.full((wt.shape[1],), self.n_constant_correct, dtype=torch.int64, device=wt.device)
        if self.prepares_draws:
            limits = None
            if bar is not None and self._focusable is not None:
                # the complete part (first) must get more than bar - constant - every masked clip right
                n_masked = sum(self.n_real[1:])
                limits = [(self.n_real[0], self.n_real[0] - (bar - self.n_constant_correct - n_masked))]
                limits += [(n, np.iinfo(np.int64).max) for n in self.n_real[1:]]
            pending = self.score.submit(wt, self.parts, prepare, limits)

            def result() -> torch.Tensor:
                for counts in pending():
                    total.add_(counts)
                return total

            return result
        if prepare is not None:
            raise ValueError(
                f"backend {self.backend!r} scores finished candidates; prepare them with normalise_columns"
            )
        for pt, y, mask in self.parts:
            try:
                n = self.score(wt, pt, y, mask)
            except Exception as err:  # e.g. no C++ compiler for torch.compile: same numbers, slower
                if self.backend != "compiled":
                    raise
                warnings.warn(
                    f"torch.compile of the combiner's scorer failed ({type(err).__name__}: {err}); "
                    "falling back to backend='fused'",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.score, self.backend = _fused_correct, "fused"
                n = self.score(wt, pt, y, mask)
            total += n
        return lambda: total

    def close(self) -> None:
        if isinstance(self.score, _NativeScorer):
            self.score.close()


class _FastSearch:
    """The whole search of one subset in C: the C copy of torch's generator draws every round (bit for bit the
    candidates of the torch path). On one thread each chunk is drawn just before the C ``run_round`` scores it
    (``_run_searches``, possibly with other subsets of its size); on several, the C ``scan_round`` scores a round on
    the scorer's threads while this thread draws the next.
    Local rounds score only the clips a candidate could move (C ``round_order``) and skip the candidates that
    cannot beat the best; the chosen weights and counts are those of the exhaustive search."""

    def __init__(self, table: _ScoreTable, lib, n_classes: int, n_sub: int) -> None:
        self.lib, self.c, self.m = lib, n_classes, n_sub
        self.pair_test = n_classes <= 8  # the C scan's pair test needs a lane per class
        self.pool = table.score.pool
        self.n_threads = table.score.n_threads
        self.n_constant_correct = table.n_constant_correct
        if table._focusable is not None:
            self.p, self.y = table._focusable
        else:
            self.p, self.y = np.zeros((n_classes, n_sub, 0), np.float32), np.zeros(0, np.int64)
        self.n_real = self.p.shape[2]
        self.n_pad = self.n_real + (-self.n_real % 8)
        masked = [part for part in table.parts if part[2] is not None]
        if masked:
            pm, ym, mask = masked[0]
            self.pm, self.ym, self.mask = (
                np.ascontiguousarray(pm.numpy(), np.float32),
                np.ascontiguousarray(ym.numpy(), np.int64),
                np.ascontiguousarray(mask.numpy(), np.float32),
            )
        else:
            self.pm = self.ym = self.mask = None
        self.p = np.ascontiguousarray(self.p, np.float32)
        self.y = np.ascontiguousarray(self.y, np.int64)
        # what round_order writes for each local round
        n, n_pad, cm = self.n_real, self.n_pad, n_classes * n_sub
        self.theta, self.phi = np.zeros(max(n, 1)), np.zeros(max(n, 1))
        self.safe = np.zeros(n_pad + 1, np.int32)
        self.by_theta = (np.zeros((cm, n_pad), np.float32), np.zeros(n_pad, np.int32))
        self.by_focus = (np.zeros((cm, n_pad), np.float32), np.zeros(n_pad, np.int32))
        self.n_phi, self.right_total, self.t_min = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_double()
        # the same clips as (label, strongest other class) pairs, per order (pair_arrays)
        self.pairs = {
            name: (np.zeros((2 * n_sub, n_pad), np.float32), np.zeros((3, n_pad), np.int32))
            for name in ("natural", "theta", "focus")
        }
        self.by_pilot = (np.zeros((cm, n_pad), np.float32), np.zeros(n_pad, np.int32))  # the global round's
        # per thread: candidates skipped unscored, scored, clips to score, shown hopeless by pairs
        self.stats = np.zeros((self.n_threads, 4), np.int64)
        self.pilot_samples = 64

    def start(self, n_samples: int, chunk: int) -> None:
        """Before the first round: the fixed arrays of every round and the best so far (none)."""
        c, m, n, n_pad = self.c, self.m, self.n_real, self.n_pad
        self.n_samples, self.chunk = n_samples, chunk
        # the global stage scores every clip in their given order
        self.natural = (
            np.ascontiguousarray(
                np.concatenate([self.p.reshape(c * m, n), np.zeros((c * m, n_pad - n), np.float32)], axis=1)
            ),
            np.concatenate([self.y, np.full(n_pad - n, -1, np.int64)]).astype(np.int32),
        )
        self.no_safe = np.zeros(n_pad + 1, np.int32)
        self.masked = (
            (None, None, None, 0)
            if self.pm is None
            else (self.pm.ctypes.data, self.ym.ctypes.data, self.mask.ctypes.data, self.pm.shape[2])
        )
        self.bests = np.empty(self.n_threads, np.int32)
        self.best_w = np.full((c, m), 1.0 / m, np.float32)
        self.best = -1 - self.n_constant_correct  # the counts here are of the clips left after pruning

    def round_scan(self, r: int, sigma: float, z: np.ndarray | None) -> _Scan:
        """Round r's arguments of the C scan (r = 0: the global stage; else the local round of ``sigma`` around
        the best so far), on the draws ``z`` (None: run_round draws them chunk by chunk)."""
        lib, c, m, n, n_pad = self.lib, self.c, self.m, self.n_real, self.n_pad
        pairs = self.pair_test

        def pair_arrays(name: str, p: np.ndarray, y: np.ndarray, centre: np.ndarray | None) -> tuple:
            pp, pi = self.pairs[name]
            lib.pair_arrays(
                p.ctypes.data,
                y.ctypes.data,
                n_pad,
                c,
                m,
                None if centre is None else centre.ctypes.data,
                pp.ctypes.data,
                pi.ctypes.data,
            )
            return pp.ctypes.data, pi.ctypes.data

        if r == 0:
            (p, y), (pf, yf), safe, centre, sigma = self.natural, self.natural, self.no_safe, None, 1.0
            theta = phi = None
            pair = pair_arrays("natural", p, y, None) if pairs else (None, None)
            if pairs:  # the all-clips order and its pairs from a pilot of the round (C pilot_order)
                pf, yf = self.by_pilot
                pp, pi = self.pairs["focus"]
                if lib.pilot_order(
                    self.p.ctypes.data,
                    self.y.ctypes.data,
                    n,
                    n_pad,
                    c,
                    m,
                    None,
                    1.0,
                    self.pilot_samples,
                    r + 1,
                    pf.ctypes.data,
                    yf.ctypes.data,
                    pp.ctypes.data,
                    pi.ctypes.data,
                ):
                    raise MemoryError("the combiner's C pilot_order could not allocate its work space")
                pair_f = pp.ctypes.data, pi.ctypes.data
            else:
                pair_f = pair
        else:
            centre, sigma = np.ascontiguousarray(self.best_w), float(sigma)
            theta, safe, phi, (p, y), (pf, yf) = self.theta, self.safe, self.phi, self.by_theta, self.by_focus
            if lib.round_order(
                self.p.ctypes.data,
                self.y.ctypes.data,
                n,
                n_pad,
                c,
                m,
                centre.ctypes.data,
                theta.ctypes.data,
                safe.ctypes.data,
                phi.ctypes.data,
                ctypes.byref(self.n_phi),
                ctypes.byref(self.right_total),
                ctypes.byref(self.t_min),
                p.ctypes.data,
                y.ctypes.data,
                pf.ctypes.data,
                yf.ctypes.data,
            ):
                raise MemoryError("the combiner's C round_order could not allocate its work space")
            pair = pair_arrays("theta", p, y, centre) if pairs else (None, None)
            pair_f = pair_arrays("focus", pf, yf, centre) if pairs else (None, None)
        self.centre = centre  # the scan points into it
        self.bests[:] = self.best
        return _Scan(
            None if z is None else z.ctypes.data,
            self.n_samples,
            self.chunk,
            c,
            m,
            None if centre is None else centre.ctypes.data,
            sigma,
            1.0 if centre is None else self.t_min.value,
            p.ctypes.data,
            y.ctypes.data,
            n_pad,
            n,
            pf.ctypes.data,
            yf.ctypes.data,
            None if theta is None else theta.ctypes.data,
            safe.ctypes.data,
            None if phi is None else phi.ctypes.data,
            0 if phi is None else self.n_phi.value,
            0 if phi is None else self.right_total.value,
            *self.masked,
            self.bests.ctypes.data,
            self.n_threads,
            self.stats.ctypes.data,
            0,
            pair[0],
            pair_f[0],
            pair[1],
            pair_f[1],
        )

    def local_args(self) -> _Local:
        """This search's buffers for the C ``run_search`` (its local rounds) and its best so far, after ``start``;
        ``run_search`` leaves the best in ``best_w`` (in place) and in the returned structure's ``best``."""
        pairs = self.pair_test
        self.centre_buf = np.empty((self.c, self.m), np.float32)
        (pt, yt), (pf, yf) = self.by_theta, self.by_focus
        (ptp, pti), (pfp, pfi) = self.pairs["theta"], self.pairs["focus"]
        return _Local(
            self.p.ctypes.data,
            self.y.ctypes.data,
            self.theta.ctypes.data,
            self.phi.ctypes.data,
            self.safe.ctypes.data,
            pt.ctypes.data,
            yt.ctypes.data,
            pf.ctypes.data,
            yf.ctypes.data,
            ptp.ctypes.data if pairs else None,
            pti.ctypes.data if pairs else None,
            pfp.ctypes.data if pairs else None,
            pfi.ctypes.data if pairs else None,
            self.centre_buf.ctypes.data,
            self.best_w.ctypes.data,
            self.best,
        )

    def end_round(self, counts: np.ndarray, ks: np.ndarray, ws: np.ndarray) -> None:
        """Keep the round's best: counts, ks (-1: none beat the bar), ws (per thread of the scan)."""
        t = int(counts.argmax())  # first maximum: the earliest thread's candidate wins a tie
        if counts[t] > self.best and ks[t] >= 0:
            self.best, self.best_w = int(counts[t]), ws[t].reshape(self.c, self.m).copy()

    def result(self) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.best_w), self.best + self.n_constant_correct

    def run(self, seed: int, n_samples: int, chunk: int, sigmas: list[float]) -> tuple[torch.Tensor, int]:
        """Global stage then one local round per sigma; returns the best weights (C, m) and correct count."""
        if self.pool is None:  # one thread: the C run_round draws each chunk just before scoring it
            return _run_searches([self], seed, n_samples, chunk, sigmas)[0]
        # several threads score a round (C scan_round) while this one draws the next
        lib, c, m = self.lib, self.c, self.m
        sizes = [min(chunk, n_samples - s) for s in range(0, n_samples, chunk)]
        gen = _MT()
        lib.mt_seed(ctypes.byref(gen), seed % 2**64)
        bufs = [
            np.zeros(c * m * n_samples + 8, np.float32) for _ in range(2)
        ]  # + 8: scan_round reads 8 at a time

        def fill(buf: np.ndarray, normal: bool) -> None:  # chunk by chunk, as the torch path draws them
            off = 0
            for k in sizes:
                (lib.mt_normal if normal else lib.mt_uniform)(
                    ctypes.byref(gen), buf.ctypes.data + 4 * off, c * k * m
                )
                off += c * k * m

        self.start(n_samples, chunk)
        counts = np.empty(self.n_threads, np.int32)
        ks = np.empty(self.n_threads, np.int64)
        ws = np.zeros((self.n_threads, c * m), np.float32)
        bounds = np.linspace(0, n_samples, self.n_threads + 1).astype(np.int64)
        fill(bufs[0], normal=False)
        for r in range(len(sigmas) + 1):
            scan = self.round_scan(r, sigmas[r - 1] if r else 1.0, bufs[r % 2])

            def work(t: int, scan: _Scan = scan, bar: int = self.best) -> None:
                lib.scan_round(
                    ctypes.byref(scan),
                    t,
                    int(bounds[t]),
                    int(bounds[t + 1]),
                    bar,
                    counts[t:].ctypes.data,
                    ks[t:].ctypes.data,
                    ws[t].ctypes.data,
                )

            futures = [self.pool.submit(work, t) for t in range(self.n_threads)]
            if r < len(sigmas):  # the next round's draws do not depend on this round's scores
                fill(bufs[(r + 1) % 2], normal=True)
            for f in futures:
                f.result()
            self.end_round(counts, ks, ws)
        return self.result()


def _run_searches(
    searches: list[_FastSearch], seed: int, n_samples: int, chunk: int, sigmas: list[float]
) -> list[tuple[torch.Tensor, int]]:
    """The whole searches of several subsets of the same size on this thread, round by round in lockstep (one call
    of the C ``run_search``): they draw the same stream (each re-seeds the generator to ``seed``), so each chunk is
    drawn once for all of them. Each search's result is the one it gets alone."""
    lib, c, m = searches[0].lib, searches[0].c, searches[0].m
    assert all(s.m == m and s.c == c and s.pool is None for s in searches)
    gen = _MT()
    lib.mt_seed(ctypes.byref(gen), seed % 2**64)
    zbuf = np.zeros(
        c * m * min(chunk, n_samples) + 8, np.float32
    )  # one chunk; + 8: scan_round reads 8 at a time
    n_sub = len(searches)
    bars = np.empty(n_sub, np.int32)
    ks = np.empty(n_sub, np.int64)
    ws = np.zeros((n_sub, c * m), np.float32)
    for s in searches:
        s.start(n_samples, chunk)
    scans = (_Scan * n_sub)(*(s.round_scan(0, 1.0, None) for s in searches))  # the global round's
    local = (_Local * n_sub)(*(s.local_args() for s in searches))
    sig = np.asarray(sigmas, np.float64)
    rc = lib.run_search(
        scans,
        local,
        n_sub,
        ctypes.byref(gen),
        sig.ctypes.data,
        len(sig),
        zbuf.ctypes.data,
        bars.ctypes.data,
        ks.ctypes.data,
        ws.ctypes.data,
    )
    if rc == 1:
        raise ValueError("a chunk of fewer than 16 normal draws (_fast_applies lets none through)")
    if rc:
        raise MemoryError("the combiner's C round_order could not allocate its work space")
    for s, done in zip(searches, local, strict=True):
        s.best = int(done.best)  # best_w was updated in place
    return [s.result() for s in searches]


def _lockstep_groups(subsets: list[tuple[int, ...]], max_group: int = 5) -> list[list[tuple[int, ...]]]:
    """The subsets in groups of one size for ``_run_searches`` (at most ``max_group`` each, as even as possible),
    most work first (about proportional to a group's total of models): a pool's last groups are its shortest."""
    groups = []
    for size in sorted({len(s) for s in subsets}):
        same = [s for s in subsets if len(s) == size]
        parts = np.array_split(np.arange(len(same)), -(-len(same) // max_group))
        groups += [[same[i] for i in part] for part in parts]
    return sorted(groups, key=lambda g: -sum(len(s) for s in g))


class RandomSearchCombiner(ClassifierMixin, BaseEstimator):
    """Per-class weighted average of several models' probabilities, weights found by the paper's random search.

    Parameters
    ----------
    n_models : int or None
        Number of models whose probabilities are hstacked in ``X`` (``X`` has ``n_models * n_classes`` columns,
        model-major). None infers it from ``X``.
    n_classes : int
        Classes per model (7 emotions).
    n_samples : int
        Candidates per stage round (paper: 100,000).
    sigma0, decay, sigma_min : float
        Local stage: Gaussian scale of the first round, its factor per round, and the stopping threshold
        (paper: 0.5, 0.9, 1e-4, i.e. 81 rounds).
    min_models : int
        Smallest subset of models searched (authors' code: 2; 26 subsets of 5 models).
    search_subsets : bool
        Search every subset and keep the best; False searches only the full set of models.
    random_state : int
        Seed of the torch generator, re-applied for every subset (the authors' code re-seeded to 1).
    chunk_size : int
        Candidates scored per batched matmul; bounds memory at about ``chunk_size * N * n_classes * 4`` bytes.
    device : str
        Torch device of the search (``"cpu"``, ``"cuda"``, ``"auto"`` = CUDA when available). The sampled candidates depend on the device's generator,
        so results are reproducible per device (and backend, whose float summation order may break near-ties
        differently).
    backend : {"auto", "native", "bmm", "fused", "compiled"}
        How a chunk is scored: ``bmm`` = batched matmul + argmax (best on GPU); ``native`` = the class-by-class
        kernel in C, built once with the system C compiler (``$CC``, default ``cc``) and run on
        ``torch.get_num_threads()`` threads (CPU; falls back to ``compiled`` without a compiler); ``compiled`` = that
        kernel fused by ``torch.compile`` (one-off compile of ~15 s); ``fused`` = that kernel run eagerly
        (reference; ``native`` gives the same counts); ``auto`` = ``native`` on CPU, ``bmm`` elsewhere.
        Before scoring, clips whose correctness no weighting can change are counted once and left out (exact).

    Attributes
    ----------
    weights_ : ndarray (n_models, n_classes)
        Chosen weights; models outside the chosen subset have weight 0; each class column sums to 1.
    subset_ : tuple of int
        Indices of the chosen models.
    best_score_ : float
        Accuracy of the chosen weighting on the data given to ``fit``.
    subset_scores_ : dict[tuple of int, float]
        Best accuracy found for each subset searched.
    search_stats_ : dict[str, int]
        Work of the whole-search C path (``fast_subsets``: subsets it searched; ``candidates_skipped``: candidates
        shown unable to beat the best before scoring; ``candidates_scored``; ``clips_to_score``: clips those were
        to be scored on before any early stop; ``shown_hopeless_by_pairs``: scored candidates settled by the
        label-vs-rival pair test alone). Zero where the chunk-by-chunk path ran. Diagnostics only: when one
        subset's search is split over threads (``search_subsets=False``), the threads share the running best as
        they go, so the work counts (not the weights) vary a little from run to run.
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    """

    # Leave out clips whose correctness is constant (exact; a switch only so that a test can compare with no pruning).
    _prune = True
    # The whole search in C (``_FastSearch``) where the C scorer is built and its generator reproduces torch's; a
    # switch only so that tests can compare it with the chunk-by-chunk torch-drawn search.
    _fast = True

    def __init__(
        self,
        *,
        n_models: int | None = None,
        n_classes: int = 7,
        n_samples: int = 100_000,
        sigma0: float = 0.5,
        decay: float = 0.9,
        sigma_min: float = 1e-4,
        min_models: int = 2,
        search_subsets: bool = True,
        random_state: int = 1,
        chunk_size: int = 4096,
        device: str = "cpu",
        backend: str = "auto",
    ) -> None:
        self.n_models = n_models
        self.n_classes = n_classes
        self.n_samples = n_samples
        self.sigma0 = sigma0
        self.decay = decay
        self.sigma_min = sigma_min
        self.min_models = min_models
        self.search_subsets = search_subsets
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.device = device
        self.backend = backend

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if not isinstance(v, Integral) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"{name}={v!r} must be an integer >= {minimum}")

        positive_int("n_classes", 2)
        positive_int("n_samples")
        positive_int("min_models", 1)
        positive_int("chunk_size")
        if self.n_models is not None:
            positive_int("n_models", 1)
        if not isinstance(self.random_state, Integral) or isinstance(self.random_state, bool):
            raise ValueError(
                f"random_state={self.random_state!r} must be an integer seed (the search re-seeds a "
                "torch generator for every subset)"
            )
        if self.backend not in ("auto", "native", "bmm", "fused", "compiled"):
            raise ValueError(
                f"backend={self.backend!r} must be one of 'auto', 'native', 'bmm', 'fused', 'compiled'"
            )
        if not (isinstance(self.sigma0, Real) and self.sigma0 > 0):
            raise ValueError(f"sigma0={self.sigma0!r} must be > 0")
        if not (isinstance(self.decay, Real) and 0 < self.decay < 1):
            raise ValueError(f"decay={self.decay!r} must be in (0, 1)")
        if not (isinstance(self.sigma_min, Real) and self.sigma_min > 0):
            raise ValueError(f"sigma_min={self.sigma_min!r} must be > 0")

    def _split_models(self, X: np.ndarray, *, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """(N, M*C) -> probabilities (M, N, C) and presence mask (M, N)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (clips, n_models * n_classes), got shape {X.shape}")
        c = self.n_classes
        if reset:
            if X.shape[1] % c:
                raise ValueError(f"X has {X.shape[1]} columns, not a multiple of n_classes={c}")
            m = self.n_models if self.n_models is not None else X.shape[1] // c
            if m * c != X.shape[1]:
                raise ValueError(f"X has {X.shape[1]} columns, but n_models={m} x n_classes={c} = {m * c}")
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but RandomSearchCombiner is expecting "
                f"{self.n_features_in_} features as input"
            )
        m = X.shape[1] // c
        probs = X.reshape(X.shape[0], m, c).transpose(1, 0, 2)
        nan = np.isnan(probs)
        present = ~nan.all(axis=2)
        if (nan.any(axis=2) & present).any():
            bad = np.argwhere(nan.any(axis=2) & present)[0]
            raise ValueError(
                f"X row {bad[1]}: model {bad[0]} has some but not all of its {c} columns NaN; a missing "
                "model must be NaN in all of its columns"
            )
        if np.isinf(probs).any() or (probs[present] < 0).any():
            raise ValueError(
                "X must hold probabilities: finite and >= 0 (NaN marks a model missing for a clip)"
            )
        return probs, present

    # ------------------------------------------------------------------ search
    def _fast_applies(self, n_sub: int, device: torch.device, backend: str) -> bool:
        """Whether ``_FastSearch`` gives this subset's search (the C scorer is built, its generator matches torch's,
        and every draw takes torch.randn's bulk path, which it copies)."""
        lib = _native_library() if self._fast and backend == "native" and device.type == "cpu" else None
        return (
            lib is not None
            and n_sub <= _NATIVE_MAX_MODELS
            and _native_generator_matches_torch(lib)
            and all(
                self.n_classes * n_sub * min(self.chunk_size, self.n_samples - s) >= 16
                for s in range(0, self.n_samples, self.chunk_size)
            )
        )

    def _search_subset(
        self, table: _ScoreTable, n_sub: int, device: torch.device
    ) -> tuple[torch.Tensor, int, np.ndarray | None]:
        """The paper's global + local search on one subset; returns the best weights (C, m), the correct count and
        the C path's work counts (None on the chunk-by-chunk path)."""
        if table.prepares_draws and self._fast_applies(n_sub, device, "native"):
            fast = _FastSearch(table, table.score.lib, self.n_classes, n_sub)
            w, count = fast.run(
                int(self.random_state),
                self.n_samples,
                self.chunk_size,
                sigma_schedule(self.sigma0, self.decay, self.sigma_min),
            )
            return w, count, fast.stats.sum(axis=0)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(self.random_state))
        c = self.n_classes
        best_w = torch.full((c, n_sub), 1.0 / n_sub, device=device)
        best = -1

        native = table.prepares_draws

        def run_round(draw, prepare) -> None:
            # A round's candidates do not depend on its scores (the centre moves between rounds), so the next chunk
            # is drawn while the scorer's threads work on this one; chunks are still consumed in order.
            nonlocal best_w, best
            sizes = [
                min(self.chunk_size, self.n_samples - s) for s in range(0, self.n_samples, self.chunk_size)
            ]
            wt = draw(sizes[0])
            for j in range(len(sizes)):
                result = (
                    table.submit(wt, prepare, bar=best if table.early_stop else None)
                    if native
                    else table.submit(wt)
                )
                next_wt = draw(sizes[j + 1]) if j + 1 < len(sizes) else None
                counts = result()
                i = int(counts.argmax())  # first maximum = earliest candidate
                if int(counts[i]) > best:  # strict: the earliest best sample is kept
                    best = int(counts[i])
                    best_w = wt[:, i, :].clone()
                wt = next_wt

        # the C scorer takes raw draws and finishes them on its threads (same float32 steps as below)
        def uniform(k: int) -> torch.Tensor:
            w = torch.rand((c, k, n_sub), generator=gen, device=device)
            return w if native else normalise_columns(w)

        run_round(uniform, (None, 1.0))
        for sigma in sigma_schedule(self.sigma0, self.decay, self.sigma_min):
            centre = best_w.unsqueeze(1)  # (C, 1, m): the round's starting best; updates apply next round

            def draw(k: int, centre: torch.Tensor = centre, sigma: float = sigma) -> torch.Tensor:
                w = torch.randn((c, k, n_sub), generator=gen, device=device)
                if native:
                    return w
                return normalise_columns(w.mul_(sigma).add_(centre).clamp_min_(0.0), fallback=centre)

            table.focus(best_w)
            run_round(draw, (best_w, sigma))
        return best_w, best, None

    def fit(self, X: np.ndarray, y: np.ndarray) -> RandomSearchCombiner:
        """Search weights on (X, y): X (N, n_models * n_classes) hstacked probabilities, NaN for a missing model."""
        self._check_params()
        probs, present = self._split_models(X, reset=True)
        y = np.asarray(y)
        if y.shape != (probs.shape[1],):
            raise ValueError(f"X has {probs.shape[1]} samples, but y has shape {y.shape}")
        if probs.shape[1] == 0:
            raise ValueError("X has 0 samples; the search needs labelled clips")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(
                f"y must hold class indices in 0..{self.n_classes - 1}; got values in "
                f"[{y.min()}, {y.max()}] (withheld labels, -1, cannot tune the combiner)"
            )
        m = probs.shape[0]
        if m < self.min_models:
            raise ValueError(f"n_models={m} is smaller than min_models={self.min_models}")
        device = torch.device(
            self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        backend = self.backend if self.backend != "auto" else ("native" if device.type == "cpu" else "bmm")
        subsets = model_subsets(m, self.min_models) if self.search_subsets else [tuple(range(m))]
        threads = torch.get_num_threads()
        if backend == "native" and device.type == "cpu" and _native_library() is not None:
            # the C scorer's threads do the heavy work; torch's own small ops (draws, renormalisation) run beside
            # them on one thread, so that its OpenMP pool does not spin against them
            torch.set_num_threads(1)
        # The search allocates a few small objects per round; the collections they trigger would each walk every
        # object alive (torch's included): measured 25 % of a fit. Objects that exist now are set aside meanwhile
        # (unless the caller froze some already).
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            self._fit_subsets(probs, present, y, subsets, device, backend, threads)
        finally:
            torch.set_num_threads(threads)
            if freeze:
                gc.unfreeze()
        return self

    def _fit_subsets(
        self,
        probs: np.ndarray,
        present: np.ndarray,
        y: np.ndarray,
        subsets: list[tuple[int, ...]],
        device: torch.device,
        backend: str,
        threads: int,
    ) -> None:
        """Search every subset (the C scorer on ``threads`` threads) and set the fitted attributes."""
        self.subset_scores_: dict[tuple[int, ...], float] = {}
        self.search_stats_ = {
            "fast_subsets": 0,
            "candidates_skipped": 0,
            "candidates_scored": 0,
            "clips_to_score": 0,
            "shown_hopeless_by_pairs": 0,
        }
        best_count, best_subset, best_w = -1, None, None
        n = probs.shape[1]
        m = probs.shape[0]
        # Where the whole search of every subset runs in C, the subsets (independent: each re-seeds its generator)
        # are spread over the threads, one thread each, instead of splitting every round: no hand-over per round.
        # A thread runs a group of subsets of the same size in lockstep: they draw the same stream, once.
        lockstep = len(subsets) > 1 and all(self._fast_applies(len(s), device, backend) for s in subsets)

        def search(subset: tuple[int, ...]) -> tuple[torch.Tensor, int, np.ndarray | None]:
            idx = list(subset)
            table = _ScoreTable(
                probs[idx], present[idx], y, device, backend, prune=self._prune, n_threads=threads
            )
            try:
                with torch.inference_mode():
                    return self._search_subset(table, len(idx), device)
            finally:
                table.close()

        def search_group(group: list[tuple[int, ...]]) -> list[tuple[torch.Tensor, int, np.ndarray]]:
            tables = []
            try:
                for subset in group:
                    idx = list(subset)
                    tables.append(
                        _ScoreTable(
                            probs[idx], present[idx], y, device, backend, prune=self._prune, n_threads=1
                        )
                    )
                with torch.inference_mode():
                    searches = [
                        _FastSearch(t, t.score.lib, self.n_classes, len(s))
                        for t, s in zip(tables, group, strict=True)
                    ]
                    found = _run_searches(
                        searches,
                        int(self.random_state),
                        self.n_samples,
                        self.chunk_size,
                        sigma_schedule(self.sigma0, self.decay, self.sigma_min),
                    )
                return [
                    (w, count, fast.stats.sum(axis=0))
                    for (w, count), fast in zip(found, searches, strict=True)
                ]
            finally:
                for t in tables:
                    t.close()

        if lockstep:
            groups = _lockstep_groups(subsets)
            with ThreadPoolExecutor(threads) as pool:  # most work first: the last to finish are the shortest
                futures = [pool.submit(search_group, g) for g in groups]
                by_subset = {
                    s: r
                    for g, f in zip(groups, futures, strict=True)
                    for s, r in zip(g, f.result(), strict=True)
                }
            results = [by_subset[s] for s in subsets]
        else:
            results = [search(s) for s in subsets]
        for subset, (w, count, work) in zip(subsets, results, strict=True):
            if work is not None:
                stats = self.search_stats_
                stats["fast_subsets"] += 1
                stats["candidates_skipped"] += int(work[0])
                stats["candidates_scored"] += int(work[1])
                stats["clips_to_score"] += int(work[2])
                stats["shown_hopeless_by_pairs"] += int(work[3])
            self.subset_scores_[subset] = count / n
            if count > best_count:  # strict: the earliest (smallest) subset wins a tie
                best_count, best_subset, best_w = count, subset, w
        weights = np.zeros((m, self.n_classes))
        weights[list(best_subset)] = best_w.T.double().cpu().numpy()
        self.weights_ = weights
        self.subset_ = best_subset
        self.best_score_ = best_count / n
        self.classes_ = np.arange(self.n_classes)
        self.n_models_ = m

    # ------------------------------------------------------------------ inference
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Combined per-class scores (N, n_classes), renormalised per clip over the models present."""
        check_is_fitted(self)
        probs, present = self._split_models(X, reset=False)
        probs = np.nan_to_num(probs, nan=0.0)
        num = np.einsum("mc,mnc->nc", self.weights_, probs)
        den = np.einsum("mc,mn->nc", self.weights_, present.astype(np.float64))
        return num / np.maximum(den, _ZERO_COLUMN)

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Combined scores rescaled to sum to one per clip (uniform for a clip no chosen model can score)."""
        s = self.decision_function(X)
        total = s.sum(axis=1, keepdims=True)
        uniform = np.full_like(s, 1.0 / self.n_classes)
        return np.where(total > 0, s / np.where(total > 0, total, 1.0), uniform)

    @property
    def n_evaluations_per_subset(self) -> int:
        return self.n_samples * (1 + len(sigma_schedule(self.sigma0, self.decay, self.sigma_min)))


def hstack_probs(blocks: list[np.ndarray]) -> np.ndarray:
    """Stack per-model (N, C) probability blocks (NaN rows for missing clips) into the combiner's 2-D input."""
    return np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks], axis=1)


def align_models(
    per_model: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align several models' clips by id: {model: (clip_ids, labels, probs)} -> (clip_ids, labels, X).

    The union of clip ids is used; a model missing a clip contributes NaN columns. Labels must agree across models.
    """
    all_ids = sorted(set().union(*(set(v[0].tolist()) for v in per_model.values())))
    index = {cid: i for i, cid in enumerate(all_ids)}
    labels = np.full(len(all_ids), np.iinfo(np.int64).min, dtype=np.int64)
    blocks = []
    for name, (ids, lab, p) in per_model.items():
        rows = np.array([index[c] for c in ids.tolist()], dtype=np.int64)
        block = np.full((len(all_ids), n_classes), np.nan)
        block[rows] = p
        seen = labels[rows] != np.iinfo(np.int64).min
        if np.any(labels[rows][seen] != np.asarray(lab)[seen]):
            bad = ids[np.flatnonzero(labels[rows][seen] != np.asarray(lab)[seen])[0]]
            raise ValueError(f"model {name!r}: clip {bad} has a label that disagrees with another model's")
        labels[rows] = lab
        blocks.append(block)
    return np.asarray(all_ids), labels, hstack_probs(blocks)


__all__ = [
    "RandomSearchCombiner",
    "align_models",
    "hstack_probs",
    "model_subsets",
    "normalise_columns",
    "sigma_schedule",
]
