"""gRDA core: the update kernel against hand-computed values and closed forms,
and the mini-batch layer solver against least squares and a planted support."""
import warnings

import numpy as np
import pytest

from layertrim.solvers import (
    ConvergenceWarning,
    NonFiniteError,
    ParameterError,
    ShapeError,
    grda,
    grda_step,
)

# Hand example: c = 0.4, mu = 0.5, lr = 0.25, so each increment is
# 0.4 * 0.25 * (sqrt(n) - sqrt(n-1)) and T_n = 0.1 sqrt(n).
W0 = [1.0, -0.5, 0.05, 0.0]
GRADS = [[0.4, -0.4, 0.0, 0.2], [0.4, 0.0, 0.2, -0.2], [0.0, 0.4, -0.4, 0.0]]
# a1 = [0.9, -0.4, 0.05, -0.05], T1 = 0.1        -> w1 = [0.8, -0.3, 0, 0]
# a2 = [0.8, -0.4, 0.0, 0.0],    T2 = 0.1 sqrt 2 -> w2 = [0.8 - T2, -0.4 + T2, 0, 0]
# a3 = [0.8, -0.5, 0.1, 0.0],    T3 = 0.1 sqrt 3 -> w3 = [0.8 - T3, -0.5 + T3, 0, 0]
T_HAND = [0.1, 0.1 * 2**0.5, 0.1 * 3**0.5]
W_HAND = [
    [0.8, -0.3, 0.0, 0.0],
    [0.8 - 0.1 * 2**0.5, -0.4 + 0.1 * 2**0.5, 0.0, 0.0],
    [0.8 - 0.1 * 3**0.5, -0.5 + 0.1 * 3**0.5, 0.0, 0.0],
]
A_HAND = [[0.9, -0.4, 0.05, -0.05], [0.8, -0.4, 0.0, 0.0], [0.8, -0.5, 0.1, 0.0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_three_steps_match_hand_computation(dtype):
    w = np.array(W0, dtype=dtype)
    a = w.copy()
    T = 0.0
    # float64: a few roundings of O(1) numbers; float32: ~1e-7 relative per operation
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for n, (g, t_exp, w_exp, a_exp) in enumerate(zip(GRADS, T_HAND, W_HAND, A_HAND), start=1):
        T = grda_step(w, a, np.array(g, dtype=dtype), 0.25, n, T, 0.4, 0.5)
        assert T == pytest.approx(t_exp, rel=1e-14)
        np.testing.assert_allclose(a, a_exp, atol=tol)
        np.testing.assert_allclose(w, w_exp, atol=tol)
        assert w.dtype == dtype and a.dtype == dtype
        # entries whose |a| is within the threshold are exact zeros
        assert np.all(w[np.abs(np.array(a_exp)) <= t_exp] == 0)


def test_constant_lr_threshold_is_closed_form(rng):
    c, mu, lr = 0.003, 0.7, 0.05
    w = rng.standard_normal((4, 3))
    a = w.copy()
    T = 0.0
    for n in range(1, 201):
        T = grda_step(w, a, rng.standard_normal((4, 3)), lr, n, T, c, mu)
        # the running sum telescopes to c lr^(1/2) (n lr)^mu; 200 float64 additions
        assert T == pytest.approx(c * lr**0.5 * (n * lr) ** mu, rel=1e-12)


def test_scheduled_threshold_uses_each_steps_lr(rng):
    c, mu = 0.01, 0.6
    lrs = [0.1, 0.1, 0.01]
    w = rng.standard_normal(5)
    a = w.copy()
    T = 0.0
    for n, lr in enumerate(lrs, start=1):
        T = grda_step(w, a, rng.standard_normal(5), lr, n, T, c, mu)
    expected = c * 0.1**1.1 * 2**0.6 + c * 0.01**1.1 * (3**0.6 - 2**0.6)
    assert T == pytest.approx(expected, rel=1e-14)
    # the closed form with the current lr would drop the threshold after the decay
    assert T > c * 0.01**0.5 * (3 * 0.01) ** mu


def test_c_zero_is_sgd_exactly(rng):
    w = rng.standard_normal((6, 2))
    a = w.copy()
    w_sgd = w.copy()
    T = 0.0
    for n, lr in enumerate([0.1, 0.05, 0.2, 0.01], start=1):
        g = rng.standard_normal((6, 2))
        T = grda_step(w, a, g, lr, n, T, 0.0, 0.7)
        w_sgd = w_sgd - lr * g
        np.testing.assert_array_equal(w, w_sgd)
    assert T == 0.0


def test_grda_step_rejects_bad_input():
    w = np.zeros(3)
    with pytest.raises(ShapeError, match="one shape"):
        grda_step(w, np.zeros(3), np.zeros(4), 0.1, 1, 0.0, 0.1, 0.5)
    with pytest.raises(ShapeError, match="one dtype"):
        grda_step(w, np.zeros(3), np.zeros(3, dtype=np.float32), 0.1, 1, 0.0, 0.1, 0.5)
    with pytest.raises(ShapeError, match="contiguous"):
        grda_step(np.zeros((3, 2))[:, 0], np.zeros(3), np.zeros(3), 0.1, 1, 0.0, 0.1, 0.5)
    with pytest.raises(ShapeError, match="float32 or float64"):
        grda_step(np.zeros(3, dtype=int), np.zeros(3), np.zeros(3), 0.1, 1, 0.0, 0.1, 0.5)
    with pytest.raises(ParameterError, match="lr"):
        grda_step(w, np.zeros(3), np.zeros(3), 0.0, 1, 0.0, 0.1, 0.5)
    with pytest.raises(ParameterError, match="n must be >= 1"):
        grda_step(w, np.zeros(3), np.zeros(3), 0.1, 0, 0.0, 0.1, 0.5)
    with pytest.raises(ParameterError, match="c must be >= 0"):
        grda_step(w, np.zeros(3), np.zeros(3), 0.1, 1, 0.0, -0.1, 0.5)


def planted(rng, P=400, N=20, M=3, k=5, noise=0.01):
    """Rows 0..k-1 of W carry signal; the rest are exactly zero."""
    X = rng.standard_normal((P, N))
    W = np.zeros((N, M))
    W[:k] = rng.choice([-1.0, 1.0], (k, M)) * rng.uniform(0.5, 1.5, (k, M))
    b = np.array([0.5, -1.0, 2.0])[:M]
    Y = X @ W + b + noise * rng.standard_normal((P, M))
    return X, Y, W


def lstsq_loss(X, Y):
    """Least-squares optimum of (1/2P)||X W + 1 b^T - Y||^2 with a free intercept."""
    Xi = np.hstack([X, np.ones((X.shape[0], 1))])
    coef = np.linalg.lstsq(Xi, Y, rcond=None)[0]
    return 0.5 * np.sum((Xi @ coef - Y) ** 2) / X.shape[0], coef[:-1], coef[-1]


def test_full_batch_c_zero_is_gradient_descent_to_least_squares(rng):
    X, Y, _ = planted(rng)
    loss_opt, W_opt, b_opt = lstsq_loss(X, Y)
    # one batch = plain gradient descent; lr 0.5 < 2/L for this well-conditioned X
    res = grda(X, Y, lr=0.5, c=0.0, epochs=300, batch_size=X.shape[0])
    # linear convergence: 300 steps at rate ~(1 - 0.5 * lambda_min) reach machine precision
    assert res.objective == pytest.approx(loss_opt, rel=1e-9)
    np.testing.assert_allclose(res.W, W_opt, atol=1e-8)
    np.testing.assert_allclose(res.b, b_opt, atol=1e-8)
    assert res.sparsity == 0.0


def test_minibatch_c_zero_approaches_least_squares(rng):
    X, Y, _ = planted(rng)
    loss_opt, _, _ = lstsq_loss(X, Y)
    res = grda(X, Y, lr=0.02, c=0.0, epochs=60, batch_size=20)
    # constant-step SGD stalls at a noise floor ~ lr * gradient noise; with noise
    # 0.01 the optimum loss is ~5e-5 and the floor stays within 20% of it
    assert loss_opt <= res.objective <= 1.2 * loss_opt
    assert res.history["loss"].shape == (60,)
    assert res.status == "max_iter" and res.iterations == 60 * 20


def test_positive_c_recovers_planted_support(rng):
    X, Y, W_true = planted(rng)
    loss_opt, _, _ = lstsq_loss(X, Y)
    sparsities = []
    for c in (0.0, 0.02, 0.1):
        res = grda(X, Y, lr=0.02, c=c, mu=0.7, epochs=60, batch_size=20)
        sparsities.append(res.sparsity)
        n = res.iterations
        assert res.info["threshold"] == pytest.approx(c * 0.02**0.5 * (n * 0.02) ** 0.7, rel=1e-12)
    # final threshold ~0.13 at c = 0.1: above the accumulated noise on the
    # planted zeros, far below the signal (>= 0.5)
    assert np.all(res.W[W_true == 0] == 0)
    assert np.all(res.W[W_true != 0] != 0)
    # the threshold biases the survivors; zero weights would cost ~1e4 x loss_opt
    assert res.objective <= 3 * loss_opt
    # sparsity grows with c; c = 0.02 may already reach the planted zeros, so <= between the two
    assert sparsities[0] == 0.0 < sparsities[1] <= sparsities[2] == np.mean(W_true == 0)


def test_float32_in_float32_out(rng):
    X, Y, _ = planted(rng)
    r64 = grda(X, Y, lr=0.02, c=0.005, epochs=5, batch_size=20)
    r32 = grda(X.astype(np.float32), Y.astype(np.float32), lr=0.02, c=0.005, epochs=5, batch_size=20)
    assert r32.W.dtype == np.float32 and r32.b.dtype == np.float32
    # same batches; float32 rounding (~1e-7) grows over 100 steps to well under 1e-4
    np.testing.assert_allclose(r32.W, r64.W, atol=1e-4)
    np.testing.assert_allclose(r32.b, r64.b, atol=1e-4)


def test_no_intercept_and_warm_start(rng):
    X, Y, W_true = planted(rng)
    Y0 = Y - Y.mean(0)
    res = grda(X, Y0, lr=0.02, c=0.0, epochs=2, batch_size=20, intercept=False, W0=W_true)
    assert res.b is None
    # started at the truth (up to noise), SGD stays next to it
    np.testing.assert_allclose(res.W, W_true, atol=0.05)
    again = grda(X, Y0, lr=0.02, c=0.0, epochs=2, batch_size=20, intercept=False, W0=W_true)
    np.testing.assert_array_equal(res.W, again.W)


def test_divergence_is_reported(rng):
    X, Y, _ = planted(rng)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        res = grda(X * 1e3, Y, lr=10.0, c=0.0, epochs=50, batch_size=400)
    assert res.status == "numerical_error"


def test_layer_solver_rejects_bad_input(rng):
    X, Y, _ = planted(rng)
    with pytest.raises(ShapeError, match="same number of samples"):
        grda(X, Y[:-1], lr=0.1, c=0.0)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="X"):
        grda(Xn, Y, lr=0.1, c=0.0)
    with pytest.raises(ParameterError, match="lr"):
        grda(X, Y, lr=-1.0, c=0.0)
    with pytest.raises(ParameterError, match="batch_size"):
        grda(X, Y, lr=0.1, c=0.0, batch_size=0)
    with pytest.raises(ShapeError, match="W0"):
        grda(X, Y, lr=0.1, c=0.0, W0=np.zeros((3, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grda(X, Y, lr=0.01, c=0.0, epochs=1)  # no warning on a fixed-budget run
