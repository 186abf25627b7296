"""The paper's random-search combiner: schedule and defaults, the search against a plain exhaustive loop (ties and
missing models included), threads, the fitted-estimator constructor, the sklearn contract."""

from __future__ import annotations

import gc
import pickle
import threading

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from emotiw.combine import (
    RandomSearchCombiner,
    _constant_clips,
    _Search,
    align_models,
    model_subsets,
    sigma_schedule,
)

C = 7
# A short schedule for tests: the global round and 4 local rounds of 200 candidates.
FAST = dict(n_samples=200, sigma0=0.5, decay=0.5, sigma_min=0.05)
# The paper's sigma schedule (81 rounds down to 1e-4: the bounds go from useless to skipping nearly every
# candidate) on few candidates per round.
PAPER_SHORT = dict(n_samples=60, sigma0=0.5, decay=0.9, sigma_min=1e-4)


def candidate(z: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """A weighting (C, m) from its draws z (C, m) as the module docstring says, in float32: uniform draws (sigma
    0) or centre + sigma z clipped at 0, each column times the reciprocal of its sum (the centre's if it is 0)."""
    v = np.maximum(centre + np.float32(sigma) * z, np.float32(0)) if sigma else z
    total = v[:, 0]
    for j in range(1, v.shape[1]):
        total = total + v[:, j]
    ok = total > 1e-12
    return np.where(ok[:, None], v * (np.float32(1) / np.where(ok, total, 1))[:, None], centre)


def correct(w: np.ndarray, probs: np.ndarray, present: np.ndarray, y: np.ndarray) -> int:
    """Clips (probs (m, N, C) float32, present (m, N)) that weighting w (C, m) gets right, in float32: a clip
    missing some model renormalised over those present; the first maximum wins."""
    mask = present.astype(np.float32)[:, :, None]
    score, den = w[:, 0] * probs[0], w[:, 0] * mask[0]
    for j in range(1, len(probs)):
        score, den = score + w[:, j] * probs[j], den + w[:, j] * mask[j]
    missing = ~present.all(axis=0)
    score[missing] = score[missing] / np.maximum(den[missing], np.float32(1e-12))
    return int(np.sum(score.argmax(axis=1) == y))


def split(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, M*C) with NaN for a missing model -> float32 probabilities (M, N, C) with zeros there, presence (M, N)."""
    probs = X.reshape(len(X), -1, C).transpose(1, 0, 2)
    present = ~np.isnan(probs).all(axis=2)
    return np.where(present[:, :, None], probs, 0.0).astype(np.float32), present


def reference_search(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_samples,
    sigma0,
    decay,
    sigma_min,
    search_subsets=False,
    min_models=2,
    random_state=1,
) -> dict[tuple[int, ...], tuple[int, np.ndarray]]:
    """The plain search, written from the module docstring: every candidate scored on every clip, one at a time.
    Returns {subset: (correct count, weights (C, m))}."""
    probs, present = split(X)
    n_models = len(probs)
    sigmas = [0.0, *sigma_schedule(sigma0, decay, sigma_min)]
    rng = np.random.default_rng(random_state)
    shape = (n_samples, C, n_models)
    draws = [
        rng.random(shape, dtype=np.float32) if r == 0 else rng.standard_normal(shape, dtype=np.float32)
        for r in range(len(sigmas))
    ]
    found = {}
    for subset in model_subsets(n_models, min_models) if search_subsets else [tuple(range(n_models))]:
        idx, m = list(subset), len(subset)
        best, best_w = -1, np.full((C, m), 1 / m, np.float32)
        for r, sigma in enumerate(sigmas):
            centre = best_w if r else np.full((C, m), 1 / m, np.float32)
            for z in draws[r][:, :, idx]:
                w = candidate(z, centre, sigma)
                count = correct(w, probs[idx], present[idx], y)
                if count > best:
                    best, best_w = count, w
        found[subset] = (best, best_w)
    return found


def assert_same_as_reference(est: RandomSearchCombiner, X: np.ndarray, y: np.ndarray, **params) -> None:
    ref = reference_search(X, y, **params)
    assert est.subset_scores_ == {s: count / len(y) for s, (count, _) in ref.items()}
    best = max(ref, key=lambda s: (ref[s][0], -list(ref).index(s)))
    assert est.subset_ == best and est.best_score_ == ref[best][0] / len(y)
    expected = np.zeros((X.shape[1] // C, C))
    expected[list(best)] = ref[best][1].T
    np.testing.assert_array_equal(est.weights_, expected)  # bit for bit


def mixed_problem(seed: int, n: int = 70, m: int = 3, missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Models of mixed skill with ties: a duplicated model (counts tie between weightings that split differently
    between the copies), clips where every model puts equal probability on every class (class 0 must win) or on
    two classes, confident clips (left out as constant); with ``missing``, some clips miss a model or all."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    blocks = []
    for _ in range(m - 1):
        p = rng.dirichlet(np.full(C, 0.5), size=n)
        sure = rng.random(n) < 0.3
        p[sure] = 0.2 * p[sure] + 0.8 * np.eye(C)[y[sure]]
        blocks.append(p)
    blocks.append(blocks[0].copy())
    for b in blocks:
        b[:5] = 1.0 / C
        b[5:9] = 0.0
        b[5:9, [2, 5]] = 0.5
    X = np.hstack(blocks)
    if missing:
        for j in range(m):
            X[rng.random(n) < 0.15, j * C : (j + 1) * C] = np.nan
        X[9] = np.nan  # a clip no model scores: class 0
    return X, y


def test_sigma_schedule_and_defaults_are_the_papers() -> None:
    sigmas = sigma_schedule(0.5, 0.9, 1e-4)
    assert len(sigmas) == 81 and sigmas[0] == 0.5
    np.testing.assert_allclose(np.array(sigmas[1:]) / np.array(sigmas[:-1]), 0.9)
    assert sigmas[-1] > 1e-4 >= sigmas[-1] * 0.9
    est = RandomSearchCombiner()
    params = (est.n_samples, est.sigma0, est.decay, est.sigma_min, est.min_models, est.random_state)
    assert params == (100_000, 0.5, 0.9, 1e-4, 2, 1)
    assert est.search_subsets is False  # the paper: all models together was consistently best
    assert est.n_evaluations_per_subset == 8_200_000


def test_subset_enumeration() -> None:
    subsets = model_subsets(5)
    assert len(subsets) == 26 and len(set(subsets)) == 26
    assert subsets[0] == (0, 1) and subsets[-1] == (0, 1, 2, 3, 4)
    assert all(len(s) >= 2 for s in subsets)
    assert model_subsets(2) == [(0, 1)]


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("search_subsets", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_search_equals_the_plain_exhaustive_search(seed: int, search_subsets: bool, missing: bool) -> None:
    X, y = mixed_problem(seed, missing=missing)
    params = dict(PAPER_SHORT, search_subsets=search_subsets, random_state=seed + 3)
    est = RandomSearchCombiner(**params).fit(X, y)
    assert_same_as_reference(est, X, y, **params)
    assert np.mean(est.predict(X) == y) == est.best_score_  # the same float32 scores as the search


def test_search_equals_the_plain_search_with_many_constant_clips() -> None:
    # confident, agreeing models: most clips are decided whatever the weights and are left out of the search
    rng = np.random.default_rng(5)
    y = rng.integers(0, C, 120)
    X = np.hstack([0.1 * rng.dirichlet(np.ones(C), 120) + 0.9 * np.eye(C)[y] for _ in range(3)])
    X[:30, C:] = rng.dirichlet(np.ones(C), (30, 2)).reshape(30, 2 * C)
    probs = X.reshape(120, 3, C).transpose(1, 0, 2).astype(np.float32)
    assert 30 < _constant_clips(probs, np.ones((3, 120), bool), y)[0].sum() < 120
    est = RandomSearchCombiner(**FAST, search_subsets=True).fit(X, y)
    assert_same_as_reference(est, X, y, **FAST, search_subsets=True)


@pytest.mark.parametrize("missing", [False, True])
def test_kernel_counts_every_candidate_that_beats_the_bar_exactly(missing: bool) -> None:
    # one candidate at a time against a bar one below its count (it must come back with its exact count) and at
    # its count (it must not): the bounds, the skipping and the early stop are exact in every regime of sigma
    X, y = mixed_problem(8, n=150, m=4, missing=missing)
    probs, present = split(X)
    models = (0, 1, 3)
    search = _Search(models, probs[list(models)], present[list(models)], y)
    centre = RandomSearchCombiner(**FAST).fit(X[:, [c for j in models for c in range(j * C, (j + 1) * C)]], y)
    search.best_w = centre.weights_[list(range(3))].T.astype(np.float32)
    z = np.random.default_rng(0).standard_normal((120, C, 4), dtype=np.float32)
    zmax = np.abs(z).max(axis=1)
    for sigma in (0.5, 0.05, 0.01, 0.002, 0.0005):
        search.prepare(local=True)
        for k in range(len(z)):
            w = candidate(z[k][:, list(models)], search.best_w, sigma)
            exact = correct(w, probs[list(models)], present[list(models)], y)
            search.best = exact - 1
            count, found, weights = search.scan(z, zmax, sigma, k, k + 1)
            assert (count, found) == (exact, k)
            np.testing.assert_array_equal(weights, w)
            search.best = exact
            assert search.scan(z, zmax, sigma, k, k + 1)[:2] == (exact, -1)


@pytest.mark.parametrize("missing", [False, True])
def test_bounds_hold_at_their_worst_case(missing: bool) -> None:
    # a local round's clip thresholds: weights moved by just under a clip's key, each in the direction that moves
    # a rival class up and the centre's class down the most, leave a right clip right and a wrong one wrong
    X, y = mixed_problem(9, n=150, m=3, missing=missing)
    probs, present = split(X)
    search = _Search((0, 1, 2), probs, present, y)
    search.best_w = RandomSearchCombiner(**FAST).fit(X, y).weights_.T.astype(np.float32)
    search.prepare(local=True)
    p, labels, mask, ends, key = search.table[:5]
    centre = search.best_w.astype(np.float64)
    checked = 0
    for i in range(p.shape[2]):
        d = key[i] * (1 - 1e-4)
        if not 0 < d < np.inf:
            continue
        P, here = p[:, :, i].astype(np.float64), mask[:, i] > 0
        mu = (centre * P * here).sum(axis=1) / (centre * here).sum(axis=1)
        top = int(mu.argmax())
        for c in [labels[i]] if i < ends[1] else [c for c in range(C) if c != top]:  # wrong clips: the label
            v = centre.copy()
            v[c] += d * np.sign(P[c] - mu[c]) * here
            v[top] -= d * np.sign(P[top] - mu[top]) * here
            w = np.maximum(v, 0) / np.maximum(v, 0).sum(axis=1, keepdims=True)
            got = correct(w.astype(np.float32), p[:, :, i].T[:, None, :], here[:, None], labels[i : i + 1])
            assert got == (i >= ends[1])
            checked += 1
    assert checked > 100


def test_every_candidate_ties_keeps_the_first_sample() -> None:
    # identical models: every weighting predicts the same, so the earliest subset and its first global candidate
    # (strict > keeps the earliest) win
    rng = np.random.default_rng(2)
    X = np.hstack([rng.dirichlet(np.ones(C), size=30)] * 4)
    est = RandomSearchCombiner(**FAST, search_subsets=True, random_state=11).fit(X, rng.integers(0, C, 30))
    assert len(set(est.subset_scores_.values())) == 1 and est.subset_ == (0, 1)
    first = np.random.default_rng(11).random((1, C, 4), dtype=np.float32)[0, :, :2]
    np.testing.assert_array_equal(
        est.weights_[:2], (first * (np.float32(1) / (first[:, 0] + first[:, 1]))[:, None]).T
    )
    assert np.all(est.weights_[2:] == 0)


def test_threads_do_not_change_the_result() -> None:
    X, y = mixed_problem(4, missing=True)
    for search_subsets in (False, True):  # one subset: its rounds are split over the threads
        results = [
            RandomSearchCombiner(**PAPER_SHORT, search_subsets=search_subsets, n_jobs=j).fit(X, y)
            for j in (1, 2, 3)
        ]
        for est in results[1:]:
            np.testing.assert_array_equal(est.weights_, results[0].weights_)
            assert est.subset_scores_ == results[0].subset_scores_


def test_fit_changes_no_process_wide_state() -> None:
    X, y = mixed_problem(6)
    np.random.seed(123)
    legacy = np.random.get_state()[1].copy()
    gc_state = (gc.isenabled(), gc.get_freeze_count(), gc.get_threshold())
    threads = threading.active_count()
    RandomSearchCombiner(**FAST, n_jobs=2, search_subsets=True).fit(X, y)
    assert (gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()) == gc_state
    np.testing.assert_array_equal(np.random.get_state()[1], legacy)
    assert threading.active_count() == threads


def planted_problem(n: int = 210, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three models, each reliable on its own classes only: model 0 on 0-2, model 1 on 3-5, model 2 on 6."""
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


def test_search_finds_the_planted_optimum() -> None:
    X, y = planted_problem()
    est = RandomSearchCombiner(**{**FAST, "n_samples": 1000}, random_state=3).fit(X, y)
    uniform = np.mean(np.argmax(X.reshape(len(y), 3, C).mean(axis=1), axis=1) == y)
    singles = [np.mean(np.argmax(X[:, m * C : (m + 1) * C], axis=1) == y) for m in range(3)]
    assert est.subset_ == (0, 1, 2) and est.best_score_ >= 0.95 > uniform + 0.1
    assert est.best_score_ > max(singles) + 0.3
    assert est.weights_.argmax(axis=0).tolist() == [0, 0, 0, 1, 1, 1, 2]  # each class's owner weighs most
    np.testing.assert_allclose(est.weights_.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    X, y = planted_problem(seed=1)
    a, b, c = (RandomSearchCombiner(**FAST, random_state=s).fit(X, y) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.allclose(a.weights_, c.weights_)


def test_missing_clips_renormalise_over_present_models() -> None:
    p0 = np.array([[0.6, 0.4, 0, 0, 0, 0, 0], [0.1, 0.9, 0, 0, 0, 0, 0]])
    p1 = np.array([[0.0, 1.0, 0, 0, 0, 0, 0], [np.nan] * C])  # model 1 has no score for clip 1
    est = RandomSearchCombiner.from_weights(np.array([[0.25] * C, [0.75] * C]))
    scores = est.decision_function(np.hstack([p0, p1]))
    np.testing.assert_allclose(scores[0, :2], [0.25 * 0.6, 0.25 * 0.4 + 0.75])
    np.testing.assert_allclose(scores[1], p0[1], rtol=1e-6)  # only model 0 present: its probabilities


def test_from_weights_builds_a_fitted_estimator() -> None:
    w = np.zeros((3, C))
    w[[0, 2]] = 0.5
    est = RandomSearchCombiner.from_weights(w, best_score=0.4, n_samples=7)
    assert est.subset_ == (0, 2) and est.best_score_ == 0.4 and est.n_samples == 7 and est.n_models == 3
    X, _ = planted_problem(n=14)
    np.testing.assert_array_equal(est.predict(X), np.argmax(X[:, :C] + X[:, 2 * C :], axis=1))
    assert RandomSearchCombiner.from_weights(w, subset=(0, 1, 2)).subset_ == (0, 1, 2)
    with pytest.raises(ValueError, match="finite, non-negative"):
        RandomSearchCombiner.from_weights(-w)
    with pytest.raises(ValueError, match="expecting 21 features"):
        est.predict(X[:, :14])


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
    constant, correct = _constant_clips(p, present, np.array([0, 2, 1, 1, 0]))
    # clip 0: class 0 >= 0.5 beats every other class's max 0.4 -> always 0, correct; clips 1, 2: bounds overlap;
    # clip 3: class 0 (min 0.4) beats the others' max 0.3 -> always 0, wrong
    assert constant.tolist() == [True, False, False, True, False]
    assert correct[constant].tolist() == [True, False]
    # never correct without a sure winner: true class 2 max 0.2 below class 0 min 0.3 (class 1 can still win)
    p2 = np.array([[[0.3, 0.5, 0.2]], [[0.5, 0.4, 0.1]]], dtype=np.float32)
    constant, correct = _constant_clips(p2, np.ones((2, 1), bool), np.array([2]))
    assert constant.tolist() == [True] and correct.tolist() == [False]
    # an exact tie between bounds is never left out (the lowest-class rule decides it, per weighting)
    p3 = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]], dtype=np.float32)
    assert _constant_clips(p3, np.ones((2, 1), bool), np.array([1]))[0].tolist() == [False]
    # no model present: every score is 0, class 0 wins
    constant, correct = _constant_clips(p2, np.zeros((2, 1), bool), np.array([0]))
    assert constant.tolist() == [True] and correct.tolist() == [True]


