"""The combiner's whole-search C path (``_FastSearch``): its copy of torch's generator, and a search that skips and
cuts work by exact bounds, checked against the plain exhaustive search (every candidate on every clip)."""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import stat
import warnings

import numpy as np
import pytest
import torch

from emotiw import combine
from emotiw.combine import (
    _MT,
    RandomSearchCombiner,
    _native_generator_matches_torch,
    _native_library,
    _ScoreTable,
)

C = 7
needs_cc = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None,
    reason="no C compiler: the whole-search C path is not built (fallback tested below)",
)
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), needs_cc]

# The paper's sigma schedule (81 local rounds down to 1e-4, so the bounds go from useless to skipping nearly every
# candidate) on few candidates per round; chunks of 70 leave a short last chunk (and, for some sizes, a torch.randn
# call whose size is not a multiple of 16).
PAPER_SHORT = dict(n_samples=150, chunk_size=70, sigma0=0.5, decay=0.9, sigma_min=1e-4)


def fit_reference(
    monkeypatch: pytest.MonkeyPatch, X: np.ndarray, y: np.ndarray, **kw
) -> RandomSearchCombiner:
    """The plain search: torch draws chunk by chunk, every candidate is scored on every clip (no pruning, no early
    stop) by the C kernel, whose counts equal the eager torch kernel's (tests/core/test_combine.py). Its candidates
    are made by the C ``prepare``, which sums a class column in model order; torch's ``normalise_columns`` (the
    ``fused`` backend) sums 5 models in another order and so can differ in the last bit of a weight."""
    with monkeypatch.context() as mp:
        mp.setattr(RandomSearchCombiner, "_fast", False)
        mp.setattr(RandomSearchCombiner, "_prune", False)
        mp.setattr(_ScoreTable, "early_stop", False)
        est = RandomSearchCombiner(**kw, backend="native").fit(X, y)
    assert est.search_stats_["fast_subsets"] == 0
    return est


def assert_same_search(a: RandomSearchCombiner, b: RandomSearchCombiner) -> None:
    np.testing.assert_array_equal(a.weights_, b.weights_)  # bit for bit
    assert a.subset_ == b.subset_
    assert a.best_score_ == b.best_score_
    assert a.subset_scores_ == b.subset_scores_


def random_problem(
    seed: int, n: int = 90, m: int = 3, ties: bool = True, missing: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Models of mixed skill; with ties: a duplicated model (every count ties between weightings that differ only
    in how they split between the copies), clips whose models put equal probability on two classes or on all (the
    lowest class must win), and a second model equal to a first one on some clips."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    blocks = []
    for _ in range(m - 1 if ties else m):
        p = rng.dirichlet(np.full(C, 0.5), size=n)
        sure = rng.random(n) < 0.3
        p[sure] = 0.5 * p[sure] + 0.5 * np.eye(C)[y[sure]]
        blocks.append(p)
    if ties:
        blocks.append(blocks[0].copy())
        blocks[0][:6] = 1.0 / C  # every class tied for every model: class 0 wins
        blocks[-1][:6] = 1.0 / C
        for b in blocks:  # classes 2 and 5 tied at the top on the next clips
            b[6:12] = 0.0
            b[6:12, [2, 5]] = 0.5
        blocks[1][12:20] = blocks[0][12:20]
    X = np.hstack(blocks)
    if missing:
        X[rng.random(n) < 0.15, C : 2 * C] = np.nan
        X[:3, :] = np.nan  # no model present: every score 0, class 0
    return X, y


def test_c_generator_reproduces_torch_rand_and_randn() -> None:
    lib = _native_library()
    assert _native_generator_matches_torch(lib)
    for seed in (0, 1, 123456789, 2**40 + 3):
        g = _MT()
        lib.mt_seed(ctypes.byref(g), seed)
        tg = torch.Generator().manual_seed(seed)
        # sizes: one block of 16, not multiples of 16 (torch redraws the last 16), over several twists of the state
        for kind, n in (
            ("rand", 7),
            ("randn", 16),
            ("randn", 33),
            ("rand", 1250),
            ("randn", 1400),
            ("randn", 2501),
        ):
            out = np.empty(n, np.float32)
            (lib.mt_uniform if kind == "rand" else lib.mt_normal)(ctypes.byref(g), out.ctypes.data, n)
            ref = getattr(torch, kind)(n, generator=tg).numpy()
            np.testing.assert_array_equal(
                out.view(np.int32), ref.view(np.int32), err_msg=f"{kind} {n} seed {seed}"
            )


def test_c_generator_skips_draws_as_drawing_them_would() -> None:
    # a round whose every candidate the bar skips only advances the generator (mt_skip): the draws after it must
    # be those after drawing it, for uniform and normal sizes (a ragged normal size consumes 16 more)
    lib = _native_library()
    for first, n in ((("rand", 37), 1250), (("randn", 33), 4099), (("randn", 16), 623), (("rand", 624), 1)):
        drawn, skipped = _MT(), _MT()
        lib.mt_seed(ctypes.byref(drawn), 9)
        lib.mt_seed(ctypes.byref(skipped), 9)
        kind, k = first
        out = np.empty(max(k, n), np.float32)
        (lib.mt_uniform if kind == "rand" else lib.mt_normal)(ctypes.byref(drawn), out.ctypes.data, k)
        lib.mt_skip(ctypes.byref(skipped), k + (16 if kind == "randn" and k % 16 else 0))
        a, b = np.empty(n, np.float32), np.empty(n, np.float32)
        lib.mt_uniform(ctypes.byref(drawn), a.ctypes.data, n)
        lib.mt_uniform(ctypes.byref(skipped), b.ctypes.data, n)
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32), err_msg=f"after {kind} {k}")


