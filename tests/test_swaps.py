"""Exchange local search on supports: exact gains against brute-force refits, local
optimality, patterns kept, and the swaps option of iht."""
import itertools

import numpy as np
import pytest

from layertrim.solvers import ParameterError, iht
from layertrim.solvers.base.gram import as_quadratic
from layertrim.solvers.threshold.refit import RCOND
from layertrim.solvers.threshold.swaps import _best_exchange, _column_state, group_members, swap_refine


def lstsq_loss(X, y, support):
    """Least-squares loss (1/2P)||X_T w + b - y||^2 with intercept, by numpy.linalg.lstsq."""
    Xc, yc = X - X.mean(0), y - y.mean()
    T = np.flatnonzero(support)
    if T.size == 0:
        return 0.5 * float(np.mean(yc * yc))
    w = np.linalg.lstsq(Xc[:, T], yc, rcond=None)[0]
    res = Xc[:, T] @ w - yc
    return 0.5 * float(np.mean(res * res))


def correlated_problem(rng, P=60, N=8, M=3):
    X = rng.standard_normal((P, N)) @ (np.eye(N) + 0.6 * rng.standard_normal((N, N)))
    Y = X @ rng.standard_normal((N, M)) + 0.2 * rng.standard_normal((P, M))
    return X, Y


def exchanges(kept, groups):
    """Every (i, k): i kept, k dropped, same group."""
    return [(i, k) for i in np.flatnonzero(kept) for k in np.flatnonzero(~kept) if groups[i] == groups[k]]


@pytest.mark.parametrize("grouped", [False, True])
def test_best_exchange_matches_brute_force(rng, grouped):
    for trial in range(10):
        X, Y = correlated_problem(rng)
        q = as_quadratic(X, Y)
        groups = np.arange(8) // 4 if grouped else np.zeros(8, dtype=np.int64)
        kept = np.zeros(8, dtype=bool)
        kept[[0, 2, 5, 7] if grouped else rng.choice(8, 3, replace=False)] = True
        scale = np.diag(q.G).max()
        Gd = q.G + RCOND * scale * np.eye(8)
        c = np.ascontiguousarray(q.C[:, 0])
        alive = np.ones(8, dtype=bool)
        idx, H, A, w, r, s, nl = _column_state(Gd, c, kept, alive)
        where = np.full(8, -1, dtype=np.int64)
        where[idx[:nl]] = np.arange(nl)
        members, starts = group_members(groups)
        delta, i, k = _best_exchange(Gd, kept, alive, where, members, starts, H, A, w, r, s)
        start = lstsq_loss(X, Y[:, 0], kept)
        changes = {}
        for a, b in exchanges(kept, groups):
            new = kept.copy()
            new[a], new[b] = False, True
            changes[a, b] = lstsq_loss(X, Y[:, 0], new) - start
        best = min(changes.values())
        # the 1e-10 relative ridge of the search moves losses by ~1e-10 of their scale
        if best < 0:
            assert i >= 0
            assert delta == pytest.approx(changes[i, k], rel=1e-6, abs=1e-10)
            assert delta == pytest.approx(best, rel=1e-6, abs=1e-10)
        else:
            assert i < 0


@pytest.mark.parametrize("grouped", [False, True])
def test_refined_support_is_a_local_optimum(rng, grouped):
    X, Y = correlated_problem(rng, N=12, M=4)
    q = as_quadratic(X, Y)
    groups = np.arange(12) // 4 if grouped else np.zeros(12, dtype=np.int64)
    mask = np.zeros((12, 4), dtype=bool)
    for j in range(4):  # two kept per group of four, the worst-looking ones first
        for g in range(3):
            mask[4 * g + rng.choice(4, 2, replace=False), j] = True
    new, moves = swap_refine(q, mask, groups)
    assert moves > 0
    for j in range(4):
        assert new[:, j].sum() == mask[:, j].sum()
        if grouped:  # the N:M pattern is kept
            assert np.all(new[:, j].reshape(3, 4).sum(1) == 2)
        loss = lstsq_loss(X, Y[:, j], new[:, j])
        assert loss <= lstsq_loss(X, Y[:, j], mask[:, j]) * (1 + 1e-12)
        for a, b in exchanges(new[:, j], groups):  # no single exchange helps (beyond rounding)
            other = new[:, j].copy()
            other[a], other[b] = False, True
            assert lstsq_loss(X, Y[:, j], other) >= loss * (1 - 1e-8)


