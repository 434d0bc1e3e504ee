"""The ADMM iteration of :func:`~.admm_l0.l0_admm` on the Jacobi-scaled Gram form.

With ``S = diag(sqrt(G_ii))``, the scaled weights ``U = S W`` and the scaled
problem ``g(U) = 1/2 tr(U^T A U) - tr(B^T U)``, ``A = S^-1 G S^-1`` (unit
diagonal), ``B = S^-1 C``, the splitting ``U = D`` with ``D`` in the pattern
gives the augmented Lagrangian
``g(U) + <V, U - D> + rho/2 ||U - D||_F^2`` and the steps

- ``U = (A + rho I)^-1 (B - V + rho D)``;
- ``D = H(U + V / rho)``, the Euclidean projection onto the pattern (in the
  original weights: the projection in the norm ``sum_ij G_ii W_ij^2``);
- ``V = V + rho (U - D)``.

One eigendecomposition ``A = Q diag(lam) Q^T`` serves every ``rho``:
``(A + rho I)^-1 = Q diag(1 / (lam + rho)) Q^T``. The iteration runs in both
bases, carrying ``Q^T D`` and ``Q^T V`` along, so a step costs two products
with ``Q`` whatever ``rho`` is. The iteration is written against the array
namespace of the moments (numpy, or e.g. torch on any device).
"""
from __future__ import annotations

import numpy as np

from ..base.backend import fro, is_foreign, namespace
from ..base.gram import Quadratic
from ..base.patterns import Pattern
from .projection import support_mask

#: the penalty grows by one of these factors every CHECK_EVERY iterations, by how
#: much of the support changed since the last check (fraction of the kept entries):
#: at least 10%, at least 0.5%, less (the schedule of ALPS, Meng et al. 2024)
GROWTH = ((0.1, 1.3), (0.005, 1.2), (0.0, 1.1))
CHECK_EVERY = 3


def spectral_scaling(q: Quadratic, sqrt_d: np.ndarray):
    """``(alive, lam, Q, h)``: the inputs of non-zero variance, the eigenpairs of
    ``A = S^-1 G S^-1`` restricted to them, and ``h = 1 / sqrt(G_ii)`` on them."""
    alive = sqrt_d > 0
    h = 1.0 / sqrt_d[alive]
    if is_foreign(q.G):
        xp = namespace(q.G)
        lam, Q = xp.linalg.eigh(q.G[alive][:, alive] * h[:, None] * h[None, :])
        return alive, xp.clip(lam, min=0.0), Q, h
    lam, Q = np.linalg.eigh(q.G[np.ix_(alive, alive)] * h[:, None] * h[None, :])
    return alive, np.maximum(lam, 0.0), Q, h


def growth_factor(changed: float) -> float:
    """The penalty's growth factor after a fraction ``changed`` of the support moved."""
    for threshold, factor in GROWTH:
        if changed >= threshold:
            return factor
    return GROWTH[-1][1]


def admm(q: Quadratic, W_start, sqrt_d, spectral, pattern: Pattern, sparsity: float, *, rho: float, max_iter: int,
         tol: float):
    """Run the iteration from ``D = S W_start``, ``V = 0``; ``spectral`` is :func:`spectral_scaling`'s output.

    Inputs of zero variance keep ``U = D = V = 0`` (score 0 in the projection,
    so they hold support slots only by the fixed tie rule, and never flicker).
    Returns ``(final_mask, best_mask, history, status)``: the support of the
    last ``D``, the support of the ``D`` of least loss ``g(D)`` seen, the
    per-iteration traces (``objective`` = ``g(D)``, ``primal`` =
    ``||U - D|| / ||D||``, ``step`` = ``||D - D_prev|| / ||D||``, ``rho``),
    and ``"optimal"`` (the support was unchanged over the last
    ``CHECK_EVERY`` iterations and both residuals are at most ``tol``) or
    ``"max_iter"``.
    """
    alive, lam, Q, h = spectral
    xp = namespace(Q)
    QB = Q.T @ (q.C[alive] * h[:, None])
    const = 0.5 * float(xp.sum(q.yy))
    D = sqrt_d[alive, None] * W_start[alive]
    QD = Q.T @ D
    V = xp.zeros_like(D)
    QV = xp.zeros_like(D)
    E = xp.zeros_like(W_start)
    mask = checked = W_start != 0
    kept = max(int(xp.sum(xp.astype(mask, xp.int64))), 1)
    tiny = np.finfo(float).tiny
    best_f, best_mask = np.inf, mask
    hist = {"objective": [], "primal": [], "step": [], "rho": []}
    status = "max_iter"
    for it in range(1, max_iter + 1):
        QU = (QB - QV + rho * QD) / (lam + rho)[:, None]
        U = Q @ QU
        E[alive] = U + V / rho
        mask = support_mask(xp.abs(E), pattern, sparsity)
        D_new = xp.where(mask[alive], E[alive], 0.0)
        QD_new = Q.T @ D_new
        R = U - D_new
        V += rho * R
        QV += rho * (QU - QD_new)
        f = max(0.5 * float(xp.sum(lam[:, None] * QD_new * QD_new)) - float(xp.sum(QB * QD_new)) + const, 0.0)
        norm_d = max(fro(D_new), tiny)
        primal = fro(R) / norm_d
        step = fro(D_new - D) / norm_d
        D, QD = D_new, QD_new
        for key, value in (("objective", f), ("primal", primal), ("step", step), ("rho", rho)):
            hist[key].append(value)
        if f < best_f:
            best_f, best_mask = f, mask
        if it % CHECK_EVERY:
            continue
        changed = float(xp.sum(xp.astype(mask != checked, xp.int64))) / kept
        checked = mask
        if changed == 0.0 and primal <= tol and step <= tol:
            status = "optimal"
            break
        rho *= growth_factor(changed)
    history = {key: np.asarray(value) for key, value in hist.items()}
    return mask, best_mask, history, status
