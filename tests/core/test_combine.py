"""The paper's random-search combiner: schedule, normalisation, search quality, ties, seeds, missing clips."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from emotiw import combine
from emotiw.combine import (
    RandomSearchCombiner,
    _bmm_correct,
    _constant_clips,
    _fused_correct,
    _native_library,
    _ScoreTable,
    align_models,
    model_subsets,
    normalise_columns,
    sigma_schedule,
)

C = 7
# A short schedule for tests: 4 local rounds of 300 candidates.
FAST = dict(n_samples=300, sigma0=0.5, decay=0.5, sigma_min=0.05, backend="bmm", chunk_size=128)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_problem(n: int = 210, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three models, each reliable on its own classes only: model 0 on 0-2, model 1 on 3-5, model 2 on 6.

    A model that knows a clip's class puts 0.5 on it; otherwise its probabilities are random. Weighting each class
    by the model that knows it classifies (almost) everything; equal weights do clearly worse.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    owner = np.array([0, 0, 0, 1, 1, 1, 2])
    blocks = []
    for m in range(3):
        p = rng.dirichlet(np.ones(C), size=n)
        knows = owner[y] == m
        p[knows] *= 0.5
        p[knows, y[knows]] += 0.5
        blocks.append(p)
    return np.hstack(blocks), y


def test_sigma_schedule_matches_the_paper() -> None:
    sigmas = sigma_schedule(0.5, 0.9, 1e-4)
    assert len(sigmas) == 81
    assert sigmas[0] == 0.5
    np.testing.assert_allclose(np.array(sigmas[1:]) / np.array(sigmas[:-1]), 0.9)
    assert sigmas[-1] > 1e-4 >= sigmas[-1] * 0.9
    est = RandomSearchCombiner()
    assert (est.n_samples, est.sigma0, est.decay, est.sigma_min, est.min_models, est.random_state) == (
        100_000,
        0.5,
        0.9,
        1e-4,
        2,
        1,
    )
    assert est.n_evaluations_per_subset == 8_200_000


def test_subset_enumeration() -> None:
    subsets = model_subsets(5)
    assert len(subsets) == 26 and len(set(subsets)) == 26
    assert subsets[0] == (0, 1) and subsets[-1] == (0, 1, 2, 3, 4)
    assert all(len(s) >= 2 for s in subsets)
    assert model_subsets(2) == [(0, 1)]


def test_normalise_columns_and_zero_guard() -> None:
    w = torch.tensor([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])
    out = normalise_columns(w, fallback=torch.tensor([0.25, 0.75]))
    np.testing.assert_allclose(out.numpy(), [[0.25, 0.75], [0.25, 0.75], [0.5, 0.5]])
    out = normalise_columns(torch.zeros(1, 4))
    np.testing.assert_allclose(out.numpy(), [[0.25] * 4])


def test_scorers_agree_with_a_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    m, n, k = 3, 50, 40
    p = rng.random((m, n, C))
    present = rng.random((m, n)) > 0.2
    w = rng.random((C, k, m))
    y = rng.integers(0, C, n)
    # reference: per candidate, per clip, renormalise over present models, argmax (first max)
    ref = np.zeros(k, dtype=int)
    for i in range(k):
        num = np.einsum("cm,mnc->nc", w[:, i], p * present[:, :, None])
        den = np.einsum("cm,mn->nc", w[:, i], present.astype(float))
        ref[i] = np.sum(np.argmax(num / np.maximum(den, 1e-12), axis=1) == y)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    args = (t(w), t(np.where(present[:, :, None], p, 0).transpose(2, 0, 1)), torch.as_tensor(y), t(present))
    np.testing.assert_array_equal(_bmm_correct(*args).numpy(), ref)
    np.testing.assert_array_equal(_fused_correct(*args).numpy(), ref)


def test_argmax_tie_goes_to_the_lowest_class() -> None:
    pt = torch.full((C, 2, 4), 1.0 / C)  # every class equal for every clip
    wt = torch.full((C, 3, 2), 0.5)
    for score in (_bmm_correct, _fused_correct):
        assert score(wt, pt, torch.zeros(4, dtype=torch.int64)).tolist() == [4, 4, 4]
        assert score(wt, pt, torch.ones(4, dtype=torch.int64)).tolist() == [0, 0, 0]


def test_search_finds_the_planted_optimum() -> None:
    X, y = planted_problem()
    est = RandomSearchCombiner(**FAST, random_state=3).fit(X, y)
    uniform = np.mean(np.argmax(X.reshape(len(y), 3, C).mean(axis=1), axis=1) == y)
    singles = [np.mean(np.argmax(X[:, m * C : (m + 1) * C], axis=1) == y) for m in range(3)]
    assert est.subset_ == (0, 1, 2)
    assert est.best_score_ >= 0.95 > uniform + 0.1
    assert est.best_score_ > max(singles) + 0.3
    # the owner of each class gets the largest weight of that class
    owner = [0, 0, 0, 1, 1, 1, 2]
    assert est.weights_.argmax(axis=0).tolist() == owner
    np.testing.assert_allclose(est.weights_.sum(axis=0), 1.0, rtol=1e-6)
    assert np.mean(est.predict(X) == y) == pytest.approx(est.best_score_)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    X, y = planted_problem(seed=1)
    a = RandomSearchCombiner(**FAST, random_state=5, search_subsets=False).fit(X, y)
    b = RandomSearchCombiner(**FAST, random_state=5, search_subsets=False).fit(X, y)
    c = RandomSearchCombiner(**FAST, random_state=6, search_subsets=False).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.allclose(a.weights_, c.weights_)


def test_every_subset_is_searched_and_ties_keep_the_earliest() -> None:
    # five identical models: every weighting predicts the same, so every score ties. The earliest subset (0, 1)
    # wins and its weights are the first global sample of the re-seeded generator (strict > keeps the earliest).
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(C), size=30)
    y = rng.integers(0, C, 30)
    X = np.hstack([p] * 5)
    est = RandomSearchCombiner(**FAST, random_state=11).fit(X, y)
    assert len(est.subset_scores_) == 26
    assert len(set(est.subset_scores_.values())) == 1
    assert est.subset_ == (0, 1)
    gen = torch.Generator().manual_seed(11)
    first = (
        normalise_columns(torch.rand((C, FAST["chunk_size"], 2), generator=gen))[:, 0, :].T.double().numpy()
    )
    np.testing.assert_allclose(est.weights_[:2], first, rtol=1e-6)
    assert np.all(est.weights_[2:] == 0)


def test_missing_clips_renormalise_over_present_models() -> None:
    p0 = np.array([[0.6, 0.4, 0, 0, 0, 0, 0], [0.1, 0.9, 0, 0, 0, 0, 0]])
    p1 = np.array([[0.0, 1.0, 0, 0, 0, 0, 0], [np.nan] * C])  # model 1 has no score for clip 1
    est = RandomSearchCombiner(n_models=2)
    est.weights_ = np.array([[0.25] * C, [0.75] * C])
    est.classes_, est.n_features_in_ = np.arange(C), 2 * C
    scores = est.decision_function(np.hstack([p0, p1]))
    np.testing.assert_allclose(scores[0, :2], [0.25 * 0.6, 0.25 * 0.4 + 0.75])
    np.testing.assert_allclose(
        scores[1], p0[1]
    )  # only model 0 present: its probabilities, renormalised weight 1
    # the search uses the same rule: with model 1 absent on half the clips the fitted score equals predict's
    X, y = planted_problem(n=70, seed=4)
    X[::2, C : 2 * C] = np.nan
    fit = RandomSearchCombiner(**FAST).fit(X, y)
    assert np.mean(fit.predict(X) == y) == pytest.approx(fit.best_score_)


def test_align_models_builds_nan_blocks() -> None:
    ids_a, ids_b = np.array(["a", "b", "c"]), np.array(["a", "c"])
    pa, pb = np.full((3, C), 1 / C), np.eye(C)[:2]
    ids, labels, X = align_models(
        {"m0": (ids_a, np.array([0, 1, 2]), pa), "m1": (ids_b, np.array([0, 2]), pb)}
    )
    assert ids.tolist() == ["a", "b", "c"] and labels.tolist() == [0, 1, 2]
    assert X.shape == (3, 2 * C) and np.isnan(X[1, C:]).all() and not np.isnan(X[[0, 2]]).any()
    with pytest.raises(ValueError, match="clip c has a label that disagrees"):
        align_models({"m0": (ids_a, np.array([0, 1, 2]), pa), "m1": (ids_b, np.array([0, 5]), pb)})


@pytest.mark.parametrize(
    ("kwargs", "X_cols", "y", "match"),
    [
        ({}, 10, None, "not a multiple of n_classes=7"),
        ({"n_models": 3}, 14, None, r"n_models=3 x n_classes=7 = 21"),
        ({}, 14, -1, r"withheld labels, -1"),
        ({"decay": 1.5}, 14, None, r"decay=1.5 must be in \(0, 1\)"),
        ({"backend": "gpu"}, 14, None, "backend='gpu'"),
        ({}, 7, None, "n_models=1 is smaller than min_models=2"),
    ],
)
def test_errors_name_the_parameter(kwargs: dict, X_cols: int, y: int | None, match: str) -> None:
    X = np.full((4, X_cols), 1 / C)
    yy = np.full(4, y if y is not None else 0)
    with pytest.raises(ValueError, match=match):
        RandomSearchCombiner(**{**FAST, **kwargs}).fit(X, yy)


def test_predict_before_fit_raises() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        RandomSearchCombiner().predict(np.zeros((1, 14)))


needs_cc = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None,
    reason="no C compiler: backend='native' falls back (tested below)",
)


def peaky_problem(n: int = 150, m: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Models that often agree confidently (prunable clips) and often disagree (searchable clips)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    blocks = []
    for _ in range(m):
        p = rng.dirichlet(np.full(C, 0.3), size=n)
        sure = rng.random(n) < 0.5
        p[sure] *= 0.1
        p[sure, y[sure]] += 0.9
        blocks.append(p)
    return np.hstack(blocks), y


def test_constant_clips_hand_computed() -> None:
    # 2 models, 3 classes. Bounds per class are [min, max] over the models.
    p = np.array(
        [
            [
                [0.6, 0.3, 0.1],
                [0.2, 0.3, 0.5],
                [0.1, 0.1, 0.8],
                [0.4, 0.3, 0.3],
                [0.5, 0.25, 0.25],
            ],  # model 0
            [
                [0.5, 0.4, 0.1],
                [0.6, 0.1, 0.3],
                [0.2, 0.7, 0.1],
                [0.4, 0.3, 0.3],
                [0.9, 0.05, 0.05],
            ],  # model 1
        ],
        dtype=np.float32,
    )
    present = np.ones((2, 5), bool)
    present[1, 4] = False  # clip 4 misses model 1: a zero-weight column can score it 0, so it is kept
    y = np.array([0, 2, 1, 1, 0])
    constant, correct = _constant_clips(p, present, y)
    # clip 0: class 0 >= 0.5 beats every other class's max 0.4 -> always 0, correct
    # clip 1: bounds overlap -> searchable
    # clip 2: no class's min beats the others' max, and true class 1 (max 0.7) can beat every min -> searchable
    # clip 3: class 0 ties itself (0.4 == 0.4) against class 1/2 max 0.3 -> min 0.4 > 0.3: always 0, wrong
    # clip 4: a model is missing -> kept
    assert constant.tolist() == [True, False, False, True, False]
    assert correct[constant].tolist() == [True, False]
    # never-correct without a sure winner: true class 2 max 0.2 below class 0 min 0.3 (class 1 can still win)
    p2 = np.array([[[0.3, 0.5, 0.2]], [[0.5, 0.4, 0.1]]], dtype=np.float32)
    constant, correct = _constant_clips(p2, np.ones((2, 1), bool), np.array([2]))
    assert constant.tolist() == [True] and correct.tolist() == [False]
    # an exact tie between bounds is never pruned (the lowest-class rule decides it, per weighting)
    p3 = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]], dtype=np.float32)
    assert _constant_clips(p3, np.ones((2, 1), bool), np.array([1]))[0].tolist() == [False]
    # no model present: every score is 0, class 0 wins
    constant, correct = _constant_clips(p2, np.zeros((2, 1), bool), np.array([0]))
    assert constant.tolist() == [True] and correct.tolist() == [True]


@needs_cc
@pytest.mark.parametrize("m", [2, 5])
def test_native_scorer_counts_equal_the_reference(m: int) -> None:
    X, y = peaky_problem(n=203, m=m, seed=m)
    probs = X.reshape(len(y), m, C).transpose(1, 0, 2)
    present = np.random.default_rng(m).random((m, len(y))) > 0.15
    present[:, :3] = False
    probs = np.where(present[:, :, None], probs, np.nan)
    cpu = torch.device("cpu")
    ref = _ScoreTable(probs, present, y, cpu, "fused", prune=False)
    wt = normalise_columns(torch.rand((C, 301, m), generator=torch.Generator().manual_seed(0)))
    wt[:, :5] = 1.0 / m  # exact ties between models and classes
    wt[2, 7] = torch.eye(m)[0]  # zero weights: the renormalisation guard
    expected = ref.correct(wt)
    for prune in (False, True):
        for threads in (1, 2):
            table = _ScoreTable(probs, present, y, cpu, "native", prune=prune, n_threads=threads)
            assert table.backend == "native"
            np.testing.assert_array_equal(table.correct(wt).numpy(), expected.numpy())
            table.close()
    assert table.n_kept < len(y)  # the pruning had clips to leave out


@pytest.mark.parametrize("backend", ["bmm", pytest.param("native", marks=needs_cc)])
def test_pruning_gives_the_same_search(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = peaky_problem(n=120, m=3, seed=7)
    X[::9, C : 2 * C] = np.nan
    kw = {**FAST, "backend": backend, "random_state": 2}
    pruned = RandomSearchCombiner(**kw).fit(X, y)
    monkeypatch.setattr(RandomSearchCombiner, "_prune", False)
    full = RandomSearchCombiner(**kw).fit(X, y)
    np.testing.assert_array_equal(pruned.weights_, full.weights_)
    assert pruned.best_score_ == full.best_score_ and pruned.subset_ == full.subset_
    assert pruned.subset_scores_ == full.subset_scores_
    probs = X.reshape(len(y), 3, C).transpose(1, 0, 2)
    constant, _ = _constant_clips(probs.astype(np.float32), ~np.isnan(probs).all(axis=2), y)
    assert 0 < constant.sum() < len(y)


@needs_cc
def test_native_search_equals_the_reference_search() -> None:
    # same draws, same counts: the whole search picks the same weights as the eager torch kernel
    X, y = planted_problem(n=140, seed=5)
    kw = {**FAST, "random_state": 4}
    native = RandomSearchCombiner(**{**kw, "backend": "auto"}).fit(X, y)
    fused = RandomSearchCombiner(**{**kw, "backend": "fused"}).fit(X, y)
    np.testing.assert_array_equal(native.weights_, fused.weights_)
    assert native.subset_scores_ == fused.subset_scores_
    assert torch.get_num_threads() == 1  # the search restores the caller's thread count


def test_no_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(combine, "_NATIVE", {})
    monkeypatch.setattr(combine.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="could not build the combiner's C scorer"):
        assert _native_library() is None
    X, y = planted_problem(n=30)
    probs = X.reshape(len(y), 3, C).transpose(1, 0, 2)
    table = _ScoreTable(probs, np.ones((3, len(y)), bool), y, torch.device("cpu"), "native")
    assert table.backend == "compiled"


@needs_cc
def test_early_stop_counts_every_candidate_above_the_bar_exactly() -> None:
    X, y = peaky_problem(n=300, m=4, seed=3)
    probs = X.reshape(len(y), 4, C).transpose(1, 0, 2)
    present = np.ones((4, len(y)), bool)
    present[1, :20] = False  # a masked part too: the bar must allow for all of it
    probs = np.where(present[:, :, None], probs, np.nan)
    cpu = torch.device("cpu")
    table = _ScoreTable(probs, present, y, cpu, "native", n_threads=2)
    wt = normalise_columns(torch.rand((C, 600, 4), generator=torch.Generator().manual_seed(1)))
    exact = table.correct(wt)
    table.focus(wt[:, int(exact.argmax())])  # clip order changes nothing but speed
    np.testing.assert_array_equal(table.correct(wt).numpy(), exact.numpy())
    bar = int(torch.quantile(exact.double(), 0.9))
    fast = table.submit(wt.clone(), bar=bar)()
    above = exact > bar
    assert 0 < int(above.sum()) < len(exact)
    np.testing.assert_array_equal(fast[above].numpy(), exact[above].numpy())
    assert bool((fast[~above] <= bar).all())
    assert bool((fast[~above] < exact[~above]).any())  # it did stop early somewhere


@needs_cc
def test_early_stop_gives_the_same_search(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = peaky_problem(n=160, m=3, seed=11)
    X[::7, :C] = np.nan
    kw = {**FAST, "backend": "native", "random_state": 9}
    monkeypatch.setattr(
        RandomSearchCombiner, "_fast", False
    )  # the chunk-by-chunk path (tests/core/test_combine_fast.py)
    fast = RandomSearchCombiner(**kw).fit(X, y)
    assert fast.search_stats_["fast_subsets"] == 0
    monkeypatch.setattr(_ScoreTable, "early_stop", False)
    exact = RandomSearchCombiner(**kw).fit(X, y)
    np.testing.assert_array_equal(fast.weights_, exact.weights_)
    assert fast.subset_scores_ == exact.subset_scores_
