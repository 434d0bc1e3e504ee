"""Reweighted-l1 Net-Trim, then a ReLU-consistent refit on the support.

Candès, Wakin and Boyd's reweighting replaces ``||W||_1`` by ``sum_i r_i ||W_i||_1``
with ``r_i = 1 / (a_i + delta)`` from the previous round (``a_i`` the mean
``|W_ij|`` of input ``i``): a closer surrogate of the count of nonzeros.
Under the substitution ``U = diag(r) W`` the program is Net-Trim itself on
the inputs ``X diag(1/r)`` (``X W = X diag(1/r) U``, the same constraints),
so :func:`~.solver.nettrim` solves every round unchanged. Weights per input
(row of ``W``) are what one rescaling of ``X`` can express; an entry-wise
``r_ij`` would need one rescaled ``X`` per output column.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np

from ..base.errors import ConvergenceWarning, ParameterError
from ..base.patterns import parse_pattern
from ..base.result import Result
from ..base.validation import check_bool, check_scalar, check_sparsity, check_xy, exactly_one
from ..dc.l0_relu import CenteredReluLayer, relu_refit
from ..threshold.projection import support_mask
from ..threshold.refit import refit as least_squares_refit
from ..threshold.refit import refit_quadratic
from .solver import nettrim

__all__ = ["nettrim_reweighted", "row_weights"]

#: nettrim options a caller may set through ``nettrim_options``
NETTRIM_OPTIONS = frozenset({"eps_mode", "rho", "tol", "max_iter", "alpha", "check_every", "penalty_ratio"})


def row_weights(W, delta: float) -> np.ndarray:
    """``r_i = 1 / (a_i + delta * mean_{a_k > 0} a_k)``, ``a_i = mean_j |W_ij|`` (``delta`` relative)."""
    a = np.mean(np.abs(np.asarray(W, dtype=np.float64)), axis=1)
    scale = float(a[a > 0].mean()) if np.any(a > 0) else 1.0
    return 1.0 / (a + delta * scale)


def nettrim_reweighted(X, Y, *, eps=None, sparsity=None, relu: bool = True, intercept: bool = True, V=None,
                       rounds: int = 3, delta: float = 0.1, refit: bool = True, refit_iter: int = 30,
                       refit_tol: float = 1e-6, nettrim_options=None) -> Result:
    """Reweighted-l1 Net-Trim: ``min sum_i r_i ||W_i||_1`` under Net-Trim's constraints, then a refit.

    Parameters
    ----------
    X, Y, relu, intercept, V
        As in :func:`~.solver.nettrim` (``Y`` post-ReLU when ``relu``).
    eps : float >= 0, optional
        Relative radius of every round; the sparsest round is returned.
    sparsity : float in [0, 1), optional
        Target fraction of zeros, met by every round through Net-Trim's
        bisection on ``eps``; the round that met it at the smallest ``eps``
        (the closest fit) is kept, its support filled up to exactly the
        target count by round 0's largest magnitudes.
    rounds : int >= 0
        Reweighted rounds after the plain round 0.
    delta : float > 0
        Weight offset relative to the mean nonzero row magnitude (:func:`row_weights`).
    refit : bool
        Refit on the final support: ``min (1/2P) ||relu(X W + 1 b^T) - Y||^2``
        by majorize-minimize (:func:`~layertrim.solvers.dc.l0_relu.relu_refit`) when
        ``relu``, least squares otherwise.
    refit_iter, refit_tol
        Limit and settling tolerance (relative to ``||Y||^2 / 2P``) of the ReLU refit.
    nettrim_options : dict, optional
        ``tol``, ``max_iter``, ``eps_mode``, ``rho``, ... of every Net-Trim solve.

    Returns
    -------
    Result
        ``objective``: the post-ReLU (or linear) loss ``(1/2P)||.||^2`` after
        the refit, else ``||W||_1``; ``history["sparsity"]`` per round;
        ``info``: ``eps`` (of the chosen round), ``eps_rounds``, ``chosen_round``,
        ``iterates`` (``(W, b)`` of each round, round 0 first, before the refit),
        ``support`` (the mask refitted on), ``round_status``, ``sparsity``, ``refit``; ``status`` is the chosen
        round's.

    Notes
    -----
    Round ``t >= 1``: ``r = row_weights(W_{t-1})``,
    ``U_t = nettrim(X diag(1/r), Y, eps | sparsity)`` warm-started at
    ``diag(r) W_{t-1}``, ``W_t = diag(1/r) U_t``; every ``W_t`` meets Net-Trim's
    constraints at its ``eps`` (to Net-Trim's tolerance), since
    ``X W_t = X diag(1/r) U_t`` and the radius ``eps ||Y||_F`` is unchanged.
    """
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    exactly_one("eps", eps, "sparsity", sparsity)
    relu, intercept, refit = (check_bool(v, n) for v, n in ((relu, "relu"), (intercept, "intercept"), (refit, "refit")))
    rounds = check_scalar(rounds, "rounds", low=0, integer=True)
    delta = check_scalar(delta, "delta", low=0.0, low_open=True)
    refit_iter = check_scalar(refit_iter, "refit_iter", low=0, integer=True)
    refit_tol = check_scalar(refit_tol, "refit_tol", low=0.0)
    options = _check_options(nettrim_options)
    if sparsity is not None:
        sparsity = check_sparsity(sparsity)
    common = dict(relu=relu, intercept=intercept, V=V, eps=eps, sparsity=sparsity, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        first = nettrim(X, Y, **common)
        rounds_out = [first]
        W, b = first.W, first.b
        for _ in range(rounds):
            r = row_weights(W, delta).astype(X.dtype)
            warm = (W * r[:, None], b) if sparsity is None else None  # the bisection starts its own path
            res = nettrim(X / r, Y, warm_start=warm, **common)
            W = (res.W / r[:, None]).astype(X.dtype)
            rounds_out.append(replace(res, W=W))
            b = res.b
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    iterates = [(res.W, res.b) for res in rounds_out]
    # eps given: the sparsest round; sparsity given: the round that met it at the smallest eps
    key = (lambda t: -rounds_out[t].sparsity) if sparsity is None else (lambda t: rounds_out[t].info["eps"])
    best = min(range(len(rounds_out)), key=lambda t: (key(t), -t))
    W, b = iterates[best]
    mask = W != 0
    if sparsity is not None:
        # every nonzero of the chosen round ranks above every zero; zeros rank by round 0's magnitudes
        scores = np.where(mask, 1.0 + np.abs(W) / max(np.abs(W).max(), 1e-300),
                          np.abs(first.W) / max(np.abs(first.W).max(), 1e-300))
        mask = support_mask(scores, parse_pattern("unstructured"), sparsity)
    W = np.where(mask, W, 0).astype(X.dtype)
    objective = float(np.abs(W).sum())
    if refit and np.any(mask):
        W, b, objective = _refit(X, Y, W, b, mask, relu=relu, intercept=intercept, max_iter=refit_iter, tol=refit_tol)
    status = [res.status for res in rounds_out]
    info = dict(eps=float(rounds_out[best].info["eps"]), eps_rounds=[float(res.info["eps"]) for res in rounds_out],
                chosen_round=best, iterates=iterates, support=mask, round_status=status,
                sparsity=float(np.mean(W == 0)), refit=refit)
    worst = status[best]
    return Result(W=W, b=b, status=worst, objective=objective, iterations=len(iterates),
                  time=time.perf_counter() - start,
                  history={"sparsity": np.array([np.mean(w == 0) for w, _ in iterates])}, info=info)


def _refit(X, Y, W, b, mask, *, relu, intercept, max_iter, tol):
    """``(W, b, loss)`` refitted on ``mask``: post-ReLU majorize-minimize, or least squares."""
    if not relu:
        res = least_squares_refit(X, Y, mask, intercept=intercept)
        return res.W, res.b, res.objective
    layer = CenteredReluLayer(X, Y, intercept)
    Wd = W.astype(np.float64)
    bc = (np.zeros(Y.shape[1]) if b is None else b.astype(np.float64)) + layer.x_mean @ Wd
    # the l1-shrunk weights, or the least-squares fit of the linear surrogate on the support if lower
    q = layer.surrogate("linear", Wd, bc)
    W_ls, _ = refit_quadratic(q, mask)
    b_ls = layer.bias(q, W_ls)
    if layer.loss(W_ls, b_ls) < layer.loss(Wd, bc):
        Wd, bc = W_ls, b_ls
    Wd, bc, F, _, _ = relu_refit(layer, mask, Wd, bc, max_iter=max_iter, tol=tol)
    b_out = (bc - layer.x_mean @ Wd).astype(X.dtype) if intercept else None
    return Wd.astype(X.dtype), b_out, float(F)


def _check_options(options) -> dict:
    """``nettrim_options``: None or a dict of Net-Trim solver options."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ParameterError(f"nettrim_options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - NETTRIM_OPTIONS)
    if unknown:
        raise ParameterError(f"nettrim_options has unknown keys {unknown}; allowed: {sorted(NETTRIM_OPTIONS)}")
    return dict(options)
