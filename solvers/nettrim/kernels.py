"""The Net-Trim ADMM loop as one Numba kernel (float32 and float64).

From a state ``(W, Z, Q, U1, U2)`` on the scaled data (``||X||_2 = 1``) each
iteration runs the W-step, the relaxed Z-step (projection onto ``C``) and the
relaxed Q-step (soft threshold) of :mod:`.steps`; every ``check_every``
iterations it measures the residuals, the constraint violation of the sparse
iterate ``Q``, looks for a primal infeasibility certificate and rebalances
``rho``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register
from .steps import LAYER, NEURON, q_step, q_step_plain, rescale, violation, w_step, z_step, z_step_plain


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
        w_step(X, F, wide, A, B, s, W, XW, T, H)
        hist[it - 1, 2] = rho
        if it % check_every != 0 and it != max_iter:
            z_step_plain(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, sq)
            q_step_plain(W, Q, U2, B, n_pen, 1.0 / (rho * s), alpha)
            continue
        rz, nxw, nz = z_step(XW, Z, U1, A, Y, V, omega, eps_abs, mode, alpha, dZ, dU)
        rq, nw, nq, nu = q_step(W, Q, U2, B, n_pen, 1.0 / (rho * s), alpha, dQ)
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
                rescale(U1, Z, A, 1.0 / ratio)
                rescale(U2, Q, B, 1.0 / ratio)
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
