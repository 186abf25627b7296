"""Decision-level fusion: the paper's random search over per-model, per-class weights (Kahou et al. 2015, §5.2).

Every model m gives class probabilities P[m, n, c] for clip n; a weighting W (M x C, each class column summing to
one over the models) predicts ``argmax_c sum_m W[m, c] P[m, n, c]``. The search maximises accuracy on the tune split:

1. global stage: ``n_samples`` draws W ~ U[0, 1), each class column rescaled to sum to one;
2. local stage: sigma = ``sigma0``; while sigma > ``sigma_min``: ``n_samples`` draws W = W0 + sigma N(0, 1) around
   the round's starting best W0, negatives clipped to 0, columns rescaled (a column that clips to all zeros keeps
   W0's: paper-spec §8.4); sigma *= ``decay`` (0.5, 0.9, 1e-4 give 81 rounds, 8.2 M evaluations, as in the paper);
3. ties follow the authors' code: a candidate replaces the best only when strictly better (the earliest best is
   kept), and ``argmax`` over classes picks the lowest class index.

With ``search_subsets`` every subset of at least ``min_models`` models is searched and the best subset wins (the
earliest on a tie). The authors re-seeded their generator for every subset, so every subset saw the same stream;
here one stream is drawn for all models at once and each subset uses its own models' draws.

Clips a model cannot score (no face, no audio) are NaN in that model's columns; such a clip's class score is
renormalised over the models present, ``sum_{m present} W[m,c] P[m,n,c] / sum_{m present} W[m,c]`` (paper-spec
§8.7). A clip with none of a subset's models present scores zero for every class and so is predicted as class 0.

How: numpy's ``Generator`` draws each round's candidates in float32; one numba kernel (``_scan``) makes and scores
them in float32, a chunk of clips at a time (a vectorised loop), and drops a candidate as soon as it has too many
wrong clips to beat the best so far. The pruning is exact (the result is that of scoring every candidate on every
clip, ``tests/core/test_combine.py`` checks it against that plain loop):

- clips whose correctness no weighting can change are counted once and left out (``_constant_clips``);
- the clips the round's centre gets wrong are scored first, hardest first, so a hopeless candidate shows it soon;
- in a local round a candidate's weights lie within ``d = sigma max|z|`` of the centre's, which bounds how far every
  class score can move (``_Search.bounds``): only the clips whose threshold is below ``d`` are scored (the others
  keep the centre's answer), and a candidate whose ``d`` cannot turn enough wrong clips right is not scored at all.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numba
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

# A column whose weights sum to no more than this keeps the centre's column (the authors' code divided by zero there,
# which rejected the sample); also the floor of a missing clip's renormalising sum.
_ZERO_COLUMN = 1e-12
# Clips scored between two checks of a candidate's wrong count: one loop the compiler vectorises (16 float32 lanes,
# unrolled 4 times; shorter loops run as scalar code).
_CHUNK = 64


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


@numba.njit(cache=True, nogil=True)
def _scan(
    z, zmax, models, classes, k0, k1, centre, sigma, p, y, present, ends, key, phi, n_right, n_const, bar
):
    """Candidates ``k0:k1`` of one round for one subset: (best count, index of the first candidate with it or -1
    when none beats ``bar``, its weights (C, m)).

    Candidate k is made from the float32 draws ``z[k, :, models]``: uniform draws (``sigma`` = 0, the global round)
    or ``centre + sigma z`` clipped at 0 (a local round), each class column multiplied by the reciprocal of its sum.
    The clips ``p`` (C, m, n) come in four parts ending at ``ends``: the complete and the masked clips the centre
    gets wrong, then those it gets right, each by increasing ``key``: the bound on d from which the clip can turn
    right (wrong parts; ``phi``: those keys sorted) or wrong (right parts). A local candidate scores only the clips
    whose key is below its d (the others keep their answer), the wrong ones hardest (last) first. ``n_right`` clips
    are in the right parts; ``n_const`` clips left out of ``p`` are right for every weighting. ``models`` and
    ``classes`` (``range(C)``) are tuples: their lengths are compile-time constants, so that the loops over them
    unroll and the loop over clips vectorises (one compiled kernel per number of models and classes).
    """
    m, n_classes = len(models), len(classes)
    local = sigma > 0.0
    sigma32 = np.float32(sigma)
    start = np.zeros(4, np.int64)
    start[1:] = ends[:3]
    todo = ends - start
    w = np.empty((n_classes, m), np.float32)
    best_w = np.empty((n_classes, m), np.float32)
    best_k, skip_bar, d_skip = -1, -1, 0.0
    for k in range(k0, k1):
        if local:
            zm = np.float32(0.0)
            for j in range(m):
                zm = max(zm, zmax[k, models[j]])
            # no weight moves by more than d before the rescaling (float32 rounding of centre + sigma z included)
            d = np.float64(sigma32) * np.float64(zm) * (1.0 + 1e-6) + 1e-7
            if bar != skip_bar:  # to beat bar, more than q of the wrong clips must be able to turn right
                q = bar - n_const - n_right
                d_skip = 0.0 if q < 0 else np.inf if q >= phi.size else phi[q]
                skip_bar = bar
            if d < d_skip:
                continue
            # whole chunks: the clips a chunk adds beyond those d can move keep their answer
            for s in range(4):
                if ends[s] > start[s] and d < key[ends[s] - 1]:
                    moved = np.searchsorted(key[start[s] : ends[s]], d, side="right")
                    todo[s] = min(-(-moved // _CHUNK) * _CHUNK, ends[s] - start[s])
                else:
                    todo[s] = ends[s] - start[s]
        # this many wrong clips leave the candidate <= bar
        limit = todo[0] + todo[1] + n_right + n_const - bar
        if limit <= 0:
            continue
        for c in range(n_classes):
            t = np.float32(0.0)
            for j in range(m):
                v = z[k, c, models[j]]
                if local:
                    v = max(centre[c, j] + sigma32 * v, np.float32(0.0))
                w[c, j] = v
                t += v
            if t > _ZERO_COLUMN:
                r = np.float32(1.0) / t
                for j in range(m):
                    w[c, j] = w[c, j] * r
            else:
                w[c, :] = centre[c, :]
        wrong = 0
        for s in range(4):
            masked = s % 2 == 1
            for q in range(0, todo[s], _CHUNK):
                if s < 2:
                    lo, hi = start[s] + max(todo[s] - q - _CHUNK, 0), start[s] + todo[s] - q
                else:
                    lo, hi = start[s] + q, start[s] + min(q + _CHUNK, todo[s])
                # unsigned indices: no check for negative ones, which would stop the vectorising
                for i in range(np.uint64(lo), np.uint64(hi)):
                    best, arg = np.float32(0.0), 0
                    for c in range(n_classes):
                        score = w[c, 0] * p[c, 0, i]
                        for j in range(1, m):
                            score = score + w[c, j] * p[c, j, i]
                        if masked:  # renormalised over the models present
                            den = w[c, 0] * present[0, i]
                            for j in range(1, m):
                                den = den + w[c, j] * present[j, i]
                            score = score / max(den, np.float32(_ZERO_COLUMN))
                        if c == 0 or score > best:
                            best, arg = score, c
                    wrong += arg != y[i]
                if wrong >= limit:
                    break
            if wrong >= limit:
                break
        if wrong < limit:
            bar += limit - wrong
            best_k = k
            best_w[:, :] = w
    return bar, best_k, best_w


def _constant_clips(probs: np.ndarray, present: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clips whose correctness no weighting can change: (constant mask (N,), their correctness (N,)).

    With every class column of W non-negative and summing to one, a complete clip's class score is a convex
    combination of the models' probabilities, so it lies in [min_m P, max_m P]. A class whose minimum beats every
    other class's maximum always wins; a true class whose maximum is beaten by another class's minimum never wins.
    The inequalities are strict with a relative margin far above float32 rounding, so a clip that could tie or
    round either way is kept. A clip missing some model can score 0 for a class (all present weights zero), so only
    clips missing every model (all scores 0: class 0 wins) are constant there.
    """
    complete, none = present.all(axis=0), ~present.any(axis=0)
    p = np.where(present[:, :, None], probs, 0.0)
    lo, hi = p.min(axis=0) * (1 - 1e-5), p.max(axis=0) * (1 + 1e-5)  # (N, C)
    top2 = -np.sort(-hi, axis=1)[:, :2]
    # the largest bound among the other classes
    other_hi = np.where(hi == top2[:, :1], top2[:, 1:2], top2[:, :1])
    wins = lo > other_hi  # (N, C): the class always wins
    decided = complete & wins.any(axis=1)
    never = complete & ~decided & (lo > hi[np.arange(len(y)), y][:, None]).any(axis=1)
    correct = np.zeros(len(y), dtype=bool)
    correct[decided] = wins[decided, y[decided]]
    correct[none] = y[none] == 0
    return decided | never | none, correct


