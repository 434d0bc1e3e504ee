"""map_side_by_side: independent solves on parallel single-BLAS-thread tasks, same results."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from layertrim.solvers.base import side_by_side
from layertrim.solvers.base.gram import GramStats
from layertrim.solvers.threshold.refit import refit_quadratic


def _blas_threads():
    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def _record(x):
    return x * x, threading.get_ident(), _blas_threads()


def test_items_run_in_order_on_single_blas_threads_in_parallel():
    with threadpool_limits(limits=2, user_api="blas"):
        out = side_by_side.map_side_by_side(_record, list(range(40)), work=1e12)
        assert _blas_threads() == 2  # restored
    assert [v for v, _, _ in out] == [x * x for x in range(40)]
    assert {n for _, _, n in out} == {1}
    assert threading.get_ident() not in {t for _, t, _ in out}


@pytest.mark.parametrize("case", ["one thread", "little work", "few items", "off the main thread"])
def test_items_run_one_after_another_on_the_calling_thread(case):
    items, work = list(range(40)), 1e12
    if case == "little work":
        work = side_by_side.MIN_WORK / 2
    if case == "few items":
        items = items[:3]
    with threadpool_limits(limits=1 if case == "one thread" else 2, user_api="blas"):
        if case == "off the main thread":
            with ThreadPoolExecutor(1) as pool:
                caller, out = pool.submit(lambda: (threading.get_ident(),
                                                   side_by_side.map_side_by_side(_record, items, work))).result()
        else:
            caller, out = threading.get_ident(), side_by_side.map_side_by_side(_record, items, work)
    assert [v for v, _, _ in out] == [x * x for x in items]
    assert {t for _, t, _ in out} == {caller}


@pytest.mark.parametrize("P, N, M", [(60, 120, 30), (400, 80, 30)])  # wider than the rank / determined supports
def test_refit_side_by_side_equals_one_after_another(rng, monkeypatch, P, N, M):
    X, Y = rng.standard_normal((P, N)), rng.standard_normal((P, M))
    q = GramStats.from_arrays(X, Y).quadratic()
    mask, anchor = rng.random((N, M)) < 0.5, rng.standard_normal((N, M))
    with threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(side_by_side, "MIN_WORK", 0.0)
        W_par, info_par = refit_quadratic(q, mask, anchor=anchor)
        monkeypatch.setattr(side_by_side, "MIN_WORK", np.inf)
        W_seq, info_seq = refit_quadratic(q, mask, anchor=anchor)
    assert info_par == info_seq
    # the same LAPACK calls on one BLAS thread or two: the blocking may round differently
    np.testing.assert_allclose(W_par, W_seq, rtol=1e-10, atol=1e-12 * np.abs(W_seq).max())