def test_refit_on_other_shapes_gives_fresh_searches() -> None:
    est = RandomSearchCombiner(**FAST)
    for m, seed in ((3, 0), (2, 1)):
        X, y = mixed_problem(seed, m=m)
        assert_same_as_reference(est.fit(X, y), X, y, **FAST)


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
        ({}, 10, None, r"X has 10 columns, not n_models x n_classes = 1 x 7"),
        ({"n_models": 3}, 14, None, r"X has 14 columns, not n_models x n_classes = 3 x 7"),
        ({}, 14, -1, r"withheld labels, -1"),
        ({"decay": 1.5}, 14, None, r"decay=1.5 must be in \(0, 1\)"),
        ({"n_jobs": 0}, 14, None, r"n_jobs=0 must be None"),
        ({"search_subsets": True}, 7, None, "n_models=1 is smaller than min_models=2"),
    ],
)
def test_errors_name_the_parameter(kwargs: dict, X_cols: int, y: int | None, match: str) -> None:
    X = np.full((4, X_cols), 1 / C)
    with pytest.raises(ValueError, match=match):
        RandomSearchCombiner(**{**FAST, **kwargs}).fit(X, np.full(4, y if y is not None else 0))
    with pytest.raises(ValueError, match="some but not all of its 7 columns NaN"):
        RandomSearchCombiner(**FAST).fit(np.where(np.arange(14) == 3, np.nan, np.full((4, 14), 0.1)), [0] * 4)


def test_fitted_estimator_contract() -> None:
    X, y = mixed_problem(7, missing=True)
    est = RandomSearchCombiner(**FAST)
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert est.fit(X, y) is est
    again = clone(est).fit(X, y)  # fitting twice gives the same result
    np.testing.assert_array_equal(again.weights_, est.weights_)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    assert est.n_features_in_ == X.shape[1] and est.classes_.tolist() == list(range(C))


# What sklearn's generic checks feed (few, arbitrary, possibly negative features; labels of any kind) is not what a
# combiner takes: hstacked per-model probabilities, n_models x 7 columns, labels the emotion indices 0..6.
NOT_PROBABILITIES = "X must be n_models x n_classes hstacked probabilities; the generic data is not"
EXPECTED_FAILED = {
    name: NOT_PROBABILITIES
    for name in (
        "check_classifier_data_not_an_array",
        "check_classifiers_classes",
        "check_classifiers_regression_target",
        "check_classifiers_train",
        "check_decision_proba_consistency",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_supervised_y_2d",
    )
}


@parametrize_with_checks([RandomSearchCombiner(**FAST)], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_contract(estimator, check) -> None:
    check(estimator)
