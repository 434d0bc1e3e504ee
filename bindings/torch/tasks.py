"""Where layer problems are solved: inline, on a ``concurrent.futures`` executor, or on a Dask cluster.

A layer with ``g`` groups whose outputs are split into ``k`` column blocks
is ``g k`` independent tasks (:func:`column_blocks`). With a
``dask.distributed.Client`` the statistics a layer's blocks share (its Gram
matrix ``X^T X``, the largest object of the problem) are scattered once to
every worker, not sent with each task, and a task lost with its worker is
resubmitted (``retries``); Ray and other engines plug in through any object
with the ``concurrent.futures.Executor`` ``submit`` method.
"""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from layertrim.solvers.base.errors import ParameterError

#: times Dask resubmits a task whose worker died
RETRIES = 2


def is_dask_client(executor) -> bool:
    """True for a ``dask.distributed.Client`` (it scatters data to workers)."""
    return callable(getattr(executor, "scatter", None)) and callable(getattr(executor, "gather", None))


class TaskPool:
    """Submit solver tasks to ``executor`` (``None``: run each at once in this process)."""

    def __init__(self, executor=None):
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise ParameterError(
                f"executor must have a submit() method (a concurrent.futures.Executor or a "
                f"dask.distributed.Client), got {type(executor).__name__}"
            )
        self.executor = executor
        self.dask = is_dask_client(executor)

    def share(self, obj):
        """``obj`` as an argument of many tasks: on Dask a future of its copy on every worker."""
        return self.executor.scatter(obj, broadcast=True, hash=False) if self.dask else obj

    def submit(self, fn, *args, **kwargs) -> Future:
        """A future of ``fn(*args, **kwargs)``."""
        if self.dask:
            return self.executor.submit(fn, *args, retries=RETRIES, pure=False, **kwargs)
        if self.executor is not None:
            return self.executor.submit(fn, *args, **kwargs)
        done = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def column_blocks(n_outputs: int, k: int) -> list:
    """``min(k, M)`` contiguous slices of nearly equal size covering ``range(M)``; ``[None]`` for one block."""
    if k <= 1 or n_outputs <= 1:
        return [None]
    edges = np.linspace(0, n_outputs, min(k, n_outputs) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
