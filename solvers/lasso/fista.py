"""FISTA with adaptive restart for composite problems in Gram form.

Minimizes ``F(W) = 1/2 tr(W^T G W) - tr(C^T W) + h(W)`` for any ``h`` with a
cheap proximal operator: the smooth part's gradient ``G W - C`` costs one
``(N, N) x (N, M)`` BLAS product per iteration. The loop is written against
the array namespace of ``C`` (numpy, or e.g. torch on any device);
:func:`prox_xp` and :func:`gap_xp` are the penalty's prox and duality gap in
that namespace (the numpy path keeps the Numba kernels).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np

from ..base.backend import fro, is_foreign, like, namespace
from ..base.errors import ParameterError
from ..base.gram import Quadratic


def relative_change(W: np.ndarray, W_prev: np.ndarray) -> float:
    """``||W - W_prev||_F / max(||W||_F, 1)``."""
    if not is_foreign(W):
        return float(np.linalg.norm(W - W_prev) / max(np.linalg.norm(W), 1.0))
    return fro(W - W_prev) / max(fro(W), 1.0)


def _inner(a, b) -> float:
    """``<a, b>``: ``np.vdot`` for numpy, the sum of the elementwise product otherwise."""
    return float(np.vdot(a, b)) if not is_foreign(a) else float(namespace(a).sum(a * b))


def prox_xp(penalty: str, lam: float, l1_ratio: float):
    """``(V, t) -> prox_{t lam R}(V)`` in ``V``'s namespace (the kernels of :mod:`..base.prox`):
    ``sign(v) max(|v| - t lam, 0)``; rows times ``max(1 - t lam / ||v_i||, 0)``; the soft threshold
    by ``t lam a`` times ``1 / (1 + t lam (1 - a))``."""
    def soft(V, thr):
        xp = namespace(V)
        return xp.sign(V) * xp.clip(xp.abs(V) - thr, min=0.0)

    def group(V, thr):
        xp = namespace(V)
        norms = xp.linalg.vector_norm(V, axis=1, keepdims=True)
        return V * xp.where(norms > thr, 1.0 - thr / xp.where(norms > thr, norms, 1.0), 0.0)

    if penalty == "group":
        return lambda V, t: group(V, t * lam)
    if penalty == "elastic_net":
        return lambda V, t: soft(V, t * lam * l1_ratio) * (1.0 / (1.0 + t * lam * (1.0 - l1_ratio)))
    return lambda V, t: soft(V, t * lam)


def _scaled_dual(xp, yr, rr, bound):
    """``max_{|alpha| <= bound} alpha yr - alpha^2 rr / 2`` elementwise (0 where ``rr = 0``)."""
    alpha = xp.clip(yr / xp.where(rr > 0, rr, 1.0), min=-bound, max=bound)
    return xp.where(rr > 0, alpha * yr - 0.5 * alpha * alpha * rr, 0.0)


def gap_xp(W, GW, C, yy, lam1: float, lam2: float, group: bool):
    """:func:`~.duality.gap` in ``W``'s namespace: total ``(primal, dual)`` at ``W`` given ``GW = G W``."""
    xp = namespace(W)
    grad = xp.abs(GW - C)
    if group:
        wq, cw, total = float(xp.sum(W * GW)), float(xp.sum(C * W)), float(xp.sum(yy))
        rr, yr = max(wq - 2.0 * cw + total, 0.0), total - cw
        gmax = float(xp.max(xp.linalg.vector_norm(grad, axis=1)))
        bound = lam1 / gmax if gmax > 0 else np.inf
        dual = float(_scaled_dual(xp, xp.asarray(yr), xp.asarray(rr), bound))
        return 0.5 * rr + lam1 * float(xp.sum(xp.linalg.vector_norm(W, axis=1))), dual
    wq, cw = xp.sum(W * GW, axis=0), xp.sum(C * W, axis=0)
    rr, yr = xp.clip(wq - 2.0 * cw + yy, min=0.0), yy - cw
    primal = 0.5 * rr + lam1 * xp.sum(xp.abs(W), axis=0) + 0.5 * lam2 * xp.sum(W * W, axis=0)
    if lam2 > 0:
        dual = yr - 0.5 * rr - xp.sum(xp.clip(grad - lam1, min=0.0) ** 2, axis=0) / (2.0 * lam2)
    else:
        gmax = xp.max(grad, axis=0)
        dual = _scaled_dual(xp, yr, rr, xp.where(gmax > 0, lam1 / xp.where(gmax > 0, gmax, 1.0), np.inf))
    return float(xp.sum(primal)), float(xp.sum(dual))


