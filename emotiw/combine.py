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

Candidates are scored in chunks as one batched matmul + argmax + compare (torch, CPU or CUDA), never one Python
iteration per candidate.

Clips that a model cannot score (no face, no audio) are NaN in that model's 7 columns. For such a clip the score of
class c is renormalised over the models that are present: ``sum_{m present} W[m,c] P[m,n,c] / sum_{m present} W[m,c]``
(paper-spec §8.7; the authors' code silently dropped them). A clip with none of a subset's models present scores zero
for every class and so is predicted as class 0, the tie rule.
"""

from __future__ import annotations

import itertools
import warnings
from numbers import Integral, Real

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


def _fused_correct(wt: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
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


def _bmm_correct(wt: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Same as ``_fused_correct`` as one batched matmul + argmax (first maximum) + compare: the GPU path."""
    s = torch.bmm(wt, pt)  # (C, K, N)
    if mask is not None:
        s = s / torch.bmm(wt, mask.unsqueeze(0).expand(wt.shape[0], -1, -1)).clamp_min(_ZERO_COLUMN)
    return (s.argmax(dim=0) == y).sum(dim=1)


_COMPILED: dict[str, object] = {}


def _scorer(backend: str):
    if backend == "bmm":
        return _bmm_correct
    if backend == "fused":
        return _fused_correct
    if "compiled" not in _COMPILED:  # one compile per process; dynamic shapes cover every subset size and chunk
        _COMPILED["compiled"] = torch.compile(_fused_correct, dynamic=True)
    return _COMPILED["compiled"]


class _ScoreTable:
    """Probabilities of one subset laid out for batched scoring, (C, m, N), split into the clips every model
    scores and the clips some model misses (those carry the presence mask for renormalisation)."""

    def __init__(self, probs: np.ndarray, present: np.ndarray, y: np.ndarray, device: torch.device,
                 backend: str) -> None:
        # probs (m, N, C), present (m, N) bool, y (N,)
        complete = present.all(axis=0)
        pt = np.nan_to_num(probs.transpose(2, 0, 1), nan=0.0)

        def t(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        self.parts = []
        if complete.any():
            self.parts.append((t(pt[:, :, complete]), t(y[complete], torch.int64), None))
        if (~complete).any():
            self.parts.append((t(pt[:, :, ~complete]), t(y[~complete], torch.int64), t(present[:, ~complete])))
        self.score = _scorer(backend)
        self.backend = backend

    def correct(self, wt: torch.Tensor) -> torch.Tensor:
        """Number of correctly classified clips (K,) for each candidate ``wt`` (C, K, m)."""
        total = None
        for pt, y, mask in self.parts:
            try:
                n = self.score(wt, pt, y, mask)
            except Exception as err:  # e.g. no C++ compiler for torch.compile: same numbers, slower
                if self.backend != "compiled":
                    raise
                warnings.warn(f"torch.compile of the combiner's scorer failed ({type(err).__name__}: {err}); "
                              "falling back to backend='fused'", RuntimeWarning, stacklevel=2)
                self.score, self.backend = _fused_correct, "fused"
                n = self.score(wt, pt, y, mask)
            total = n if total is None else total + n
        return total


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
    backend : {"auto", "bmm", "fused", "compiled"}
        How a chunk is scored: ``bmm`` = batched matmul + argmax (best on GPU); ``compiled`` = the class-by-class
        kernel fused by ``torch.compile`` (about 8x faster on CPU, after a one-off compile of ~15 s); ``fused`` =
        that kernel run eagerly (reference); ``auto`` = ``compiled`` on CPU, ``bmm`` elsewhere.

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
            raise ValueError(f"random_state={self.random_state!r} must be an integer seed (the search re-seeds a "
                             "torch generator for every subset)")
        if self.backend not in ("auto", "bmm", "fused", "compiled"):
            raise ValueError(f"backend={self.backend!r} must be one of 'auto', 'bmm', 'fused', 'compiled'")
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
            raise ValueError(f"X has {X.shape[1]} features, but RandomSearchCombiner is expecting "
                             f"{self.n_features_in_} features as input")
        m = X.shape[1] // c
        probs = X.reshape(X.shape[0], m, c).transpose(1, 0, 2)
        nan = np.isnan(probs)
        present = ~nan.all(axis=2)
        if (nan.any(axis=2) & present).any():
            bad = np.argwhere(nan.any(axis=2) & present)[0]
            raise ValueError(f"X row {bad[1]}: model {bad[0]} has some but not all of its {c} columns NaN; a missing "
                             "model must be NaN in all of its columns")
        if np.isinf(probs).any() or (probs[present] < 0).any():
            raise ValueError("X must hold probabilities: finite and >= 0 (NaN marks a model missing for a clip)")
        return probs, present

    # ------------------------------------------------------------------ search
    def _search_subset(self, table: _ScoreTable, n_sub: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """The paper's global + local search on one subset; returns the best weights (C, m) and correct count."""
        gen = torch.Generator(device=device)
        gen.manual_seed(int(self.random_state))
        c = self.n_classes
        best_w = torch.full((c, n_sub), 1.0 / n_sub, device=device)
        best = -1

        def run_round(draw) -> None:
            nonlocal best_w, best
            done = 0
            while done < self.n_samples:
                k = min(self.chunk_size, self.n_samples - done)
                wt = draw(k)
                counts = table.correct(wt)
                i = int(counts.argmax())  # first maximum = earliest candidate
                if int(counts[i]) > best:  # strict: the earliest best sample is kept
                    best = int(counts[i])
                    best_w = wt[:, i, :].clone()
                done += k

        run_round(lambda k: normalise_columns(torch.rand((c, k, n_sub), generator=gen, device=device)))
        for sigma in sigma_schedule(self.sigma0, self.decay, self.sigma_min):
            centre = best_w.unsqueeze(1)  # (C, 1, m): the round's starting best; updates apply next round

            def draw(k: int, centre: torch.Tensor = centre, sigma: float = sigma) -> torch.Tensor:
                w = torch.randn((c, k, n_sub), generator=gen, device=device).mul_(sigma).add_(centre).clamp_min_(0.0)
                return normalise_columns(w, fallback=centre)

            run_round(draw)
        return best_w, best

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
            raise ValueError(f"y must hold class indices in 0..{self.n_classes - 1}; got values in "
                             f"[{y.min()}, {y.max()}] (withheld labels, -1, cannot tune the combiner)")
        m = probs.shape[0]
        if m < self.min_models:
            raise ValueError(f"n_models={m} is smaller than min_models={self.min_models}")
        device = torch.device(self.device if self.device != "auto" else
                              ("cuda" if torch.cuda.is_available() else "cpu"))
        backend = self.backend if self.backend != "auto" else ("compiled" if device.type == "cpu" else "bmm")
        subsets = model_subsets(m, self.min_models) if self.search_subsets else [tuple(range(m))]

        self.subset_scores_: dict[tuple[int, ...], float] = {}
        best_count, best_subset, best_w = -1, None, None
        n = probs.shape[1]
        for subset in subsets:
            idx = list(subset)
            table = _ScoreTable(probs[idx], present[idx], y, device, backend)
            w, count = self._search_subset(table, len(idx), device)
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
        return self

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


def align_models(per_model: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], n_classes: int = 7
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
