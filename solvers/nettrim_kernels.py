"""Numba kernels of the Net-Trim ADMM (float32 and float64).

The data are pre-scaled so that ``||X||_2 = 1`` and factorized once by a thin
SVD ``X = U diag(S) V^T`` (rank ``r``). With penalties ``rho`` on the split
``Z = X W`` and ``s * rho`` on the split ``Q = W``, the W-step

    W = argmin ||X W - A||_F^2 + s ||W - B||_F^2

has the closed form ``W = B + V h`` with ``h = S (U^T A - S V^T B) / (S^2 + s)``
(per row of the ``r``-space), and ``X W = U (S (V^T B + h))``. One iteration
therefore costs four GEMMs (``U^T A``, ``V^T B``, ``V h``, ``U g``) plus fused
elementwise work; ``rho`` and ``s`` can change at any time without
refactorizing.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .warmup import register

#: column-norm mode codes of the constraint ball
LAYER, NEURON = 0, 1


@njit(cache=True)
def ball_norms(D, omega, mode):
    """Norms of ``D`` restricted to ``omega``: one (layer) or one per column (neuron)."""
    P, M = D.shape
    out = np.zeros(M if mode == NEURON else 1, dtype=np.float64)
    for p in range(P):
        for m in range(M):
            if omega[p, m]:
                d = np.float64(D[p, m])
                if mode == NEURON:
                    out[m] += d * d
                else:
                    out[0] += d * d
    return np.sqrt(out)


@njit(cache=True)
def violation(R, Y, V, omega, eps_abs, mode):
    """Constraint violation of the layer output ``R = X W + 1 b^T``.

    Returns ``(excess, halfspace)``: per ball (one, or one per column) the
    amount ``max(||(R - Y)_Omega|| - eps, 0)``, and the largest
    ``(R - V)_{Omega^c}`` (0 when none is positive).
    """
    P, M = R.shape
    D = np.empty_like(R)
    worst = 0.0
    for p in range(P):
        for m in range(M):
            if omega[p, m]:
                D[p, m] = R[p, m] - Y[p, m]
            else:
                D[p, m] = 0.0
                e = np.float64(R[p, m]) - V[p, m]
                if e > worst:
                    worst = e
    norms = ball_norms(D, omega, mode)
    excess = np.maximum(norms - eps_abs, 0.0)
    return excess, worst


@njit(cache=True)
def _project_dual_update(XW, Z, U1, Y, V, omega, eps_abs, mode, alpha, Zold):
    """Z-step and its dual step; returns ``||X W - Z_new||_F^2``.

    ``v = alpha X W + (1 - alpha) Z + U1``; ``Z = Proj_C(v)`` (Frobenius
    ball(s) around ``Y`` on ``Omega``, ``min(v, V)`` on its complement);
    ``U1 = v - Z``. ``Zold`` receives the previous ``Z``.
    """
    P, M = Z.shape
    nb = M if mode == NEURON else 1
    sq = np.zeros(nb, dtype=np.float64)
    for p in range(P):
        for m in range(M):
            v = alpha * XW[p, m] + (1.0 - alpha) * Z[p, m] + U1[p, m]
            Zold[p, m] = Z[p, m]
            U1[p, m] = v  # holds v until the projection below
            if omega[p, m]:
                d = np.float64(v - Y[p, m])
                sq[m if mode == NEURON else 0] += d * d
    gain = np.ones(nb, dtype=np.float64)
    for j in range(nb):
        nrm = np.sqrt(sq[j])
        if nrm > eps_abs[j]:
            gain[j] = eps_abs[j] / nrm
    res = 0.0
    for p in range(P):
        for m in range(M):
            v = U1[p, m]
            if omega[p, m]:
                z = Y[p, m] + (v - Y[p, m]) * gain[m if mode == NEURON else 0]
            else:
                z = min(v, V[p, m])
            Z[p, m] = z
            U1[p, m] = v - z
            r = np.float64(XW[p, m] - z)
            res += r * r
    return res


@njit(cache=True)
def _shrink_dual_update(W, Q, U2, n_pen, thresh, alpha, Qold):
    """Q-step and its dual step; returns ``||W - Q_new||_F^2``.

    ``v = alpha W + (1 - alpha) Q + U2``; rows ``< n_pen`` are soft-thresholded
    by ``thresh``, the rest (the intercept) are copied; ``U2 = v - Q``.
    """
    N, M = Q.shape
    res = 0.0
    for i in range(N):
        for m in range(M):
            v = alpha * W[i, m] + (1.0 - alpha) * Q[i, m] + U2[i, m]
            Qold[i, m] = Q[i, m]
            if i < n_pen:
                if v > thresh:
                    q = v - thresh
                elif v < -thresh:
                    q = v + thresh
                else:
                    q = 0.0
            else:
                q = v
            Q[i, m] = q
            U2[i, m] = v - q
            r = np.float64(W[i, m] - q)
            res += r * r
    return res


@njit(cache=True)
def _sub(A, B, out):
    n, m = A.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = A[i, j] - B[i, j]


@njit(cache=True)
def _fro2(A):
    s = 0.0
    n, m = A.shape
    for i in range(n):
        for j in range(m):
            x = np.float64(A[i, j])
            s += x * x
    return s


@njit(cache=True)
def _support_value(d, Y, V, omega, eps_abs, mode):
    """Support function ``sup_{Z in C} <d, Z>`` of the constraint set (inf if unbounded)."""
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
            else:
                val += x * V[p, m]
    for j in range(nb):
        val += eps_abs[j] * np.sqrt(sq[j])
    return val


@njit(cache=True)
def admm(Ur, S, Vr, X, Y, V, omega, eps_abs, mode, n_pen, W, Z, Q, U1, U2,
         rho, s, alpha, tol, max_iter, check_every, adapt_until, tol_inf):
    """Run the Net-Trim ADMM from the given state (updated in place).

    Returns ``(iterations, status_code, rho, hist)`` with status 0 optimal,
    1 iteration limit, 2 primal infeasibility certificate found;
    ``hist[k] = (primal residual, dual residual or -1, rho, sparse-iterate
    violation or -1)`` (relative quantities).
    """
    P, M = Z.shape
    N = W.shape[0]
    r = S.shape[0]
    dt = W.dtype
    A = np.empty_like(Z)
    B = np.empty_like(W)
    c = np.empty((r, M), dtype=dt)
    e = np.empty((r, M), dtype=dt)
    g = np.empty((r, M), dtype=dt)
    XW = np.empty_like(Z)
    Zold = np.empty_like(Z)
    Qold = np.empty_like(W)
    U1prev = np.empty_like(Z)
    R = np.empty_like(Z)
    hist = np.full((max_iter, 4), -1.0)
    UrT = Ur.T
    VrT = Vr.T
    nY = np.sqrt(_fro2(Y))
    status = 1
    it = 0
    for it in range(1, max_iter + 1):
        # W-step in the r-space of the SVD
        _sub(Z, U1, A)
        _sub(Q, U2, B)
        np.dot(UrT, A, c)
        np.dot(VrT, B, e)
        for k in range(r):
            sk = S[k]
            den = sk * sk + s
            for m in range(M):
                h = sk * (c[k, m] - sk * e[k, m]) / den
                c[k, m] = h
                g[k, m] = sk * (e[k, m] + h)
        np.dot(Vr, c, W)
        for i in range(N):
            for m in range(M):
                W[i, m] += B[i, m]
        np.dot(Ur, g, XW)
        check = it % check_every == 0 or it == max_iter
        if check:
            U1prev[:, :] = U1
        rp1 = _project_dual_update(XW, Z, U1, Y, V, omega, eps_abs, mode, alpha, Zold)
        rp2 = _shrink_dual_update(W, Q, U2, n_pen, 1.0 / (rho * s), alpha, Qold)
        scale_p = max(np.sqrt(_fro2(XW) + _fro2(W)), np.sqrt(_fro2(Z) + _fro2(Q)), 1e-30)
        rpri = np.sqrt(rp1 + rp2) / scale_p
        hist[it - 1, 0] = rpri
        hist[it - 1, 2] = rho
        if not check:
            continue
        # exact dual residual rho * (X^T dZ + s dQ), measured in the r-space and its complement
        _sub(Z, Zold, A)
        _sub(Q, Qold, B)
        np.dot(UrT, A, c)
        np.dot(VrT, B, e)
        d2 = 0.0
        for k in range(r):
            for m in range(M):
                x = np.float64(S[k] * c[k, m])
                d2 += x * x + 2.0 * s * x * e[k, m]
        d2 += s * s * _fro2(B)
        rdual = np.sqrt(max(d2, 0.0)) / max(s * np.sqrt(_fro2(U2)), 1e-30)
        hist[it - 1, 1] = rdual
        # violation of the exactly sparse iterate Q
        np.dot(X, Q, R)
        exc, worst = violation(R, Y, V, omega, eps_abs, mode)
        viol = max(np.sqrt(np.sum(exc * exc)) / max(nY, 1e-30), worst / max(nY, 1e-30))
        hist[it - 1, 3] = viol
        if rpri <= tol and rdual <= tol and viol <= tol:
            status = 0
            break
        # infeasibility certificate: d = dU1 with X^T d ~ 0 and sigma_C(d) < 0
        _sub(U1, U1prev, A)
        nd = np.sqrt(_fro2(A))
        if nd > 0.0:
            dmin = 0.0
            for p in range(P):
                for m in range(M):
                    if not omega[p, m] and A[p, m] < dmin:
                        dmin = A[p, m]
            np.dot(UrT, A, c)
            xtd = 0.0
            for k in range(r):
                for m in range(M):
                    x = np.float64(S[k] * c[k, m])
                    xtd += x * x
            xtd = np.sqrt(xtd)
            if xtd <= tol_inf * nd and dmin >= -tol_inf * nd:
                sup = _support_value(A, Y, V, omega, eps_abs, mode)
                if sup < -tol_inf * nd * (nY + 10.0 * np.sqrt(_fro2(W))):
                    status = 2
                    break
        # residual balancing: rho only enters the threshold and the scaled duals
        if it <= adapt_until and rdual > 0.0:
            ratio = np.sqrt(rpri / rdual)
            if ratio > 5.0 or ratio < 0.2:
                ratio = min(max(ratio, 1e-3), 1e3)
                rho *= ratio
                inv = 1.0 / ratio
                for p in range(P):
                    for m in range(M):
                        U1[p, m] *= inv
                for i in range(N):
                    for m in range(M):
                        U2[i, m] *= inv
    return it, status, rho, hist[:it]


@register
def _warmup(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3)).astype(dtype)
    Ur, S, VrT = np.linalg.svd(X, full_matrices=False)
    Y = np.maximum(rng.standard_normal((6, 2)), 0).astype(dtype)
    omega = Y > 0
    eps = np.array([0.1, 0.1])
    for mode in (LAYER, NEURON):
        W = np.zeros((3, 2), dtype)
        Q = np.zeros((3, 2), dtype)
        U2 = np.zeros((3, 2), dtype)
        Z = np.zeros((6, 2), dtype)
        U1 = np.zeros((6, 2), dtype)
        admm(Ur, S, np.ascontiguousarray(VrT.T), X, Y, np.zeros_like(Y), omega, eps, mode, 2,
             W, Z, Q, U1, U2, 1.0, 1.0, 1.6, 1e-4, 3, 2, 3, 1e-4)
        violation(X @ W, Y, np.zeros_like(Y), omega, eps, mode)
