"""Refits of many wide supports at once by batched, Jacobi-preconditioned conjugate gradients.

An exact refit factorizes ``G_SS`` once per distinct support: ``sum |S|^3 / 3``
flops, ``M N^3 / 24`` for an ``N x N`` layer kept at 50%. That grows as ``N^4``
and runs at a fraction of the machine's GEMM rate (one small factorization
per column). Conjugate gradients solve every column's system

``(G_SS + ridge I) u_S = b_S``   (``S`` = the column's support, ``u = 0`` off it)

together: each iteration costs one product ``G P`` (``2 N^2 M`` flops, one
GEMM) and the preconditioner is ``diag(G)``. A column stops when its residual
``r = b_S - (G_SS + ridge I) u_S`` has ``||r|| <= rtol ||b_S||``; then

``||u - u*|| / ||u*|| <= cond(G_SS + ridge I) rtol``  and
``f(u) - f(u*) = 1/2 r^T (G_SS + ridge I)^-1 r <= ||r||^2 / (2 lambda_min)``.

The stop is confirmed on the residual recomputed from ``u`` (the recursive
one drifts by rounding); columns that miss it within the iteration budget
are left to the exact refit.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..base.warmup import register

#: relative residual at which a column stops
RTOL = 1e-8
#: what the exact refit costs, in flops of a large GEMM: each flop of its per-support
#: factorizations counts this many times, and each support adds :data:`SUPPORT_FLOPS` (the
#: gathers, the LAPACK calls and their Python around them). Fitted on 2 OpenBLAS threads:
#: 768 supports of 96 rows took 0.30 s (0.39 ms each, 0.02 ms of it factorizing) and 1,024
#: of 512 took 4.4 s, against GEMMs at 30-65 GFLOP/s.
EXACT_FLOP_COST = 4.0
SUPPORT_FLOPS = 1.5e7
#: the fixed cost of one iteration (its Python and kernel calls, about 50 us) in the same flops
ITERATION_FLOPS = 2.5e6
#: the smallest iteration budget for which the iterative refit is tried. On the layers of
#: random-init ViT and ResNet-18 networks (``benchmarks/bench_architectures.py``) budgets near
#: 60 left most columns unconverged; the large layers of ``benchmarks/bench_scaling.py`` need
#: about 100 iterations and have budgets of 169 (N = 2048) and more.
MIN_ITERATIONS = 150
#: iterations between the checks that drop columns converging too slowly for the budget
CHECK_EVERY = 16
#: the largest condition number of the Jacobi-scaled Gram matrix for which it is tried
COND_LIMIT = 1e8
#: iterations to RTOL per square root of that condition number: about 100 for 26 on the layers of
#: ``bench_scaling.py``; ResNet-18's 64-input convs (sqrt 32) converged within 128 (random init)
ITERATIONS_PER_ROOT = 4.0


def iteration_budget(factor_flops: float, n_supports: int, n_features: int, n_outputs: int) -> int:
    """Iterations that cost as much as the exact refit less the conditioning check,
    ``(EXACT_FLOP_COST (factor_flops - 4/3 N^3) + SUPPORT_FLOPS * n_supports) / (2 N^2 M +
    ITERATION_FLOPS)``, or 0 (stay exact) when that is under :data:`MIN_ITERATIONS`."""
    exact = EXACT_FLOP_COST * factor_flops + SUPPORT_FLOPS * n_supports
    check = EXACT_FLOP_COST * 4.0 / 3.0 * n_features**3  # :func:`well_conditioned`
    budget = int((exact - check) / (2.0 * n_features**2 * n_outputs + ITERATION_FLOPS))
    return budget if budget >= MIN_ITERATIONS else 0


def well_conditioned(G: np.ndarray, rows: np.ndarray, budget: int) -> bool:
    """Whether ``H = D^-1/2 G_RR D^-1/2`` (``R = rows``, ``D = diag(G_RR)``) has a condition number
    ``kappa`` of at most :data:`COND_LIMIT` and with ``ITERATIONS_PER_ROOT sqrt(kappa) <= budget``.
    By Cauchy's interlacing every principal submatrix ``H_SS`` then does too: each support has
    one minimizer, and the iteration may reach it within the budget. Costs one symmetric
    eigenvalue computation (``~4/3 |R|^3`` flops)."""
    if rows.size == 0:
        return True
    h = 1.0 / np.sqrt(np.diag(G)[rows])
    lam = np.linalg.eigvalsh(G[np.ix_(rows, rows)] * h[:, None] * h[None, :])
    limit = min(COND_LIMIT, (budget / ITERATIONS_PER_ROOT) ** 2)
    return bool(lam[0] * limit >= lam[-1])


def refit_cg(G: np.ndarray, B: np.ndarray, mask: np.ndarray, ridge: float = 0.0, *, max_iter: int,
             rtol: float = RTOL, start=None):
    """Solve ``(G_SS + ridge I) u_S = B_Sm`` for every column ``m`` (``S = mask[:, m]``).

    Starts from ``start`` on the mask (zero when None). Returns ``(U,
    converged)``: ``U (N, M)`` zero off the mask, and a boolean ``(M,)`` that
    is True where the recomputed residual meets ``rtol`` (columns with an
    empty support or ``B_S = 0`` are solved by ``u = 0``). ``diag(G)`` must be
    positive on the mask.
    """
    N, M = mask.shape
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    inv_d = np.zeros(N)
    rows = mask.any(axis=1)
    inv_d[rows] = 1.0 / np.diag(G)[rows]
    target = rtol * np.linalg.norm(np.where(mask, B, 0.0), axis=0)
    U = np.zeros((N, M)) if start is None else np.where(mask, start, 0.0)
    R = _residual(G, B, mask, ridge, U)
    active = np.flatnonzero(np.linalg.norm(R, axis=0) > target)
    if active.size:
        _iterate(G, mask, inv_d, ridge, U, R, target, active, max_iter)
        R = _residual(G, B, mask, ridge, U)
    return U, np.linalg.norm(R, axis=0) <= target


def _residual(G, B, mask, ridge, U):
    """``B - (G + ridge I) U`` on the mask, zero off it."""
    return np.where(mask, B - G @ U - ridge * U, 0.0)


def _iterate(G, mask, inv_d, ridge, U, R, target, cols, max_iter):
    """Run CG on the columns ``cols`` of ``U`` (updated in place) from their residuals ``R``.

    Columns leave the working block (once they are a quarter of it) when they
    converge, or when, every :data:`CHECK_EVERY` iterations, their mean rate so
    far would not bring them to the target within ``max_iter``: those are left to
    the exact refit after a fraction of the budget."""
    Kc, Uc, Rc, P = (np.ascontiguousarray(a[:, cols]) for a in (mask, U, R, inv_d[:, None] * R))
    tc = target[cols] ** 2
    rz, rr0 = np.einsum("ij,ij->j", Rc, P), np.einsum("ij,ij->j", Rc, Rc)
    done = np.zeros(cols.size, dtype=bool)
    for it in range(1, max_iter + 1):
        GP = G @ P
        alpha = _ratio(rz, _masked_product(GP, P, Kc, ridge))
        rr, rz_next = _step(Uc, Rc, P, GP, alpha, inv_d)
        done |= rr <= tc
        if it % CHECK_EVERY == 0:
            done |= _out_of_reach(rr, rr0, tc, it, max_iter)
        if done.all():
            break
        _direction(P, Rc, inv_d, _ratio(rz_next, rz))
        rz = rz_next
        if done.sum() * 4 >= done.size:  # write back the finished columns, go on with the rest
            U[:, cols] = Uc
            live = ~done
            Kc, Uc, Rc, P = (np.ascontiguousarray(a[:, live]) for a in (Kc, Uc, Rc, P))
            cols, tc, rz, rr0, done = cols[live], tc[live], rz[live], rr0[live], done[live]
    U[:, cols] = Uc


def _out_of_reach(rr, rr0, tc, it: int, max_iter: int) -> np.ndarray:
    """Columns whose squared residual, shrinking by its mean factor so far ``(rr / rr0)^(1/it)``
    per iteration, would still be above ``tc`` after ``max_iter`` iterations."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rate = np.log(rr / rr0) / it
        remaining = np.log(tc / rr) / log_rate  # iterations still needed at that rate
    return (log_rate >= 0) | (it + remaining > max_iter)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` with 0 where ``b`` is 0 (a column whose residual is exactly zero stays put)."""
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


@njit(cache=True)
def _masked_product(GP, P, K, ridge):
    """``GP <- K * (GP + ridge P)`` in place; returns ``p_m^T GP_m`` per column."""
    n, m = GP.shape
    out = np.zeros(m)
    for i in range(n):
        for j in range(m):
            v = (GP[i, j] + ridge * P[i, j]) if K[i, j] else 0.0
            GP[i, j] = v
            out[j] += P[i, j] * v
    return out


@njit(cache=True)
def _step(U, R, P, GP, alpha, inv_d):
    """``U += alpha P``, ``R -= alpha GP`` in place; returns ``(||r_m||^2, r_m^T D^-1 r_m)`` per column."""
    n, m = U.shape
    rr = np.zeros(m)
    rz = np.zeros(m)
    for i in range(n):
        for j in range(m):
            U[i, j] += alpha[j] * P[i, j]
            r = R[i, j] - alpha[j] * GP[i, j]
            R[i, j] = r
            rr[j] += r * r
            rz[j] += r * r * inv_d[i]
    return rr, rz


@njit(cache=True)
def _direction(P, R, inv_d, beta):
    """``P <- D^-1 R + beta P`` in place."""
    n, m = P.shape
    for i in range(n):
        for j in range(m):
            P[i, j] = inv_d[i] * R[i, j] + beta[j] * P[i, j]


@register
def _warm(dtype) -> None:
    """Compile the kernels (float64 only: the refit works in float64 whatever the data's dtype);
    a tridiagonal ``G`` takes more than one iteration, so every kernel runs."""
    G = 2.0 * np.eye(3) + np.eye(3, k=1) + np.eye(3, k=-1)
    refit_cg(G, np.ones((3, 2)), np.ones((3, 2), dtype=bool), max_iter=3)
