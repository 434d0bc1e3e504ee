"""Thread-pool control: torch and numpy each start a BLAS pool, and on few cores
the two oversubscribe the machine (slowdowns of 30x were seen on 2 cores)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def limit_threads(n: int = 1):
    """Run the block with at most ``n`` threads in torch and in numpy's BLAS."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
