"""Ahead-of-use compilation of the Numba kernels.

Each kernel module registers a function ``f(dtype)`` that runs its kernels
once on tiny arrays; :func:`warmup` calls all of them for float32 and float64.
With ``cache=True`` the machine code is stored on disk, so later processes
only load it.
"""
from __future__ import annotations

import importlib

import numpy as np

_WARMUPS = []

#: modules holding kernels, imported by warmup() so their registrations run
KERNEL_MODULES: list[str] = [
    "base.prox", "grda", "dc.kernels", "nettrim.steps", "nettrim.kernels",
    "lasso.duality", "lasso.cd_kernels", "lasso.cd_sweeps",
    "threshold.projection", "threshold.permutation", "threshold.swaps",
]


def register(fn):
    """Decorator: add ``fn(dtype)`` to the functions :func:`warmup` calls."""
    _WARMUPS.append(fn)
    return fn


def warmup(dtypes=(np.float32, np.float64)) -> int:
    """Compile (or load from cache) every registered kernel; returns how many ran."""
    for name in KERNEL_MODULES:
        importlib.import_module(f"layertrim.solvers.{name}")
    for fn in _WARMUPS:
        for dtype in dtypes:
            fn(np.dtype(dtype))
    return len(_WARMUPS)