class _Search:
    """One subset's search: its clips (the constant ones counted once and left out), its best so far, and the
    clip table of the round (``_scan``), made again only when the centre moved."""

    def __init__(
        self, models: tuple[int, ...], probs: np.ndarray, present: np.ndarray, y: np.ndarray
    ) -> None:
        # probs (m, N, C) float32, 0 where a model is missing; present (m, N) bool
        constant, correct = _constant_clips(probs, present, y)
        keep = ~constant
        self.models, self.classes = tuple(int(i) for i in models), tuple(range(probs.shape[2]))
        self.n_const = int(correct[constant].sum())
        self.p = np.ascontiguousarray(probs[:, keep].transpose(1, 2, 0))  # (n, C, m)
        self.present = np.ascontiguousarray(present[:, keep].T, dtype=np.float32)  # (n, m)
        self.y = np.ascontiguousarray(y[keep], dtype=np.int64)
        self.best, self.best_w = -1, np.full((probs.shape[2], len(models)), 1 / len(models), np.float32)
        self.centre, self.table, self._made_for = self.best_w, (), None

    def prepare(self, local: bool) -> None:
        """The next round's centre (the best so far; equal weights for the global round) and clip table."""
        centre = self.best_w if local else np.full_like(self.best_w, 1 / len(self.models))
        if self._made_for != (local, centre.tobytes()):
            self.centre, self._made_for = centre, (local, centre.tobytes())
            self.table = self.bounds(centre) if local else self.order(self.mean_scores(), None)

    def mean_scores(self) -> np.ndarray:
        """Equal weights' scores (n, C): the global round's order."""
        p, present = self.p.astype(np.float64), self.present.astype(np.float64)
        return np.einsum("ncj,nj->nc", p, present) / present.sum(axis=1, keepdims=True)

    def bounds(self, centre: np.ndarray) -> tuple:
        """A local round's table around ``centre`` (C, m): per clip, the bound on d (the largest change of a
        weight before the rescaling) below which it keeps the centre's answer (right clips), or below which it
        stays wrong (wrong clips).

        With ``mu_c`` the centre's score of class c over the models present (whose centre weights sum to T_c),
        ``spread_c = sum_m |P_m - mu_c|`` and weights within d of the centre's, ``|score_c - mu_c| <= d spread_c /
        (T_c - m d)``. So the top class t stays above class c while ``d / (T - m d) < g = (mu_t - mu_c - 2 eta) /
        (spread_t + spread_c)`` (T the smaller sum, eta far above the float32 scores' rounding), i.e. while d is
        below ``T / (1 / g + m)``, capped at ``T / (2 m)`` so that the sums stay away from zero."""
        p, present, centre = (a.astype(np.float64) for a in (self.p, self.present, centre))
        n, y = len(self.y), self.y
        rows = np.arange(n)
        t = present @ centre.T  # (n, C)
        mu = np.einsum("ncj,cj->nc", p, centre) / np.where(t > 0, t, 1.0)
        spread = np.einsum("nj,ncj->nc", present, np.abs(p - mu[:, :, None]))
        m_present = present.sum(axis=1, keepdims=True)
        top = mu.argmax(axis=1)
        gap = mu[rows, top][:, None] - mu - 2e-5 * np.maximum(1.0, p.max(axis=(1, 2)))[:, None]
        t_min = np.minimum(t[rows, top][:, None], t)
        with np.errstate(divide="ignore"):
            inv_g = np.where(gap > 0, (spread[rows, top][:, None] + spread) / gap, np.inf)
        dstar = np.where(
            (gap > 0) & (t_min >= 1e-6), np.minimum(t_min / (inv_g + m_present), t_min / (2 * m_present)), 0.0
        )
        dstar[rows, top] = np.inf
        return self.order(mu, np.where(top == y, dstar.min(axis=1), dstar[rows, y]))

    def order(self, mu: np.ndarray, key: np.ndarray | None) -> tuple:
        """The clip table from the centre's scores ``mu`` (n, C): the complete then the masked clips it gets wrong,
        then those it gets right, each by increasing ``key`` then by how far the clip is from changing (the most
        wrong last, as wrong clips are scored last first; the least right first); ``key`` None: that distance."""
        n, n_classes, m = self.p.shape
        margin = mu[np.arange(n), self.y] - np.where(
            np.arange(n_classes) == self.y[:, None], -np.inf, mu
        ).max(axis=1)
        right = mu.argmax(axis=1) == self.y
        closeness = np.where(right, margin, -margin)
        key = closeness if key is None else key
        part = np.where(right, 2, 0) + ~self.present.all(axis=1)
        order = np.lexsort((closeness, key, part))
        return (
            np.ascontiguousarray(self.p[order].transpose(1, 2, 0)),
            self.y[order],
            np.ascontiguousarray(self.present[order].T),
            np.cumsum(np.bincount(part, minlength=4)),
            key[order],
            np.sort(key[~right]),
            int(right.sum()),
        )

    def scan(
        self, z: np.ndarray, zmax: np.ndarray, sigma: float, k0: int, k1: int
    ) -> tuple[int, int, np.ndarray]:
        args = (self.centre, sigma, *self.table, self.n_const, self.best)
        return _scan(z, zmax, self.models, self.classes, k0, k1, *args)

    def update(self, found: list[tuple[int, int, np.ndarray]]) -> None:
        """Keep the round's best from its candidate ranges (in order, each searched from the round's start)."""
        for count, k, w in found:
            if k >= 0 and count > self.best:  # strict: the earliest candidate wins a tie
                self.best, self.best_w = int(count), w


