"""The Net-Trim ADMM loop of :func:`~.kernels.admm` for foreign arrays (e.g. torch tensors on a GPU).

The same iteration, checks, infeasibility certificate and residual balancing
as the Numba kernel, written against the array namespace of the data: the
W-step's products with ``X`` and the stored inverse ``F`` and the
elementwise Z- and Q-steps run on the arrays' device in their dtype; norms
and ball radii are accumulated in float64 as in the kernel.
"""
from __future__ import annotations

import math

import numpy as np
from array_api_compat import device as device_of

from ..base.backend import namespace, on_device, to_host
from .steps import NEURON


def _sq(xp, a, axis=None):
    """Sum of squares in float64 (over ``axis``, or all entries)."""
    a = xp.astype(a, xp.float64)
    return xp.sum(a * a, axis=axis)


def _w_step(X, F, wide, A, B, s):
    """``(W, X W)`` with ``W = argmin ||X W - A||^2 + s ||W - B||^2`` (see :func:`~.steps.w_step`)."""
    if wide:
        H = F @ (A - X @ B)
        return B + X.T @ H, A - s * H
    W = F @ (X.T @ A + s * B)
    return W, X @ W


def _ball_sq(xp, d, omega, mode):
    """Squared norms of ``d`` on Omega per ball: one per column (neuron) or one in all (layer)."""
    sq = _sq(xp, xp.where(omega, d, 0.0), axis=0)
    return sq if mode == NEURON else xp.sum(sq)[None]


def _project(xp, v, data, mode):
    """``Proj_C(v)``: the ball(s) of radii ``eps_abs`` around ``Y`` on Omega, ``min(v, V)`` off it."""
    Y, V, omega, eps_abs = data
    norm = xp.sqrt(_ball_sq(xp, v - Y, omega, mode))
    gain = xp.astype(xp.where(norm > eps_abs, eps_abs / xp.where(norm > eps_abs, norm, 1.0), 1.0), v.dtype)
    return xp.where(omega, Y + (v - Y) * gain, xp.minimum(v, V))


def _z_step(xp, XW, Z, U1, data, mode, alpha):
    """Relaxed Z-step and dual step: ``(Z, U1, A, dZ, dU)`` (see :func:`~.steps.z_step`)."""
    v = alpha * XW + (1.0 - alpha) * Z + U1
    Zn = _project(xp, v, data, mode)
    return Zn, v - Zn, 2.0 * Zn - v, Zn - Z, alpha * XW + (1.0 - alpha) * Z - Zn


def _q_step(xp, W, Q, U2, penalized, thresh, alpha):
    """Relaxed Q-step (soft threshold on the ``penalized`` rows) and dual step: ``(Q, U2, B, dQ)``."""
    v = alpha * W + (1.0 - alpha) * Q + U2
    Qn = xp.where(penalized, xp.sign(v) * xp.clip(xp.abs(v) - thresh, min=0.0), v)
    return Qn, v - Qn, 2.0 * Qn - v, Qn - Q


def _violation(xp, R, data, mode, nY):
    """Relative constraint violation of the layer output ``R`` (see :func:`~.steps.violation`)."""
    Y, V, omega, eps_abs = data
    excess = xp.clip(xp.sqrt(_ball_sq(xp, R - Y, omega, mode)) - eps_abs, min=0.0)
    worst = max(float(xp.max(xp.where(omega, 0.0, xp.astype(R - V, xp.float64)))), 0.0)
    return max(math.sqrt(float(xp.sum(excess * excess))), worst) / nY


def _infeasible(xp, X, dU, W, data, mode, nY, tol_inf) -> bool:
    """The certificate of :func:`~.kernels.admm`: ``sup_{Z in C} <d, Z> < 0`` and ``X^T d ~ 0`` for ``d = dU``."""
    Y, V, omega, eps_abs = data
    nd = math.sqrt(float(_sq(xp, dU)))
    if nd == 0.0 or bool(xp.any(xp.logical_and(xp.logical_not(omega), dU < 0))):
        return False
    d = xp.astype(dU, xp.float64)
    sup = float(xp.sum(d * xp.astype(xp.where(omega, Y, V), xp.float64)))
    sup += float(xp.sum(eps_abs * xp.sqrt(_ball_sq(xp, dU, omega, mode))))
    if sup >= -tol_inf * nd * (nY + 10.0 * math.sqrt(float(_sq(xp, W)))):
        return False
    return math.sqrt(float(_sq(xp, X.T @ dU))) <= tol_inf * nd