@pytest.mark.parametrize(
    ("seed", "m", "ties", "missing"),
    [
        (0, 2, False, False),
        (1, 3, True, True),
        (2, 4, True, False),
        (3, 5, False, True),
        (4, 3, False, False),
    ],
)
def test_fast_search_equals_the_plain_exhaustive_search(
    seed: int, m: int, ties: bool, missing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = random_problem(seed, m=m, ties=ties, missing=missing)
    kw = {**PAPER_SHORT, "random_state": seed + 5, "search_subsets": False}
    fast = RandomSearchCombiner(**kw).fit(X, y)
    stats = fast.search_stats_
    assert stats["fast_subsets"] == 1
    assert stats["clips_to_score"] < stats["candidates_scored"] * len(y)  # the bounds cut clips
    assert 0 < stats["shown_hopeless_by_pairs"] <= stats["candidates_scored"]  # the pair test settles some
    # skipping needs every clip that could still flip to be bounded: a clip tied between its label and another
    # class can always flip, and clips missing a model are all scored
    if not ties and not missing:
        assert stats["candidates_skipped"] > 0
    assert_same_search(fast, fit_reference(monkeypatch, X, y, **kw))


def test_fast_search_equals_the_plain_search_over_every_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = random_problem(7, n=60, m=4)
    kw = {**PAPER_SHORT, "n_samples": 60, "chunk_size": 25, "random_state": 1}
    fast = RandomSearchCombiner(**kw).fit(X, y)
    assert fast.search_stats_["fast_subsets"] == 11
    assert gc.get_freeze_count() == 0  # the objects set aside from the collector during the fit are back
    assert_same_search(fast, fit_reference(monkeypatch, X, y, **kw))


def test_fast_search_equals_the_chunked_native_search_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # two scorer threads share their running bests; the result is still the earliest best of the whole round
    X, y = random_problem(11, n=130, m=3)
    kw = {**PAPER_SHORT, "n_samples": 400, "chunk_size": 128, "random_state": 2, "search_subsets": False}
    torch.set_num_threads(2)
    try:
        fast = RandomSearchCombiner(**kw).fit(X, y)
        monkeypatch.setattr(RandomSearchCombiner, "_fast", False)
        chunked = RandomSearchCombiner(**kw).fit(X, y)
    finally:
        torch.set_num_threads(1)
    assert fast.search_stats_["fast_subsets"] == 1 and chunked.search_stats_["fast_subsets"] == 0
    assert_same_search(fast, chunked)


def test_every_subset_gives_the_same_search_on_one_and_two_threads() -> None:
    # one thread draws each chunk just before scoring it (C run_round); two threads take a subset each, and a
    # single subset on two threads splits every round (C scan_round on both, the next round drawn meanwhile)
    X, y = random_problem(12, n=110, m=4, ties=False)
    kw = {**PAPER_SHORT, "n_samples": 300, "chunk_size": 100, "random_state": 4}
    one = RandomSearchCombiner(**kw).fit(X, y)
    one_full = RandomSearchCombiner(**kw, search_subsets=False).fit(X, y)
    torch.set_num_threads(2)
    try:
        two = RandomSearchCombiner(**kw).fit(X, y)
        two_full = RandomSearchCombiner(**kw, search_subsets=False).fit(X, y)
    finally:
        torch.set_num_threads(1)
    assert one.search_stats_["fast_subsets"] == two.search_stats_["fast_subsets"] == 11
    assert one.search_stats_["candidates_skipped"] > 0
    assert_same_search(one, two)
    assert_same_search(one_full, two_full)
    assert one.subset_scores_[(0, 1, 2, 3)] == one_full.best_score_


def test_every_candidate_ties_keeps_the_first_sample() -> None:
    # identical models: every weighting predicts the same, so no candidate beats the first global sample
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(C), size=40)
    y = rng.integers(0, C, 40)
    est = RandomSearchCombiner(**PAPER_SHORT, random_state=3, search_subsets=False).fit(np.hstack([p] * 3), y)
    gen = torch.Generator().manual_seed(3)
    first = combine.normalise_columns(torch.rand((C, PAPER_SHORT["chunk_size"], 3), generator=gen))[:, 0, :]
    np.testing.assert_array_equal(est.weights_, first.T.double().numpy())
    assert est.best_score_ == np.mean(p.argmax(axis=1) == y)


