"""lasso / lam_max against cvxpy (Clarabel) and OSQP references."""
import numpy as np
import pytest

from conftest import RTOL
from layertrim.solvers import (
    ConvergenceWarning,
    EmptyDataError,
    GramStats,
    NonFiniteError,
    ParameterError,
    ShapeError,
    lam_max,
    lasso,
)

pytest.importorskip("cvxpy")
from layertrim.solvers import reference  # noqa: E402

PENALTIES = ("l1", "group", "elastic_net")


def make_instance(kind, seed, M=3):
    """Layer problems: X (P, N), Y (P, M) with a sparse signal, noise and an offset."""
    rng = np.random.default_rng(seed)
    P, N = {"random": (60, 20), "ill": (60, 20), "wide": (15, 30), "tall": (300, 8)}[kind]
    X = rng.standard_normal((P, N))
    if kind == "ill":
        U, _, Vt = np.linalg.svd(X, full_matrices=False)
        X = (U * np.logspace(0, -6, N)) @ Vt  # condition number 1e6
    X = X + 2.0  # non-centered inputs: the intercept matters
    W = np.zeros((N, M))
    W[: N // 3] = rng.standard_normal((N // 3, M))
    Y = X @ W + 0.3 * rng.standard_normal((P, M)) + 1.5
    return X, Y


def objective(X, Y, W, b, lam, penalty, l1_ratio=0.5):
    """The objective from the samples, in float64: independent of the Gram form."""
    X, Y, W = (np.asarray(a, dtype=np.float64) for a in (X, Y, W))
    fit = X @ W - Y + (0.0 if b is None else np.asarray(b, dtype=np.float64))
    if penalty == "l1":
        reg = np.abs(W).sum()
    elif penalty == "group":
        reg = np.linalg.norm(W, axis=1).sum()
    else:
        reg = l1_ratio * np.abs(W).sum() + 0.5 * (1 - l1_ratio) * (W**2).sum()
    return np.sum(fit**2) / (2 * len(X)) + lam * reg


@pytest.mark.parametrize("kind", ["random", "ill", "wide", "tall"])
@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("intercept", [True, False])
def test_matches_cvxpy_float64(kind, penalty, intercept, seed):
    X, Y = make_instance(kind, seed=seed)
    lam = 0.1 * lam_max(X, Y, penalty=penalty, intercept=intercept)
    _, _, ref_obj = reference.lasso(X, Y, lam, penalty=penalty, intercept=intercept)
    # a relative gap of 1e-9 bounds our suboptimality well below RTOL = 1e-6
    res = lasso(X, Y, lam=lam, penalty=penalty, intercept=intercept, tol=1e-9)
    assert res.status == "optimal" and res.info["gap"] <= 1e-9
    assert res.W.dtype == np.float64 and (res.b is None) == (not intercept)
    obj = objective(X, Y, res.W, res.b, lam, penalty)
    assert abs(obj - ref_obj) <= RTOL[np.dtype(np.float64)] * ref_obj
    # the reported objective is the objective of the returned (W, b)
    assert res.objective == pytest.approx(obj, rel=1e-9)
    # weak duality: the certified dual value cannot exceed the optimum
    assert res.info["dual"] <= ref_obj * (1 + 1e-8)


@pytest.mark.parametrize("kind", ["random", "wide"])
@pytest.mark.parametrize("penalty", PENALTIES)
def test_fista_matches_cvxpy(kind, penalty, seed):
    X, Y = make_instance(kind, seed=seed + 1)
    lam = 0.2 * lam_max(X, Y, penalty=penalty)
    _, _, ref_obj = reference.lasso(X, Y, lam, penalty=penalty)
    res = lasso(X, Y, lam=lam, penalty=penalty, tol=1e-9, solver="fista")
    assert res.status == "optimal" and res.history["gap"][-1] <= 1e-9
    assert abs(objective(X, Y, res.W, res.b, lam, penalty) - ref_obj) <= 1e-6 * ref_obj


@pytest.mark.parametrize("penalty", PENALTIES)
def test_float32(penalty, seed):
    X, Y = make_instance("random", seed=seed + 2)
    lam = 0.1 * lam_max(X, Y, penalty=penalty)
    _, _, ref_obj = reference.lasso(X, Y, lam, penalty=penalty)
    res = lasso(X.astype(np.float32), Y.astype(np.float32), lam=lam, penalty=penalty)
    assert res.W.dtype == np.float32 and res.b.dtype == np.float32
    # float32 data and weights carry ~7 digits: conftest.RTOL[float32]
    obj = objective(X, Y, res.W, res.b, lam, penalty)
    assert abs(obj - ref_obj) <= RTOL[np.dtype(np.float32)] * ref_obj


@pytest.mark.parametrize("kind", ["random", "wide"])
@pytest.mark.parametrize("intercept", [True, False])
def test_matches_osqp(kind, intercept, seed):
    X, Y = make_instance(kind, seed=seed + 3, M=2)
    lam = 0.1 * lam_max(X, Y, intercept=intercept)
    W_ref, b_ref, ref_obj = reference.lasso_osqp(X, Y, lam, intercept=intercept)
    res = lasso(X, Y, lam=lam, intercept=intercept, tol=1e-10)
    assert abs(res.objective - ref_obj) <= 1e-6 * ref_obj
    # random Gaussian designs are in general position: the minimizer is unique;
    # OSQP's polished solution is accurate to ~1e-6 in the weights
    np.testing.assert_allclose(res.W, W_ref, atol=1e-5)
    if intercept:
        np.testing.assert_allclose(res.b, b_ref, atol=1e-5)


def test_gramstats_input_equals_arrays(seed):
    X, Y = make_instance("random", seed=seed + 4)
    stats = GramStats()
    for Xb, Yb in zip(np.array_split(X, 5), np.array_split(Y, 5)):
        stats.update(Xb, Yb)
    lam = 0.1 * lam_max(X, Y)
    assert lam_max(stats) == pytest.approx(lam_max(X, Y), rel=1e-12)
    a = lasso(X, Y, lam=lam, tol=1e-10)
    b = lasso(stats, lam=lam, tol=1e-10)
    np.testing.assert_allclose(a.W, b.W, atol=1e-8)
    np.testing.assert_allclose(a.b, b.b, atol=1e-8)


def test_warm_start_and_history(seed):
    X, Y = make_instance("random", seed=seed + 5)
    lam = 0.05 * lam_max(X, Y)
    cold = lasso(X, Y, lam=lam, tol=1e-10)
    warm = lasso(X, Y, lam=lam, tol=1e-10, warm_start=cold)
    assert warm.iterations <= 2  # starts optimal: one gap check, at most one refinement
    assert warm.objective == pytest.approx(cold.objective, rel=1e-9)
    assert cold.history["gap"].shape == cold.history["objective"].shape
    assert cold.history["gap"][-1] == pytest.approx(cold.info["gap"], abs=1e-12)


@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("intercept", [True, False])
def test_lam_max(penalty, intercept, seed):
    X, Y = make_instance("random", seed=seed + 6)
    lmax = lam_max(X, Y, penalty=penalty, intercept=intercept)
    at = lasso(X, Y, lam=lmax, penalty=penalty, intercept=intercept)
    assert np.all(at.W == 0)
    below = lasso(X, Y, lam=0.99 * lmax, penalty=penalty, intercept=intercept)
    assert np.any(below.W != 0)


@pytest.mark.parametrize("penalty", ["l1", "group"])
@pytest.mark.parametrize("target", [0.5, 0.85])
def test_sparsity_mode(penalty, target, seed):
    X, Y = make_instance("random", seed=seed + 7, M=4)
    res = lasso(X, Y, sparsity=target, penalty=penalty)
    k = int(np.ceil(target * res.W.size))
    zeros = int(np.sum(res.W == 0))
    M = Y.shape[1]
    assert k <= zeros <= k + M  # within one weight per output, never below the target
    assert res.info["target_sparsity"] == target
    assert res.info["sparsity"] == pytest.approx(zeros / res.W.size)
    # the reported lam reproduces the solution
    again = lasso(X, Y, lam=res.info["lam"], penalty=penalty, tol=1e-9)
    assert int(np.sum(again.W == 0)) == zeros


def test_max_iter_warns(seed):
    X, Y = make_instance("ill", seed=seed + 8)
    with pytest.warns(ConvergenceWarning, match="relative duality gap"):
        res = lasso(X, Y, lam=1e-3 * lam_max(X, Y), tol=1e-12, max_iter=2)
    assert res.status == "max_iter" and res.info["gap"] > 1e-12


def test_bad_input(seed):
    X, Y = make_instance("random", seed=seed)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="X"):
        lasso(bad, Y, lam=0.1)
    bad[0, 0] = np.inf
    with pytest.raises(NonFiniteError):
        lasso(X, bad[:, :3] + Y, lam=0.1)
    with pytest.raises(ShapeError, match="same number of samples"):
        lasso(X[:-1], Y, lam=0.1)
    with pytest.raises(ShapeError, match="2-D"):
        lasso(X[:, 0], Y, lam=0.1)
    with pytest.raises(EmptyDataError):
        lasso(X[:0], Y[:0], lam=0.1)
    with pytest.raises(ShapeError, match="Y is required"):
        lasso(X, lam=0.1)
    with pytest.raises(ShapeError, match="GramStats alone"):
        lasso(GramStats.from_arrays(X, Y), Y, lam=0.1)
    with pytest.raises(EmptyDataError):
        lasso(GramStats(), lam=0.1)
    with pytest.raises(ShapeError, match="warm_start"):
        lasso(X, Y, lam=0.1, warm_start=np.zeros((3, 3)))
    for kwargs, match in [
        (dict(lam=0.0), "lam"), (dict(lam=-1.0), "lam"), (dict(lam="big"), "lam"), (dict(lam=np.nan), "lam"),
        (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.1), "sparsity"),
        (dict(lam=0.1, sparsity=0.5), "exactly one"), (dict(), "exactly one"),
        (dict(lam=0.1, penalty="l0"), "penalty"), (dict(lam=0.1, l1_ratio=1.5), "l1_ratio"),
        (dict(lam=0.1, solver="admm"), "solver"), (dict(lam=0.1, tol=0.0), "tol"),
        (dict(lam=0.1, max_iter=0), "max_iter"), (dict(lam=0.1, max_iter=2.5), "max_iter"),
    ]:
        with pytest.raises(ParameterError, match=match):
            lasso(X, Y, **kwargs)
    with pytest.raises(ParameterError, match="l1_ratio=0"):
        lam_max(X, Y, penalty="elastic_net", l1_ratio=0.0)
    with pytest.raises(ParameterError, match="penalty"):
        lam_max(X, Y, penalty="lasso")


