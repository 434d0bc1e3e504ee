"""The convex-concave procedure of :func:`~.feta.feta` at a fixed ``lam``.

With ``F = g - h`` (:mod:`.feta`), outer iteration ``k`` linearizes ``h`` at
``Z_k = X W_k + 1 b_k^T`` (``A_k = Y * 1[Z_k > 0]``) and approximately solves
the convex majorizer, warm-started at ``(W_k, b_k)``::

    (W_{k+1}, b_{k+1}) ~ argmin (1/P) sum(relu(z)^2/2 - a_k z) + lam ||W||_1

by full-batch FISTA or proximal SVRG (:mod:`.subproblem`). A step that would
raise ``F`` (possible only through rounding) is rejected and the loop stops.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels import active_targets, relu_misfit
from .subproblem import ReluLayer, fista, svrg


def dc_value(Z, b, Y, W, lam) -> float:
    """``F = (1/2P) ||relu(Z + 1 b^T) - Y||_F^2 + lam ||W||_1`` from ``Z = X W``."""
    return relu_misfit(Z, b, Y) / (2.0 * Y.shape[0]) + lam * float(np.abs(W).sum())


def relative_error(Z, b, Y) -> float:
    """``||relu(Z + 1 b^T) - Y||_F / ||Y||_F``."""
    return math.sqrt(relu_misfit(Z, b, Y) / max(float(np.sum(Y.astype(np.float64) ** 2)), 1e-300))


def ccp_fit(X, Y, W, b, *, lam, intercept, outer_iter, tol, inner, inner_iter, inner_tol, batch_size, seed):
    """``lam`` mode of :func:`~.feta.feta` from the start ``(W, b)``.

    Returns ``(W, b, F, status, iterations, history, info)``; ``X`` is
    column-centered when ``intercept`` (then ``b`` is in centered coordinates).
    """
    rng = np.random.default_rng(seed)
    if inner == "svrg":  # SVRG walks contiguous mini-batches of a shuffled order
        order = rng.permutation(X.shape[0])
        X, Y = np.ascontiguousarray(X[order]), np.ascontiguousarray(Y[order])
    layer = ReluLayer.build(X, Y, intercept)

    def inner_step(A, W_, b_, Z_):
        if inner == "fista":
            return fista(layer, A, lam, W_, b_, Z_, max_iter=inner_iter, tol=inner_tol)
        return svrg(layer, A, lam, W_, b_, Z_, epochs=inner_iter, batch_size=batch_size, rng=rng)

    W, b, Z, F, status, hist, inner_counts = _ccp(layer, lam, W, b, outer_iter, tol, inner_step)
    history = {"objective": np.asarray(hist), "inner_iterations": np.asarray(inner_counts, dtype=np.int64)}
    info = {"inner": inner, "lam": lam, "relative_error": relative_error(Z, b, Y)}
    return W, b, F, status, len(hist) - 1, history, info


def _ccp(layer: ReluLayer, lam, W, b, outer_iter, tol, inner_step):
    """The convex-concave loop; returns ``(W, b, Z, F, status, history, inner_counts)``."""
    X, Y = layer.X, layer.Y
    Z = X @ W
    F = dc_value(Z, b, Y, W, lam)
    hist, inner_counts = [F], []
    status = "max_iter"
    for _ in range(outer_iter):
        A = active_targets(Z, b, Y)
        Wn, bn, Zn, _, n_inner = inner_step(A, W, b, Z)
        inner_counts.append(n_inner)
        Fn = dc_value(Zn, bn, Y, Wn, lam)
        if not Fn < F:  # stationary, or no descent left above rounding: keep the iterate
            status = "optimal"
            break
        rel = (F - Fn) / max(abs(F), 1e-300)
        W, b, Z, F = Wn, bn, Zn, Fn
        hist.append(F)
        if rel <= tol:
            status = "optimal"
            break
    return W, b, Z, F, status, hist, inner_counts
