"""Proximal operators of the penalties (Numba kernels, float32 and float64).

- l1: ``prox_{t||.||_1}(v) = sign(v) max(|v| - t, 0)`` (soft threshold);
- group (rows): ``prox_{t sum_i ||v_i||_2}(v)_i = v_i max(1 - t / ||v_i||_2, 0)``;
- elastic net ``t (a||.||_1 + (1-a)/2 ||.||^2)``: soft threshold by ``t a``, then
  divide by ``1 + t (1 - a)``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .warmup import register


@njit(cache=True)
def soft_threshold(v, t):
    """Elementwise ``sign(v) * max(|v| - t, 0)`` of a 2-D array (new array)."""
    out = np.empty_like(v)
    n, m = v.shape
    for i in range(n):
        for j in range(m):
            x = v[i, j]
            if x > t:
                out[i, j] = x - t
            elif x < -t:
                out[i, j] = x + t
            else:
                out[i, j] = 0.0
    return out


@njit(cache=True)
def group_soft_threshold(v, t):
    """Row-wise block shrinkage ``v_i * max(1 - t / ||v_i||_2, 0)`` (new array)."""
    out = np.zeros_like(v)
    n, m = v.shape
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += v[i, j] * v[i, j]
        norm = np.sqrt(s)
        if norm > t:
            scale = 1.0 - t / norm
            for j in range(m):
                out[i, j] = v[i, j] * scale
    return out


@njit(cache=True)
def elastic_net_prox(v, t, l1_ratio):
    """Prox of ``t * (a ||.||_1 + (1 - a)/2 ||.||_F^2)`` with ``a = l1_ratio``."""
    out = soft_threshold(v, t * l1_ratio)
    scale = 1.0 / (1.0 + t * (1.0 - l1_ratio))
    n, m = v.shape
    for i in range(n):
        for j in range(m):
            out[i, j] *= scale
    return out


@register
def _warmup(dtype):
    v = np.ones((2, 2), dtype=dtype)
    t = dtype.type(0.5)
    soft_threshold(v, t)
    group_soft_threshold(v, t)
    elastic_net_prox(v, t, dtype.type(0.5))
