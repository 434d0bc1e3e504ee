"""Generalized regularized dual averaging (gRDA), the directional-pruning optimizer.

gRDA (Chao, Wang, Xing and Cheng, "Directional pruning of deep neural
networks", NeurIPS 2020) keeps a dual-averaging accumulator of the gradient
steps, started at the initial weights, and reads the weights off it by a soft
threshold that grows with the step count:

.. math::

    a_n = a_{n-1} - \\gamma_n g_n,\\quad a_0 = w_0, \\qquad
    T_n = T_{n-1} + c\\,\\gamma_n^{\\mu + 1/2} (n^\\mu - (n-1)^\\mu),\\quad T_0 = 0,

    w_n = \\operatorname{sign}(a_n) \\max(|a_n| - T_n, 0),

where ``g_n`` is the stochastic gradient at ``w_{n-1}``. With a constant
learning rate the threshold is ``T_n = c gamma^(1/2) (n gamma)^mu``; with a
schedule every increment uses the learning rate of its own step. ``c = 0`` is
plain SGD (no momentum, no weight decay).

This module holds the update as a Numba kernel (:func:`grda_step`) and a
mini-batch layer solver (:func:`grda`) for the squared-loss layer problem.
"""
from __future__ import annotations

import time as _time
import warnings

import numpy as np
from numba import njit

from .base.errors import ConvergenceWarning, ShapeError
from .base.interrupt import interruptible
from .base.result import Result
from .base.validation import check_bool, check_scalar, check_weights, check_xy, squared_norm
from .base.warmup import register


def threshold_increment(lr: float, n: int, c: float, mu: float) -> float:
    """Threshold added at step ``n`` (1-based): ``c * lr^(mu+1/2) * (n^mu - (n-1)^mu)``."""
    return c * lr ** (mu + 0.5) * (n**mu - (n - 1) ** mu)


def threshold(lr: float, n: int, c: float, mu: float) -> float:
    """Threshold after ``n`` steps at constant ``lr``: ``c * lr^(1/2) * (n * lr)^mu``."""
    return c * lr**0.5 * (n * lr) ** mu


@njit(cache=True)
def _grda_update(w, a, grad, lr, t):
    """In place on 1-D arrays: ``a -= lr * grad``; ``w = sign(a) max(|a| - t, 0)``.

    ``lr`` and ``t`` have the arrays' dtype.
    """
    for i in range(a.shape[0]):
        x = a[i] - lr * grad[i]
        a[i] = x
        if x > t:
            w[i] = x - t
        elif x < -t:
            w[i] = x + t
        else:
            w[i] = 0.0


def grda_step(w, a, grad, lr: float, n: int, T: float, c: float, mu: float) -> float:
    """One gRDA step on numpy arrays, in place; returns the new threshold.

    Updates the accumulator ``a <- a - lr * grad`` and the weights
    ``w <- sign(a) max(|a| - T_new, 0)`` with
    ``T_new = T + c lr^(mu+1/2) (n^mu - (n-1)^mu)``.

    Parameters
    ----------
    w, a, grad : ndarray, same shape, C-contiguous, float32 or float64
        Weights (overwritten), accumulator (overwritten; start it as a copy of
        the initial weights) and the gradient at the current ``w``.
    lr : float
        Learning rate of this step (> 0).
    n : int
        Index of this step, starting at 1.
    T : float
        Threshold accumulated over the previous ``n - 1`` steps (0 before the first).
    c, mu : float
        Threshold scale (>= 0) and exponent (>= 0).

    Returns
    -------
    T_new : float
    """
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    n = check_scalar(n, "n", low=1, integer=True)
    c = check_scalar(c, "c", low=0.0)
    mu = check_scalar(mu, "mu", low=0.0)
    T = check_scalar(T, "T", low=0.0)
    for name, arr in (("w", w), ("a", a), ("grad", grad)):
        if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float64):
            raise ShapeError(f"{name} must be a float32 or float64 numpy array")
        if not arr.flags.c_contiguous or not arr.flags.writeable:
            raise ShapeError(f"{name} must be C-contiguous and writeable")
    if not (w.shape == a.shape == grad.shape):
        raise ShapeError(f"w, a and grad must have one shape, got {w.shape}, {a.shape}, {grad.shape}")
    if not (w.dtype == a.dtype == grad.dtype):
        raise ShapeError(f"w, a and grad must have one dtype, got {w.dtype}, {a.dtype}, {grad.dtype}")
    T_new = T + threshold_increment(lr, n, c, mu)
    with interruptible():
        _grda_update(w.reshape(-1), a.reshape(-1), grad.reshape(-1), w.dtype.type(lr), w.dtype.type(T_new))
    return T_new


