"""Input permutations for N:M sparsity: brute force on tiny instances, the exchange gain,
the guarantee against the unpermuted order, and the permuted paths of magnitude and iht."""
import itertools

import numpy as np
import pytest

from layertrim.solvers import ParameterError, ShapeError, iht, magnitude, nm_permutation
from layertrim.solvers.threshold.permutation import exchange_gain, group_stats


def kept_importance(S, perm, n, m):
    """Sum of S^2 kept by n:m on the rows in the order perm, by sorting (independent of the code)."""
    S2 = np.asarray(S, dtype=float)[np.asarray(perm)] ** 2
    groups = S2.reshape(-1, m, S2.shape[1])
    return float(np.sort(groups, axis=1)[:, m - n :].sum())


def partitions(items, m):
    """Every split of ``items`` into unordered groups of ``m``, as a flat order."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for others in itertools.combinations(rest, m - 1):
        left = [i for i in rest if i not in others]
        for tail in partitions(left, m):
            yield [first, *others, *tail]


def is_nm(mask, n, m):
    """True when every group of m consecutive rows of every column holds at most n entries."""
    return bool(np.all(mask.reshape(-1, m, mask.shape[1]).sum(axis=1) <= n))


@pytest.mark.parametrize("N,n,m,integer", [(8, 2, 4, False), (8, 2, 4, True), (12, 2, 4, False), (9, 1, 3, True)])
@pytest.mark.parametrize("start", ["identity", "spread"])
def test_against_brute_force(N, n, m, integer, start, seed_shift):
    rng = np.random.default_rng(N * 10 + n + integer + seed_shift)
    S = rng.integers(0, 4, (N, 3)).astype(float) if integer else rng.random((N, 3))  # integers: many ties
    perm = nm_permutation(S, f"{n}:{m}", start=start)
    assert sorted(perm) == list(range(N))
    best = max(kept_importance(S, p, n, m) for p in partitions(list(range(N)), m))
    found = kept_importance(S, perm, n, m)
    # rounding slack of the sums: 1e-12 relative
    assert kept_importance(S, np.arange(N), n, m) <= found * (1 + 1e-12)  # never below the given order
    assert found <= best * (1 + 1e-12)
    # a local maximum: no exchange of two inputs between two groups gains
    for a, b in itertools.combinations(range(N), 2):
        if a // m != b // m:
            p = perm.copy()
            p[a], p[b] = p[b], p[a]
            assert kept_importance(S, p, n, m) <= found * (1 + 1e-12)


def test_exchange_gain_matches_recomputation(rng):
    n, m, N = 2, 4, 8
    for trial in range(30):
        S2 = rng.integers(0, 3, (N, 5)).astype(float) if trial % 2 else rng.random((N, 5))
        perm = rng.permutation(N).astype(np.int64)
        rank = np.empty((N, 5), dtype=np.int64)
        stats = [(np.empty(5), np.empty(5)) for _ in range(2)]
        for g in range(2):
            group_stats(S2, perm[g * m : (g + 1) * m], n, rank, *stats[g])
        a, b = rng.integers(0, m), m + rng.integers(0, m)
        gain = exchange_gain(S2, rank, n, perm[a], perm[b], *stats[0], *stats[1])
        swapped = perm.copy()
        swapped[a], swapped[b] = perm[b], perm[a]
        expected = kept_importance(np.sqrt(S2), swapped, n, m) - kept_importance(np.sqrt(S2), perm, n, m)
        assert gain == pytest.approx(expected, abs=1e-12)


def test_spread_start_pairs_dead_inputs(rng):
    """Half of the inputs carry nothing: the best order gives every group two live inputs."""
    S = np.zeros((16, 4))
    S[8:] = 1.0 + rng.random((8, 4))
    perm = nm_permutation(S, "2:4")
    assert kept_importance(S, perm, 2, 4) == pytest.approx(np.sum(S**2), rel=1e-12)
    assert kept_importance(S, np.arange(16), 2, 4) < 0.8 * np.sum(S**2)


def test_magnitude_permuted(rng):
    W = rng.standard_normal((24, 5)) * rng.uniform(0.0, 2.0, (24, 1))
    plain = magnitude(W, pattern="2:4")
    res = magnitude(W, pattern="2:4", permute=True)
    perm = res.info["permutation"]
    assert is_nm(res.W[perm] != 0, 2, 4) and is_nm(res.info["mask"][perm], 2, 4)
    assert res.info["mask"].sum() == 24 * 5 // 2
    np.testing.assert_array_equal(res.W[res.info["mask"]], W[res.info["mask"]])  # kept weights unchanged
    assert res.objective <= plain.objective * (1 + 1e-12)  # distance to W never larger


def dead_block_problem(rng, P=200, N=16, M=3, dtype=np.float64):
    """The first half of the inputs are constant (like MNIST's border pixels), the rest dense."""
    X = rng.standard_normal((P, N))
    X[:, : N // 2] = 1.0
    W_true = np.zeros((N, M))
    W_true[N // 2 :] = rng.standard_normal((N // 2, M))
    return X.astype(dtype), (X @ W_true + 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iht_permuted_fits_what_the_fixed_order_cannot(rng, dtype):
    X, Y = dead_block_problem(rng, dtype=dtype)
    plain = iht(X, Y, pattern="2:4")
    res = iht(X, Y, pattern="2:4", permute=True)
    assert res.W.dtype == dtype and res.b.dtype == dtype
    perm = res.info["permutation"]
    assert sorted(perm) == list(range(16))
    assert is_nm(res.W[perm] != 0, 2, 4)
    # the permuted inputs with the permuted weights give the same outputs as the returned W
    # (in float64: the two products differ only by the order of summation)
    X64, W64 = X.astype(float), res.W.astype(float)
    np.testing.assert_allclose(X64[:, perm] @ W64[perm], X64 @ W64, rtol=1e-12, atol=1e-12)
    # 8 live inputs fit in 4 groups paired with dead ones: an exact fit; in the fixed order
    # only 4 of the 8 survive, leaving a loss of order 1
    assert res.objective <= 1e-8 * plain.objective
    assert plain.objective > 0.1
    R = X.astype(float) @ res.W + res.b - Y
    # float32: the data carry ~7 digits, the loss is of order 1e-8 or below either way
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert 0.5 * np.mean(np.sum(R * R, axis=1)) == pytest.approx(res.objective, abs=tol)


def test_iht_permuted_never_worse_than_permuted_magnitude(rng):
    X = rng.standard_normal((150, 16)) @ (np.eye(16) + 0.5 * rng.standard_normal((16, 16)))
    W = rng.standard_normal((16, 4))
    Y = X @ W + 0.3 * rng.standard_normal((150, 4))
    res = iht(X, Y, pattern="2:4", W0=W, permute=True)
    perm = res.info["permutation"]
    # the magnitude + refit start in the same order is one of iht's starts
    base = magnitude(W[perm], pattern="2:4", X=X[:, perm], Y=Y, refit=True)
    assert res.objective <= base.objective * (1 + 1e-12)


def test_bad_inputs(rng):
    S = rng.random((8, 2))
    with pytest.raises(ParameterError, match="N:M"):
        nm_permutation(S, "unstructured")
    with pytest.raises(ShapeError, match="multiple of 3"):
        nm_permutation(S, "1:3")
    with pytest.raises(ParameterError, match="non-negative"):
        nm_permutation(-S, "2:4")
    with pytest.raises(ParameterError, match="start"):
        nm_permutation(S, "2:4", start="random")
    with pytest.raises(ParameterError, match="max_sweeps"):
        nm_permutation(S, "2:4", max_sweeps=-1)
    with pytest.raises(ParameterError, match="permute=True needs an N:M"):
        magnitude(S, sparsity=0.5, permute=True)
    X, Y = dead_block_problem(rng)
    with pytest.raises(ParameterError, match="permute=True needs an N:M"):
        iht(X, Y, sparsity=0.5, permute=True)
