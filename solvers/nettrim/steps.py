"""Numba kernels of the Net-Trim ADMM steps and of the constraint set (float32 and float64).

The data are pre-scaled so that ``||X||_2 = 1``. With penalties ``rho`` on the
split ``Z = X W`` and ``s * rho`` on the split ``Q = W``, the W-step

    W = argmin ||X W - A||_F^2 + s ||W - B||_F^2

is solved with one explicit inverse ``F`` computed once (``s`` is fixed,
``rho`` is free to change without refactorizing):

- tall data (``P >= N``): ``F = (X^T X + s I)^{-1}`` (N x N) and
  ``W = F (X^T A + s B)``, ``X W`` by one more product;
- wide data (``P < N``): ``F = (X X^T + s I)^{-1}`` (P x P), the Woodbury form
  ``W = B + X^T H`` with ``H = F (A - X B)``, and ``X W = A - s H``.

Either way an iteration costs the two products with ``X`` (``X^T (P x M)``
and ``X (N x M)``) plus one product with the small inverse; everything else
is fused into two elementwise passes over the ``P x M`` arrays (the Z-step,
a projection onto ``C``: Frobenius ball(s) on Omega, ``min(., V)`` off it) and
one over the ``N x M`` arrays (the Q-step, a soft threshold). The loop that
runs them is :func:`~.kernels.admm`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register

#: column-norm mode codes of the constraint ball
LAYER, NEURON = 0, 1


@njit(cache=True)
def violation(R, Y, V, omega, eps_abs, mode):
    """Constraint violation of the layer output ``R = X W + 1 b^T``.

    Returns ``(excess, halfspace)``: per ball (one, or one per column) the
    amount ``max(||(R - Y)_Omega|| - eps, 0)``, and the largest
    ``(R - V)_{Omega^c}`` (0 when none is positive).
    """
    P, M = R.shape
    nb = M if mode == NEURON else 1
    sq = np.zeros(nb, dtype=np.float64)
    worst = 0.0
    for p in range(P):
        for m in range(M):
            if omega[p, m]:
                d = np.float64(R[p, m]) - Y[p, m]
                sq[m if mode == NEURON else 0] += d * d
            else:
                e = np.float64(R[p, m]) - V[p, m]
                if e > worst:
                    worst = e
    excess = np.maximum(np.sqrt(sq) - eps_abs, 0.0)
    return excess, worst


@njit(cache=True)
def project(v, Y, V, omega, eps_abs, mode, out):
    """``out = Proj_C(v)``: Frobenius ball(s) of radius ``eps_abs`` around ``Y`` on Omega, ``min(v, V)`` off it."""
    P, M = v.shape
    nb = M if mode == NEURON else 1
    sq = np.zeros(nb, dtype=np.float64)
    for p in range(P):
        for m in range(M):
            if omega[p, m]:
                d = np.float64(v[p, m]) - Y[p, m]
                sq[m if mode == NEURON else 0] += d * d
    gain = _gains(sq, eps_abs)
    for p in range(P):
        for m in range(M):
            if omega[p, m]:
                out[p, m] = Y[p, m] + (v[p, m] - Y[p, m]) * gain[m if mode == NEURON else 0]
            else:
                out[p, m] = min(v[p, m], V[p, m])


@njit(cache=True)
def _gains(sq, eps_abs):
    """Radial shrink factors ``min(1, eps / ||d||)`` of the ball projection."""
    gain = np.ones(sq.shape[0], dtype=np.float64)
    for j in range(sq.shape[0]):
        nrm = np.sqrt(sq[j])
        if nrm > eps_abs[j]:
            gain[j] = eps_abs[j] / nrm
    return gain


@njit(cache=True)
def w_step(X, F, wide, A, B, s, W, XW, T, H):
    """``W = argmin ||X W - A||^2 + s ||W - B||^2`` and ``XW = X W`` (``T``, ``H``: scratch)."""
    N, M = W.shape
    if wide:
        P = A.shape[0]
        np.dot(X, B, XW)
        for p in range(P):
            for m in range(M):
                XW[p, m] = A[p, m] - XW[p, m]
        np.dot(F, XW, H)
        np.dot(X.T, H, W)
        for i in range(N):
            for m in range(M):
                W[i, m] += B[i, m]
        for p in range(P):
            for m in range(M):
                XW[p, m] = A[p, m] - s * H[p, m]
    else:
        np.dot(X.T, A, T)
        for i in range(N):
            for m in range(M):
                T[i, m] += s * B[i, m]
        np.dot(F, T, W)
        np.dot(X, W, XW)


@njit(cache=True)
def z_step(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, dZ, dU):
    """Relaxed Z-step and its dual step in two fused passes over ``P x M``.

    ``v = alpha X W + (1 - alpha) Z + U1``, ``Z = Proj_C(v)``, ``U1 = v - Z``,
    ``A = Z - U1`` (the next W-step's target); ``dZ`` and ``dU`` receive the
    increments of ``Z`` and ``U1``. Returns
    ``(||X W - Z||^2, ||X W||^2, ||Z||^2)``.
    """
    P, M = Z.shape
    nb = M if mode == NEURON else 1
    sq = np.zeros(nb, dtype=np.float64)
    for p in range(P):
        for m in range(M):
            v = alpha * XW[p, m] + (1.0 - alpha) * Z[p, m] + U1[p, m]
            U1[p, m] = v  # holds v until the second pass
            if omega[p, m]:
                d = np.float64(v - Y[p, m])
                sq[m if mode == NEURON else 0] += d * d
    gain = _gains(sq, eps_abs)
    res = 0.0
    nxw = 0.0
    nz = 0.0
    for p in range(P):
        for m in range(M):
            v = U1[p, m]
            if omega[p, m]:
                z = Y[p, m] + (v - Y[p, m]) * gain[m if mode == NEURON else 0]
            else:
                z = min(v, V[p, m])
            xw = XW[p, m]
            dZ[p, m] = z - Z[p, m]
            dU[p, m] = alpha * xw + (1.0 - alpha) * Z[p, m] - z
            Z[p, m] = z
            U1[p, m] = v - z
            A[p, m] = 2.0 * z - v
            r = np.float64(xw - z)
            res += r * r
            nxw += np.float64(xw) * xw
            nz += np.float64(z) * z
    return res, nxw, nz


@njit(cache=True)
def _typed(x, like):
    """The scalar ``x`` in the dtype of the array ``like`` (keeps float32 loops in float32)."""
    out = np.empty(1, dtype=like.dtype)
    out[0] = x
    return out[0]


@njit(cache=True)
def z_step_plain(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, sq):
    """:func:`z_step` without increments and norms (the iterations between checks)."""
    P, M = Z.shape
    a = _typed(alpha, Z)
    b = _typed(1.0 - alpha, Z)
    sq[:] = 0.0
    if mode == NEURON:
        for p in range(P):
            for m in range(M):
                v = a * XW[p, m] + b * Z[p, m] + U1[p, m]
                U1[p, m] = v
                d = v - Y[p, m] if omega[p, m] else v - v
                sq[m] += np.float64(d * d)
        gain = _gains(sq, eps_abs).astype(Z.dtype)
    else:
        acc = 0.0
        for p in range(P):
            for m in range(M):
                v = a * XW[p, m] + b * Z[p, m] + U1[p, m]
                U1[p, m] = v
                d = v - Y[p, m] if omega[p, m] else v - v
                acc += np.float64(d * d)
        sq[0] = acc
        gain = np.full(M, _gains(sq, eps_abs)[0]).astype(Z.dtype)
    two = _typed(2.0, Z)
    for p in range(P):
        for m in range(M):
            v = U1[p, m]
            y = Y[p, m]
            z = y + (v - y) * gain[m] if omega[p, m] else min(v, V[p, m])
            Z[p, m] = z
            U1[p, m] = v - z
            A[p, m] = two * z - v


@njit(cache=True)
def q_step_plain(W, Q, U2, B, n_pen, thresh, alpha):
    """:func:`q_step` without increments and norms (the iterations between checks)."""
    N, M = Q.shape
    a = _typed(alpha, Q)
    b = _typed(1.0 - alpha, Q)
    t = _typed(thresh, Q)
    two = _typed(2.0, Q)
    for i in range(N):
        for m in range(M):
            v = a * W[i, m] + b * Q[i, m] + U2[i, m]
            if i < n_pen:
                q = max(v - t, v - v) + min(v + t, v - v)
            else:
                q = v
            Q[i, m] = q
            U2[i, m] = v - q
            B[i, m] = two * q - v


@njit(cache=True)
def q_step(W, Q, U2, B, n_pen, thresh, alpha, dQ):
    """Relaxed Q-step (soft threshold) and its dual step in one pass over ``N x M``.

    ``v = alpha W + (1 - alpha) Q + U2``; rows ``< n_pen`` are soft-thresholded
    by ``thresh``, the rest (the intercept) are copied; ``U2 = v - Q``,
    ``B = Q - U2``; ``dQ`` receives the increment of ``Q``. Returns ``(||W - Q||^2, ||W||^2, ||Q||^2, ||U2||^2)``.
    """
    N, M = Q.shape
    res = 0.0
    nw = 0.0
    nq = 0.0
    nu = 0.0
    for i in range(N):
        for m in range(M):
            w = W[i, m]
            v = alpha * w + (1.0 - alpha) * Q[i, m] + U2[i, m]
            if i < n_pen:
                if v > thresh:
                    q = v - thresh
                elif v < -thresh:
                    q = v + thresh
                else:
                    q = 0.0
            else:
                q = v
            dQ[i, m] = q - Q[i, m]
            Q[i, m] = q
            U2[i, m] = v - q
            B[i, m] = 2.0 * q - v
            r = np.float64(w - q)
            res += r * r
            nw += np.float64(w) * w
            nq += np.float64(q) * q
            nu += np.float64(v - q) * (v - q)
    return res, nw, nq, nu


@njit(cache=True)
def rescale(U, S, D, inv):
    """``U *= inv`` and ``D = S - U`` (duals after a change of rho)."""
    n, m = U.shape
    for i in range(n):
        for j in range(m):
            U[i, j] *= inv
            D[i, j] = S[i, j] - U[i, j]


@register
def _warmup(dtype):
    rng = np.random.default_rng(0)
    Y = np.maximum(rng.standard_normal((6, 2)), 0).astype(dtype)
    R = rng.standard_normal((6, 2)).astype(dtype)
    V = np.zeros_like(Y)
    eps = np.array([0.1, 0.1])
    for mode in (LAYER, NEURON):
        violation(R, Y, V, Y > 0, eps, mode)
        project(R, Y, V, Y > 0, eps, mode, np.empty_like(R))
