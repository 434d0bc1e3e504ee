"""Least-squares refit ("debias") of a layer on a fixed support.

``min_W (1/2P) ||X W + 1 b^T - Y||_F^2 + (ridge/2) ||W||_F^2  s.t.  W_ij = 0 off the mask``
separates over output columns: column ``m`` with support ``S`` solves
``(G_SS + ridge I) w_S = C_Sm`` in the Gram form of :class:`Quadratic`.
"""
from __future__ import annotations

import time

import numpy as np
from array_api_compat import device as device_of
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from ..base.backend import as_quadratic_any, intercept_for, is_foreign, like, loss as loss_of, namespace, \
    scatter_rows, take_2d, to_host
from ..base.errors import ShapeError
from ..base.gram import Quadratic
from ..base.result import Result
from ..base.side_by_side import map_side_by_side
from ..base.validation import check_array, check_scalar
from .low_rank import gram_factor
from .refit_cg import iteration_budget, refit_cg, well_conditioned

#: the smallest acceptable squared Cholesky pivot relative to the largest
#: diagonal entry, the relative size of the fallback ridge, and the relative
#: cut-off of eigenvalues in the last-resort pseudo-inverse.
#: The Gram matrix squares the data's condition number, so directions weaker
#: than 1e-10 in G (1e-5 in X) cannot be resolved reliably from it.
RCOND = 1e-10


def check_mask(mask, n_features: int, n_outputs: int) -> np.ndarray:
    """A boolean support of shape ``(n_features, n_outputs)`` (non-zero = kept)."""
    m = check_array(mask, "mask")
    if m.shape != (n_features, n_outputs):
        raise ShapeError(f"mask must have shape ({n_features}, {n_outputs}), got {m.shape}")
    return m != 0


def _psd_solve(A: np.ndarray, B: np.ndarray):
    """Solve ``A X = B`` for symmetric PSD ``A``; returns ``(X, regularized)``.

    1. Cholesky of ``A``, accepted when every squared pivot exceeds ``RCOND``
       times the largest diagonal entry (a well-posed support).
    2. Otherwise (a numerically singular support: collinear inputs) Cholesky
       of ``A + delta I`` with ``delta = RCOND * max(diag A)``. For ``B`` in the
       range of ``A`` (always the case for ``C_S`` and ``G_SS``) this is within
       ``O(delta)`` of the minimum-norm least-squares solution: its loss exceeds
       the minimum by at most ``delta/2 ||X||_F^2``, and it stays finite.
    3. If even that fails (rounding on a badly scaled ``A``), the
       eigen-decomposition pseudo-inverse with eigenvalues below
       ``RCOND * max eigenvalue`` dropped.

    Foreign arrays (e.g. torch tensors) go through :func:`_psd_solve_xp`.
    """
    if is_foreign(A):
        return _psd_solve_xp(A, B)
    scale = max(float(np.max(np.diag(A))), np.finfo(float).tiny)
    try:
        factor = cho_factor(A, lower=True, check_finite=False)
        if float(np.min(np.diag(factor[0]))) ** 2 > RCOND * scale:
            return cho_solve(factor, B, check_finite=False), False
    except LinAlgError:
        pass
    try:
        factor = cho_factor(A + RCOND * scale * np.eye(A.shape[0]), lower=True, check_finite=False)
        return cho_solve(factor, B, check_finite=False), True
    except LinAlgError:
        pass
    lam, V = np.linalg.eigh(A)
    keep = lam > RCOND * max(lam[-1], 0.0)
    inv = np.zeros_like(lam)
    inv[keep] = 1.0 / lam[keep]
    return V @ (inv[:, None] * (V.T @ B)), True


def _cholesky_ok(xp, A, scale: float) -> bool:
    """Whether ``A`` has a Cholesky factor with every squared pivot above ``RCOND * scale``."""
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # noqa: BLE001 - each library raises its own LinAlgError
        return False
    pivot = float(xp.min(xp.linalg.diagonal(L)))
    return pivot == pivot and pivot**2 > RCOND * scale


def _psd_solve_xp(A, B):
    """:func:`_psd_solve` in ``A``'s namespace: the same three steps, with ``xp.linalg.solve``
    (the standard has no triangular solve) once the Cholesky test accepted the matrix."""
    xp = namespace(A, B)
    scale = max(float(xp.max(xp.linalg.diagonal(A))), np.finfo(float).tiny)
    if _cholesky_ok(xp, A, scale):
        return xp.linalg.solve(A, B), False
    eye = xp.eye(A.shape[0], dtype=A.dtype, device=device_of(A))
    if _cholesky_ok(xp, A + RCOND * scale * eye, 0.0):
        return xp.linalg.solve(A + RCOND * scale * eye, B), True
    lam, V = xp.linalg.eigh(A)
    keep = lam > RCOND * max(float(lam[-1]), 0.0)
    inv = xp.where(keep, 1.0 / xp.where(keep, lam, 1.0), 0.0)
    return V @ (inv[:, None] * (V.T @ B)), True


