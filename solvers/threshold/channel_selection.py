"""Least-squares channel selection: keep the groups of input columns (the
channels of a layer's input) that best reproduce its output, and refit.

Given ``X (P, N)`` whose columns fall into ``n_groups`` equal consecutive
groups (for a conv layer through unfold: one group of ``k_h * k_w`` columns
per input channel) and targets ``Y (P, M)``, greedy backward elimination
approximately solves

    min_{S, W, b}  (1/2P) ||X_S W + 1 b^T - Y||_F^2   s.t.  |S| = n_keep groups,

then returns the exact least-squares refit on the kept groups.
"""
from __future__ import annotations

import time

import numpy as np

from ..base.errors import ParameterError, ShapeError
from ..base.gram import as_quadratic
from ..base.result import Result
from ..base.validation import check_scalar


def backward_group_selection(X, Y=None, *, n_groups: int, n_keep: int, intercept: bool = True, jitter: float = 1e-10) -> Result:
    """Remove groups one at a time by least increase of the squared loss; refit the rest.

    Parameters
    ----------
    X : ndarray (P, N) or GramStats
        Inputs (or their statistics, then ``Y=None``); ``N`` divisible by ``n_groups``.
    Y : ndarray (P, M), optional
    n_groups, n_keep : int
        Number of equal consecutive column groups, and how many to keep.
    intercept : bool
        Fit an unpenalized bias ``b``.
    jitter : float
        Relative diagonal added to the Gram matrix (times its mean diagonal)
        so that dead (all-zero) groups leave it invertible; it changes the
        refit by ``O(jitter)``.

    Returns
    -------
    Result
        ``W (N, M)`` with zero rows on removed groups, ``b``; ``info["kept"]``
        the kept group indices (sorted), ``info["removed"]`` the removal order,
        ``info["loss_increase"]`` the loss increase of each removal;
        ``objective`` the loss ``(1/2P)||X W + 1 b^T - Y||_F^2``.

    Notes
    -----
    With ``H = (G + delta I)^{-1}`` over the current set and ``W = H C``, removing
    group ``g`` raises the loss by ``(1/2) tr(W_g^T H_gg^{-1} W_g)`` (block
    elimination); the cheapest group is removed and ``H`` is downdated by the
    Schur complement ``H_rr - H_rg H_gg^{-1} H_gr``, ``O(N^2 k)`` per step with
    ``k`` columns per group.
    """
    t0 = time.perf_counter()
    q = as_quadratic(X, Y, intercept=intercept)
    N = q.n_features
    n_groups = check_scalar(n_groups, "n_groups", low=1, integer=True)
    n_keep = check_scalar(n_keep, "n_keep", low=1, integer=True)
    if N % n_groups:
        raise ShapeError(f"{N} columns cannot be split into {n_groups} equal groups")
    if n_keep > n_groups:
        raise ParameterError(f"n_keep={n_keep} exceeds n_groups={n_groups}")
    jitter = check_scalar(jitter, "jitter", low=0.0)
    k = N // n_groups
    delta = jitter * max(float(np.mean(np.diag(q.G))), np.finfo(np.float64).tiny)
    H = np.linalg.inv(q.G + delta * np.eye(N))
    alive = list(range(n_groups))
    removed, increases = [], []
    while len(alive) > n_keep:
        cols = np.concatenate([np.arange(g * k, (g + 1) * k) for g in alive])
        W = H @ q.C[cols]
        costs = []
        for pos in range(len(alive)):
            blk = slice(pos * k, (pos + 1) * k)
            Wg = W[blk]
            costs.append(0.5 * float(np.sum(Wg * np.linalg.solve(H[blk, blk], Wg))))
        pos = int(np.argmin(costs))
        blk = np.arange(pos * k, (pos + 1) * k)
        rest = np.setdiff1d(np.arange(len(cols)), blk)
        H = H[np.ix_(rest, rest)] - H[np.ix_(rest, blk)] @ np.linalg.solve(H[np.ix_(blk, blk)], H[np.ix_(blk, rest)])
        removed.append(alive.pop(pos))
        increases.append(costs[pos])
    cols = np.concatenate([np.arange(g * k, (g + 1) * k) for g in alive])
    W = np.zeros((N, q.n_outputs))
    W[cols] = np.linalg.solve(q.G[np.ix_(cols, cols)] + delta * np.eye(len(cols)), q.C[cols])
    b = q.y_mean - q.x_mean @ W if intercept else None
    dtype = q.dtype
    return Result(
        W=W.astype(dtype),
        b=None if b is None else b.astype(dtype),
        status="optimal",
        objective=q.loss(W),
        iterations=len(removed),
        time=time.perf_counter() - t0,
        info={"kept": np.array(sorted(alive)), "removed": np.array(removed, dtype=np.int64),
              "loss_increase": np.array(increases)},
    )

