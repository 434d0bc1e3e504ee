"""Input-channel permutations for N:M sparsity.

An N:M pattern keeps ``n`` weights in each group of ``m`` consecutive inputs
of every output. Which inputs share a group is an accident of their order:
reordering the inputs (the previous layer's output channels, or the input
features) changes nothing in the layer's function, ``X[:, p] @ W[p] = X @ W``,
but lets the groups be formed so that little importance is lost. The idea of
searching for such a permutation is from Pool & Yu, "Channel Permutations for
N:M Sparsity" (NeurIPS 2021); the search below is this module's own.

For importance scores ``S (N, M) >= 0`` and a permutation ``p``, the retained
importance is ``R(p) = sum_g sum_j topn{ S_ij^2 : i in p[g m : (g+1) m] }``
(the value :func:`project` maximizes for the fixed order ``p``).
:func:`nm_permutation` looks for a ``p`` with a large ``R(p)``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from ..base.errors import ParameterError
from ..base.gram import Quadratic
from ..base.interrupt import interruptible
from ..base.patterns import parse_pattern
from ..base.validation import check_array, check_choice, check_scalar
from ..base.warmup import register

STARTS = ("spread", "identity")

#: an exchange is accepted only if it raises R(p) by more than this fraction of
#: the total importance sum(S^2): rounding then cannot make the search cycle.
GAIN_RTOL = 1e-12


@njit(cache=True)
def group_stats(S2, rows, n, rank, nth, next_):
    """Per column ``j`` of one group: ranks of its members, the ``n``-th and ``(n+1)``-th largest value.

    ``rank[rows[k], j]`` is the position of member ``k`` in the descending
    order of ``S2[rows, j]`` (ties: the earlier member first); ``nth[j]`` and
    ``next_[j]`` are written in place.
    """
    m = rows.size
    order = np.empty(m, dtype=np.int64)
    for j in range(S2.shape[1]):
        for k in range(m):  # insertion sort, descending, stable
            v = S2[rows[k], j]
            pos = k
            while pos > 0 and S2[rows[order[pos - 1]], j] < v:
                order[pos] = order[pos - 1]
                pos -= 1
            order[pos] = k
        for r in range(m):
            rank[rows[order[r]], j] = r
        nth[j] = S2[rows[order[n - 1]], j]
        next_[j] = S2[rows[order[n]], j]


@njit(cache=True)
def exchange_gain(S2, rank, n, ia, ib, nth_a, next_a, nth_b, next_b):
    """Change of the retained importance when input ``ia`` (group A) and ``ib`` (group B) trade places.

    Per column, removing a member of rank ``r`` costs ``S2 - (n+1)-th largest``
    if ``r < n`` (the next one moves up), else nothing; the ``n``-th largest of
    the rest is then ``u`` = the ``(n+1)``-th or the ``n``-th, and the newcomer
    adds ``max(0, S2_new - u)``.
    """
    gain = 0.0
    for j in range(S2.shape[1]):
        a, b = S2[ia, j], S2[ib, j]
        if rank[ia, j] < n:
            gain += next_a[j] - a
            u = next_a[j]
        else:
            u = nth_a[j]
        if b > u:
            gain += b - u
        if rank[ib, j] < n:
            gain += next_b[j] - b
            u = next_b[j]
        else:
            u = nth_b[j]
        if a > u:
            gain += a - u
    return gain


@njit(cache=True)
def refine_groups(S2, perm, n, m, max_sweeps, min_gain):
    """Improve ``perm`` in place by exchanges of two inputs between two groups; returns the sweeps run.

    A sweep visits every pair of groups ``g1 < g2`` and every pair of members
    ``(a, b)``; the exchange of ``a`` and ``b`` is kept when it raises the
    retained importance by more than ``min_gain`` (:func:`exchange_gain`,
    ``O(n_outputs)`` per candidate). The search stops after a sweep without an
    exchange (then no single exchange gains more than ``min_gain``: a local
    maximum) or after ``max_sweeps`` sweeps. ``R(perm)`` never decreases.
    """
    N, M = S2.shape
    G = N // m
    rank = np.empty((N, M), dtype=np.int64)
    nth = np.empty((G, M))
    next_ = np.empty((G, M))
    for g in range(G):
        group_stats(S2, perm[g * m : (g + 1) * m], n, rank, nth[g], next_[g])
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for g1 in range(G):
            rows1 = perm[g1 * m : (g1 + 1) * m]
            for g2 in range(g1 + 1, G):
                rows2 = perm[g2 * m : (g2 + 1) * m]
                for a in range(m):
                    for b in range(m):
                        ia, ib = rows1[a], rows2[b]
                        if exchange_gain(S2, rank, n, ia, ib, nth[g1], next_[g1], nth[g2], next_[g2]) > min_gain:
                            rows1[a], rows2[b] = ib, ia
                            group_stats(S2, rows1, n, rank, nth[g1], next_[g1])
                            group_stats(S2, rows2, n, rank, nth[g2], next_[g2])
                            changed = True
        if not changed:
            break
    return sweeps


def spread_start(S2: np.ndarray, m: int) -> np.ndarray:
    """Deal inputs, ranked by ``sum_j S_ij^2`` (descending, stable), round-robin into the groups.

    Group ``g`` receives the inputs of rank ``g, g + G, g + 2G, ...`` (``G = N/m``
    groups): one from each importance quantile, so the strongest inputs do not
    compete for the same ``n`` places.
    """
    order = np.argsort(-S2.sum(axis=1), kind="stable")
    G = order.size // m
    return np.ascontiguousarray(order.reshape(m, G).T.reshape(-1))


def retained(S, perm, pattern) -> float:
    """``R(perm)``: the sum of ``S^2`` kept by the N:M pattern on the inputs in the order ``perm``."""
    pat = parse_pattern(pattern)
    S2 = np.square(np.asarray(S, dtype=np.float64))[np.asarray(perm)]
    N, M = S2.shape
    top = -np.sort(-S2.reshape(N // pat.m, pat.m, M), axis=1)[:, : pat.n]
    return float(top.sum())


def nm_permutation(scores, pattern="2:4", *, start: str = "spread", max_sweeps: int = 8) -> np.ndarray:
    """An order of the inputs in which an N:M pattern keeps as much importance as possible.

    Approximately solves ``max_p sum_g sum_j topn{ S_ij^2 : i in p[g m:(g+1) m] }``
    over permutations ``p`` of the ``n_features`` inputs.

    Parameters
    ----------
    scores : array (n_features, n_outputs)
        Non-negative importances, e.g. ``|W|`` or ``sqrt(G_ii) |W_ij|``.
    pattern : str
        ``"n:m"`` such as ``"2:4"``; ``n_features`` must be a multiple of ``m``.
    start : {"spread", "identity"}
        Start of the local search: inputs dealt round-robin by importance
        (:func:`spread_start`), or the given order. Either way the result
        never retains less than the given order: should the search from the
        spread start end below it, the search from the given order is used.
    max_sweeps : int >= 0
        Limit on the sweeps of exchanges (:func:`refine_groups`).

    Returns
    -------
    perm : ndarray of int64, shape (n_features,)
        Position ``k`` of the new order holds input ``perm[k]``. The pattern
        applies to ``W[perm]``; ``X[:, perm] @ W[perm] == X @ W``.

    Notes
    -----
    Local search over exchanges of two inputs between two groups, accepting
    every exchange that raises the retained importance by more than
    ``GAIN_RTOL * sum(S^2)``, sweep after sweep until none does (at most
    ``max_sweeps``). One sweep costs ``O(N^2 n_outputs)``: about a second for
    ``784 x 300`` at 2:4; the first sweeps gain the most.

    Examples
    --------
    >>> perm = nm_permutation(np.abs(W), "2:4")                  # doctest: +SKIP
    >>> W_nm, mask = project(W[perm], pattern="2:4")             # N:M in the order perm
    >>> W_back = W_nm[np.argsort(perm)]                          # X @ W_back == X[:, perm] @ W_nm
    """
    pat = parse_pattern(pattern)
    if pat.kind != "n:m":
        raise ParameterError(f"a permutation applies to N:M patterns such as '2:4', got {pattern!r}")
    S = check_array(scores, "scores", dtype=np.float64)
    if np.any(S < 0):
        raise ParameterError("scores must be non-negative (an importance such as |W|)")
    pat.check_shape(*S.shape)
    check_choice(start, "start", STARTS)
    max_sweeps = check_scalar(max_sweeps, "max_sweeps", low=0, integer=True)
    S2 = np.square(S)
    min_gain = GAIN_RTOL * float(S2.sum())
    identity = np.arange(S.shape[0], dtype=np.int64)
    with interruptible():  # the exchange sweeps are one compiled kernel
        if start == "spread":
            perm = spread_start(S2, pat.m).astype(np.int64)
            refine_groups(S2, perm, pat.n, pat.m, max_sweeps, min_gain)
            if retained(S, perm, pat) >= retained(S, identity, pat):
                return perm
        refine_groups(S2, identity, pat.n, pat.m, max_sweeps, min_gain)
    return identity


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm] = arange(N)``: ``W[perm][inv] = W``."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv


def permute_inputs(q: Quadratic, perm: np.ndarray) -> Quadratic:
    """The same problem with its inputs in the order ``perm`` (``X -> X[:, perm]``)."""
    return replace(q, G=q.G[np.ix_(perm, perm)], C=q.C[perm], x_mean=q.x_mean[perm])


@register
def _warmup(dtype):
    S2 = np.arange(16, dtype=np.float64).reshape(8, 2)
    perm = np.arange(8, dtype=np.int64)
    refine_groups(S2, perm, 2, 4, 2, 0.0)
