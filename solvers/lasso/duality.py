"""Duality gaps of penalized least squares in Gram form.

Primal (``G = X^T X / P``, ``C = X^T Y / P``, ``yy_m = ||Y_m||^2 / P``)::

    P(W) = 1/2 tr(W^T G W) - tr(C^T W) + 1/2 sum(yy) + g(W)
         = (1/2P) ||Y - X W||_F^2 + g(W).

Fenchel dual over ``Theta (P, M)``::

    D(Theta) = (1/P) (<Y, Theta> - 1/2 ||Theta||_F^2) - g*(X^T Theta / P).

The dual point is the residual ``R = Y - X W`` rescaled: ``Theta = alpha R``.
Only two numbers of ``R`` are needed and both come from the Gram form:
``<Y, R>/P = sum(yy) - tr(C^T W)`` and ``||R||^2/P = tr(W^T G W) - 2 tr(C^T W) + sum(yy)``,
while ``X^T R / P = C - G W = -grad``.

- l1 / group (``g = lam R`` with R a norm): ``g*`` is the indicator of the dual
  norm ball ``||.||_* <= lam`` (max-abs for l1, max row 2-norm for group), so
  ``|alpha| <= lam / ||grad||_*``; within that bound ``alpha`` maximizes
  ``D(alpha R) = alpha <Y,R>/P - alpha^2 ||R||^2/(2P)``, i.e. ``alpha = <Y,R>/||R||^2``
  clipped. For l1 the ball is separable over outputs, so each output gets its own
  ``alpha_m``.
- elastic net (``g = lam1 ||W||_1 + lam2/2 ||W||_F^2``, ``lam2 > 0``): ``g*`` is finite,
  ``g*(V) = sum (|V| - lam1)_+^2 / (2 lam2)``; the dual point is ``R`` itself.

At the optimum ``Theta = R`` is dual optimal, so the gap ``P - D >= 0`` tends to 0.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register


@njit(cache=True)
def scaled_dual(yr, rr, bound):
    """``max_{|alpha| <= bound} alpha * yr - alpha^2 * rr / 2`` (``yr = <Y,R>/P``, ``rr = ||R||^2/P``)."""
    if rr <= 0.0:
        return 0.0
    alpha = yr / rr
    if alpha > bound:
        alpha = bound
    elif alpha < -bound:
        alpha = -bound
    return alpha * yr - 0.5 * alpha * alpha * rr


@njit(cache=True)
def column_gap(w, q, c, yy, lam1, lam2):
    """Primal and dual value of one output of the (elastic-net) lasso.

    ``w``, ``q = G w``, ``c`` are vectors over the same coordinates; ``lam2 = 0`` is
    the l1 lasso. Returns ``(primal, dual)``.
    """
    wq = 0.0
    cw = 0.0
    l1 = 0.0
    l2 = 0.0
    gmax = 0.0
    excess = 0.0
    for j in range(w.shape[0]):
        wq += w[j] * q[j]
        cw += c[j] * w[j]
        l1 += abs(w[j])
        l2 += w[j] * w[j]
        g = abs(q[j] - c[j])
        if g > gmax:
            gmax = g
        if g > lam1:
            excess += (g - lam1) * (g - lam1)
    rr = max(wq - 2.0 * cw + yy, 0.0)
    yr = yy - cw
    primal = 0.5 * rr + lam1 * l1 + 0.5 * lam2 * l2
    if lam2 > 0.0:
        dual = yr - 0.5 * rr - excess / (2.0 * lam2)
    else:
        bound = lam1 / gmax if gmax > 0.0 else np.inf
        dual = scaled_dual(yr, rr, bound)
    return primal, dual


@njit(cache=True)
def group_gap(W, Q, C, yy_sum, lam):
    """Primal and dual value of the row-group lasso; ``Q = G W`` on the same rows."""
    wq = 0.0
    cw = 0.0
    pen = 0.0
    gmax = 0.0
    n, m = W.shape
    for i in range(n):
        wn = 0.0
        gn = 0.0
        for j in range(m):
            wq += W[i, j] * Q[i, j]
            cw += C[i, j] * W[i, j]
            wn += W[i, j] * W[i, j]
            g = Q[i, j] - C[i, j]
            gn += g * g
        pen += np.sqrt(wn)
        if gn > gmax:
            gmax = gn
    gmax = np.sqrt(gmax)
    rr = max(wq - 2.0 * cw + yy_sum, 0.0)
    yr = yy_sum - cw
    primal = 0.5 * rr + lam * pen
    bound = lam / gmax if gmax > 0.0 else np.inf
    return primal, scaled_dual(yr, rr, bound)


@njit(cache=True)
def column_gaps(W, GW, C, yy, lam1, lam2):
    """Per-output ``(primal, dual)`` arrays of the (elastic-net) lasso, shape (M,) each."""
    m = W.shape[1]
    primal = np.empty(m)
    dual = np.empty(m)
    for j in range(m):
        primal[j], dual[j] = column_gap(W[:, j], GW[:, j], C[:, j], yy[j], lam1, lam2)
    return primal, dual


def gap(W, GW, C, yy, lam1, lam2, group):
    """Total ``(primal, dual)`` of the lasso family at ``W`` given ``GW = G @ W``.

    ``group=True``: ``g = lam1 * sum_i ||W_i||_2`` (``lam2`` ignored); otherwise
    ``g = lam1 ||W||_1 + lam2/2 ||W||_F^2`` with one dual scaling per output.
    """
    if group:
        return group_gap(W, GW, C, float(np.sum(yy)), lam1)
    primal, dual = column_gaps(W, GW, C, yy, lam1, lam2)
    return float(primal.sum()), float(dual.sum())


def relative_gap(primal: float, dual: float) -> float:
    """``max(P - D, 0) / P`` (0 when the primal value is 0, i.e. a perfect fit at W = 0)."""
    g = max(primal - dual, 0.0)
    return g / primal if primal > 0 else 0.0


@register
def _warmup(dtype):
    w = np.ones(2, dtype=dtype)
    column_gap(w, w, w, dtype.type(2.0), 0.5, 0.0)
    column_gap(w, w, w, dtype.type(2.0), 0.5, 0.5)
    W = np.ones((2, 2), dtype=dtype)
    column_gaps(W, W, W, np.ones(2, dtype=dtype), 0.5, 0.0)
    group_gap(W, W, W, 2.0, 0.5)
