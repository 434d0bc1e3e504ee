"""Coordinate-descent kernels for the lasso family on the Gram form (Numba).

Each kernel solves the problem restricted to a working set, for all outputs
in one call, and stops on the restricted problem's duality gap
(:mod:`layertrim.solvers.duality`). The working set's Gram block is gathered
once into a contiguous array so the inner loops stream through memory.

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

from .duality import column_gap, group_gap
from .warmup import register


@njit(cache=True)
def _gather(G, idx):
    k = idx.shape[0]
    out = np.empty((k, k), dtype=G.dtype)
    for a in range(k):
        ia = idx[a]
        for b in range(k):
            out[a, b] = G[ia, idx[b]]
    return out


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
    """
    n_out = W.shape[1]
    epochs = np.zeros(n_out, dtype=np.int64)
    for m in range(n_out):
        k = ws_len[m]
        if k == 0:
            continue
        idx = ws[m, :k]
        Gs = _gather(G, idx)
        w = np.empty(k, dtype=W.dtype)
        c = np.empty(k, dtype=W.dtype)
        for a in range(k):
            w[a] = W[idx[a], m]
            c[a] = C[idx[a], m]
        q = Gs @ w
        for _ in range(max_epochs):
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
                    w[j] = new
                    for a in range(k):
                        q[a] += d * Gs[j, a]
            epochs[m] += 1
            primal, dual = column_gap(w, q, c, yy[m], lam1, lam2)
            if primal - dual <= tol[m]:
                break
        for a in range(k):
            W[idx[a], m] = w[a]
    return epochs


@njit(cache=True)
def bcd_rows(G, C, yy_sum, W, lam, ws, tol, max_epochs):
    """Block coordinate descent over the rows ``ws`` (sorted) for the group lasso.

    ``g(W) = lam sum_i ||W_i||_2``; ``W`` is zero outside ``ws`` and is updated
    in place. Stops when the restricted gap is ``<= tol`` (absolute) or after
    ``max_epochs`` passes; returns the passes performed.
    """
    k = ws.shape[0]
    n_out = W.shape[1]
    if k == 0:
        return 0
    Gs = _gather(G, ws)
    Ws = np.empty((k, n_out), dtype=W.dtype)
    Cs = np.empty((k, n_out), dtype=W.dtype)
    for a in range(k):
        for j in range(n_out):
            Ws[a, j] = W[ws[a], j]
            Cs[a, j] = C[ws[a], j]
    Q = Gs @ Ws
    z = np.empty(n_out, dtype=W.dtype)
    d = np.empty(n_out, dtype=W.dtype)
    epochs = 0
    for _ in range(max_epochs):
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
    for a in range(k):
        for j in range(n_out):
            W[ws[a], j] = Ws[a, j]
    return epochs


@njit(cache=True)
def column_working_sets(grad, W, lam1, p0):
    """Per-output working sets: the nonzeros of ``W[:, m]`` plus the worst KKT violators.

    A zero coordinate violates optimality by ``|grad_im| - lam1 > 0``. Output
    ``m`` keeps its ``nnz_m`` nonzeros and adds the largest violators until
    ``max(p0, 2 nnz_m)`` coordinates. Returns ``(ws (M, N) sorted rows,
    ws_len (M,), complete (M,))``; ``complete[m]`` says no violator was left out.
    """
    n, n_out = W.shape
    ws = np.zeros((n_out, n), dtype=np.int64)
    ws_len = np.zeros(n_out, dtype=np.int64)
    complete = np.ones(n_out, dtype=np.bool_)
    viol = np.empty(n, dtype=np.int64)
    score = np.empty(n)
    for m in range(n_out):
        nnz = 0
        n_viol = 0
        for i in range(n):
            if W[i, m] != 0.0:
                ws[m, nnz] = i
                nnz += 1
            else:
                s = abs(grad[i, m]) - lam1
                if s > 0.0:
                    viol[n_viol] = i
                    score[n_viol] = s
                    n_viol += 1
        extra = min(n_viol, max(p0, 2 * nnz) - nnz)
        if extra < 0:
            extra = 0
        complete[m] = extra == n_viol
        if extra == n_viol:
            ws[m, nnz : nnz + extra] = viol[:n_viol]
        elif extra > 0:
            top = np.argsort(-score[:n_viol])[:extra]
            ws[m, nnz : nnz + extra] = viol[top]
        size = nnz + extra
        ws[m, :size] = np.sort(ws[m, :size])
        ws_len[m] = size
    return ws, ws_len, complete


@register
def _warmup(dtype):
    G = np.eye(3, dtype=dtype)
    C = np.ones((3, 2), dtype=dtype)
    yy = np.full(2, 3.0, dtype=dtype)
    W = np.zeros((3, 2), dtype=dtype)
    ws, ws_len, _ = column_working_sets(G @ W - C, W, 0.5, 2)
    tol = np.full(2, 1e-9)
    cd_columns(G, C, yy, W, 0.5, 0.0, ws, ws_len, tol, 5)
    cd_columns(G, C, yy, W, 0.5, 0.5, ws, ws_len, tol, 5)
    bcd_rows(G, C, 6.0, W, 0.5, np.arange(3, dtype=np.int64), 1e-9, 5)