def support_groups(mask: np.ndarray):
    """Yield ``(rows, cols)``: output columns ``cols`` that share the support ``rows``."""
    keys = np.packbits(mask, axis=0).T
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    for cols in np.split(order, bounds):
        yield np.flatnonzero(mask[:, cols[0]]), cols


def refit_quadratic(q: Quadratic, mask: np.ndarray, ridge: float = 0.0, anchor=None, start=None):
    """float64 weights minimizing ``q.loss(W) + ridge/2 ||W - A||^2`` on ``mask``; returns ``(W, info)``.

    ``A`` is ``anchor`` on the mask (e.g. the trained weights; zero when None).
    Where the loss has many minimizers on a support (fewer samples than kept
    inputs, collinear inputs), the one closest to ``A`` is returned: the
    problem is solved for ``U = W - A`` with ``C - G A`` in place of ``C``,
    and ``U`` takes the minimum-norm solution. A determined support gives the
    unique minimizer whatever the anchor.
    Supports wider than the rank bound ``n_samples - intercept`` go through a
    factor of ``G`` (:mod:`.low_rank`). Features of (numerically) zero
    variance, ``G_ii <= RCOND * max G``, keep the anchor's weight (0 without
    one): they cannot change the loss. Where the factorizations would cost
    more than :data:`.refit_cg.MIN_ITERATIONS` products ``G P`` (many
    supports, or wide ones: ``sum |S|^3 / 3`` grows as ``N^4``) and the
    Jacobi-scaled ``G`` is conditioned well enough for them (every support
    has one minimizer, reached within the budget:
    :func:`.refit_cg.well_conditioned`), the columns are first solved
    together by conjugate gradients (:mod:`.refit_cg`, to a relative residual
    of ``1e-8``) and only those that do not converge are factorized;
    ``start`` (e.g. an iterate on this support) is where the conjugate
    gradients begin, and has no other effect. Foreign moments (e.g. torch tensors) are
    refitted on their device by :func:`_refit_xp`.
    """
    if is_foreign(q.G):
        return _refit_xp(q, mask, ridge, anchor)
    N, M = mask.shape
    base = np.zeros((N, M)) if anchor is None else np.where(mask, np.asarray(anchor, dtype=np.float64), 0.0)
    C = q.C if anchor is None else q.C - q.G @ base
    W = base.copy()
    diag = np.diag(q.G)
    alive = diag > RCOND * max(float(diag.max(initial=0.0)), np.finfo(float).tiny)
    rank_bound = q.n_samples - int(q.intercept)
    groups = [(rows[alive[rows]], cols) for rows, cols in support_groups(mask)]
    solved = [(rows, cols) for rows, cols in groups if rows.size]
    wide = [rows.size for rows, _ in solved if rows.size > rank_bound]
    factor = gram_factor(q.G, C, RCOND) if wide else None  # G_SS singular there: the rank-r factor

    def solve(group):
        rows, cols = group
        if rows.size > rank_bound:
            return factor.solve(rows, cols, ridge, _psd_solve), True
        A = q.G[np.ix_(rows, rows)]
        if ridge:
            A = A + ridge * np.eye(rows.size)
        return _psd_solve(A, C[np.ix_(rows, cols)])

    work = sum(rows.size**3 / 3.0 for rows, _ in solved if rows.size <= rank_bound) + rank_bound**2 * sum(wide)
    U0 = None if start is None else np.asarray(start, dtype=np.float64) - base
    solved, n_iterative = _iterative_first(q.G, C, mask & alive[:, None], ridge, solved, W, work, wide, U0)
    n_regularized = 0
    for (rows, cols), (sol, regularized) in zip(solved, map_side_by_side(solve, solved, work)):
        n_regularized += regularized
        W[np.ix_(rows, cols)] += sol
    return W, {"n_groups": len(groups), "n_regularized": n_regularized, "n_iterative": n_iterative}


def _iterative_first(G, C, mask, ridge, solved, W, work, wide, U0):
    """Where :func:`.refit_cg.refit_cg` is expected to cost less than the exact factorizations
    (``work`` flops) and every support has one minimizer (never with wide supports), solve every
    column by it first (from ``U0``) and add the solutions to ``W``; returns the groups still to
    solve exactly (the columns that did not converge) and how many columns were solved by it."""
    budget = iteration_budget(work, len(solved), G.shape[0], mask.shape[1])
    if wide or not budget or not well_conditioned(G, np.flatnonzero(mask.any(axis=1)), budget):
        return solved, 0
    U, converged = refit_cg(G, C, mask, ridge, max_iter=budget, start=U0)
    W[:, converged] += U[:, converged]
    rest = [(rows, cols[~converged[cols]]) for rows, cols in solved]
    return [(rows, cols) for rows, cols in rest if cols.size], int(converged.sum())


