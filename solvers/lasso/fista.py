"""FISTA with adaptive restart for composite problems in Gram form.

Minimizes ``F(W) = 1/2 tr(W^T G W) - tr(C^T W) + h(W)`` for any ``h`` with a
cheap proximal operator: the smooth part's gradient ``G W - C`` costs one
``(N, N) x (N, M)`` BLAS product per iteration.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def relative_change(W: np.ndarray, W_prev: np.ndarray) -> float:
    """``||W - W_prev||_F / max(||W||_F, 1)``."""
    return float(np.linalg.norm(W - W_prev) / max(np.linalg.norm(W), 1.0))


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
    X = np.zeros_like(C) if W0 is None else np.array(W0, dtype=C.dtype)
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
        if np.vdot(Yk - Xn, Xn - X) > 0.0:
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
