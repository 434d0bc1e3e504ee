"""Local search on a support by exact exchanges (swaps) of one kept and one dropped input.

For one output column with Gram form ``f(w) = 1/2 w^T G w - c^T w + yy/2``
and a support ``T``, the refitted loss is ``F(T) = min_{w_T} f(w)``. An
exchange ``T -> T - {i} + {k}`` keeps the number of kept inputs, and keeps a
pattern when ``i`` and ``k`` belong to the same comparison group (the same
group of ``m`` inputs for N:M, the same column for per-output and
unstructured supports). Its exact effect on ``F`` follows from the inverse
``H = G_TT^{-1}`` (the optimal-brain-surgeon identities):

- dropping ``i`` raises the loss by ``w_i^2 / (2 H_ii)``;
- then adding ``k`` lowers it by ``r_k'^2 / (2 s_k')``, where ``r = c - G_:T w``
  is the negative gradient and ``s_k = G_kk - G_kT H G_Tk`` the Schur
  complement, both after the drop: ``r_k' = r_k + u_k w_i / H_ii``,
  ``s_k' = s_k + u_k^2 / H_ii`` with ``u = G_:T H_:i``.

The search takes the best exchange while it lowers the loss, updating ``H``,
``A = G_:T H``, ``w``, ``r`` and ``s`` by rank-one formulas in ``O(N |T|)`` per
exchange. Such exchanges are the "swap" moves of local search for best-subset
selection (e.g. Beck & Eldar 2013, coordinate-wise optimality); the code and
the bookkeeping here are this module's own.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from ..base.gram import Quadratic
from .refit import RCOND
from ..base.warmup import register

#: an exchange must lower the column's loss by more than this fraction of
#: ``yy`` (its loss at w = 0): rounding in the updates then cannot make it cycle
GAIN_RTOL = 1e-10

#: Schur complements below this fraction of ``G_kk`` mark an input that the
#: kept ones already span: adding it cannot lower the loss measurably
SCHUR_RTOL = 1e-9


@njit(cache=True)
def _best_exchange(Gd, kept, alive, where, members, starts, H, A, w, r, s):
    """Best exchange ``(delta, i, k)`` over all groups; ``i = -1`` when none lowers the loss.

    A kept input of zero variance (``alive`` False) holds a slot for free: replacing it
    by ``k`` costs nothing to drop.
    """
    best, bi, bk = 0.0, -1, -1
    for g in range(starts.size - 1):
        for p in range(starts[g], starts[g + 1]):
            i = members[p]
            if not kept[i]:
                continue
            a = where[i]
            for q in range(starts[g], starts[g + 1]):
                k = members[q]
                if kept[k] or not alive[k]:
                    continue
                if a < 0:  # a dead kept input: adding k is free of a drop
                    rp, sp, cost = r[k], s[k], 0.0
                else:
                    u = A[k, a]
                    haa = H[a, a]
                    rp = r[k] + u * w[a] / haa
                    sp = s[k] + u * u / haa
                    cost = 0.5 * w[a] * w[a] / haa
                if sp <= SCHUR_RTOL * Gd[k, k]:
                    continue
                delta = cost - 0.5 * rp * rp / sp
                if delta < best:
                    best, bi, bk = delta, i, k
    return best, bi, bk


@njit(cache=True)
def _drop(idx, where, H, A, w, r, s, nl, i):
    """Remove kept input ``i`` from the state; returns the new number of kept live inputs."""
    a = where[i]
    haa = H[a, a]
    wa = w[a]
    h = H[:nl, a].copy()
    u = A[:, a].copy()
    for x in range(nl):
        for y in range(nl):
            H[x, y] -= h[x] * h[y] / haa
        w[x] -= h[x] * wa / haa
    for k in range(A.shape[0]):
        f = u[k] / haa
        for y in range(nl):
            A[k, y] -= f * h[y]
        r[k] += f * wa
        s[k] += f * u[k]
    last = nl - 1
    if a != last:  # move the last position into a
        for x in range(nl):
            H[a, x] = H[last, x]
        for x in range(nl):
            H[x, a] = H[x, last]
        H[a, a] = H[last, last]
        for k in range(A.shape[0]):
            A[k, a] = A[k, last]
        w[a] = w[last]
        idx[a] = idx[last]
        where[idx[a]] = a
    where[i] = -1
    return last


@njit(cache=True)
def _add(Gd, idx, where, H, A, w, r, s, nl, k):
    """Add input ``k`` to the state (block inverse by its Schur complement); returns ``nl + 1``."""
    sig = s[k]
    rho = r[k]
    v = A[k, :nl].copy()
    N = A.shape[0]
    z = Gd[:, k].copy()
    for x in range(nl):
        col = idx[x]
        vx = v[x]
        for t in range(N):
            z[t] -= Gd[t, col] * vx
    for x in range(nl):
        for y in range(nl):
            H[x, y] += v[x] * v[y] / sig
        H[x, nl] = -v[x] / sig
        H[nl, x] = -v[x] / sig
        w[x] -= v[x] * rho / sig
    H[nl, nl] = 1.0 / sig
    w[nl] = rho / sig
    for t in range(N):
        f = z[t] / sig
        for y in range(nl):
            A[t, y] -= f * v[y]
        A[t, nl] = f
        r[t] -= f * rho
        s[t] -= f * z[t]
    idx[nl] = k
    where[k] = nl
    return nl + 1


@njit(cache=True)
def exchange_search(Gd, kept, alive, members, starts, idx, H, A, w, r, s, nl, max_moves, min_gain):
    """Take the best exchange while it lowers the loss by more than ``min_gain``; returns the moves made.

    ``kept`` (bool, N) is updated in place. The state describes the kept live
    inputs ``idx[:nl]``: ``H = Gd_TT^{-1}``, ``A = Gd_:T H``, ``w = H c_T``,
    ``r = c - Gd_:T w``, ``s = diag(Gd) - rowsum(A * Gd_:T)``; the arrays have room for
    ``max(nl) = kept.sum()`` positions. Groups: ``members[starts[g]:starts[g+1]]``.
    """
    where = np.full(kept.size, -1, dtype=np.int64)
    for x in range(nl):
        where[idx[x]] = x
    moves = 0
    while moves < max_moves:
        delta, i, k = _best_exchange(Gd, kept, alive, where, members, starts, H, A, w, r, s)
        if i < 0 or delta >= -min_gain:
            break
        if where[i] >= 0:
            nl = _drop(idx, where, H, A, w, r, s, nl, i)
        nl = _add(Gd, idx, where, H, A, w, r, s, nl, k)
        kept[i] = False
        kept[k] = True
        moves += 1
    return moves


def _column_state(Gd, c, kept, alive):
    """``(idx, H, A, w, r, s, nl)`` for the kept live inputs of one column, with room for all kept."""
    n_max = int(kept.sum())
    live = np.flatnonzero(kept & alive)
    nl = live.size
    idx = np.zeros(max(n_max, 1), dtype=np.int64)
    idx[:nl] = live
    H = np.zeros((max(n_max, 1), max(n_max, 1)))
    A = np.zeros((Gd.shape[0], max(n_max, 1)))
    w = np.zeros(max(n_max, 1))
    if nl:
        factor = cho_factor(Gd[np.ix_(live, live)], lower=True, check_finite=False)
        H[:nl, :nl] = cho_solve(factor, np.eye(nl), check_finite=False)
        A[:, :nl] = Gd[:, live] @ H[:nl, :nl]
        w[:nl] = H[:nl, :nl] @ c[live]
        r = c - Gd[:, live] @ w[:nl]
        s = np.diag(Gd) - np.einsum("ij,ij->i", A[:, :nl], Gd[:, live])
    else:
        r, s = c.copy(), np.diag(Gd).copy()
    return idx, H, A, w, r, s, nl


def group_members(groups: np.ndarray):
    """``(members, starts)``: the inputs of group ``g`` are ``members[starts[g]:starts[g+1]]``."""
    members = np.argsort(groups, kind="stable").astype(np.int64)
    counts = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return members, starts


def swap_refine(q: Quadratic, mask: np.ndarray, groups: np.ndarray, *, max_moves: int = 10_000):
    """Improve a support column by column with exact exchanges inside comparison groups.

    Parameters
    ----------
    q : Quadratic
        The layer's loss in Gram form.
    mask : ndarray of bool (n_features, n_outputs)
        Start support; the count per column and per group is preserved.
    groups : ndarray of int (n_features,)
        Comparison group of each input: ``arange(N) // m`` for N:M, zeros for
        per-output and unstructured supports (then any kept input of a column
        may trade places with any dropped one).
    max_moves : int
        Limit on the exchanges per column.

    Returns
    -------
    mask : ndarray of bool
        The refined support; the refitted loss of every column is never above its start
        (a column whose exchanges do not lower its exactly recomputed loss keeps its start).
    moves : int
        Exchanges kept, summed over the columns.

    Notes
    -----
    The search runs on ``G + delta I`` with ``delta = RCOND max(diag G)`` (the
    fallback ridge of :func:`refit`), so every kept set has a positive definite
    Gram block; inputs of zero variance never enter. Per column the exchange
    of largest loss decrease is taken until none lowers the loss by more than
    ``GAIN_RTOL yy_m``: a support where no single exchange helps.
    """
    G = q.G
    diag = np.diag(G)
    scale = max(float(diag.max(initial=0.0)), np.finfo(float).tiny)
    alive = diag > RCOND * scale
    Gd = G + RCOND * scale * np.eye(G.shape[0])
    members, starts = group_members(np.asarray(groups, dtype=np.int64))
    out = mask.copy()
    total = 0
    for j in range(mask.shape[1]):
        kept = np.ascontiguousarray(mask[:, j])
        c = np.ascontiguousarray(q.C[:, j])
        try:
            state = _column_state(Gd, c, kept, alive)
        except LinAlgError:  # rounding on a badly scaled block: leave the column as it is
            continue
        new = kept.copy()
        moves = exchange_search(Gd, new, alive, members, starts, *state, max_moves, GAIN_RTOL * float(q.yy[j]))
        if moves and _refit_loss(Gd, c, new & alive) < _refit_loss(Gd, c, kept & alive):
            out[:, j] = new
            total += moves
    return out, total


def _refit_loss(Gd, c, support) -> float:
    """``-1/2 c_T^T Gd_TT^{-1} c_T``: the column's loss up to its constant ``yy/2``."""
    T = np.flatnonzero(support)
    if T.size == 0:
        return 0.0
    factor = cho_factor(Gd[np.ix_(T, T)], lower=True, check_finite=False)
    return -0.5 * float(c[T] @ cho_solve(factor, c[T], check_finite=False))


@register
def _warmup(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4))
    Gd = X.T @ X / 12 + 1e-10 * np.eye(4)
    c = Gd @ np.ones(4)
    kept = np.array([True, False, True, False])
    alive = np.ones(4, dtype=np.bool_)
    members, starts = group_members(np.array([0, 0, 1, 1]))
    exchange_search(Gd, kept, alive, members, starts, *_column_state(Gd, c, kept, alive), 4, 0.0)
