"""Accelerated iterative hard thresholding: feasibility, monotonicity, no worse than
magnitude + refit, recovery of a planted sparse layer, brute force on a tiny instance."""
import itertools
import warnings

import numpy as np
import pytest

from conftest import RTOL
from layertrim.solvers import ConvergenceWarning, GramStats, ParameterError, ShapeError, iht, magnitude, project, refit


def correlated_problem(rng, P=80, N=16, M=4, noise=0.5):
    """Inputs with strongly correlated neighbours and unequal scales: a hard case for magnitude."""
    Z = rng.standard_normal((P, N))
    X = (Z + 0.9 * np.roll(Z, 1, axis=1)) * rng.uniform(0.2, 3.0, N) + 1.0
    W = rng.standard_normal((N, M))
    Y = X @ W + noise * rng.standard_normal((P, M))
    return X, Y, W


PATTERNS = [("unstructured", 0.75), ("per_output", 0.5), ("2:4", None), ("input_rows", 0.5), ("output_columns", 0.5)]


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
def test_never_worse_than_magnitude_refit(rng, pattern, sparsity):
    X, Y, W = correlated_problem(rng)
    base = magnitude(W, sparsity=sparsity, pattern=pattern, X=X, Y=Y, refit=True)
    res = iht(X, Y, sparsity=sparsity, pattern=pattern, W0=W, max_iter=200)
    # the support lies inside a mask allowed by the pattern (the final one of the iterations)
    _, allowed = project(np.where(res.W != 0, 1.0 + np.abs(res.W), 0.0), sparsity=sparsity, pattern=pattern)
    assert np.all(allowed[res.W != 0])
    assert res.objective <= base.objective * (1 + 1e-12)
    assert res.info["loss_start"] <= base.objective * (1 + 1e-12)  # the better of two starts
    h = res.history["objective"]
    assert np.all(np.diff(h) <= 1e-12 * h[0]) and h[0] <= res.info["loss_start"] * (1 + 1e-12)
    # the reported objective is the loss on the data, and equals the refit on the final support
    R = X @ res.W + res.b - Y
    assert res.objective == pytest.approx(0.5 * np.sum(R * R) / len(X), rel=1e-9)
    assert res.objective == pytest.approx(refit(X, Y, res.W != 0).objective, rel=1e-9)


def test_improves_on_a_correlated_layer(rng):
    X, Y, W = correlated_problem(rng, P=200, N=32, M=6, noise=0.1)
    base = magnitude(W, sparsity=0.75, X=X, Y=Y, refit=True)
    res = iht(X, Y, sparsity=0.75, W0=W)
    assert res.objective < 0.9 * base.objective


def test_nm_support(rng):
    X, Y, W = correlated_problem(rng)
    res = iht(X, Y, pattern="4:8", W0=W)
    assert np.all((res.W != 0).reshape(2, 8, 4).sum(axis=1) <= 4)


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.8), ("per_output", 0.75), ("2:4", None)])
def test_recovers_planted_sparse_layer(rng, pattern, sparsity):
    N, M, P = 24, 5, 300
    W_true = rng.standard_normal((N, M)) + np.sign(rng.standard_normal((N, M)))  # |w| bounded away from 0
    _, support = project(rng.random((N, M)), sparsity=sparsity, pattern=pattern)
    W_true *= support
    b_true = rng.standard_normal(M)
    X = rng.standard_normal((P, N))
    Y = X @ W_true + b_true
    res = iht(X, Y, sparsity=sparsity, pattern=pattern)  # no W0: starts from least squares
    np.testing.assert_array_equal(res.W != 0, support)
    # noiseless: exact recovery up to the conditioning of the 300 x 24 normal equations
    np.testing.assert_allclose(res.W, W_true, atol=1e-8)
    np.testing.assert_allclose(res.b, b_true, atol=1e-8)
    assert res.converged


def test_hard_start_recovery_from_bad_w0(rng):
    """Starting from a wrong support, IHT moves to the planted one (correlated design, P >> N)."""
    N, M, P = 20, 3, 400
    X = rng.standard_normal((P, N))
    W_true = np.zeros((N, M))
    W_true[:4] = 2.0 + rng.random((4, M))
    Y = X @ W_true
    W0 = np.zeros((N, M))
    W0[10:14] = 5.0  # magnitude keeps exactly the wrong rows
    res = iht(X, Y, sparsity=0.8, pattern="per_output", W0=W0, intercept=False)
    assert res.info["loss_start"] > 1.0
    np.testing.assert_allclose(res.W, W_true, atol=1e-8)
    assert res.b is None


