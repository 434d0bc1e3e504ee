"""Building blocks of the lasso coordinate-descent kernels (Numba).

- :func:`column_working_sets`: per-output working sets from the nonzeros and
  the worst optimality violators;
- :func:`gather`: a working set's Gram block as one contiguous array, so the
  inner loops of :mod:`.cd_sweeps` stream through memory;
- :func:`anderson_weights`: the affine combination of recent iterates whose
  successive differences are smallest (Anderson extrapolation);
- :func:`support_step`: the exact minimizer on a fixed support and signs, by
  :func:`cholesky_solve`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register


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


@njit(cache=True)
def gather(G, idx):
    """``G[np.ix_(idx, idx)]`` as a new contiguous array."""
    k = idx.shape[0]
    out = np.empty((k, k), dtype=G.dtype)
    for a in range(k):
        ia = idx[a]
        for b in range(k):
            out[a, b] = G[ia, idx[b]]
    return out


@njit(cache=True)
def anderson_weights(U):
    """Weights ``c`` (summing to 1) minimizing ``||U^T c||`` for the rows of ``U``.

    Solves ``(U U^T) z = 1`` by Gaussian elimination with partial pivoting and
    returns ``(ok, z / sum(z))``; ``ok`` is False when the system is singular.
    """
    K = U.shape[0]
    A = U @ U.T
    scale = 0.0
    for i in range(K):
        scale += A[i, i]
    z = np.ones(K)
    if scale <= 0.0:
        return False, z
    for i in range(K):
        A[i, i] += 1e-12 * scale
    for col in range(K):
        piv = col
        for r in range(col + 1, K):
            if abs(A[r, col]) > abs(A[piv, col]):
                piv = r
        if abs(A[piv, col]) <= 1e-300:
            return False, z
        if piv != col:
            for j in range(K):
                A[col, j], A[piv, j] = A[piv, j], A[col, j]
            z[col], z[piv] = z[piv], z[col]
        for r in range(col + 1, K):
            f = A[r, col] / A[col, col]
            for j in range(col, K):
                A[r, j] -= f * A[col, j]
            z[r] -= f * z[col]
    for i in range(K - 1, -1, -1):
        acc = z[i]
        for j in range(i + 1, K):
            acc -= A[i, j] * z[j]
        z[i] = acc / A[i, i]
    total = z.sum()
    if total == 0.0 or not np.isfinite(total):
        return False, z
    return True, z / total


@njit(cache=True)
def cholesky_solve(A, b):
    """Solve ``A x = b`` for symmetric positive definite ``A`` (overwritten).

    Returns ``(ok, x)``; ``ok`` is False when a pivot falls below ``1e-12``
    times the largest diagonal entry (numerically singular ``A``).
    """
    n = A.shape[0]
    x = b.copy()
    dmax = 0.0
    for i in range(n):
        dmax = max(dmax, A[i, i])
    floor = 1e-12 * dmax
    if dmax <= 0.0:
        return False, x
    for j in range(n):
        d = A[j, j]
        for t in range(j):
            d -= A[j, t] * A[j, t]
        if d <= floor:
            return False, x
        d = np.sqrt(d)
        A[j, j] = d
        for i in range(j + 1, n):
            v = A[i, j]
            for t in range(j):
                v -= A[i, t] * A[j, t]
            A[i, j] = v / d
    for i in range(n):
        v = x[i]
        for t in range(i):
            v -= A[i, t] * x[t]
        x[i] = v / A[i, i]
    for i in range(n - 1, -1, -1):
        v = x[i]
        for t in range(i + 1, n):
            v -= A[t, i] * x[t]
        x[i] = v / A[i, i]
    return True, x


@njit(cache=True)
def support_step(Gs, c, w, lam1, lam2):
    """Minimizer of the restricted problem on the support and signs of ``w``.

    With ``S = {j: w_j != 0}`` and ``s = sign(w_S)`` the objective on that
    orthant face is the quadratic ``1/2 w^T (G_SS + lam2 I) w - (c_S - lam1 s)^T w``;
    its minimizer solves ``(G_SS + lam2 I) w_S = c_S - lam1 s``. Returns
    ``(ok, w_new, q_new = Gs w_new)``.
    """
    k = w.shape[0]
    n_s = 0
    for j in range(k):
        if w[j] != 0.0:
            n_s += 1
    S = np.empty(n_s, dtype=np.int64)
    n_s = 0
    for j in range(k):
        if w[j] != 0.0:
            S[n_s] = j
            n_s += 1
    A = np.empty((n_s, n_s))
    rhs = np.empty(n_s)
    for a in range(n_s):
        for b in range(n_s):
            A[a, b] = Gs[S[a], S[b]]
        A[a, a] += lam2
        rhs[a] = c[S[a]] - (lam1 if w[S[a]] > 0.0 else -lam1)
    ok, x = cholesky_solve(A, rhs)
    w_new = np.zeros(k, dtype=w.dtype)
    q_new = np.zeros(k, dtype=w.dtype)
    if not ok:
        return False, w_new, q_new
    for a in range(n_s):
        w_new[S[a]] = x[a]
        for j in range(k):
            q_new[j] += Gs[S[a], j] * x[a]
    return True, w_new, q_new


@register
def _warmup(dtype):
    G = np.eye(3, dtype=dtype)
    W = np.zeros((3, 2), dtype=dtype)
    column_working_sets(G @ W - np.ones((3, 2), dtype=dtype), W, 0.5, 2)