def test_brute_force_optimum_on_tiny_instances(rng):
    """One kept input of three per column: exchanges reach the best single input."""
    for trial in range(10):
        X, Y = correlated_problem(rng, N=3, M=2)
        q = as_quadratic(X, Y)
        mask = np.zeros((3, 2), dtype=bool)
        mask[trial % 3] = True
        new, _ = swap_refine(q, mask, np.zeros(3, dtype=np.int64))
        for j in range(2):
            best = min(lstsq_loss(X, Y[:, j], np.eye(3, dtype=bool)[i]) for i in range(3))
            assert lstsq_loss(X, Y[:, j], new[:, j]) == pytest.approx(best, rel=1e-9)


def test_dead_inputs_give_their_slots_away(rng):
    X, Y = correlated_problem(rng)
    X[:, [0, 1]] = 3.0  # constant inputs: zero variance
    q = as_quadratic(X, Y)
    mask = np.zeros((8, 3), dtype=bool)
    mask[[0, 1, 4, 5]] = True  # group 0 keeps its two dead inputs
    new, _ = swap_refine(q, mask, np.arange(8) // 4)
    assert not new[[0, 1]].any() and np.all(new[:4].sum(0) == 2)
    for j in range(3):
        assert lstsq_loss(X, Y[:, j], new[:, j]) < lstsq_loss(X, Y[:, j], mask[:, j])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pattern,sparsity", [("2:4", None), ("unstructured", 0.6), ("per_output", 0.5)])
def test_iht_swaps(rng, dtype, pattern, sparsity):
    X, Y = correlated_problem(rng, P=120, N=16, M=5)
    X, Y = X.astype(dtype), Y.astype(dtype)
    plain = iht(X, Y, sparsity=sparsity, pattern=pattern)
    res = iht(X, Y, sparsity=sparsity, pattern=pattern, swaps=True)
    assert res.W.dtype == dtype and res.b.dtype == dtype
    # float32 data: losses agree to ~1e-6 relative; the swaps start from the plain run's support
    assert res.objective <= plain.objective * (1 + 1e-6)
    kept = res.W != 0
    if pattern == "2:4":
        assert np.all(kept.reshape(4, 4, 5).sum(1) <= 2)
    elif pattern == "per_output":
        assert np.all(kept.sum(0) <= 8)
    else:
        assert kept.sum() <= 32
    R = X.astype(float) @ res.W.astype(float) + res.b.astype(float) - Y.astype(float)
    tol = 1e-4 if dtype == np.float32 else 1e-10  # float32 inputs carry ~7 digits
    assert 0.5 * np.mean(np.sum(R * R, axis=1)) == pytest.approx(res.objective, rel=tol)


def test_iht_swaps_with_permutation_keeps_the_convention(rng):
    X, Y = correlated_problem(rng, P=120, N=16, M=5)
    res = iht(X, Y, pattern="2:4", permute=True, swaps=True)
    perm = res.info["permutation"]
    assert np.all((res.W[perm] != 0).reshape(4, 4, 5).sum(1) <= 2)
    # float64: the two products differ only by the order of summation
    np.testing.assert_allclose(X[:, perm] @ res.W[perm], X @ res.W, rtol=1e-12, atol=1e-12)


def test_swaps_need_an_entrywise_pattern(rng):
    X, Y = correlated_problem(rng)
    with pytest.raises(ParameterError, match="swaps=True needs an entry-wise pattern"):
        iht(X, Y, sparsity=0.5, pattern="input_rows", swaps=True)