def fista(
    G: np.ndarray,
    C: np.ndarray,
    prox: Callable[[np.ndarray, float], np.ndarray],
    W0: np.ndarray | None = None,
    *,
    L: float,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    criterion: Callable[[np.ndarray, np.ndarray], float] | None = None,
    check_every: int = 10,
):
    """Accelerated proximal gradient with gradient-based adaptive restart.

    Minimizes ``1/2 tr(W^T G W) - tr(C^T W) + h(W)``.

    Parameters
    ----------
    G : ndarray, shape (n_features, n_features)
        Symmetric positive semidefinite.
    C : ndarray, shape (n_features, n_outputs)
    prox : callable ``(V, t) -> prox_{t h}(V)``
        E.g. ``lambda V, t: soft_threshold(V, t * lam)`` for ``h = lam ||.||_1``.
    W0 : ndarray, shape (n_features, n_outputs), optional
        Start (zeros by default).
    L : float
        Lipschitz constant of the gradient, ``L >= lambda_max(G)``
        (e.g. :meth:`Quadratic.lipschitz`).
    tol : float
        Stop when ``criterion(W, G @ W) <= tol``.
    max_iter : int
        Maximum number of proximal-gradient steps.
    criterion : callable ``(W, GW) -> float``, optional
        Stopping measure (e.g. a relative duality gap); defaults to the
        relative change of ``W`` between checks.
    check_every : int
        Evaluate the criterion every this many steps (and at the last one).

    Returns
    -------
    W : ndarray
        Final iterate.
    n_iter : int
        Steps performed.
    history : list of float
        Criterion values at each check.
    converged : bool
        Whether the criterion reached ``tol``.

    Notes
    -----
    With step ``1/L``, ``X_{k+1} = prox(Y_k - (G Y_k - C)/L, 1/L)``,
    ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2))/2``,
    ``Y_{k+1} = X_{k+1} + ((t_k - 1)/t_{k+1}) (X_{k+1} - X_k)``.
    Momentum is reset (``t = 1``, ``Y = X``) whenever
    ``<Y_k - X_{k+1}, X_{k+1} - X_k> > 0``, i.e. when the step points against
    the momentum (O'Donoghue and Candes, 2015). Only ``G X_{k+1}`` is
    multiplied out: ``G Y_{k+1}`` is the same combination of ``G X`` products.
    """
    xp = namespace(C)
    X = xp.zeros_like(C) if W0 is None else xp.asarray(W0, dtype=C.dtype, copy=True)
    step = 1.0 / L if L > 0.0 else 1.0  # G = 0: any step is exact for the linear part
    GX = G @ X
    Yk, GY = X, GX
    t = 1.0
    last_check = X
    history = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        Xn = prox(Yk - step * (GY - C), step)
        GXn = G @ Xn
        if _inner(Yk - Xn, Xn - X) > 0.0:
            t = 1.0
            Yk, GY = Xn, GXn
        else:
            tn = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            beta = (t - 1.0) / tn
            Yk = Xn + beta * (Xn - X)
            GY = GXn + beta * (GXn - GX)
            t = tn
        X, GX = Xn, GXn
        if n_iter % check_every == 0 or n_iter == max_iter:
            crit = criterion(X, GX) if criterion is not None else relative_change(X, last_check)
            last_check = X
            history.append(crit)
            if crit <= tol:
                converged = True
                break
    return X, n_iter, history, converged


def foreign_fista(quad: Quadratic, solver: str):
    """``(quad, solver)`` unchanged for numpy moments; for foreign ones (e.g. torch tensors) the
    problem in float64 on their device and ``"fista"`` (the coordinate descent is Numba-only:
    ``solver="cd"`` is refused)."""
    if not is_foreign(quad.C):
        return quad, solver
    if solver == "cd":
        raise ParameterError("solver='cd' needs numpy arrays; for other arrays (e.g. torch tensors) use 'fista'")
    xp = namespace(quad.C)
    moments = {k: xp.astype(getattr(quad, k), xp.float64) for k in ("G", "C", "yy", "x_mean", "y_mean")}
    return replace(quad, **moments), "fista"


def start_from(W, ref):
    """Warm-start weights ``W`` (numpy, the input dtype) in float64, on ``ref``'s device if foreign."""
    return like(W, ref) if is_foreign(ref) else W.astype(np.float64)