@njit(cache=True)
def _grda_epoch(X, Y, W, A, b, order, batch_size, lr, c, mu, n, T, intercept):
    """One pass over the rows in ``order``; returns the step count and threshold after it.

    Gradient of ``(1/2B) ||X_B W + 1 b^T - Y_B||_F^2``: ``X_B^T R / B`` for ``W``
    and ``R^T 1 / B`` for ``b``, with ``R = X_B W + 1 b^T - Y_B``.
    """
    P = order.shape[0]
    N, M = W.shape
    w_flat = W.reshape(N * M)
    a_flat = A.reshape(N * M)
    t = np.empty(1, dtype=W.dtype)  # the threshold rounded to the weights' dtype
    for start in range(0, P, batch_size):
        idx = order[start : min(start + batch_size, P)]
        B = idx.shape[0]
        Xb = X[idx]
        R = np.dot(Xb, W) - Y[idx]
        if intercept:
            for m in range(M):
                R[:, m] += b[m]
        G = np.dot(Xb.T, R)
        G /= B  # in place: keeps the weights' dtype
        if intercept:
            for m in range(M):
                b[m] -= lr * R[:, m].sum() / B
        n += 1
        T += c * lr ** (mu + 0.5) * (n**mu - (n - 1) ** mu)
        t[0] = T
        _grda_update(w_flat, a_flat, G.reshape(N * M), lr, t[0])
    return n, T


#: a run whose loss exceeds this multiple of its reference loss (the larger of the
#: loss at the start and ``||Y - mean||^2 / 2P``, the loss of ``W = 0`` with the
#: best constant bias) has diverged: a stable step size never gets there, even
#: with the noise of small batches, while a diverging one passes it within a few
#: steps of geometric growth.
DIVERGENCE_FACTOR = 1e4


def _diverged(A, b, loss: float, reference: float) -> bool:
    """Non-finite accumulator, bias or loss, or a loss far above ``reference``."""
    if not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * reference:
        return True
    # a NaN accumulator thresholds to w = 0 (both comparisons fail): look at A itself
    return not (np.all(np.isfinite(A)) and np.all(np.isfinite(b)))


def _layer_loss(X, Y, W, b) -> float:
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run is reported by the caller
        R = X @ W - Y
        if b is not None:
            R += b
        return float(0.5 * np.sum(R.astype(np.float64) ** 2) / X.shape[0])