def test_brute_force_tiny(rng):
    """On 6 inputs, 1 output, keep 2: IHT is a local method, so compare with the global optimum
    by enumeration and require that it is reached on an easy instance and never beaten."""
    X = rng.standard_normal((50, 6))
    Y = X[:, [1, 4]] @ np.array([[1.5], [-2.0]]) + 0.1 * rng.standard_normal((50, 1))
    best = min(
        refit(X, Y, np.isin(np.arange(6), c)[:, None]).objective for c in itertools.combinations(range(6), 2)
    )
    res = iht(X, Y, sparsity=4 / 6)
    assert res.objective >= best * (1 - 1e-12)
    assert res.objective == pytest.approx(best, rel=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_stats_and_dtype(rng, dtype):
    X, Y, W = correlated_problem(rng)
    a = iht(X.astype(dtype), Y.astype(dtype), sparsity=0.6, W0=W)
    stats = GramStats()
    for chunk in np.array_split(np.arange(len(X)), 3):
        stats.update(X[chunk].astype(dtype), Y[chunk].astype(dtype))
    b = iht(stats, sparsity=0.6, W0=W)
    assert a.W.dtype == dtype and b.W.dtype == dtype and a.b.dtype == dtype
    # same statistics up to the order of summation: same path, same objective
    assert b.objective == pytest.approx(a.objective, rel=RTOL[np.dtype(dtype)])
    assert np.mean(a.W == 0) >= 0.6


def test_max_iter_warns_and_stays_feasible(rng):
    X = rng.standard_normal((100, 12))
    W_true = np.zeros((12, 2))
    W_true[:3] = 2.0
    W0 = np.zeros((12, 2))
    W0[6:9] = 5.0  # a wrong support: the first step must change it
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = iht(X, X @ W_true, sparsity=0.75, pattern="per_output", W0=W0, max_iter=1, tol=0.0)
    assert res.status == "max_iter" and res.iterations == 1
    assert np.all(np.count_nonzero(res.W, axis=0) <= 3)
    assert res.objective < res.info["loss_start"]


def test_interpolating_start_is_returned_without_iterations(rng):
    # 20 samples, 30 kept inputs per column: each column's refit fits the centered
    # targets exactly, so the start already has the least loss any weights can have
    P, N, M = 20, 60, 5
    X, Y, W0 = rng.standard_normal((P, N)), rng.standard_normal((P, M)), rng.standard_normal((N, M))
    res = iht(X, Y, sparsity=0.5, pattern="per_output", W0=W0)
    assert res.status == "optimal" and res.iterations == 0
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert res.objective <= 1e-6 * 0.5 * np.sum(Yc * Yc) / P
    # it is the first start: per column, the least-squares solution nearest to W0 on the 30
    # largest ||x_i|| |W0_im|, i.e. W0 plus the minimum-norm solution of Xc_S u = yc - Xc_S w0_S
    scores = np.linalg.norm(Xc, axis=0)[:, None] * np.abs(W0)
    for m in range(M):
        S = np.sort(np.argsort(-scores[:, m])[: N // 2])
        u = np.linalg.lstsq(Xc[:, S], Yc[:, m] - Xc[:, S] @ W0[S, m], rcond=None)[0]
        expected = np.zeros(N)
        expected[S] = W0[S, m] + u
        np.testing.assert_allclose(res.W[:, m], expected, rtol=RTOL[res.W.dtype], atol=1e-9)


def test_constant_inputs_give_zero_weights(rng):
    X = np.ones((20, 4))
    Y = rng.standard_normal((20, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = iht(X, Y, sparsity=0.5)
    assert np.all(res.W == 0) and res.converged
    np.testing.assert_allclose(res.b, Y.mean(axis=0))


def test_bad_inputs(rng):
    X, Y, W = correlated_problem(rng)
    with pytest.raises(ParameterError, match="sparsity is required"):
        iht(X, Y)
    with pytest.raises(ParameterError, match="fixes the sparsity"):
        iht(X, Y, pattern="2:4", sparsity=0.9)
    with pytest.raises(ShapeError, match="multiple of 3"):
        iht(X, Y, pattern="1:3")
    with pytest.raises(ShapeError, match="W0"):
        iht(X, Y, sparsity=0.5, W0=W.T)
    with pytest.raises(ParameterError, match="max_iter"):
        iht(X, Y, sparsity=0.5, max_iter=-1)
    with pytest.raises(ParameterError, match="tol"):
        iht(X, Y, sparsity=0.5, tol=-1.0)
    with pytest.raises(ShapeError):
        iht(X, None, sparsity=0.5)
    with pytest.raises(ParameterError):
        iht(X, Y, sparsity=0.5, pattern="blocks")


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.75), ("2:4", None)])
def test_debias_stops_at_a_fixed_point(rng, pattern, sparsity):
    X, Y, W = correlated_problem(rng, P=200, N=32, M=6, noise=0.1)
    res = iht(X, Y, sparsity=sparsity, pattern=pattern, W0=W, debias_every=5)
    assert res.converged and res.iterations < 300
    h = res.history["objective"]
    assert np.all(np.diff(h) <= 1e-12 * h[0]) and res.objective <= res.info["loss_start"] * (1 + 1e-12)
    # a fixed point, checked independently: least squares on its support, and one Jacobi-scaled
    # gradient step followed by the projection selects the same support
    mask = res.W != 0
    assert res.objective == pytest.approx(refit(X, Y, mask).objective, rel=1e-9)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    G, C = Xc.T @ Xc / len(X), Xc.T @ Yc / len(X)
    d = np.diag(G)
    L = np.linalg.eigvalsh(G / np.sqrt(np.outer(d, d)))[-1]
    V = res.W - (G @ res.W - C) / (L * d[:, None])
    _, step_mask = project(V, sparsity=sparsity, pattern=pattern, scores=np.sqrt(d)[:, None] * np.abs(V))
    np.testing.assert_array_equal(step_mask, mask)


def test_debias_bad_value(rng):
    X, Y, _ = correlated_problem(rng)
    with pytest.raises(ParameterError, match="debias_every"):
        iht(X, Y, sparsity=0.5, debias_every=-1)
