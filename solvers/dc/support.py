"""Exact-count sparse fit of a ReLU layer: the sparsity mode of :func:`~.feta.feta`.

Majorize-minimize on ``F(W, b) = (1/2P) ||relu(X W + 1 b^T) - Y||_F^2`` under
``||W||_0 <= k``. At the iterate ``Z_k = X W_k + 1 b_k^T`` every entry of
``F`` is bounded by a quadratic in ``z`` that touches it at ``z_k``
(:func:`~.kernels.majorizer_targets`):

    (relu(z) - y)^2 <= (z - t)^2 + c,   t = y        if y > 0, z_k > 0,
                                        t = z_k, c = y^2   if y > 0, z_k <= 0,
                                        t = min(z_k, 0)    if y = 0.

This is the convex-concave step (``-2 y relu(z)`` linearized at ``z_k``)
followed by the bound ``relu(z)^2 <= (z - t)^2`` for ``t <= 0``; the result
is a least-squares problem ``(1/2P) ||X W + 1 b^T - T_k||_F^2 + const`` in
Gram form, whose ``X^T X`` is formed once. While the support is searched,
its sparse minimizer is approximated by accelerated iterative hard
thresholding (:func:`~.iht.iht`, warm-started at ``W_k``, finished by a
least-squares refit on its support), which never ends above its start; once
the support is frozen it is minimized exactly (least squares per output
column). Either way ``F`` never increases once ``W_k`` is sparse.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..base.errors import ConvergenceWarning
from .kernels import majorizer_targets, relu_misfit
from ..base.gram import Quadratic
from ..threshold.iht import iht
from ..threshold.refit import refit_quadratic


def majorizer_quadratic(X: np.ndarray, T: np.ndarray, G: np.ndarray, intercept: bool) -> Quadratic:
    """Gram form of ``(1/2P) ||X W + 1 b^T - T||_F^2``; ``X`` is column-centered when ``intercept``.

    ``G = X^T X / P`` is passed in (it does not change between iterations);
    since the columns of a centered ``X`` sum to 0, ``C = X^T T / P`` needs no
    centering of ``T``.
    """
    P, N = X.shape
    C = (X.T @ T).astype(np.float64) / P
    T64 = T.astype(np.float64)
    mean = T64.mean(axis=0) if intercept else np.zeros(T.shape[1])
    yy = np.sum((T64 - mean) ** 2, axis=0) / P
    return Quadratic(G=G, C=C, yy=yy, x_mean=np.zeros(N), y_mean=mean, n_samples=P,
                     intercept=intercept, dtype=X.dtype)


def sparse_fit(X, Y, W, b, *, sparsity: float, intercept: bool, support_iter: int, iht_iter: int, tol: float,
               polish_iter: int, polish_tol: float):
    """Support search, then a fixed-support polish; returns ``(W, b, Z, F, history, status, counts)``.

    ``X`` is column-centered when ``intercept`` (then ``b`` is the intercept in
    centered coordinates). Stage 1 (at most ``support_iter`` outer
    iterations): ``T_k`` from ``Z_k``, then ``iht_iter`` steps of hard
    thresholding on the majorizer, warm-started at ``W_k``; the support may
    change. It stops early when ``F`` falls by a relative ``<= tol``. Stage 2
    (at most ``polish_iter`` outer iterations): the support is frozen and each
    majorizer is minimized exactly on it (least squares per output column);
    it stops when one iteration lowers ``F`` by ``<= polish_tol * F(0)``,
    ``F(0) = ||Y||_F^2 / 2P`` (the squared relative error moves by
    ``<= polish_tol``: an absolute scale, since ``F`` itself may tend to 0
    on exactly sparse layers); ``status`` is ``"max_iter"`` when that never
    happened.

    Each outer iteration costs two products with ``X`` (``X^T T_k`` and
    ``X W_{k+1}``); ``X^T X`` is formed once. ``history`` holds ``F`` after
    every outer iteration: the first is the cut of the dense start (it may
    exceed ``F`` at the start), from then on it is non-increasing (a step that
    would raise ``F``, possible only through rounding, is rejected and the
    stage ends). ``counts`` has ``support_iterations``, ``polish_iterations``
    and ``matmuls``: ``(P, N) x (N, M)``-sized products, the Gram matrix
    counted as ``N / M`` of them.
    """
    P, N = X.shape
    Xd = X.astype(np.float64, copy=False)
    G = (Xd.T @ Xd) / P
    matmuls = 1.0 + N / Y.shape[1]
    Z = X @ W
    F, history = None, []

    def mm_step(W, b, Z, solve):
        quad = majorizer_quadratic(X, majorizer_targets(Z, b, Y), G, intercept)
        Wn, bn = solve(quad, W)
        Wn = Wn.astype(X.dtype)
        bn = (bn if intercept else np.zeros(Y.shape[1])).astype(X.dtype)
        Zn = X @ Wn
        return Wn, bn, Zn, relu_misfit(Zn, bn, Y) / (2.0 * P)

    def hard_threshold(quad, W):
        with warnings.catch_warnings():  # a fixed budget per outer iteration is the intent here
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = iht(quad, sparsity=sparsity, W0=W, max_iter=iht_iter, intercept=intercept)
        return res.W, res.b

    def least_squares(quad, W):
        Wn, _ = refit_quadratic(quad, mask)
        return Wn, quad.intercept_for(Wn)

    n_support = n_polish = 0
    for _ in range(support_iter):
        Wn, bn, Zn, Fn = mm_step(W, b, Z, hard_threshold)
        matmuls += 2
        n_support += 1
        if F is not None and not Fn < F:
            break
        rel = np.inf if F is None else (F - Fn) / max(F, 1e-300)
        W, b, Z, F = Wn, bn, Zn, Fn
        history.append(F)
        if rel <= tol:
            break
    mask = W != 0
    status = "max_iter"
    f_zero = float(np.sum(Y.astype(np.float64) ** 2)) / (2.0 * P)
    for _ in range(polish_iter):
        Wn, bn, Zn, Fn = mm_step(W, b, Z, least_squares)
        matmuls += 2
        n_polish += 1
        if not Fn < F:  # no descent left above rounding: keep the iterate
            status = "optimal"
            break
        gain = F - Fn
        W, b, Z, F = Wn, bn, Zn, Fn
        history.append(F)
        if gain <= polish_tol * f_zero:
            status = "optimal"
            break
    counts = {"support_iterations": n_support, "polish_iterations": n_polish, "matmuls": matmuls}
    return W, b, Z, F, history, status, counts