def test_one_dimensional_target(seed):
    X, Y = make_instance("random", seed=seed + 9, M=1)
    res = lasso(X, Y[:, 0], lam=0.1 * lam_max(X, Y))
    assert res.W.shape == (X.shape[1], 1) and res.b.shape == (1,)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_dual_value_bounds_optimum_anywhere(penalty, seed):
    # weak duality at arbitrary (non-optimal) W: D(Theta(W)) <= P* <= P(W)
    from layertrim.solvers.lasso.duality import gap
    from layertrim.solvers.base.gram import as_quadratic
    from layertrim.solvers.lasso.solver import _weights

    X, Y = make_instance("random", seed=seed + 10)
    lam = 0.1 * lam_max(X, Y, penalty=penalty)
    _, _, ref_obj = reference.lasso(X, Y, lam, penalty=penalty)
    q = as_quadratic(X, Y)
    lam1, lam2, group = _weights(penalty, lam, 0.5)
    rng = np.random.default_rng(seed + 11)
    for scale in (0.0, 0.01, 0.3, 3.0):
        W = scale * rng.standard_normal(q.C.shape)
        primal, dual = gap(W, q.G @ W, q.C, q.yy, lam1, lam2, group)
        assert primal == pytest.approx(objective(X, Y, W, q.intercept_for(W), lam, penalty), rel=1e-10)
        assert dual <= ref_obj * (1 + 1e-9) and ref_obj <= primal * (1 + 1e-9)


def test_kernel_linear_algebra(seed):
    from layertrim.solvers.lasso.cd_kernels import anderson_weights, cholesky_solve

    rng = np.random.default_rng(seed + 12)
    B = rng.standard_normal((8, 6))
    A = B.T @ B + 0.1 * np.eye(6)
    rhs = rng.standard_normal(6)
    ok, x = cholesky_solve(A.copy(), rhs)
    assert ok
    np.testing.assert_allclose(x, np.linalg.solve(A, rhs), rtol=1e-10)
    ok, _ = cholesky_solve(np.outer(rhs, rhs), rhs)  # rank one: singular
    assert not ok
    U = rng.standard_normal((4, 10))
    ok, c = anderson_weights(U)
    # reference: min ||U^T c|| s.t. sum(c) = 1 via the KKT system
    kkt = np.block([[U @ U.T, np.ones((4, 1))], [np.ones((1, 4)), np.zeros((1, 1))]])
    expect = np.linalg.solve(kkt, np.r_[np.zeros(4), 1.0])[:4]
    assert ok and c.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(c, expect, rtol=1e-8, atol=1e-10)
