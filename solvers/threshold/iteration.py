"""The Jacobi-scaled, accelerated hard-thresholding iteration of :func:`~.iht.iht`.

With ``f(W) = 1/2 tr(W^T G W) - tr(C^T W)`` (Gram form), ``D = diag(G)``,
``L = lambda_max(D^-1/2 G D^-1/2)`` and ``H_D`` the projection onto the
pattern in the norm ``||V||_D^2 = sum_ij d_i V_ij^2``::

    W_{k+1} = H_D(Z_k - D^-1 grad f(Z_k) / L),
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,
    Z_{k+1} = W_{k+1} + (t_k - 1) / t_{k+1} (W_{k+1} - W_k),

with a restart (``t = 1``, the plain step from ``W_k``) whenever the
accelerated step would raise the loss. The loop is written against the
array namespace of ``W`` (numpy, or e.g. torch on any device).
"""
from __future__ import annotations

import math

import numpy as np

from ..base.backend import is_foreign, namespace
from ..base.gram import Quadratic
from ..base.patterns import Pattern
from .projection import support_mask
from .refit import RCOND, refit_quadratic
from .step_kernels import gradient_point, momentum, quadratic_terms


def jacobi_scaling(q: Quadratic):
    """``(1/d, sqrt(d), L_D)``: ``d = diag(G)``, ``L_D = lambda_max(D^-1/2 G D^-1/2)``.

    Inputs of (numerically) zero variance, ``d_i <= RCOND max d``, get ``1/d_i =
    sqrt(d_i) = 0``: their gradient vanishes and they are never selected.
    Foreign moments: the same in their namespace (dead inputs enter the
    eigenproblem as zero rows, which leaves its largest eigenvalue unchanged).
    """
    if is_foreign(q.G):
        return _jacobi_scaling_xp(q.G)
    d = np.diag(q.G).copy()
    alive = d > RCOND * max(float(d.max(initial=0.0)), np.finfo(float).tiny)
    inv_d = np.zeros_like(d)
    sqrt_d = np.zeros_like(d)
    inv_d[alive] = 1.0 / d[alive]
    sqrt_d[alive] = np.sqrt(d[alive])
    if not alive.any():
        return inv_d, sqrt_d, 0.0
    h = np.sqrt(inv_d[alive])
    L_D = float(np.linalg.eigvalsh(q.G[np.ix_(alive, alive)] * h[:, None] * h[None, :])[-1])
    return inv_d, sqrt_d, L_D


def _jacobi_scaling_xp(G):
    """:func:`jacobi_scaling` of a foreign Gram matrix ``G``."""
    xp = namespace(G)
    d = xp.linalg.diagonal(G)
    alive = d > RCOND * max(float(xp.max(d)), np.finfo(float).tiny)
    inv_d = xp.where(alive, 1.0 / xp.where(alive, d, 1.0), 0.0)
    sqrt_d = xp.where(alive, xp.sqrt(xp.where(alive, d, 0.0)), 0.0)
    if not bool(xp.any(alive)):
        return inv_d, sqrt_d, 0.0
    h = xp.sqrt(inv_d)
    return inv_d, sqrt_d, float(xp.linalg.eigvalsh(G * h[:, None] * h[None, :])[-1])