def test_falls_back_to_torch_draws_when_the_generator_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = random_problem(5, n=50, m=3)
    kw = {**PAPER_SHORT, "random_state": 8, "search_subsets": False}
    fast = RandomSearchCombiner(**kw).fit(X, y)
    lib = _native_library()
    monkeypatch.setattr(combine, "_NATIVE", {"lib": lib})  # probe again
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: real_randn(*a, **k) + 1.0)  # "another torch build"
    with pytest.warns(RuntimeWarning, match="does not reproduce torch's random stream"):
        assert not _native_generator_matches_torch(lib)
    monkeypatch.setattr(torch, "randn", real_randn)
    slow = RandomSearchCombiner(**kw).fit(X, y)
    assert slow.search_stats_["fast_subsets"] == 0
    assert_same_search(fast, slow)


def test_builds_without_march_native(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # a compiler that refuses -march=native: the build retries without it and the generator still matches torch
    wrapper = tmp_path / "cc-no-native"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *-march=native*) exit 1;; esac\nexec {shutil.which("cc")} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(combine, "_NATIVE", {})
    monkeypatch.setattr(combine.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("CC", str(wrapper))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = _native_library()
        assert lib is not None and _native_generator_matches_torch(lib)
    X, y = random_problem(6, n=40, m=2)
    probs = X.reshape(len(y), 2, C).transpose(1, 0, 2)
    assert (
        _ScoreTable(probs, np.ones((2, len(y)), bool), y, torch.device("cpu"), "native").backend == "native"
    )
    # built for a generic target, the search takes the portable code (no AVX: lane loops instead of permutes,
    # gathers and mask counts) and must still find the exhaustive search's weights
    X, y = random_problem(13, n=90, m=3, ties=True)
    kw = {**PAPER_SHORT, "random_state": 6, "search_subsets": False}
    fast = RandomSearchCombiner(**kw).fit(X, y)
    assert fast.search_stats_["fast_subsets"] == 1
    assert_same_search(fast, fit_reference(monkeypatch, X, y, **kw))


def test_lockstep_groups_cover_every_subset_once_by_size() -> None:
    subsets = combine.model_subsets(5)
    groups = combine._lockstep_groups(subsets)
    assert sorted(s for g in groups for s in g) == sorted(subsets)
    assert all(len({len(s) for s in g}) == 1 and 1 <= len(g) <= 5 for g in groups)
    # 10 + 10 + 5 + 1 subsets of 2, 3, 4, 5 models: 6 groups, the most models first
    assert [(len(g[0]), len(g)) for g in groups] == [(4, 5), (3, 5), (3, 5), (2, 5), (2, 5), (5, 1)]
    assert [len(g) for g in combine._lockstep_groups(subsets, max_group=4)] == [4, 3, 3, 3, 4, 2, 3, 3, 1]


def fast_searches(
    probs: np.ndarray, present: np.ndarray, y: np.ndarray, subsets: list[tuple[int, ...]]
) -> list[combine._FastSearch]:
    """One C whole-search per subset of the models (one thread each), ready for ``_run_searches``."""
    lib = _native_library()
    tables = [
        _ScoreTable(probs[list(s)], present[list(s)], y, torch.device("cpu"), "native", n_threads=1)
        for s in subsets
    ]
    return [combine._FastSearch(t, lib, C, len(s)) for t, s in zip(tables, subsets, strict=True)]


@pytest.mark.parametrize("missing", [False, True])
def test_lockstep_searches_give_each_subset_its_own_search(missing: bool) -> None:
    # subsets of one size share the drawn stream, round by round; the rounds the bar skips for one subset are
    # drawn for another: every subset's weights, count and work counts must be those of its search alone
    X, y = random_problem(14, n=100, m=5, ties=not missing, missing=missing)
    probs = X.reshape(len(y), 5, C).transpose(1, 0, 2)
    present = ~np.isnan(probs).all(axis=2)
    kw = {**PAPER_SHORT, "n_samples": 200, "chunk_size": 64}
    sigmas = combine.sigma_schedule(kw["sigma0"], kw["decay"], kw["sigma_min"])
    group = [s for s in combine.model_subsets(5) if len(s) == 3]
    together = fast_searches(probs, present, y, group)
    found = combine._run_searches(together, 3, kw["n_samples"], kw["chunk_size"], sigmas)
    skipped = []
    for subset, (w, count), fast in zip(group, found, together, strict=True):
        alone = fast_searches(probs, present, y, [subset])
        w1, count1 = combine._run_searches(alone, 3, kw["n_samples"], kw["chunk_size"], sigmas)[0]
        np.testing.assert_array_equal(w.numpy().view(np.int32), w1.numpy().view(np.int32))
        assert count == count1
        np.testing.assert_array_equal(fast.stats, alone[0].stats)
        skipped.append(int(fast.stats[0, 0]))
    # the subsets differ in how much the bar skips (whole rounds for some while others still draw them)
    assert len(set(skipped)) > 1


def run_round_by_round(
    searches: list[combine._FastSearch], seed: int, n_samples: int, chunk: int, sigmas: list[float]
) -> list[tuple[torch.Tensor, int]]:
    """The lockstep searches as a Python loop over the rounds: each round's orders and pairs made afresh by
    ``round_scan`` and scored by the C ``run_round`` (what the C ``run_search`` does in one call, keeping a round's
    orders when its centre has not moved)."""
    lib, c, m = searches[0].lib, searches[0].c, searches[0].m
    gen = _MT()
    lib.mt_seed(ctypes.byref(gen), seed % 2**64)
    zbuf = np.zeros(c * m * min(chunk, n_samples) + 8, np.float32)
    n_sub = len(searches)
    bars, ks = np.empty(n_sub, np.int32), np.empty(n_sub, np.int64)
    ws = np.zeros((n_sub, c * m), np.float32)
    for s in searches:
        s.start(n_samples, chunk)
    for r in range(len(sigmas) + 1):
        scans = (combine._Scan * n_sub)(
            *(s.round_scan(r, sigmas[r - 1] if r else 1.0, None) for s in searches)
        )
        bars[:] = [s.best for s in searches]
        assert (
            lib.run_round(
                scans,
                n_sub,
                ctypes.byref(gen),
                int(r > 0),
                zbuf.ctypes.data,
                bars.ctypes.data,
                ks.ctypes.data,
                ws.ctypes.data,
            )
            == 0
        )
        for i, s in enumerate(searches):
            s.end_round(bars[i : i + 1], ks[i : i + 1], ws[i : i + 1])
    return [s.result() for s in searches]


@pytest.mark.parametrize("missing", [False, True])
def test_whole_search_in_one_c_call_equals_the_round_by_round_loop(missing: bool) -> None:
    # run_search keeps a round's clip orders and pairs while the best has not moved; every weight bit, count and
    # work count must be those of making them afresh each round; a search object run twice starts afresh
    X, y = random_problem(15, n=120, m=4, ties=not missing, missing=missing)
    probs = X.reshape(len(y), 4, C).transpose(1, 0, 2)
    present = ~np.isnan(probs).all(axis=2)
    kw = {**PAPER_SHORT, "n_samples": 250, "chunk_size": 96}
    sigmas = combine.sigma_schedule(kw["sigma0"], kw["decay"], kw["sigma_min"])
    group = [s for s in combine.model_subsets(4) if len(s) == 2]
    in_c, in_python = fast_searches(probs, present, y, group), fast_searches(probs, present, y, group)
    found = combine._run_searches(in_c, 9, kw["n_samples"], kw["chunk_size"], sigmas)
    reference = run_round_by_round(in_python, 9, kw["n_samples"], kw["chunk_size"], sigmas)
    again = combine._run_searches(
        in_c, 9, kw["n_samples"], kw["chunk_size"], sigmas
    )  # same objects, refreshed
    for (w, count), (w_ref, count_ref) in zip(found, reference, strict=True):
        np.testing.assert_array_equal(w.numpy().view(np.int32), w_ref.numpy().view(np.int32))
        assert count == count_ref
    for (w, count), (w_ref, count_ref) in zip(again, reference, strict=True):
        np.testing.assert_array_equal(w.numpy().view(np.int32), w_ref.numpy().view(np.int32))
        assert count == count_ref
    # the second run adds the same work again to each search's counters
    for fast, ref in zip(in_c, in_python, strict=True):
        np.testing.assert_array_equal(fast.stats, 2 * ref.stats)
    assert sum(int(r.stats[0, 3]) for r in in_python) > 0  # the pair test settled some candidates


def test_negative_zero_probabilities_search_as_positive_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    # the pair test orders the scores by their bits as integers, which holds for non-negative floats but not for
    # -0.0 (its bits are the most negative int): a clip whose every probability is zero is right for label 0 (the
    # lowest class wins the tie), but with its class-0 entries -0.0 and the rival's +0.0 the bits would call it
    # wrong and reject candidates that beat the best; the table turns -0.0 inputs into +0.0
    X, y = random_problem(16, n=80, m=3, ties=False)
    zeros = np.zeros((25, X.shape[1]))
    zeros[:, 0::C] = -0.0  # class 0 of every model
    X, y = np.vstack([X, zeros]), np.concatenate([y, np.zeros(25, y.dtype)])
    assert np.signbit(X[80:, 0::C]).all() and not np.signbit(X[80:, 1::C]).any()
    kw = {**PAPER_SHORT, "random_state": 2, "search_subsets": False}
    minus = RandomSearchCombiner(**kw).fit(X, y)
    assert minus.search_stats_["shown_hopeless_by_pairs"] > 0
    assert_same_search(minus, fit_reference(monkeypatch, X, y, **kw))
    plus = RandomSearchCombiner(**kw).fit(np.abs(X), y)
    assert_same_search(plus, minus)
    assert plus.search_stats_ == minus.search_stats_


def test_refit_on_other_shapes_gives_fresh_searches() -> None:
    # each fit builds its own tables and C arguments: fitting one estimator on another number of models and clips,
    # then on the first problem again, gives what fresh estimators give
    a, b = random_problem(17, n=70, m=3), random_problem(18, n=95, m=4, missing=True)
    kw = {**PAPER_SHORT, "n_samples": 120, "chunk_size": 50}
    est = RandomSearchCombiner(**kw)
    first = est.fit(*a).weights_.copy(), est.search_stats_.copy()
    est.fit(*b)
    fresh_b = RandomSearchCombiner(**kw).fit(*b)
    assert_same_search(est, fresh_b)
    assert est.search_stats_ == fresh_b.search_stats_
    est.fit(*a)
    np.testing.assert_array_equal(est.weights_, first[0])
    assert est.search_stats_ == first[1]


def test_c_source_ships_beside_the_module_as_package_data() -> None:
    # the C code lives in emotiw/_combine.c; a non-editable install has it only if setup.cfg lists it as package data
    import configparser
    import importlib.resources
    from pathlib import Path

    shipped = importlib.resources.files("emotiw").joinpath("_combine.c")
    assert shipped.is_file() and shipped.read_text(encoding="ascii") == combine._NATIVE_SOURCE
    assert "void scan_round(" in combine._NATIVE_SOURCE and "int run_search(" in combine._NATIVE_SOURCE
    cfg = configparser.ConfigParser()
    cfg.read(Path(combine.__file__).resolve().parents[1] / "setup.cfg")
    assert "_combine.c" in [p.strip() for p in cfg["options.package_data"]["emotiw"].split(",")]