class RandomSearchCombiner(ClassifierMixin, BaseEstimator):
    """Per-class weighted average of several models' probabilities, weights found by the paper's random search.

    Parameters
    ----------
    n_models : int or None
        Number of models whose probabilities are hstacked in ``X`` (``n_models * n_classes`` columns, model-major).
        None infers it from ``X``.
    n_classes : int
        Classes per model (7 emotions).
    n_samples : int
        Candidates per round (paper: 100,000).
    sigma0, decay, sigma_min : float
        Local stage: Gaussian scale of the first round, its factor per round, and the stopping threshold
        (paper: 0.5, 0.9, 1e-4, i.e. 81 rounds).
    search_subsets : bool
        False (the paper's choice: all models together was consistently best, and its submissions use them all)
        searches the weights of all models; True searches every subset of at least ``min_models`` models and keeps
        the best (the authors' script).
    min_models : int
        Smallest subset searched with ``search_subsets`` (authors' script: 2, so 26 subsets of 5 models).
    random_state : int, numpy Generator or None
        Seed of the numpy ``Generator`` that draws the candidates (authors: 1).
    n_jobs : int or None
        Threads of the search (None: 1, -1: every core); the result does not depend on it.

    Attributes
    ----------
    weights_ : ndarray (n_models, n_classes)
        Chosen weights (float32 values): 0 for models outside the chosen subset; each class column sums to 1.
    subset_ : tuple of int
        Indices of the chosen models.
    best_score_ : float
        Accuracy of the chosen weighting on the data given to ``fit``.
    subset_scores_ : dict[tuple of int, float]
        Best accuracy found for each subset searched.
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        n_models: int | None = None,
        n_classes: int = 7,
        n_samples: int = 100_000,
        sigma0: float = 0.5,
        decay: float = 0.9,
        sigma_min: float = 1e-4,
        search_subsets: bool = False,
        min_models: int = 2,
        random_state: int | np.random.Generator | None = 1,
        n_jobs: int | None = None,
    ) -> None:
        self.n_models = n_models
        self.n_classes = n_classes
        self.n_samples = n_samples
        self.sigma0 = sigma0
        self.decay = decay
        self.sigma_min = sigma_min
        self.search_subsets = search_subsets
        self.min_models = min_models
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN marks a model missing for a clip
        tags.input_tags.positive_only = True  # probabilities
        return tags

    @classmethod
    def from_weights(
        cls, weights, *, subset: tuple[int, ...] | None = None, best_score: float = float("nan"), **params
    ) -> RandomSearchCombiner:
        """A fitted combiner with the given weights (n_models, n_classes), e.g. frozen from an earlier search;
        ``subset`` defaults to the models with a non-zero weight, ``params`` are the other constructor arguments."""
        weights = np.array(weights, dtype=np.float64)
        if weights.ndim != 2 or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(
                f"weights must be a finite, non-negative (n_models, n_classes) array, got {weights!r}"
            )
        est = cls(**{**params, "n_models": weights.shape[0], "n_classes": weights.shape[1]})
        if subset is None:
            subset = tuple(int(i) for i in np.flatnonzero(weights.any(axis=1)))
        est._set_fitted(weights, tuple(subset), best_score, {})
        return est

    def _set_fitted(
        self, weights: np.ndarray, subset: tuple[int, ...], best_score: float, scores: dict
    ) -> None:
        self.weights_, self.subset_, self.best_score_, self.subset_scores_ = (
            weights,
            subset,
            float(best_score),
            scores,
        )
        self.classes_ = np.arange(self.n_classes)
        self.n_features_in_ = weights.size

    def _check_params(self) -> None:
        for name, minimum in (("n_classes", 2), ("n_samples", 1), ("min_models", 1), ("n_models", 1)):
            v = getattr(self, name)
            if (name != "n_models" or v is not None) and (
                not isinstance(v, Integral) or isinstance(v, bool) or v < minimum
            ):
                raise ValueError(f"{name}={v!r} must be an integer >= {minimum}")
        if not (isinstance(self.sigma0, Real) and self.sigma0 > 0):
            raise ValueError(f"sigma0={self.sigma0!r} must be > 0")
        if not (isinstance(self.decay, Real) and 0 < self.decay < 1):
            raise ValueError(f"decay={self.decay!r} must be in (0, 1)")
        if not (isinstance(self.sigma_min, Real) and self.sigma_min > 0):
            raise ValueError(f"sigma_min={self.sigma_min!r} must be > 0")
        if self.n_jobs is not None and (not isinstance(self.n_jobs, Integral) or self.n_jobs == 0):
            raise ValueError(f"n_jobs={self.n_jobs!r} must be None, a positive integer or -1 (every core)")

    def _split_models(self, X, *, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """(N, M*C) -> float32 probabilities (M, N, C), 0 where a model is missing, and the presence mask (M, N).
        The search and the predictions compute in float32: twice as many clips per vector instruction."""
        X = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64)
        c = self.n_classes
        m = self.n_models if self.n_models is not None else X.shape[1] // c
        if X.shape[1] != m * c or m == 0:
            raise ValueError(f"X has {X.shape[1]} columns, not n_models x n_classes = {m} x {c}")
        probs = X.reshape(X.shape[0], m, c).transpose(1, 0, 2)
        nan = np.isnan(probs)
        present = ~nan.all(axis=2)
        if (nan.any(axis=2) & present).any():
            model, row = np.argwhere(nan.any(axis=2) & present)[0]
            raise ValueError(
                f"X row {row}: model {model} has some but not all of its {c} columns NaN; a missing model must be "
                "NaN in all of its columns"
            )
        probs = np.where(present[:, :, None], probs, 0.0).astype(np.float32)
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise ValueError(
                "X must hold probabilities: finite and >= 0 (NaN marks a model missing for a clip)"
            )
        return probs, present

    def fit(self, X, y) -> RandomSearchCombiner:
        """Search weights on (X, y): X (N, n_models * n_classes) hstacked probabilities, NaN for a missing model."""
        self._check_params()
        if y is None:
            raise ValueError("RandomSearchCombiner requires y to be passed, but the target y is None")
        probs, present = self._split_models(X, reset=True)
        check_classification_targets(y)
        y = column_or_1d(y, warn=True)
        if y.shape != (probs.shape[1],):
            raise ValueError(f"X has {probs.shape[1]} samples, but y has shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(
                f"y must hold class indices in 0..{self.n_classes - 1}, got values in [{y.min()}, {y.max()}] "
                "(withheld labels, -1, cannot tune the combiner)"
            )
        m = probs.shape[0]
        if self.search_subsets and m < self.min_models:
            raise ValueError(f"n_models={m} is smaller than min_models={self.min_models}")
        subsets = model_subsets(m, self.min_models) if self.search_subsets else [tuple(range(m))]
        searches = [_Search(s, probs[list(s)], present[list(s)], y) for s in subsets]
        self._search(searches, m)
        scores = {s: search.best / len(y) for s, search in zip(subsets, searches, strict=True)}
        i = max(range(len(subsets)), key=lambda i: (searches[i].best, -i))  # the earliest subset wins a tie
        weights = np.zeros((m, self.n_classes))
        weights[list(subsets[i])] = searches[i].best_w.T
        self._set_fitted(weights, subsets[i], scores[subsets[i]], scores)
        return self

    def _search(self, searches: list[_Search], n_models: int) -> None:
        """The global round then the local rounds, every subset round by round on one stream of draws. With several
        threads, the subsets (or, for fewer subsets than threads, ranges of a round's candidates: the first best
        of the ranges is the round's first best) are searched side by side, and the next round is drawn meanwhile."""
        rng = np.random.default_rng(self.random_state)
        sigmas = [0.0, *sigma_schedule(self.sigma0, self.decay, self.sigma_min)]
        shape = (self.n_samples, self.n_classes, n_models)

        def draw(r: int) -> tuple[np.ndarray, np.ndarray]:  # the draws and, per candidate and model, max |z|
            z = (
                rng.random(shape, dtype=np.float32)
                if r == 0
                else rng.standard_normal(shape, dtype=np.float32)
            )
            return z, np.abs(z).max(axis=1)

        n_jobs = 1 if self.n_jobs is None else (os.cpu_count() or 1) if self.n_jobs < 0 else self.n_jobs
        cuts = np.linspace(0, self.n_samples, max(1, n_jobs // len(searches)) + 1).astype(int)
        jobs = [(s, int(k0), int(k1)) for s in searches for k0, k1 in itertools.pairwise(cuts)]
        with ThreadPoolExecutor(n_jobs) as pool:
            run = pool.map if n_jobs > 1 else map
            draws = draw(0)
            for r, sigma in enumerate(sigmas):
                ahead = pool.submit(draw, r + 1) if n_jobs > 1 and r + 1 < len(sigmas) else None
                list(run(lambda s, local=sigma > 0: s.prepare(local), searches))
                found = list(run(lambda job, z=draws, sigma=sigma: job[0].scan(*z, sigma, *job[1:]), jobs))
                for i, search in enumerate(searches):
                    search.update(found[i * (len(cuts) - 1) : (i + 1) * (len(cuts) - 1)])
                if r + 1 < len(sigmas):
                    draws = ahead.result() if ahead is not None else draw(r + 1)

    def decision_function(self, X) -> np.ndarray:
        """Combined per-class scores (N, n_classes), renormalised per clip over the chosen models present, with the
        search's float32 operations: ``predict`` on the search's data scores ``best_score_``."""
        check_is_fitted(self)
        probs, present = self._split_models(X, reset=False)
        w, mask = self.weights_.astype(np.float32), present.astype(np.float32)[:, :, None]
        s, den = w[0] * probs[0], w[0] * mask[0]
        for j in range(1, len(w)):
            s, den = s + w[j] * probs[j], den + w[j] * mask[j]
        masked = ~present[list(self.subset_)].all(axis=0)
        s[masked] = s[masked] / np.maximum(den[masked], np.float32(_ZERO_COLUMN))
        return s.astype(np.float64)

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Combined scores rescaled to sum to one per clip (uniform for a clip no chosen model can score)."""
        s = self.decision_function(X)
        total = s.sum(axis=1, keepdims=True)
        return np.where(total > 0, s / np.where(total > 0, total, 1.0), 1.0 / self.n_classes)

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


__all__ = ["RandomSearchCombiner", "align_models", "hstack_probs", "model_subsets", "sigma_schedule"]
