"""Channel choice and consumer refit of :func:`.structured.prune_structured`, on Gram statistics.

A *consumer* is a layer that reads the channels of a pruning group (the next
conv or linear layer). Each consumer ``j`` brings streamed statistics of its
unfolded input ``X_j`` against its dense output ``Y_j`` (a
:class:`~layertrim.solvers.GramStats`) and, per root channel ``c`` of the
group, the columns ``cols_j[c]`` of ``X_j`` that channel feeds (``k_h k_w``
columns for a conv, one for a linear layer, ``H W`` after a flatten).
"""
from __future__ import annotations

import numpy as np

from layertrim.solvers import lasso
from layertrim.solvers.base.errors import ParameterError


def moments(stats, cols, outs=None):
    """``G = Sxx/P`` and ``C = Sxy/P`` restricted to input columns ``cols`` (and outputs ``outs``)."""
    P = stats.n_samples
    G = stats.Sxx[np.ix_(cols, cols)] / P
    C = stats.Sxy[cols] / P
    return G, (C if outs is None else C[:, outs])


def output_energy(stats) -> float:
    """Mean squared (centered) output per sample: normalizes each consumer's loss."""
    return float(stats.syy.sum()) / stats.n_samples + np.finfo(np.float64).tiny


#: above this many columns in any consumer, one elimination round (one-shot scores) instead of several
ONE_ROUND_COLUMNS = 2048


def lsq_keep(problems, n: int, k: int, ridge: float, step: float = 0.5, priors=None) -> np.ndarray:
    """Root channels to keep, by backward elimination of the consumers' least-squares loss.

    Approximately solves ``min_{|S| = k} sum_j L_j(S) / E_j`` where ``L_j(S) =
    min_{W,b} (1/2P) ||X_j[:, cols_j(S)] W + 1 b^T - Y_j||_F^2`` and ``E_j`` is
    the output energy of consumer ``j``.

    Notes
    -----
    With ``H = (G + delta I)^{-1}`` on the alive columns and ``W = H C``,
    removing channel ``c`` alone raises ``L_j`` by ``(1/2) tr(W_c^T H_cc^{-1}
    W_c)``. Each round removes the ``ceil(step * (alive - k))`` cheapest
    channels and recomputes ``H`` on the rest (``step -> 0`` is the one-at-a-time
    greedy of :func:`layertrim.solvers.threshold.channel_selection.backward_group_selection`).
    When a consumer has more than ``ONE_ROUND_COLUMNS`` input columns, the
    channels are removed in one round (each inverse costs ``O(N^3)``).

    With ``priors`` (each consumer's dense weights ``W0 (N_j, M_j)``) the ridge
    pulls toward them, as in :func:`refit`: ``L_j(S)`` adds ``(delta/2)||W -
    W0_S||^2``, ``W = H (C + delta W0)`` and removing ``c`` costs ``(1/2) tr(W_c^T
    H_cc^{-1} W_c) - (delta/2)||W0_c||^2``: the OBS cost at ``delta = 0``, the
    output energy ``(1/2) tr(W0_c^T G_cc W0_c)`` of the channel as ``delta -> inf``.
    """
    if max(sum(len(c) for c in cols) for _, cols in problems) > ONE_ROUND_COLUMNS:
        step = 1.0
    alive = np.arange(n)
    priors = [None] * len(problems) if priors is None else priors
    while len(alive) > k:
        cost = np.zeros(len(alive))
        for (stats, cols), W0 in zip(problems, priors):
            blocks = [np.asarray(cols[c], dtype=np.int64) for c in alive]
            flat = np.concatenate(blocks)
            if flat.size == 0:
                continue
            G, C = moments(stats, flat)
            delta = max(ridge, 1e-10) * max(float(np.mean(np.diag(G))), np.finfo(np.float64).tiny)
            H = np.linalg.inv(G + delta * np.eye(len(flat)))
            W = H @ (C if W0 is None else C + delta * W0[flat])
            start, energy = 0, output_energy(stats)
            for i, blk in enumerate(blocks):
                sl = slice(start, start + len(blk))
                start += len(blk)
                if len(blk):
                    Wg = W[sl]
                    drop = 0.0 if W0 is None else delta * float(np.sum(W0[blk] ** 2))
                    cost[i] += 0.5 * (float(np.sum(Wg * np.linalg.solve(H[sl, sl], Wg))) - drop) / energy
        n_drop = min(len(alive) - k, max(1, int(np.ceil(step * (len(alive) - k)))))
        drop = np.argsort(cost, kind="stable")[:n_drop]
        alive = np.delete(alive, drop)
    return np.sort(alive)


def group_lasso_keep(problems, n: int, k: int) -> np.ndarray:
    """Root channels to keep: the ``k`` largest group-lasso row norms, summed over consumers.

    Each consumer solves ``min (1/2P)||X W + 1 b^T - Y||^2 + lam sum_i ||W_i||_2``
    (rows ``i`` = input columns) at the sparsity of the removed fraction; a
    channel scores the sum of its rows' norms relative to the consumer's
    total, so consumers of any scale weigh alike.
    """
    score = np.zeros(n)
    for stats, cols in problems:
        res = lasso(stats, penalty="group", sparsity=min(1 - k / n, 0.999), intercept=True)
        norms = np.linalg.norm(np.asarray(res.W, dtype=np.float64), axis=1)
        total = norms.sum() or 1.0
        for c in range(n):
            if len(cols[c]):
                score[c] += norms[np.asarray(cols[c])].sum() / total
    return np.sort(np.argsort(-score, kind="stable")[:k])


def refit(stats, cols, outs, W0: np.ndarray, ridge: float):
    """Least squares of the dense output on the kept inputs, pulled toward ``W0``.

    Solves ``min_{W,b} (1/2P)||X_S W + 1 b^T - Y_T||^2 + (delta/2)||W - W0||^2``
    for input columns ``S = cols`` and outputs ``T = outs``, ``delta = ridge *
    mean(diag(G_S))``; ``ridge = 0`` is plain least squares (``lstsq`` on the
    kept inputs with an intercept). Returns ``W (|S|, |T|)`` and ``b (|T|,)``.
    """
    if ridge < 0:
        raise ParameterError(f"ridge must be >= 0, got {ridge!r}")
    G, C = moments(stats, cols, outs)
    delta = ridge * max(float(np.mean(np.diag(G))), np.finfo(np.float64).tiny)
    A = G + delta * np.eye(len(cols))
    rhs = C + delta * W0
    try:
        W = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        W = np.linalg.lstsq(A, rhs, rcond=None)[0]
    b = stats.y_mean[outs] - stats.x_mean[cols] @ W
    return W, b
