"""The convex subproblem of the DC (convex-concave) ReLU-layer solver and its two inner solvers.

At a linearization point ``(W_k, b_k)`` with ``A = Y * 1[X W_k + 1 b_k^T > 0]``,
the subproblem is

    min_{W, b}  q(W, b) + lam ||W||_1,
    q(W, b) = (1/P) sum_{p,m} ( relu(z_pm)^2 / 2 - a_pm z_pm ),   Z = X W + 1 b^T,

i.e. ``g(W, b) - <grad h(W_k, b_k), (W, b)>`` with
``g = (1/2P) ||relu(Z)||_F^2 + lam ||W||_1`` and ``h = (1/P) <Y, relu(Z)>``.
``q`` is convex, differentiable, with gradient ``X^T R / P`` (``R = relu(Z) - A``)
and Lipschitz constant ``L = lambda_max([X 1]^T [X 1]) / P`` (``relu' <= 1``).
It is column-separable, but solved for all outputs at once so that the
products stay BLAS-3.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..base.errors import ShapeError
from ..base.interrupt import interruptible
from .kernels import (
    active_targets,
    extrapolate,
    prox_l1_step,
    relu_difference,
    surrogate_residual,
    surrogate_value,
)
from ..base.result import Result
from ..base.validation import check_array, check_scalar, check_weights, check_xy


@dataclass(frozen=True)
class ReluLayer:
    """A ReLU layer problem ``X (P, N)``, ``Y (P, M)`` with its smoothness constant.

    ``lipschitz`` is ``lambda_max(X_a^T X_a) / P`` where ``X_a = [X 1]`` with
    an intercept and ``X`` without.
    """

    X: np.ndarray
    Y: np.ndarray
    intercept: bool
    lipschitz: float

    @classmethod
    def build(cls, X, Y, intercept: bool) -> "ReluLayer":
        P, N = X.shape
        Xd = X.astype(np.float64, copy=False)
        if P >= N:
            gram = Xd.T @ Xd
            if intercept:
                s = Xd.sum(axis=0)
                gram = np.block([[gram, s[:, None]], [s[None, :], np.array([[float(P)]])]])
        else:
            gram = Xd @ Xd.T + (1.0 if intercept else 0.0)
        n = gram.shape[0]
        top = linalg.eigh(gram, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]
        return cls(X=X, Y=Y, intercept=intercept, lipschitz=max(float(top), 1e-300) / P)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]


def linearize(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``A = Y * 1[X W + 1 b^T > 0]``; ``(1/P) X^T A`` is the subgradient of ``h`` in ``W``."""
    b = np.zeros(W.shape[1], dtype=W.dtype) if b is None else b
    return active_targets(X @ W, b, Y)


def fista(layer: ReluLayer, A, lam, W, b, Z, *, max_iter, tol):
    """Monotone FISTA with restart on the subproblem, warm-started at ``(W, b)``.

    ``Z = X W`` must be given. Returns ``(W, b, Z, value, iterations)``.

    Notes
    -----
    Step ``1/L``. With ``y`` the extrapolated point,
    ``x+ = S_{lam/L}(y_W - grad_W q(y) / L)``, ``b+ = y_b - grad_b q(y) / L``,
    ``t+ = (1 + sqrt(1 + 4 t^2)) / 2``, ``y+ = x+ + ((t - 1) / t+) (x+ - x)``.
    Since ``Z`` is linear in ``W``, ``X y_W`` is extrapolated from the stored
    ``X x_W`` instead of being recomputed: two BLAS products per iteration,
    and the objective at every ``x`` comes for free. A step that does not
    decrease the objective is discarded and the momentum restarted from ``x``
    (the next step is then a plain proximal-gradient step, a descent step), so
    the objective decreases monotonically. Stops when
    ``||x+ - y||_F <= tol * max(||x+||_F, 1)`` (a scaled proximal-gradient
    residual) or after ``max_iter`` steps.
    """
    X, P = layer.X, layer.n_samples
    step = 1.0 / layer.lipschitz
    thr = step * lam
    f = surrogate_value(Z, b, A) / P + lam * float(np.abs(W).sum())
    Wy, by, Zy = W, b, Z
    t = 1.0
    R = np.empty_like(Z)
    it = 0
    while it < max_iter:
        it += 1
        surrogate_residual(Zy, by, A, R)
        gW = X.T @ R
        Wn = prox_l1_step(Wy, gW, step / P, thr)
        bn = (by - (step / P) * R.sum(axis=0)).astype(b.dtype) if layer.intercept else b
        Zn = X @ Wn
        fn = surrogate_value(Zn, bn, A) / P + lam * float(np.abs(Wn).sum())
        move = math.sqrt(float(np.sum((Wn - Wy) ** 2)) + float(np.sum((bn - by) ** 2)))
        if fn > f:
            if t == 1.0:  # a plain descent step failed: rounding level reached
                break
            Wy, by, Zy, t = W, b, Z, 1.0
            continue
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        Wy = np.empty_like(Wn)
        extrapolate(Wn, W, beta, Wy)
        Zy = np.empty_like(Zn)
        extrapolate(Zn, Z, beta, Zy)
        by = (bn + beta * (bn - b)).astype(b.dtype)
        W, b, Z, f, t = Wn, bn, Zn, fn, t_next
        scale = max(math.sqrt(float(np.sum(W * W)) + float(np.sum(b * b))), 1.0)
        if move <= tol * scale:
            break
    return W, b, Z, f, it


