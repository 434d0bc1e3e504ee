"""Independent dense solves side by side: one BLAS thread each, on as many threads as BLAS has.

OpenBLAS's threaded Cholesky factorization of a few hundred rows is slower
than its single-threaded one (``n = 511`` on 2 cores: 3.6 ms on 2 threads,
1.8 ms on 1), and a refit is one such factorization per output column. So
many independent solves finish sooner as single-threaded tasks running in
parallel; LAPACK and BLAS release the GIL while they compute.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

#: below this many floating-point operations in all, the items run one after another
MIN_WORK = 5e7

_controller: list = []


def _blas() -> ThreadpoolController:
    if not _controller:
        _controller.append(ThreadpoolController().select(user_api="blas"))
    return _controller[0]


def map_side_by_side(fn, items: list, work: float) -> list:
    """``[fn(x) for x in items]``, on ``k`` threads of one BLAS thread each.

    ``k`` is the BLAS thread count; the items run one after another (each
    with every BLAS thread) when ``k`` is 1, when there are fewer than ``2k``
    items, when ``work`` (their flops) is below :data:`MIN_WORK`, or off the
    main thread (the BLAS limit is process-wide: tasks of an executor leave it
    alone).
    """
    blas = _blas()
    k = max((lib["num_threads"] for lib in blas.info()), default=1)
    if k <= 1 or len(items) < 2 * k or work < MIN_WORK or threading.current_thread() is not threading.main_thread():
        return [fn(x) for x in items]
    with blas.limit(limits=1), ThreadPoolExecutor(k) as pool:
        return list(pool.map(fn, items))
