"""Least-squares refit on a fixed support against numpy.linalg.lstsq; magnitude pruning."""
import numpy as np
import pytest

from conftest import RTOL
from layertrim.solvers import (
    EmptyDataError,
    GramStats,
    NonFiniteError,
    ParameterError,
    ShapeError,
    magnitude,
    project,
    refit,
)


def lstsq_reference(X, Y, mask, intercept):
    """Column by column lstsq on the support columns (plus a ones column for the bias)."""
    P, N = X.shape
    W, b = np.zeros(mask.shape), np.zeros(mask.shape[1])
    for j in range(mask.shape[1]):
        S = np.flatnonzero(mask[:, j])
        A = np.c_[X[:, S], np.ones(P)] if intercept else X[:, S]
        sol = np.linalg.lstsq(A, Y[:, j], rcond=None)[0]
        W[S, j] = sol[: S.size]
        b[j] = sol[-1] if intercept else 0.0
    return W, b


def loss(X, Y, W, b):
    R = X @ W + (0.0 if b is None else b) - Y
    return 0.5 * np.sum(R * R) / X.shape[0]


@pytest.fixture
def problem(rng):
    X = rng.standard_normal((60, 10)) + 1.5  # non-zero means exercise the intercept
    Y = X @ rng.standard_normal((10, 4)) + 0.3 * rng.standard_normal((60, 4)) - 2.0
    mask = rng.random((10, 4)) < 0.5
    mask[:, 3] = mask[:, 2]  # two columns sharing one support
    return X, Y, mask


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("from_stats", [False, True])
def test_equals_lstsq(problem, intercept, from_stats):
    X, Y, mask = problem
    W_ref, b_ref = lstsq_reference(X, Y, mask, intercept)
    res = refit(GramStats.from_arrays(X, Y), None, mask, intercept=intercept) if from_stats else refit(
        X, Y, mask, intercept=intercept
    )
    # well-conditioned 60 x 6 systems: normal equations lose ~cond(X_S)^2 * eps ~ 1e-13
    np.testing.assert_allclose(res.W, W_ref, atol=1e-9)
    assert np.all(res.W[~mask] == 0)
    if intercept:
        np.testing.assert_allclose(res.b, b_ref, atol=1e-9)
    else:
        assert res.b is None
    assert res.objective == pytest.approx(loss(X, Y, W_ref, b_ref if intercept else None), rel=1e-10)
    assert res.info["n_groups"] == 3  # columns 2 and 3 share their support


def test_ridge_closed_form(problem):
    X, Y, mask = problem
    lam = 0.7
    res = refit(X, Y, mask, ridge=lam)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for j in range(4):
        S = np.flatnonzero(mask[:, j])
        A = Xc[:, S].T @ Xc[:, S] / 60 + lam * np.eye(S.size)
        np.testing.assert_allclose(res.W[S, j], np.linalg.solve(A, Xc[:, S].T @ Yc[:, j] / 60), atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_support(rng, dtype):
    X = rng.standard_normal((40, 6))
    X[:, 1] = X[:, 0]  # duplicate input
    X[:, 2] = 2.0  # constant input (absorbed by the bias)
    X[:, 5] = 0.0  # dead input
    Y = X @ rng.standard_normal((6, 3)) + 0.1 * rng.standard_normal((40, 3))
    mask = np.ones((6, 3), dtype=bool)
    res = refit(X.astype(dtype), Y.astype(dtype), mask)
    assert res.W.dtype == dtype and np.all(np.isfinite(res.W)) and np.all(np.isfinite(res.b))
    W_ref, b_ref = lstsq_reference(X, Y, mask, True)  # minimum-norm least squares
    best = loss(X, Y, W_ref, b_ref)
    # float64: the fallback ridge 1e-10 * max diag changes the loss by ~1e-10 relative
    assert loss(X, Y, res.W.astype(float), res.b.astype(float)) <= best * (1 + 10 * RTOL[np.dtype(dtype)])
    # minimum norm: duplicates share the weight, constant and dead inputs get zero
    np.testing.assert_allclose(res.W[0], res.W[1], rtol=1e-4)
    assert np.all(np.abs(res.W[2]) < 1e-4) and np.all(res.W[5] == 0)
    # lstsq with a ones column gives the constant input a share of the bias; elsewhere both agree
    rows = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(res.W[rows], W_ref[rows], atol=1e-3 if dtype == np.float32 else 1e-6)


def test_empty_support_and_float32(problem):
    X, Y, mask = problem
    mask[:, 0] = False
    res = refit(X.astype(np.float32), Y.astype(np.float32), mask)
    assert res.W.dtype == np.float32 and np.all(res.W[:, 0] == 0)
    np.testing.assert_allclose(res.b[0], Y[:, 0].mean(), rtol=1e-5)
    W_ref, _ = lstsq_reference(X, Y, mask, True)
    np.testing.assert_allclose(res.W, W_ref, atol=1e-3)  # float32 data: ~1e-7 * cond^2


def test_bad_inputs(problem):
    X, Y, mask = problem
    with pytest.raises(ShapeError, match="mask"):
        refit(X, Y, mask.T)
    with pytest.raises(ShapeError):
        refit(X, Y)
    with pytest.raises(NonFiniteError):
        refit(X, Y, np.where(mask, np.nan, 0.0))
    with pytest.raises(ParameterError, match="ridge"):
        refit(X, Y, mask, ridge=-1.0)
    with pytest.raises(ShapeError, match="samples"):
        refit(X[:-1], Y, mask)
    with pytest.raises(EmptyDataError):
        refit(np.zeros((0, 10)), np.zeros((0, 4)), mask)


def test_magnitude(problem, rng):
    X, Y, _ = problem
    W = rng.standard_normal((10, 4))
    b = rng.standard_normal(4)
    Wp, mask = project(W, sparsity=0.6, pattern="per_output")
    plain = magnitude(W, sparsity=0.6, pattern="per_output")
    np.testing.assert_array_equal(plain.W, Wp)
    assert plain.objective == pytest.approx(0.5 * np.sum((W - Wp) ** 2))
    # with data and the layer's own bias: the loss on the data
    on_data = magnitude(W, sparsity=0.6, pattern="per_output", X=X, Y=Y, b=b)
    assert on_data.objective == pytest.approx(loss(X, Y, Wp, b), rel=1e-10)
    np.testing.assert_array_equal(on_data.b, b)
    # refit equals refit of the projection, from samples and from statistics
    fitted = magnitude(W, sparsity=0.6, pattern="per_output", X=X, Y=Y, refit=True)
    W_ref, b_ref = lstsq_reference(X, Y, mask, True)
    np.testing.assert_allclose(fitted.W, W_ref, atol=1e-9)
    assert fitted.objective == pytest.approx(loss(X, Y, W_ref, b_ref), rel=1e-10)
    stats = magnitude(W, sparsity=0.6, pattern="per_output", X=GramStats.from_arrays(X, Y), refit=True)
    np.testing.assert_allclose(stats.W, fitted.W, atol=1e-10)
    assert fitted.objective <= on_data.objective
    with pytest.raises(ParameterError):
        magnitude(W, sparsity=0.5, refit=True)
    with pytest.raises(ShapeError):
        magnitude(W[:5], sparsity=0.5, X=X, Y=Y)
