"""Numba kernels of the Net-Trim ADMM (float32 and float64).

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
is fused into two elementwise passes over the ``P x M`` arrays and one over
the ``N x M`` arrays.
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
def _w_step(X, F, wide, A, B, s, W, XW, T, H):
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
def _z_step(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, dZ, dU):
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
def _z_step_plain(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, sq):
    """:func:`_z_step` without increments and norms (the iterations between checks)."""
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
def _q_step_plain(W, Q, U2, B, n_pen, thresh, alpha):
    """:func:`_q_step` without increments and norms (the iterations between checks)."""
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
def _q_step(W, Q, U2, B, n_pen, thresh, alpha, dQ):
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
def _rescale(U, S, D, inv):
    """``U *= inv`` and ``D = S - U`` (duals after a change of rho)."""
    n, m = U.shape
    for i in range(n):
        for j in range(m):
            U[i, j] *= inv
            D[i, j] = S[i, j] - U[i, j]


@njit(cache=True)
def _support_value(d, Y, V, omega, eps_abs, mode):
    """Support function ``sup_{Z in C} <d, Z>`` of the constraint set; ``inf`` if some ``d`` on Omega^c is < 0."""
    P, M = d.shape
    nb = M if mode == NEURON else 1
    sq = np.zeros(nb, dtype=np.float64)
    val = 0.0
    for p in range(P):
        for m in range(M):
            x = np.float64(d[p, m])
            if omega[p, m]:
                val += x * Y[p, m]
                sq[m if mode == NEURON else 0] += x * x
            elif x < 0.0:
                return np.inf
            else:
                val += x * V[p, m]
    for j in range(nb):
        val += eps_abs[j] * np.sqrt(sq[j])
    return val


@njit(cache=True)
def _fro(A):
    s = 0.0
    n, m = A.shape
    for i in range(n):
        for j in range(m):
            x = np.float64(A[i, j])
            s += x * x
    return np.sqrt(s)


@njit(cache=True)
def admm(X, F, wide, Y, V, omega, eps_abs, mode, n_pen, W, Z, Q, U1, U2,
         rho, s, alpha, tol, tol_dual, max_iter, check_every, adapt_until, tol_inf):
    """Run the Net-Trim ADMM from the given state (updated in place).

    Stops when the relative primal residual and the constraint violation of
    ``Q`` are below ``tol`` and the relative dual residual below ``tol_dual``.
    Returns ``(iterations, status_code, rho, hist)`` with status 0 optimal,
    1 iteration limit, 2 primal infeasibility certificate found;
    ``hist[k] = (primal residual or -1, dual residual or -1, rho,
    sparse-iterate violation or -1)`` (relative quantities; the residuals
    every ``check_every`` iterations, the violation only once the residuals
    meet their tolerances). Residual balancing (``rho`` times ``sqrt(primal / dual)`` when
    that factor leaves [1/5, 5]) runs for the first ``adapt_until`` iterations.
    """
    P, M = Z.shape
    N = W.shape[0]
    A = Z - U1
    B = Q - U2
    XW = np.empty_like(Z)
    T = np.empty_like(W)
    H = np.empty_like(Z) if wide else np.empty((0, M), dtype=Z.dtype)
    dZ = np.empty_like(Z)
    dU = np.empty_like(Z)
    dQ = np.empty_like(W)
    hist = np.full((max_iter, 4), -1.0)
    sq = np.zeros(M if mode == NEURON else 1)
    nY = max(_fro(Y), 1e-30)
    rho_lo, rho_hi = rho * 1e-6, rho * 1e6  # the penalty adapts within six decades of its start
    status = 1
    it = 0
    for it in range(1, max_iter + 1):
        _w_step(X, F, wide, A, B, s, W, XW, T, H)
        hist[it - 1, 2] = rho
        if it % check_every != 0 and it != max_iter:
            _z_step_plain(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, sq)
            _q_step_plain(W, Q, U2, B, n_pen, 1.0 / (rho * s), alpha)
            continue
        rz, nxw, nz = _z_step(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, dZ, dU)
        rq, nw, nq, nu = _q_step(W, Q, U2, B, n_pen, 1.0 / (rho * s), alpha, dQ)
        rpri = np.sqrt(rz + rq) / max(np.sqrt(nxw + nw), np.sqrt(nz + nq), 1e-30)
        hist[it - 1, 0] = rpri
        # dual residual rho (X^T dZ + s dQ), relative to the dual variable s rho U2 (a subgradient
        # of ||Q||_1, entries in [-1, 1]) or, when that is below 1, to one subgradient entry
        np.dot(X.T, dZ, T)
        d2 = 0.0
        for i in range(N):
            for m in range(M):
                x = np.float64(T[i, m] + s * dQ[i, m])
                d2 += x * x
        rdual = rho * np.sqrt(d2) / max(s * rho * np.sqrt(nu), 1.0)
        hist[it - 1, 1] = rdual
        if rpri <= tol and rdual <= tol_dual:
            # violation of the exactly sparse iterate Q
            np.dot(X, Q, dZ)
            exc, worst = violation(dZ, Y, V, omega, eps_abs, mode)
            viol = max(np.sqrt(np.sum(exc * exc)), worst) / nY
            hist[it - 1, 3] = viol
            if viol <= tol:
                status = 0
                break
        # infeasibility certificate: d = dU1 with sup_{Z in C} <d, Z> < 0 and X^T d ~ 0
        nd = _fro(dU)
        if nd > 0.0:
            sup = _support_value(dU, Y, V, omega, eps_abs, mode)
            if sup < -tol_inf * nd * (nY + 10.0 * _fro(W)):
                np.dot(X.T, dU, T)
                if _fro(T) <= tol_inf * nd:
                    status = 2
                    break
        # residual balancing: rho only enters the threshold and the scaled duals
        if it <= adapt_until and rdual > 0.0 and rpri > 0.0:
            ratio = np.sqrt(rpri / rdual)
            if ratio > 5.0 or ratio < 0.2:
                new = min(max(rho * min(max(ratio, 1e-3), 1e3), rho_lo), rho_hi)
                ratio = new / rho
                rho = new
                _rescale(U1, Z, A, 1.0 / ratio)
                _rescale(U2, Q, B, 1.0 / ratio)
    return it, status, rho, hist[:it]


@register
def _warmup(dtype):
    rng = np.random.default_rng(0)
    Y = np.maximum(rng.standard_normal((6, 2)), 0).astype(dtype)
    omega = Y > 0
    eps = np.array([0.1, 0.1])
    for P in (6, 2):  # tall and wide
        X = rng.standard_normal((P, 3)).astype(dtype)
        Yp = np.ascontiguousarray(Y[:P])
        wide = P < 3
        G = X @ X.T if wide else X.T @ X
        F = np.linalg.inv(G + np.eye(G.shape[0], dtype=dtype)).astype(dtype)
        for mode in (LAYER, NEURON):
            W = np.zeros((3, 2), dtype)
            Q = np.zeros((3, 2), dtype)
            U2 = np.zeros((3, 2), dtype)
            Z = np.zeros((P, 2), dtype)
            U1 = np.zeros((P, 2), dtype)
            admm(X, F, wide, Yp, np.zeros_like(Yp), omega[:P], eps, mode, 2,
                 W, Z, Q, U1, U2, 1.0, 1.0, 1.6, 1e-4, 1e-4, 3, 2, 3, 1e-4)
            violation(X @ W, Yp, np.zeros_like(Yp), omega[:P], eps, mode)
            project(X @ W, Yp, np.zeros_like(Yp), omega[:P], eps, mode, Z)