def grda(
    X,
    Y,
    *,
    lr: float,
    c: float,
    mu: float = 0.7,
    epochs: int = 10,
    batch_size: int = 32,
    intercept: bool = True,
    W0=None,
    seed: int = 0,
) -> Result:
    """gRDA on the squared-loss layer problem ``(1/2P) ||X W + 1 b^T - Y||_F^2``.

    Mini-batch gRDA on ``W`` (sparse through the growing soft threshold) and
    plain SGD on the unpenalized intercept ``b``.

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
    Y : array, shape (n_samples, n_outputs) or (n_samples,)
    lr : float
        Constant learning rate (> 0).
    c : float
        Threshold scale (>= 0); ``c = 0`` is mini-batch SGD.
    mu : float
        Threshold exponent (>= 0); larger gives more sparsity.
    epochs : int
        Passes over the data (each a fresh random order).
    batch_size : int
        Rows per step; the last batch of an epoch may be smaller.
    intercept : bool
        Fit ``b`` (started at 0).
    W0 : array, shape (n_features, n_outputs), optional
        Initial weights and accumulator (zeros by default).
    seed : int
        Seed of the row shuffling.

    Returns
    -------
    Result
        ``objective`` is the loss at the returned ``(W, b)``. The method has no
        stopping test: it runs the given epochs and reports ``"max_iter"``.
        If the run diverges (a non-finite iterate or loss, or a loss above
        ``DIVERGENCE_FACTOR`` times the larger of the starting loss and
        ``||Y - mean(Y)||^2 / 2P``), it stops with ``"numerical_error"`` and a
        ConvergenceWarning and returns the best epoch-end iterate (or the
        start), so ``W`` is always finite; ``info["diverged"]`` is True then.
        ``history``: per epoch ``loss``, ``sparsity``, ``threshold``.
        ``info``: ``steps``, ``epochs``, ``threshold``, ``lr``, ``c``, ``mu``, ``diverged``.

    Notes
    -----
    Step ``n`` draws batch ``B_n`` and sets, with ``R = X_B W + 1 b^T - Y_B``,

    ``A <- A - lr X_B^T R / |B|``,  ``b <- b - lr R^T 1 / |B|``,
    ``T <- T + c lr^(mu+1/2) (n^mu - (n-1)^mu)``,  ``W <- sign(A) max(|A| - T, 0)``,

    so after ``n`` steps ``T = c lr^(1/2) (n lr)^mu``.
    """
    t0 = _time.perf_counter()
    X, Y = check_xy(X, Y)
    P, N = X.shape
    M = Y.shape[1]
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    c = check_scalar(c, "c", low=0.0)
    mu = check_scalar(mu, "mu", low=0.0)
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    seed = check_scalar(seed, "seed", low=0, integer=True)
    intercept = check_bool(intercept, "intercept")
    dtype = X.dtype
    W = np.zeros((N, M), dtype=dtype) if W0 is None else check_weights(W0, N, M, "W0", dtype=dtype).copy()
    A = W.copy()
    b = np.zeros(M, dtype=dtype)
    rng = np.random.default_rng(seed)
    n, T = 0, 0.0
    hist = {"loss": [], "sparsity": [], "threshold": []}
    status = "max_iter"
    Y64 = Y.astype(np.float64)
    loss_start = _layer_loss(X, Y, W, b if intercept else None)
    reference = max(loss_start, 0.5 * squared_norm(Y64 - Y64.mean(axis=0)) / P, np.finfo(np.float64).tiny)
    best = (loss_start, W.copy(), b.copy())  # the iterate returned if the run diverges
    for _ in range(epochs):
        order = rng.permutation(P)
        with interruptible():
            n, T = _grda_epoch(X, Y, W, A, b, order, batch_size, dtype.type(lr), c, mu, n, T, bool(intercept))
        loss = _layer_loss(X, Y, W, b if intercept else None)
        hist["loss"].append(loss)
        hist["sparsity"].append(float(np.mean(W == 0)))
        hist["threshold"].append(T)
        if _diverged(A, b, loss, reference):
            status = "numerical_error"
            warnings.warn(
                f"gRDA diverged after {n} steps (loss {loss:.3g}, {loss_start:.3g} at the start); "
                f"lower lr (now {lr:g}); returning the best iterate seen",
                ConvergenceWarning,
                stacklevel=2,
            )
            _, W, b = best
            break
        if loss <= best[0]:
            best = (loss, W.copy(), b.copy())
    objective = hist["loss"][-1] if status == "max_iter" else _layer_loss(X, Y, W, b if intercept else None)
    return Result(
        W=W,
        b=b if intercept else None,
        status=status,
        objective=objective,
        iterations=n,
        time=_time.perf_counter() - t0,
        history={k: np.asarray(v) for k, v in hist.items()},
        info={"steps": n, "epochs": len(hist["loss"]), "threshold": T, "lr": lr, "c": c, "mu": mu,
              "diverged": status == "numerical_error"},
    )


@register
def _warmup(dtype):
    w = np.zeros(3, dtype=dtype)
    _grda_update(w, np.ones(3, dtype=dtype), np.ones(3, dtype=dtype), dtype.type(0.1), dtype.type(0.1))
    X = np.ones((4, 2), dtype=dtype)
    Y = np.ones((4, 1), dtype=dtype)
    W = np.zeros((2, 1), dtype=dtype)
    order = np.arange(4)
    _grda_epoch(X, Y, W, W.copy(), np.zeros(1, dtype=dtype), order, 2, dtype.type(0.1), 0.1, 0.7, 0, 0.0, True)
