"""Coordinate-descent sweeps for the lasso family on the Gram form (Numba).

Each kernel solves the problem restricted to a working set, for all outputs
in one call, and stops on the restricted problem's duality gap
(:mod:`layertrim.solvers.lasso.duality`). The working set's Gram block is gathered
once into a contiguous array so the inner loops stream through memory; the
extrapolation and exact support steps are in :mod:`.cd_kernels`.

- :func:`cd_columns`: l1 / elastic net, one working set of coordinates per
  output ``m``; coordinate ``(i, m)`` is minimized exactly:
  ``w_im <- S(G_ii w_im - grad_im, lam1) / (G_ii + lam2)`` with ``S`` the soft
  threshold and ``grad = G W - C``.
- :func:`bcd_rows`: group lasso over rows (one row = one input feature, all
  outputs); the row block has Hessian ``G_ii I``, so the block minimizer is
  ``w_i <- (z_i / G_ii) max(1 - lam / ||z_i||, 0)`` with ``z_i = G_ii w_i - grad_i``.

After an update by ``d`` the maintained ``Q = G_ws W_ws`` moves by
``G_ws[:, i] d`` (an axpy per coordinate, a rank-1 update per row).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register
from .cd_kernels import anderson_weights, gather, support_step
from .duality import column_gap, group_gap

#: iterates combined by Anderson extrapolation in :func:`cd_columns`
ANDERSON = 5


@njit(cache=True)
def cd_columns(G, C, yy, W, lam1, lam2, ws, ws_len, tol, max_epochs):
    """Coordinate descent on per-output working sets; updates ``W`` in place.

    Parameters
    ----------
    G : (N, N), C : (N, M), yy : (M,)
        Gram form of the loss.
    W : (N, M)
        Start, zero outside each output's working set; overwritten.
    lam1, lam2 : float
        ``g(W) = lam1 ||W||_1 + lam2/2 ||W||_F^2``.
    ws : (M, K) int64, ws_len : (M,) int64
        Output ``m`` works on rows ``ws[m, :ws_len[m]]`` (sorted).
    tol : (M,)
        Absolute duality-gap target of each restricted problem.
    max_epochs : int
        Passes over a working set before giving up on that output.

    Returns
    -------
    epochs : (M,) int64
        Passes performed per output.

    Notes
    -----
    Every ``ANDERSON`` passes two extrapolations are tried, each kept only if
    it lowers the objective: if no coordinate entered or left the support
    during those passes, the exact minimizer on the current support and signs
    (:func:`support_step`, one small Cholesky solve; it ends the solve once
    the support is right); then Anderson acceleration, the affine combination
    of the last ``ANDERSON + 1`` iterates whose successive differences are smallest.
    """
    K = ANDERSON
    n_out = W.shape[1]
    epochs = np.zeros(n_out, dtype=np.int64)
    for m in range(n_out):
        k = ws_len[m]
        if k == 0:
            continue
        idx = ws[m, :k]
        Gs = gather(G, idx)
        w = np.empty(k, dtype=W.dtype)
        c = np.empty(k, dtype=W.dtype)
        for a in range(k):
            w[a] = W[idx[a], m]
            c[a] = C[idx[a], m]
        q = Gs @ w
        last = np.empty((K + 1, k), dtype=W.dtype)
        last[0] = w
        moved_support = True
        for ep in range(max_epochs):
            for j in range(k):
                gjj = Gs[j, j]
                old = w[j]
                new = 0.0
                if gjj > 0.0:
                    z = gjj * old - (q[j] - c[j])
                    if z > lam1:
                        new = (z - lam1) / (gjj + lam2)
                    elif z < -lam1:
                        new = (z + lam1) / (gjj + lam2)
                d = new - old
                if d != 0.0:
                    if old == 0.0 or new == 0.0:
                        moved_support = True
                    w[j] = new
                    for a in range(k):
                        q[a] += d * Gs[j, a]
            epochs[m] += 1
            primal, dual = column_gap(w, q, c, yy[m], lam1, lam2)
            if primal - dual <= tol[m]:
                break
            slot = (ep + 1) % (K + 1)
            last[slot] = w
            if slot == K:
                if not moved_support:
                    ok, w_new, q_new = support_step(Gs, c, w, lam1, lam2)
                    if ok:
                        p_new, d_new = column_gap(w_new, q_new, c, yy[m], lam1, lam2)
                        if p_new < primal:
                            w[:] = w_new
                            q[:] = q_new
                            primal = p_new
                            if p_new - d_new <= tol[m]:
                                break
                moved_support = False
                ok, coef = anderson_weights(last[1:] - last[:-1])
                if ok:
                    w_acc = np.zeros(k, dtype=W.dtype)
                    for i in range(K):
                        w_acc += coef[i] * last[i + 1]
                    q_acc = Gs @ w_acc
                    p_acc, d_acc = column_gap(w_acc, q_acc, c, yy[m], lam1, lam2)
                    if p_acc < primal:
                        w[:] = w_acc
                        q[:] = q_acc
                        if p_acc - d_acc <= tol[m]:
                            break
                last[0] = w
        for a in range(k):
            W[idx[a], m] = w[a]
    return epochs


@njit(cache=True)
def bcd_rows(G, C, yy_sum, W, lam, ws, tol, max_epochs):
    """Block coordinate descent over the rows ``ws`` (sorted) for the group lasso.

    ``g(W) = lam sum_i ||W_i||_2``; ``W`` is zero outside ``ws`` and is updated
    in place. Stops when the restricted gap is ``<= tol`` (absolute) or after
    ``max_epochs`` passes; returns the passes performed. Every ``ANDERSON``
    passes an Anderson extrapolation of the last iterates replaces the
    iterate if it lowers the objective (as in :func:`cd_columns`).
    """
    k = ws.shape[0]
    n_out = W.shape[1]
    if k == 0:
        return 0
    Gs = gather(G, ws)
    Ws = np.empty((k, n_out), dtype=W.dtype)
    Cs = np.empty((k, n_out), dtype=W.dtype)
    for a in range(k):
        for j in range(n_out):
            Ws[a, j] = W[ws[a], j]
            Cs[a, j] = C[ws[a], j]
    Q = Gs @ Ws
    z = np.empty(n_out, dtype=W.dtype)
    d = np.empty(n_out, dtype=W.dtype)
    K = ANDERSON
    last = np.empty((K + 1, k, n_out), dtype=W.dtype)
    last[0] = Ws
    epochs = 0
    for ep in range(max_epochs):
        for i in range(k):
            gii = Gs[i, i]
            zn = 0.0
            for j in range(n_out):
                z[j] = gii * Ws[i, j] - (Q[i, j] - Cs[i, j])
                zn += z[j] * z[j]
            zn = np.sqrt(zn)
            scale = 0.0
            if gii > 0.0 and zn > lam:
                scale = (1.0 - lam / zn) / gii
            moved = False
            for j in range(n_out):
                d[j] = z[j] * scale - Ws[i, j]
                if d[j] != 0.0:
                    moved = True
                Ws[i, j] += d[j]
            if moved:
                for a in range(k):
                    gai = Gs[i, a]
                    for j in range(n_out):
                        Q[a, j] += gai * d[j]
        epochs += 1
        primal, dual = group_gap(Ws, Q, Cs, yy_sum, lam)
        if primal - dual <= tol:
            break
        slot = (ep + 1) % (K + 1)
        last[slot] = Ws
        if slot == K:
            ok, coef = anderson_weights((last[1:] - last[:-1]).reshape(K, k * n_out))
            if ok:
                W_acc = np.zeros((k, n_out), dtype=W.dtype)
                for i in range(K):
                    W_acc += coef[i] * last[i + 1]
                Q_acc = Gs @ W_acc
                p_acc, d_acc = group_gap(W_acc, Q_acc, Cs, yy_sum, lam)
                if p_acc < primal:
                    Ws[:] = W_acc
                    Q[:] = Q_acc
                    if p_acc - d_acc <= tol:
                        break
            last[0] = Ws
    for a in range(k):
        for j in range(n_out):
            W[ws[a], j] = Ws[a, j]
    return epochs


@register
def _warmup(dtype):
    G = np.eye(3, dtype=dtype)
    C = np.ones((3, 2), dtype=dtype)
    yy = np.full(2, 3.0, dtype=dtype)
    W = np.zeros((3, 2), dtype=dtype)
    ws = np.array([[0, 1, 2], [0, 1, 2]], dtype=np.int64)
    ws_len = np.full(2, 3, dtype=np.int64)
    tol = np.full(2, 1e-9)
    cd_columns(G, C, yy, W, 0.5, 0.0, ws, ws_len, tol, 5)
    cd_columns(G, C, yy, W, 0.5, 0.5, ws, ws_len, tol, 5)
    bcd_rows(G, C, 6.0, W, 0.5, np.arange(3, dtype=np.int64), 1e-9, 5)
