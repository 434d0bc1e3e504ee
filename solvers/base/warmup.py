"""Ahead-of-use compilation of the Numba kernels.

Each kernel module registers a function ``f(dtype)`` that runs its kernels
once on tiny arrays; :func:`warmup` calls all of them for float32 and float64.
With ``cache=True`` the machine code is stored on disk, so later processes
only load it.
"""
from __future__ import annotations

import importlib
from functools import partial

import numpy as np

_WARMUPS = []

#: modules holding kernels, imported by warmup() so their registrations run
KERNEL_MODULES: list[str] = [
    "base.prox", "grda", "dc.kernels", "nettrim.steps", "nettrim.kernels",
    "lasso.duality", "lasso.cd_kernels", "lasso.cd_sweeps",
    "threshold.projection", "threshold.permutation", "threshold.swaps", "threshold.refit_cg",
    "threshold.step_kernels",
]


def register(fn):
    """Decorator: add ``fn(dtype)`` to the functions :func:`warmup` calls."""
    _WARMUPS.append(fn)
    return fn


def warmup_jobs(dtypes=(np.float32, np.float64)) -> list:
    """One job per kernel module: ``(name, job)`` with ``job()`` running its kernels for every dtype.

    Processes that share a Numba cache can split these jobs between them
    (each one compiles what the other loads), as the test suite's workers do.
    """
    for name in KERNEL_MODULES:
        importlib.import_module(f"layertrim.solvers.{name}")
    return [(fn.__module__, partial(_run, fn, tuple(np.dtype(d) for d in dtypes))) for fn in _WARMUPS]


def _run(fn, dtypes) -> None:
    for dtype in dtypes:
        fn(dtype)


def warmup(dtypes=(np.float32, np.float64)) -> int:
    """Compile (or load from cache) every registered kernel; returns how many ran."""
    jobs = warmup_jobs(dtypes)
    for _, job in jobs:
        job()
    return len(jobs)