def svrg(layer: ReluLayer, A, lam, W, b, Z, *, epochs, batch_size, rng, momentum=0.9):
    """Accelerated proximal SVRG over contiguous sample mini-batches, warm-started.

    ``Z = X W`` must be given; rows of ``X`` should be in random order (the
    caller shuffles once). Returns ``(W, b, Z, value, epochs_run)``.

    Notes
    -----
    Each epoch takes the snapshot ``s`` = current point, its full gradient
    ``mu = X^T (relu(Z_s) - A) / P``, then for every mini-batch ``B`` (in a
    random order) the variance-reduced gradient
    ``v = X_B^T (relu(Z_B(y)) - relu(Z_B(s))) / |B| + mu`` (the ``A`` terms
    cancel), the step ``x+ = S_{eta lam}(y - eta v)`` and constant momentum
    ``y+ = x+ + momentum (x+ - x)``. The snapshot is the last iterate. Step
    ``eta = 1/L``; an epoch that raises the subproblem objective is discarded
    and ``eta`` and the momentum are halved, so the returned objective never
    exceeds the starting one.
    """
    X, P = layer.X, layer.n_samples
    nb = max(P // batch_size, 1)
    bounds = np.linspace(0, P, nb + 1).astype(np.int64)
    eta = 1.0 / layer.lipschitz
    beta = momentum
    Rs = np.empty_like(Z)
    f = surrogate_residual(Z, b, A, Rs) / P + lam * float(np.abs(W).sum())
    for _ in range(epochs):
        mu = (X.T @ Rs) / P
        mub = Rs.sum(axis=0) / P
        x, bx = W, b
        Wy, by = W, b
        for j in rng.permutation(nb):
            lo, hi = bounds[j], bounds[j + 1]
            XB = X[lo:hi]
            ZB = XB @ Wy
            D = np.empty_like(ZB)
            relu_difference(ZB, by, Z[lo:hi], b, D)
            scale = 1.0 / (hi - lo)
            v = (XB.T @ D) * scale + mu
            xn = prox_l1_step(Wy, v, eta, eta * lam)
            bxn = (by - eta * (D.sum(axis=0) * scale + mub)).astype(b.dtype) if layer.intercept else b
            Wy = np.empty_like(xn)
            extrapolate(xn, x, beta, Wy)
            by = (bxn + beta * (bxn - bx)).astype(b.dtype)
            x, bx = xn, bxn
        Zn = X @ x
        Rn = np.empty_like(Zn)
        fn = surrogate_residual(Zn, bx, A, Rn) / P + lam * float(np.abs(x).sum())
        if fn <= f:
            W, b, Z, Rs, f = x, bx, Zn, Rn, fn
        else:
            eta *= 0.5
            beta *= 0.5
    return W, b, Z, f, epochs


def solve_subproblem(
    X,
    Y,
    W_lin,
    b_lin=None,
    *,
    lam: float,
    intercept: bool = True,
    W0=None,
    b0=None,
    max_iter: int = 5000,
    tol: float = 1e-10,
) -> Result:
    """Solve one convex subproblem of the DC method by FISTA (the exact inner path).

    ``min_{W,b} (1/P) sum (relu(z)^2/2 - a z) + lam ||W||_1``, ``Z = X W + 1 b^T``,
    ``A = Y * 1[X W_lin + 1 b_lin^T > 0]``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_outputs), nonnegative post-ReLU targets
    W_lin, b_lin : linearization point, shapes (n_features, n_outputs), (n_outputs,)
    lam : float >= 0
    W0, b0 : start (default: the linearization point)

    Returns
    -------
    Result
        ``objective`` is the subproblem value; ``b`` is None without intercept.
    """
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    dtype = X.dtype
    P, N = X.shape
    M = Y.shape[1]
    lam = check_scalar(lam, "lam", low=0.0)
    W_lin = check_weights(W_lin, N, M, "W_lin", dtype=dtype)
    b_lin = check_bias(b_lin, M, dtype, "b_lin")
    layer = ReluLayer.build(X, Y, intercept)
    A = active_targets(X @ W_lin, b_lin, Y)
    W = W_lin.copy() if W0 is None else check_weights(W0, N, M, "W0", dtype=dtype)
    b = b_lin.copy() if b0 is None else check_bias(b0, M, dtype, "b0")
    if not intercept:
        b = np.zeros(M, dtype=dtype)
    with interruptible():
        W, b, _, f, it = fista(layer, A, lam, W, b, X @ W, max_iter=max_iter, tol=tol)
    return Result(
        W=W,
        b=b if intercept else None,
        status="optimal" if it < max_iter else "max_iter",
        objective=float(f),
        iterations=it,
        time=time.perf_counter() - start,
        info={"lam": lam},
    )


def check_bias(b, M, dtype, name):
    """An intercept of shape ``(M,)`` in ``dtype`` (zeros when ``b`` is None)."""
    if b is None:
        return np.zeros(M, dtype=dtype)
    arr = check_array(b, name, ndim=1, dtype=dtype)
    if arr.shape != (M,):
        raise ShapeError(f"{name} must have shape ({M},), got {arr.shape}")
    return arr
