"""An l0-constrained layer solver: ADMM with a growing penalty, then exact refits and exchanges.

:func:`l0_admm` validates, scales and starts the problem like :func:`~.iht.iht`,
runs the ADMM iteration of :mod:`.admm_iteration` until the support settles,
refits on the best support found, improves it by exact exchanges
(:mod:`.swaps`) and refits again.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ..base.backend import (
    as_quadratic_any, check_start, intercept_for, is_foreign, like, loss, namespace, to_host,
    to_host_quadratic, zero_fraction,
)
from ..base.errors import ConvergenceWarning, ParameterError
from ..base.gram import Quadratic
from ..base.patterns import Pattern, parse_pattern
from ..base.result import Result
from ..base.validation import check_bool, check_scalar
from .admm_iteration import admm, spectral_scaling
from .iteration import jacobi_scaling
from .projection import support_mask
from .refit import _psd_solve, refit_quadratic
from .swaps import swap_refine

#: patterns whose supports can be improved by exchanging single entries
ENTRY_WISE = ("unstructured", "per_output", "n:m")


def l0_admm(
    X,
    Y=None,
    *,
    sparsity=None,
    pattern="unstructured",
    intercept: bool = True,
    W0=None,
    max_iter: int = 500,
    tol: float = 1e-4,
    rho=(0.01, 0.03, 0.1),
    swaps: bool = True,
) -> Result:
    """Sparse least squares under a pattern by ADMM on the l0-constrained problem.

    Approximately solves the nonconvex problem
    ``min_{W in pattern, b} (1/2P) ||X W + 1 b^T - Y||_F^2``
    (``pattern`` and the counting rule as in :func:`project`), usually to a
    markedly lower loss than :func:`iht`.

    Parameters
    ----------
    X : array (n_samples, n_features) or GramStats
        Layer inputs, or accumulated statistics (then ``Y=None``). Arrays of
        any array-API library (e.g. torch tensors on a GPU) are solved on
        their device in their dtype, and ``W``, ``b`` come back as such
        arrays; only the exchanges (``swaps``) run on the host.
    Y : array (n_samples, n_outputs) or None
        Targets, e.g. the dense layer's pre-activations.
    sparsity : float in [0, 1) or None
        Target fraction of zeros (None for ``"n:m"`` patterns).
    pattern : str
        ``"unstructured"``, ``"per_output"``, ``"n:m"``, ``"input_rows"``, ``"output_columns"``.
    intercept : bool
        Fit an unpenalized bias.
    W0 : array (n_features, n_outputs), optional
        Weights to start from, e.g. the trained layer; the start is the better
        of the least-squares refits on ``project(W0)`` and on the projection
        by scores ``sqrt(G_ii) |W0_ij|`` (as in :func:`iht`). Without it, the
        same from the dense least-squares solution.
    max_iter : int
        Limit on the ADMM iterations.
    tol : float
        Stop when the support did not change over the last three iterations
        and the primal residual ``||U - D|| / ||D||`` and the relative step
        ``||D - D_prev|| / ||D||`` (Notes) are both at most ``tol``.
    rho : float > 0 or sequence of them
        Initial penalty, relative to the unit diagonal of the scaled Gram
        matrix (its eigenvalues average 1). With several values, one ADMM run
        per value (sharing one eigendecomposition), and the best support of
        all runs goes on: a few restarts of a nonconvex method, each of which
        can only lower the result.
    swaps : bool
        For entry-wise patterns (unstructured, per-output, N:M), improve each
        output column's support by exact exchanges of one kept and one
        dropped input of the same comparison group while that lowers its
        refitted loss (:func:`~layertrim.solvers.threshold.swaps.swap_refine`).
        Whole rows or columns have no such exchanges: there it does nothing.

    Returns
    -------
    Result
        ``objective`` is the loss; ``history`` holds the traces of the ADMM run that found that support:
        ``objective`` (the loss of ``D``), ``primal``, ``step`` and ``rho``;
        ``info`` holds ``loss_start`` (the start's refitted loss),
        ``loss_admm`` (the refitted loss of the best ADMM support),
        ``source`` (``"admm"`` or ``"start"``: the support the exchanges
        started from), ``rho_start`` and ``rho_final`` (that run's first and
        last penalty), ``swap_moves``, ``pattern``, ``sparsity``;
        ``iterations`` counts the iterations of all runs.

    Notes
    -----
    In the scaled variables ``U = S W``, ``S = diag(sqrt(G_ii))``, the loss is
    ``g(U) = 1/2 tr(U^T A U) - tr(B^T U) + const`` with ``A = S^-1 G S^-1``,
    ``B = S^-1 C`` (centered when ``intercept``). ADMM on
    ``min g(U) s.t. U = D, D in pattern`` iterates

    ``U = (A + rho I)^-1 (B - V + rho D)``, ``D = H(U + V / rho)``,
    ``V = V + rho (U - D)``,

    with ``H`` the Euclidean projection onto the pattern, starting from
    ``D`` = the scaled start and ``V = 0``, so that the first steps see
    nearly the dense solution and choose among its entries. One eigendecomposition
    of ``A`` gives ``(A + rho I)^-1`` for every ``rho``. Every three
    iterations ``rho`` grows by 1.3, 1.2 or 1.1 as at least 10%, at least
    0.5% or less of the support changed (as in ALPS, Meng et al. 2024): a
    growing penalty pulls ``U`` onto ``D`` and freezes the support. Then
    ``W`` is the least-squares solution on the better of two supports, the
    last ``D``'s and that of the ``D`` of least loss seen, or the start if
    that is lower still; exchanges and a final least-squares solve follow. Each of these steps keeps the loss or
    lowers it, so the objective is never above the start's.
    The bias is ``b = y_mean - x_mean W``.
    """
    start = time.perf_counter()
    max_iter = check_scalar(max_iter, "max_iter", low=0, integer=True)
    tol = check_scalar(tol, "tol", low=0.0)
    rhos = _check_rhos(rho)
    swaps = check_bool(swaps, "swaps")
    pat = parse_pattern(pattern)
    s = pat.resolve_sparsity(sparsity)
    q = as_quadratic_any(X, Y, intercept=intercept)
    N, M = q.n_features, q.n_outputs
    pat.check_shape(N, M)
    W0 = _psd_solve(q.G, q.C)[0] if W0 is None else check_start(W0, N, M, q.G)

    _, sqrt_d, L_D = jacobi_scaling(q)
    W, mask, f_start = start_weights(q, pat, s, sqrt_d, W0)
    if L_D == 0.0:  # every input is constant: W = 0 is optimal
        history, status, iterations = {}, "optimal", 0
        info = {"loss_admm": f_start, "source": "start", "rho_start": rhos[0], "rho_final": rhos[0]}
    else:
        W, mask, history, status, iterations, info = _admm_and_refit(
            q, W, mask, f_start, sqrt_d, pat, s, rhos=rhos, max_iter=max_iter, tol=tol, anchor=W0
        )
    moves = 0
    if swaps and pat.kind in ENTRY_WISE and L_D > 0:
        W, moves = _exchange(q, W, mask, pat, anchor=W0)
    if status == "max_iter":
        warnings.warn(
            f"l0_admm stopped after max_iter={max_iter} iterations before the support settled "
            f"(tol={tol:g}); the result is feasible and no worse than the start",
            ConvergenceWarning,
            stacklevel=2,
        )
    info.update(loss_start=f_start, swap_moves=moves, pattern=str(pat), sparsity=zero_fraction(W))
    b = intercept_for(q, W)
    xp = namespace(W)
    return Result(
        W=xp.astype(W, q.dtype),
        b=None if b is None else xp.astype(b, q.dtype),
        status=status,
        objective=loss(q, W),
        iterations=iterations,
        time=time.perf_counter() - start,
        history=history,
        info=info,
    )


def start_weights(q: Quadratic, pattern: Pattern, sparsity: float, sqrt_d, W0):
    """``(W, mask, loss)``: the better of the refits on the projections of ``W0`` by ``|W0|``
    (magnitude) and by ``sqrt(G_ii) |W0_ij|`` (Wanda-like scores), each the least-squares
    solution nearest to ``W0``; ``mask`` is the support chosen."""
    xp = namespace(W0)
    best = None
    for scores in (xp.abs(W0), sqrt_d[:, None] * xp.abs(W0)):
        mask = support_mask(scores, pattern, sparsity)
        W, _ = refit_quadratic(q, mask, anchor=W0)
        f = loss(q, W)
        if best is None or f < best[2]:
            best = (W, mask, f)
    return best


def _check_rhos(rho) -> tuple:
    """One initial penalty or a non-empty sequence of them, each a positive real."""
    values = tuple(rho) if isinstance(rho, (list, tuple, np.ndarray)) else (rho,)
    if not values:
        raise ParameterError("rho must be a positive number or a non-empty sequence of them")
    return tuple(check_scalar(r, "rho", low=0.0, low_open=True) for r in values)


def _admm_and_refit(q: Quadratic, W, mask, f_start, sqrt_d, pattern: Pattern, sparsity, *, rhos, max_iter, tol,
                    anchor):
    """One ADMM run from ``W`` per initial penalty, then the least-squares refit (nearest to
    ``anchor``) of the best support found (the last one and the one of least loss of every run)
    if it beats ``W``.

    Returns ``(W, mask, history, status, iterations, info)``: history and status of the run that
    found the support, the iterations of all runs, ``info`` with ``loss_admm``, ``source``,
    ``rho_start`` and ``rho_final``.
    """
    spectral = spectral_scaling(q, sqrt_d)
    chosen, iterations = None, 0
    for rho in rhos:
        final, best, history, status = admm(
            q, W, sqrt_d, spectral, pattern, sparsity, rho=rho, max_iter=max_iter, tol=tol
        )
        iterations += len(history["objective"])
        xp = namespace(final)
        for candidate in (final, best) if not bool(xp.all(final == best)) else (final,):
            W_ref, _ = refit_quadratic(q, candidate, anchor=anchor)
            f_ref = loss(q, W_ref)
            if chosen is None or f_ref < chosen[0]:
                chosen = (f_ref, W_ref, candidate, history, status, rho)
    f_admm, W_admm, mask_admm, history, status, rho = chosen
    rho_final = float(history["rho"][-1]) if len(history["rho"]) else rho
    info = {"loss_admm": f_admm, "source": "admm" if f_admm <= f_start else "start",
            "rho_start": rho, "rho_final": rho_final}
    if f_admm <= f_start:
        return W_admm, mask_admm, history, status, iterations, info
    return W, mask, history, status, iterations, info


def _exchange(q: Quadratic, W, mask, pattern: Pattern, anchor):
    """Exchanges on ``mask`` (the support of ``W``; on the host for foreign arrays), then least
    squares on the result (nearest to ``anchor``) if no worse: ``(W, moves)``."""
    N = q.n_features
    groups = np.arange(N) // pattern.m if pattern.kind == "n:m" else np.zeros(N, dtype=np.int64)
    refined, moves = swap_refine(to_host_quadratic(q), to_host(mask), groups)
    mask = like(refined, mask) if is_foreign(mask) else refined
    if moves:
        W_ref, _ = refit_quadratic(q, mask, anchor=anchor)
        if loss(q, W_ref) <= loss(q, W):
            W = W_ref
    return W, moves
