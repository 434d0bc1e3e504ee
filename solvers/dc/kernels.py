"""Numba kernels of the DC (convex-concave) ReLU-layer solver :func:`~layertrim.solvers.dc.feta`.

All kernels work on 2-D ``(P, M)`` pre-activation arrays ``Z`` (without the
intercept; the intercept ``b (M,)`` is passed separately and added on the
fly) or on ``(N, M)`` weight arrays, in float32 or float64. The matrix
products ``X @ W`` and ``X.T @ R`` stay in BLAS; these kernels fuse the
elementwise work between them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register


@njit(cache=True)
def relu_misfit(Z, b, Y):
    """``sum (relu(Z + 1 b^T) - Y)^2`` accumulated in float64."""
    P, M = Z.shape
    s = 0.0
    for i in range(P):
        for j in range(M):
            z = Z[i, j] + b[j]
            r = (z if z > 0.0 else 0.0) - Y[i, j]
            s += r * r
    return s


@njit(cache=True)
def active_targets(Z, b, Y):
    """``A = Y * 1[Z + 1 b^T > 0]``: the targets on the active ReLU entries.

    ``A / P`` is the gradient in ``Z`` of ``h = (1/P) <Y, relu(Z + 1 b^T)>``
    with the subgradient ``relu'(0) = 0``.
    """
    P, M = Z.shape
    A = np.zeros_like(Y)
    for i in range(P):
        for j in range(M):
            if Z[i, j] + b[j] > 0.0:
                A[i, j] = Y[i, j]
    return A


@njit(cache=True)
def surrogate_residual(Z, b, A, R):
    """Write ``R = relu(Z + 1 b^T) - A`` and return ``sum relu(z)^2 / 2 - a z``.

    ``R / P`` is the gradient in ``Z`` of the smooth part of the convex
    subproblem, whose value (times ``P``) is returned (float64 accumulation).
    """
    P, M = Z.shape
    s = 0.0
    for i in range(P):
        for j in range(M):
            z = Z[i, j] + b[j]
            a = A[i, j]
            if z > 0.0:
                R[i, j] = z - a
                s += 0.5 * z * z - a * z
            else:
                R[i, j] = -a
                s -= a * z
    return s


@njit(cache=True)
def surrogate_value(Z, b, A):
    """``sum relu(z)^2 / 2 - a z`` over ``z = Z + 1 b^T`` (no residual written)."""
    P, M = Z.shape
    s = 0.0
    for i in range(P):
        for j in range(M):
            z = Z[i, j] + b[j]
            if z > 0.0:
                s += 0.5 * z * z - A[i, j] * z
            else:
                s -= A[i, j] * z
    return s


@njit(cache=True)
def extrapolate(Xn, Xo, beta, out):
    """``out = Xn + beta (Xn - Xo)`` (momentum step, any 2-D shape)."""
    n, m = Xn.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = Xn[i, j] + beta * (Xn[i, j] - Xo[i, j])


@njit(cache=True)
def prox_l1_step(V, grad, step, thr):
    """``S_thr(V - step * grad)`` with ``S_t(v) = sign(v) max(|v| - t, 0)``; ``thr = step * lam``."""
    n, m = V.shape
    out = np.empty_like(V)
    for i in range(n):
        for j in range(m):
            x = V[i, j] - step * grad[i, j]
            if x > thr:
                out[i, j] = x - thr
            elif x < -thr:
                out[i, j] = x + thr
            else:
                out[i, j] = 0.0
    return out


@njit(cache=True)
def relu_difference(Z, b, Zs, bs, R):
    """``R = relu(Z + 1 b^T) - relu(Zs + 1 bs^T)`` (variance-reduced gradient in ``Z``)."""
    P, M = Z.shape
    for i in range(P):
        for j in range(M):
            z = Z[i, j] + b[j]
            zs = Zs[i, j] + bs[j]
            R[i, j] = (z if z > 0.0 else 0.0) - (zs if zs > 0.0 else 0.0)


@njit(cache=True)
def majorizer_targets(Z, b, Y):
    """Targets ``T`` of the quadratic majorizer of ``(relu(z) - y)^2`` at ``z = Z + 1 b^T``.

    ``T = y`` where ``y > 0`` and ``z > 0``; ``T = z`` where ``y > 0`` and
    ``z <= 0``; ``T = min(z, 0)`` where ``y = 0``. Then
    ``(u - T)^2 + c >= (relu(u) - y)^2`` for every ``u``, with equality at
    ``u = z`` (``c = y^2`` in the second case, else 0).
    """
    P, M = Z.shape
    T = np.empty_like(Z)
    for i in range(P):
        for j in range(M):
            z = Z[i, j] + b[j]
            if Y[i, j] > 0.0:
                T[i, j] = Y[i, j] if z > 0.0 else z
            else:
                T[i, j] = z if z < 0.0 else 0.0
    return T


@register
def _warmup(dtype):
    Z = np.array([[1.0, -1.0], [0.5, 2.0]], dtype=dtype)
    b = np.array([0.1, -0.1], dtype=dtype)
    Y = np.abs(Z)
    R = np.empty_like(Z)
    relu_misfit(Z, b, Y)
    A = active_targets(Z, b, Y)
    surrogate_residual(Z, b, A, R)
    surrogate_value(Z, b, A)
    extrapolate(Z, Y, 0.5, R)
    prox_l1_step(Z, Y, 0.1, 0.1)
    relu_difference(Z, b, Y, b, R)
    majorizer_targets(Z, b, Y)