def _refit_xp(q: Quadratic, mask, ridge: float, anchor):
    """:func:`refit_quadratic` in the namespace of ``q``: the supports are grouped on the host, each
    group solved on the device (``G_SS`` factorized also when singular), and the columns
    assembled by ``take`` (no integer-array assignment)."""
    xp = namespace(q.G)
    host_mask = to_host(mask)
    base = 0.0 if anchor is None else xp.where(like(host_mask, q.G, dtype=xp.bool), like(anchor, q.G), 0.0)
    C = q.C if anchor is None else q.C - q.G @ base
    N, M = q.G.shape[0], q.C.shape[1]
    diag = to_host(xp.linalg.diagonal(q.G)).astype(np.float64)
    alive = diag > RCOND * max(float(diag.max(initial=0.0)), np.finfo(float).tiny)
    blocks, order = [], []
    n_groups = n_regularized = 0
    for rows, cols in support_groups(host_mask):
        n_groups += 1
        rows = rows[alive[rows]]
        sol = xp.zeros((0, cols.size), dtype=q.G.dtype, device=device_of(q.G))
        if rows.size:
            A = take_2d(q.G, rows, rows)
            if ridge:
                A = A + ridge * xp.eye(rows.size, dtype=A.dtype, device=device_of(A))
            sol, regularized = _psd_solve_xp(A, take_2d(C, rows, cols))
            n_regularized += regularized
        blocks.append(scatter_rows(sol, rows, N))
        order.append(cols)
    where = np.empty(M, dtype=np.int64)
    where[np.concatenate(order)] = np.arange(M)
    W = xp.take(xp.concat(blocks, axis=1), xp.asarray(where, device=device_of(q.G)), axis=1) + base
    return W, {"n_groups": n_groups, "n_regularized": n_regularized, "n_iterative": 0}


def refit(X, Y=None, mask=None, *, intercept: bool = True, ridge: float = 0.0, anchor=None) -> Result:
    """Least squares on a fixed support.

    Solves ``min_{W, b} (1/2P) ||X W + 1 b^T - Y||_F^2 + (ridge/2) ||W - A||_F^2``
    subject to ``W_ij = 0`` wherever ``mask`` is False (``b`` unpenalized;
    ``A`` = ``anchor`` on the mask, 0 without one).

    Parameters
    ----------
    X : array (n_samples, n_features) or GramStats
        Layer inputs, or accumulated statistics (then ``Y=None``).
    Y : array (n_samples, n_outputs) or None
        Targets (pre-activations).
    mask : array (n_features, n_outputs)
        Support; non-zero entries may be non-zero in ``W``.
    intercept : bool
        Fit the bias ``b``.
    ridge : float >= 0
        Optional ridge on the kept weights (toward ``anchor``).
    anchor : array (n_features, n_outputs), optional
        Weights to stay close to, e.g. the trained layer: of the minimizers
        on the support (many when it holds more inputs than there are samples)
        the one nearest to ``anchor`` is returned. Numpy data only.

    Returns
    -------
    Result
        ``W``, ``b`` in the data's dtype; ``objective`` is the loss plus the
        ridge term; ``info`` holds ``loss``, ``ridge``, ``n_groups`` (distinct
        supports solved), ``n_regularized`` (numerically singular supports) and
        ``n_iterative`` (columns solved by conjugate gradients).

    Notes
    -----
    Columns with identical supports share one factorization of ``G_SS + ridge I``
    and are solved together. A rank-deficient ``G_SS`` (collinear or constant
    inputs on the support) gets (to within a relative ``1e-10`` ridge) the
    minimum-norm least-squares solution (nearest to ``anchor`` with one),
    which attains the smallest loss on that support; results are always
    finite. Supports wider than ``n_samples - 1`` are solved through a rank-r
    factor of ``G`` (:mod:`.low_rank`), at ``O(r^2 |S|)`` per support. Where the
    factorizations would cost more than about 150 products ``G W`` (many
    supports, or wide ones) and ``G`` is well conditioned, every column is first
    solved by batched conjugate gradients (relative residual ``1e-8``;
    ``info["n_iterative"]`` columns; the others are factorized).
    """
    start = time.perf_counter()
    if mask is None:
        raise ShapeError("refit needs a mask (n_features, n_outputs)")
    ridge = check_scalar(ridge, "ridge", low=0.0)
    q = as_quadratic_any(X, Y, intercept=intercept)
    support = check_mask(to_host(mask), q.n_features, q.n_outputs)
    if anchor is not None:
        anchor = check_array(to_host(anchor), "anchor")
        if anchor.shape != support.shape:
            raise ShapeError(f"anchor must have the mask's shape {support.shape}, got {anchor.shape}")
    W, info = refit_quadratic(q, support, ridge, anchor)
    A = 0.0 if anchor is None else np.where(support, anchor, 0.0)
    penalty = 0.5 * ridge * float(np.sum((to_host(W) - A) ** 2)) if ridge else 0.0
    loss = loss_of(q, W)
    b = intercept_for(q, W)
    info.update(loss=loss, ridge=ridge)
    xp = namespace(W)
    return Result(
        W=xp.astype(W, q.dtype),
        b=None if b is None else xp.astype(b, q.dtype),
        status="optimal",
        objective=loss + penalty,
        iterations=1,
        time=time.perf_counter() - start,
        info=info,
    )
