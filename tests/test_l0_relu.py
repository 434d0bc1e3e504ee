"""l0_relu: the exact post-ReLU loss under a sparsity pattern (majorize-minimize rounds of l0_admm).

References are independent: the loss recomputed in numpy, the pre-activation l0 start recomputed,
and on a tiny instance a generic nonlinear least-squares solver (scipy) on every support.
"""
import itertools

import numpy as np
import pytest
from scipy.optimize import least_squares

from layertrim.solvers import LayerTrimError, ParameterError, ShapeError, l0_admm, l0_relu


def relu_layer(rng, P=120, N=12, M=4, noise=0.3):
    """Inputs, dense weights, pre-activations and noisy post-ReLU targets of a random layer."""
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M))
    b = 0.3 * rng.standard_normal(M)
    Z = X @ W + b
    Y = np.maximum(Z + noise * rng.standard_normal((P, M)), 0.0)
    return X, W, Z, Y


def numpy_loss(X, Y, W, b):
    """``(1/2P) ||relu(X W + 1 b^T) - Y||_F^2`` written out in numpy."""
    return 0.5 * np.sum((np.maximum(X @ W + b, 0.0) - Y) ** 2) / X.shape[0]


def test_objective_is_the_exact_post_relu_loss(rng):
    X, W, Z, Y = relu_layer(rng)
    res = l0_relu(X, Y, sparsity=0.6, Y_pre=Z, W0=W)
    # float64 throughout: the two evaluations differ by summation order only
    assert res.objective == pytest.approx(numpy_loss(X, Y, res.W, res.b), rel=1e-10, abs=1e-14)
    assert res.history["objective"][-1] == pytest.approx(res.objective, rel=1e-12)
    assert np.sum(res.W == 0) == int(np.ceil(0.6 * res.W.size))


def test_never_above_the_pre_activation_start(rng):
    X, W, Z, Y = relu_layer(rng)
    res = l0_relu(X, Y, sparsity=0.75, Y_pre=Z, W0=W)
    start = l0_admm(X, Z, sparsity=0.75, W0=W)  # the start, recomputed independently
    f_start = numpy_loss(X, Y, start.W, start.b)
    hist = res.history["objective"]
    assert hist[0] == pytest.approx(f_start, rel=1e-10)
    # accepted rounds never raise the loss (rounding slack at float64 noise)
    assert np.all(np.diff(hist) <= 1e-12 * hist[0])
    assert res.objective <= f_start * (1 + 1e-12)


def _reference_on_support(X, z, y, support):
    """Post-ReLU column loss of the pre-activation least-squares fit on ``support``, and the
    best loss scipy's trust-region least squares finds from there: ``(at the fit, best found)``."""
    A = np.hstack([X[:, support], np.ones((X.shape[0], 1))])
    start = np.linalg.lstsq(A, z, rcond=None)[0]
    fit = least_squares(lambda v: np.maximum(A @ v, 0.0) - y, start, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    f_start = 0.5 * np.mean((np.maximum(A @ start, 0.0) - y) ** 2)
    return f_start, min(f_start, 0.5 * np.mean(fit.fun**2))


def test_brute_force_tiny_instance(rng):
    """8 inputs x 3 outputs at 50% per output: all 70 supports per column.

    Exactly checkable: the pre-activation problem is convex on each support, so brute force
    finds the pre-activation l0 optimum; the start must reach it (within rounding) whenever
    its support is the brute-force one, and the result must never be worse, in the post-ReLU
    loss, than the pre-activation fit on the start's support. Not asserted (nonconvex, not
    guaranteed): post-ReLU optimality of the support or of the weights on it.
    """
    X, W, Z, Y = relu_layer(rng, P=60, N=8, M=3)
    res = l0_relu(X, Y, sparsity=0.5, pattern="per_output", Y_pre=Z, W0=W)
    start = l0_admm(X, Z, sparsity=0.5, pattern="per_output", W0=W)
    start_relu = 0.0
    for m in range(3):
        assert np.count_nonzero(res.W[:, m]) == 4
        start_support = list(np.flatnonzero(start.W[:, m]))
        best = min(_linear_loss(X, Z[:, m], list(S)) for S in itertools.combinations(range(8), 4))
        # the start is a local search: at or above the brute-force pre-activation optimum
        assert _linear_loss(X, Z[:, m], start_support) >= best * (1 - 1e-9) - 1e-12
        start_relu += _reference_on_support(X, Z[:, m], Y[:, m], start_support)[0]
    # the rounds lower the total loss (one column may rise while others fall)
    assert numpy_loss(X, Y, res.W, res.b) <= start_relu * (1 + 1e-10)


def _linear_loss(X, z, support):
    """Pre-activation least-squares loss on ``support`` (with intercept)."""
    A = np.hstack([X[:, support], np.ones((X.shape[0], 1))])
    return float(np.sum((A @ np.linalg.lstsq(A, z, rcond=None)[0] - z) ** 2))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4)])
def test_n_m_feasible(rng, n, m):
    X, W, Z, Y = relu_layer(rng, N=16)
    res = l0_relu(X, Y, pattern=f"{n}:{m}", Y_pre=Z, W0=W)
    groups = (res.W != 0).reshape(16 // m, m, -1).sum(axis=1)
    assert np.all(groups <= n)
    assert res.objective <= res.info["loss_start"] * (1 + 1e-12)


def test_float32_keeps_dtype(rng):
    X, W, Z, Y = relu_layer(rng)
    res = l0_relu(X.astype(np.float32), Y.astype(np.float32), sparsity=0.5, Y_pre=Z.astype(np.float32))
    assert res.W.dtype == np.float32 and res.b.dtype == np.float32
    assert res.objective == pytest.approx(numpy_loss(X, Y, res.W.astype(float), res.b.astype(float)), rel=1e-4)


@pytest.mark.parametrize(
    "change, error",
    [
        (dict(Y="negative"), ParameterError),
        (dict(Y_pre=np.zeros((5, 4))), ShapeError),
        (dict(l0_options={"nope": 1}), ParameterError),
        (dict(l0_options=[1]), ParameterError),
        (dict(max_rounds=-1), ParameterError),
        (dict(tol=-1.0), ParameterError),
        (dict(pattern="3:5"), LayerTrimError),
        (dict(sparsity=1.5), ParameterError),
        (dict(intercept="yes"), ParameterError),
    ],
)
def test_bad_input_raises(rng, change, error):
    X, W, Z, Y = relu_layer(rng)
    kwargs = dict(sparsity=0.5, Y_pre=Z)
    if change.get("Y") == "negative":
        Y = Y - 1.0
        change = {}
    if "pattern" in change:
        kwargs.pop("sparsity")
    kwargs.update(change)
    with pytest.raises(error):
        l0_relu(X, Y, **kwargs)


def test_prune_method_on_relu_layers():
    torch = pytest.importorskip("torch")
    from seeding import torch_seed

    from layertrim.bindings.torch import prune

    with torch_seed(0):
        model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        data = [torch.randn(64, 10)]
    report = prune(model, data, method="l0_relu", sparsity=0.5, progress=False)
    assert [r.method for r in report.layers] == ["l0_relu", "l0"]  # the linear output layer falls back
    for layer in (model[0], model[2]):
        assert float((layer.weight == 0).float().mean()) == pytest.approx(0.5, abs=1 / layer.weight.numel())