def _residuals(xp, X, XW, Z, dZ, W, Q, U2, dQ, rho, s):
    """Relative primal and dual residuals of :func:`~.kernels.admm` after a step."""
    rpri = math.sqrt(float(_sq(xp, XW - Z) + _sq(xp, W - Q)))
    scale = max(math.sqrt(float(_sq(xp, XW) + _sq(xp, W))), math.sqrt(float(_sq(xp, Z) + _sq(xp, Q))), 1e-30)
    dual = math.sqrt(float(_sq(xp, X.T @ dZ + s * dQ)))
    return rpri / scale, rho * dual / max(s * rho * math.sqrt(float(_sq(xp, U2))), 1.0)


def admm_xp(X, F, wide, Y, V, omega, eps_abs, mode, n_pen, W, Z, Q, U1, U2,
            rho, s, alpha, tol, tol_dual, max_iter, check_every, adapt_until, tol_inf):
    """:func:`~.kernels.admm` on foreign arrays; ``eps_abs`` is a float64 array on their device.

    Returns ``(iterations, status_code, rho, hist, (W, Z, Q, U1, U2))``: the
    kernel's outputs (``hist`` a numpy array) and the final state.
    """
    xp = namespace(X)
    data = (Y, V, omega, eps_abs)
    penalized = (xp.arange(W.shape[0], device=device_of(W)) < n_pen)[:, None]
    nY = max(math.sqrt(float(_sq(xp, Y))), 1e-30)
    A, B = Z - U1, Q - U2
    hist = np.full((max_iter, 4), -1.0)
    rho_lo, rho_hi = rho * 1e-6, rho * 1e6
    status, it = 1, 0
    for it in range(1, max_iter + 1):
        W, XW = _w_step(X, F, wide, A, B, s)
        hist[it - 1, 2] = rho
        Z, U1, A, dZ, dU = _z_step(xp, XW, Z, U1, data, mode, alpha)
        Q, U2, B, dQ = _q_step(xp, W, Q, U2, penalized, 1.0 / (rho * s), alpha)
        if it % check_every != 0 and it != max_iter:
            continue
        rpri, rdual = _residuals(xp, X, XW, Z, dZ, W, Q, U2, dQ, rho, s)
        hist[it - 1, 0], hist[it - 1, 1] = rpri, rdual
        if rpri <= tol and rdual <= tol_dual:
            hist[it - 1, 3] = _violation(xp, X @ Q, data, mode, nY)
            if hist[it - 1, 3] <= tol:
                status = 0
                break
        if _infeasible(xp, X, dU, W, data, mode, nY, tol_inf):
            status = 2
            break
        if it <= adapt_until and rdual > 0.0 and rpri > 0.0:
            ratio = math.sqrt(rpri / rdual)
            if ratio > 5.0 or ratio < 0.2:
                new = min(max(rho * min(max(ratio, 1e-3), 1e3), rho_lo), rho_hi)
                inv = 1.0 / (new / rho)
                U1, U2 = U1 * inv, U2 * inv
                A, B, rho = Z - U1, Q - U2, new
    return it, status, rho, hist[:it], (W, Z, Q, U1, U2)


def admm_on_device(ref, X, F, wide, Y, V, omega, eps_abs, mode, n_pen, W, Z, Q, U1, U2, *scalars):
    """:func:`~.kernels.admm`'s call and in-place contract on host arrays, run by :func:`admm_xp` on the
    library and device of the array ``ref``: the data go over once, the final state comes back."""
    moved = [on_device(a, ref) for a in (X, F, Y, V, omega, np.asarray(eps_abs, dtype=np.float64))]
    state = [on_device(a, ref) for a in (W, Z, Q, U1, U2)]
    Xd, Fd, Yd, Vd, omega_d, eps_d = moved
    it, code, rho, hist, final = admm_xp(Xd, Fd, wide, Yd, Vd, omega_d, eps_d, mode, n_pen, *state, *scalars)
    for host, dev in zip((W, Z, Q, U1, U2), final):
        host[...] = to_host(dev)
    return it, code, rho, hist
