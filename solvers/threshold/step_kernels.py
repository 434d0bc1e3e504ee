"""Fused elementwise work of the hard-thresholding iteration, for numpy arrays.

Between its products ``G W`` (BLAS), an iteration of :func:`~.iteration.iterate`
works elementwise over ``(N, M)`` arrays: the gradient point and its scores,
the loss, the momentum. Written with numpy operators each formula is several
passes over memory and as many temporaries; these kernels make each one pass.
Arrays of other libraries keep the operator form (:mod:`.iteration`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register
from ..dc.kernels import extrapolate


@njit(cache=True)
def gradient_point(Z, GZ, C, step, sqrt_d):
    """``V = Z - diag(step) (GZ - C)`` and its scores ``S = diag(sqrt_d) |V|``, in one pass."""
    n, m = Z.shape
    V = np.empty((n, m))
    S = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            v = Z[i, j] - step[i] * (GZ[i, j] - C[i, j])
            V[i, j] = v
            S[i, j] = sqrt_d[i] * abs(v)
    return V, S


@njit(cache=True)
def quadratic_terms(W, GW, C):
    """``1/2 <W, G W> - <C, W>`` from ``G W``, in one pass (float64 sums)."""
    n, m = W.shape
    quad = 0.0
    lin = 0.0
    for i in range(n):
        for j in range(m):
            quad += W[i, j] * GW[i, j]
            lin += C[i, j] * W[i, j]
    return 0.5 * quad - lin


def momentum(new: np.ndarray, old: np.ndarray, beta: float) -> np.ndarray:
    """``new + beta (new - old)`` in one pass."""
    out = np.empty_like(new)
    extrapolate(new, old, beta, out)
    return out


@register
def _warm(dtype) -> None:
    """Compile the kernels (float64 only: the iteration runs in float64 on numpy arrays)."""
    A = np.ones((2, 3))
    d = np.ones(2)
    gradient_point(A, A, A, d, d)
    quadratic_terms(A, A, A)
    momentum(A, A, 0.5)