def iterate(q: Quadratic, W, inv_d, sqrt_d, L_D, pattern: Pattern, sparsity: float, *, max_iter, tol, debias_every,
            anchor=None):
    """Run the iteration from ``W`` (on the pattern); see :func:`~.iht.iht` for the stopping rules.

    Debiasing refits return the least-squares solution nearest to ``anchor``.
    Returns ``(W, f, mask, history, status, info)``: the last iterate, its
    loss and support, the loss after each iteration, ``"optimal"`` or
    ``"max_iter"``, and ``info`` with ``loss_start``, ``loss_iht``,
    ``restarts`` and ``lipschitz``.
    """
    xp = namespace(W)
    GW = q.G @ W
    f = f_start = _loss(q, W, GW)
    mask = W != 0
    step = inv_d / L_D if L_D > 0 else inv_d
    Z, GZ, t = W, GW, 1.0
    history, restarts, status = [], 0, "max_iter"
    since_debias, debiased = 0, False
    if f <= tol * target_energy(q):  # no weights lower the loss (>= 0) by more: optimal as it is
        max_iter, status = 0, "optimal"
    for _ in range(max_iter):
        if L_D == 0.0:  # every input is constant: W = 0 is optimal
            status = "optimal"
            break
        Wn, mask_n, GWn, fn = _hard_step(q, Z, GZ, step, sqrt_d, pattern, sparsity)
        if fn > f:
            restarts += 1
            t = 1.0
            Wn, mask_n, GWn, fn = _hard_step(q, W, GW, step, sqrt_d, pattern, sparsity)
            if fn > f:  # only rounding can cause this: keep W
                fn, Wn, mask_n, GWn = f, W, mask, GW
        if debiased and _same(xp, mask_n, mask):  # a fixed point: keep the least-squares W
            history.append(f)
            status = "optimal"
            break
        history.append(fn)
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        Z, GZ = _momentum(Wn, W, beta), _momentum(GWn, GW, beta)
        done = _same(xp, mask_n, mask) and f - fn <= tol * max(f, np.finfo(float).tiny)
        W, GW, f, mask, t = Wn, GWn, fn, mask_n, t_next
        if done:
            status = "optimal"
            break
        since_debias += 1
        debiased = bool(debias_every) and since_debias >= debias_every
        if debiased:
            W, GW, f = _debias(q, W, GW, f, mask, anchor)
            Z, GZ, t, since_debias = W, GW, 1.0, 0
    info = {"loss_start": f_start, "loss_iht": f, "restarts": restarts, "lipschitz": L_D}
    return W, f, mask, history, status, info


def target_energy(q: Quadratic) -> float:
    """``f(0) = 1/2 sum_m yy_m``: the loss of ``W = 0``, which bounds what any weights can gain."""
    return 0.5 * float(namespace(q.yy).sum(q.yy))


def _same(xp, a, b) -> bool:
    """Whether two masks are equal (``np.array_equal`` in any namespace)."""
    return bool(xp.all(a == b))


def _loss(q: Quadratic, W, GW) -> float:
    """``q.loss(W)`` from a precomputed ``G W`` (saves one matmul)."""
    xp = namespace(W)
    terms = 0.5 * float(xp.sum(W * GW)) - float(xp.sum(q.C * W)) if is_foreign(W) else quadratic_terms(W, GW, q.C)
    return max(terms + 0.5 * float(xp.sum(q.yy)), 0.0)


def _momentum(new, old, beta: float):
    """``new + beta (new - old)``."""
    return new + beta * (new - old) if is_foreign(new) else momentum(new, old, beta)


def _hard_step(q: Quadratic, Z, GZ, step, sqrt_d, pattern: Pattern, sparsity: float):
    """Project the gradient point ``V = Z - diag(step) (G Z - C)`` onto the pattern in the ``D``-norm
    (scores ``sqrt(d_i) |V_ij|``); return ``(W, mask, G W, loss)``."""
    xp = namespace(Z)
    if is_foreign(Z):
        V = Z - step[:, None] * (GZ - q.C)
        S = sqrt_d[:, None] * xp.abs(V)
    else:
        V, S = gradient_point(Z, GZ, q.C, step, sqrt_d)
    mask = support_mask(S, pattern, sparsity)
    W = xp.where(mask, V, 0.0)
    GW = q.G @ W
    return W, mask, GW, _loss(q, W, GW)


def _debias(q: Quadratic, W, GW, f, mask, anchor):
    """The least-squares solution on the support of ``W`` (nearest to ``anchor``) when it is
    no worse: ``(W, G W, loss)``."""
    W_ls, _ = refit_quadratic(q, mask, anchor=anchor, start=W)
    GW_ls = q.G @ W_ls
    f_ls = _loss(q, W_ls, GW_ls)
    if f_ls <= f:
        return W_ls, GW_ls, f_ls
    return W, GW, f
