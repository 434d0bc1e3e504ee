"""Sparse ReLU-layer fitting by DC programming (a FeTa-style convex-concave procedure).

Problem::

    min_{W, b}  F(W, b) = (1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1,   Y >= 0.

Expanding the square, ``F = g - h + ||Y||_F^2 / 2P`` with the convex

    g(W, b) = (1/2P) ||relu(X W + 1 b^T)||_F^2 + lam ||W||_1,
    h(W, b) = (1/P) <Y, relu(X W + 1 b^T)>      (convex because Y >= 0).

The convex-concave procedure replaces ``h`` by its linearization at the
current iterate, which majorizes ``F``; minimizing the majorizer (a convex
subproblem, :mod:`.feta_subproblem`) can only decrease ``F``.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .errors import ConvergenceWarning, ParameterError
from .feta_kernels import active_targets, relu_misfit
from .feta_subproblem import ReluLayer, check_bias, fista, solve_subproblem, svrg
from .gram import as_quadratic
from .path import bisect_sparsity
from .result import Result
from .validation import check_choice, check_scalar, check_sparsity, check_weights, check_xy, exactly_one

__all__ = ["feta", "dc_objective", "solve_subproblem"]

INNER = ("fista", "svrg")
_DEFAULT_INNER_ITER = {"fista": 50, "svrg": 3}


def dc_objective(X, Y, W, b=None, lam: float = 0.0) -> float:
    """``(1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1`` (float64 accumulation)."""
    X, Y = check_xy(X, Y)
    W = check_weights(W, X.shape[1], Y.shape[1], dtype=X.dtype)
    b = check_bias(b, Y.shape[1], X.dtype, "b")
    return _dc_value(X @ W, b, Y, W, lam)


def _dc_value(Z, b, Y, W, lam) -> float:
    return relu_misfit(Z, b, Y) / (2.0 * Y.shape[0]) + lam * float(np.abs(W).sum())


def feta(
    X,
    Y,
    *,
    lam: float | None = None,
    sparsity: float | None = None,
    intercept: bool = True,
    W0=None,
    b0=None,
    activation: str = "relu",
    outer_iter: int = 50,
    tol: float = 1e-6,
    inner: str = "fista",
    inner_iter: int | None = None,
    inner_tol: float = 1e-6,
    batch_size: int = 200,
    search_iter: int = 3,
    polish_iter: int = 20,
    seed: int = 0,
) -> Result:
    """Prune a ReLU layer: ``min (1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Layer inputs, one sample per row.
    Y : ndarray, shape (n_samples, n_outputs)
        Post-ReLU targets, all ``>= 0``. (For a linear layer the problem is a
        plain lasso: use ``lasso``.)
    lam : float >= 0, optional
        l1 weight. Give exactly one of ``lam`` and ``sparsity``.
    sparsity : float in [0, 1), optional
        Target fraction of zero weights; the returned ``W`` has exactly
        ``ceil(sparsity * W.size)`` zeros (barring exact cancellations).
    intercept : bool
        Fit an unpenalized bias ``b``.
    W0, b0 : ndarray, optional
        Start, e.g. the layer's original weights. Default: the least-squares
        fit of ``X W + 1 b^T`` to ``Y``.
    activation : {"relu"}
        The layer's nonlinearity.
    outer_iter : int
        Maximum convex-concave (outer) iterations.
    tol : float
        Stop when the relative decrease of ``F`` in one outer iteration is
        ``<= tol``.
    inner : {"fista", "svrg"}
        Subproblem solver: full-batch monotone FISTA (exact path) or
        accelerated proximal SVRG over mini-batches of ``batch_size`` samples
        (fast path for many samples).
    inner_iter : int, optional
        FISTA iterations (default 50) or SVRG epochs (default 3) per
        subproblem; subproblems are warm-started, so they need not be solved
        to high accuracy.
    inner_tol : float
        FISTA's stopping tolerance on the scaled proximal-gradient residual.
    batch_size : int
        SVRG mini-batch size.
    search_iter : int
        Outer iterations per trial ``lam`` when searching for ``sparsity``.
    polish_iter : int
        Outer iterations of the fixed-support polish (``sparsity`` mode).
    seed : int
        Seeds the SVRG sample order.

    Returns
    -------
    Result
        ``W, b`` in the input dtype; ``objective`` is ``F`` at the result
        (with ``lam = 0`` in sparsity mode: the polish objective);
        ``history["objective"]`` holds ``F`` after each accepted outer
        iteration (non-increasing), ``history["inner_iterations"]`` the inner
        work per outer iteration; ``info`` has ``lam``, ``sparsity``,
        ``relative_error = ||relu(XW + 1b^T) - Y||_F / ||Y||_F`` and, in
        sparsity mode, the ``lam`` search trace.

    Raises
    ------
    ParameterError
        Negative targets, both or neither of ``lam``/``sparsity``, bad options.
    ShapeError, NonFiniteError, EmptyDataError
        Bad arrays.

    Notes
    -----
    Outer iteration ``k`` (convex-concave procedure): with
    ``Z_k = X W_k + 1 b_k^T`` and ``A_k = Y * 1[Z_k > 0]`` (the subgradient of
    ``h`` with ``relu'(0) = 0``), solve approximately, warm-started at
    ``(W_k, b_k)``,

        (W_{k+1}, b_{k+1}) ~ argmin (1/P) sum(relu(z)^2/2 - a_k z) + lam ||W||_1.

    Because the linearized ``h`` minorizes ``h``, this majorizes ``F - const``
    with equality at the iterate; both inner solvers never return a point with
    a larger subproblem value than the start, so ``F(W_{k+1}) <= F(W_k)``. The
    decrease is checked anyway: an outer step that would raise ``F`` (possible
    only through rounding) is rejected and the loop stops.

    Choices that differ from the published FeTa implementation (Pitas et al.,
    arXiv:1803.04239): the exact ReLU, not a softplus smoothing (the
    subproblem is then piecewise quadratic with an exact gradient: no
    smoothing bias and no saturated-derivative error); centered inputs;
    the objective carries ``1/2P`` and ``lam`` enters the prox as
    ``step * lam``; mini-batches are contiguous slices of a once-shuffled
    sample order rather than draws with replacement; the start is the given
    or least-squares weights rather than a small random matrix.

    Sparsity mode: (1) ``lam`` is bisected (geometrically, warm-started, each
    trial ``search_iter`` outer iterations, at most 8 trials) until the zero
    count is within 1 % of the target (or the trials run out); (2) the weights are cut to the target count, keeping the
    largest magnitudes (ties among zeros broken by the largest gradient of the
    misfit); (3) the convex-concave procedure with ``lam = 0`` restricted to
    that support polishes the kept weights (``polish_iter`` outer iterations).
    """
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    dtype = X.dtype
    P, N = X.shape
    M = Y.shape[1]
    check_choice(activation, "activation", ("relu",))
    if np.any(Y < 0):
        raise ParameterError(
            f"Y must hold post-ReLU targets (>= 0); it has {int(np.sum(Y < 0))} negative entries. "
            "For a linear (pre-activation) layer the problem is a plain lasso: use lasso()"
        )
    exactly_one("lam", lam, "sparsity", sparsity)
    if lam is not None:
        lam = check_scalar(lam, "lam", low=0.0)
    else:
        sparsity = check_sparsity(sparsity)
    outer_iter = check_scalar(outer_iter, "outer_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0.0)
    check_choice(inner, "inner", INNER)
    inner_iter = _DEFAULT_INNER_ITER[inner] if inner_iter is None else inner_iter
    inner_iter = check_scalar(inner_iter, "inner_iter", low=1, integer=True)
    inner_tol = check_scalar(inner_tol, "inner_tol", low=0.0)
    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    search_iter = check_scalar(search_iter, "search_iter", low=1, integer=True)
    polish_iter = check_scalar(polish_iter, "polish_iter", low=1, integer=True)

    if W0 is None:
        W, b = _least_squares(X, Y, intercept, dtype)
    else:
        W = check_weights(W0, N, M, "W0", dtype=dtype).copy()
        b = check_bias(b0, M, dtype, "b0").copy()
    if not intercept:
        b = np.zeros(M, dtype=dtype)

    # Center the inputs when an intercept is fitted: F is unchanged under
    # X -> X - 1 mu^T, b -> b + mu W, and the Lipschitz constant drops from
    # lambda_max([X 1]^T [X 1]) / P to max(lambda_max(Xc^T Xc) / P, 1), often
    # several-fold (MNIST pixels: about 7x), so every step is that much longer.
    x_mean = X.mean(axis=0, dtype=np.float64).astype(dtype) if intercept else None
    if intercept:
        X = X - x_mean
        b = (b + x_mean @ W).astype(dtype)
    rng = np.random.default_rng(seed)
    if inner == "svrg":  # SVRG walks contiguous mini-batches of a shuffled order
        order = rng.permutation(P)
        X, Y = np.ascontiguousarray(X[order]), np.ascontiguousarray(Y[order])
    layer = ReluLayer.build(X, Y, intercept)

    def inner_step(A, lam_, W_, b_, Z_, mask):
        if inner == "fista":
            return fista(layer, A, lam_, W_, b_, Z_, max_iter=inner_iter, tol=inner_tol, mask=mask)
        return svrg(layer, A, lam_, W_, b_, Z_, epochs=inner_iter, batch_size=batch_size, rng=rng, mask=mask)

    info = {"inner": inner}
    if lam is not None:
        W, b, Z, F, status, hist, inner_counts = _ccp(layer, lam, W, b, outer_iter, tol, inner_step, None)
        info["lam"] = lam
    else:
        W, b, lam_used, trace = _search_lam(layer, sparsity, W, b, search_iter, tol, inner_step)
        mask = _keep_mask(layer, W, b, W.size - math.ceil(sparsity * W.size - 1e-9))
        W = np.where(mask, W, 0).astype(dtype)
        W, b, Z, F, status, hist, inner_counts = _ccp(layer, 0.0, W, b, polish_iter, tol, inner_step, mask)
        info.update(lam=lam_used, lam_search=trace, target_sparsity=sparsity)
    if status == "max_iter":
        warnings.warn(
            f"feta stopped after {len(hist) - 1} outer iterations with relative decrease above tol={tol:g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    misfit = relu_misfit(Z, b, Y)
    if intercept:
        b = (b - x_mean @ W).astype(dtype)
    info["relative_error"] = math.sqrt(misfit / max(float(np.sum(Y.astype(np.float64) ** 2)), 1e-300))
    info["sparsity"] = float(np.mean(W == 0))
    return Result(
        W=W,
        b=b if intercept else None,
        status=status,
        objective=float(F),
        iterations=len(hist) - 1,
        time=time.perf_counter() - start,
        history={"objective": np.asarray(hist), "inner_iterations": np.asarray(inner_counts, dtype=np.int64)},
        info=info,
    )


def _ccp(layer: ReluLayer, lam, W, b, outer_iter, tol, inner_step, mask):
    """The convex-concave loop; returns ``(W, b, Z, F, status, history, inner_counts)``."""
    X, Y = layer.X, layer.Y
    Z = X @ W
    F = _dc_value(Z, b, Y, W, lam)
    hist, inner_counts = [F], []
    status = "max_iter"
    for _ in range(outer_iter):
        A = active_targets(Z, b, Y)
        Wn, bn, Zn, _, n_inner = inner_step(A, lam, W, b, Z, mask)
        inner_counts.append(n_inner)
        Fn = _dc_value(Zn, bn, Y, Wn, lam)
        if not Fn < F:  # stationary, or no descent left above rounding: keep the iterate
            status = "optimal"
            break
        rel = (F - Fn) / max(abs(F), 1e-300)
        W, b, Z, F = Wn, bn, Zn, Fn
        hist.append(F)
        if rel <= tol:
            status = "optimal"
            break
    return W, b, Z, F, status, hist, inner_counts


def _search_lam(layer: ReluLayer, sparsity, W, b, search_iter, tol, inner_step):
    """Bisect ``lam`` until the zero count is within 1 % of the target."""
    X, Y = layer.X, layer.Y
    Xc = X - X.mean(axis=0) if layer.intercept else X
    lam_hi = float(np.abs(Xc.T @ Y).max()) / layer.n_samples
    lam_hi = max(lam_hi, 1e-12)

    def solve(t, warm):
        W_, b_ = (W, b) if warm is None else (warm.W, warm.b)
        W_, b_, _, F_, st, hist, _ = _ccp(layer, t, W_, b_, search_iter, tol, inner_step, None)
        return Result(W=W_, b=b_, status=st, objective=F_, iterations=len(hist) - 1, time=0.0)

    count_tol = max(int(0.01 * W.size), 0)
    for _ in range(6):
        try:
            res, t, trace = bisect_sparsity(
                solve, sparsity, lam_hi * 1e-4, lam_hi, count_tol=count_tol, at_least=False, max_solves=8
            )
            return res.W, res.b, t, trace
        except ParameterError:  # the bracket's top does not reach the target yet
            lam_hi *= 4.0
    raise ParameterError(f"sparsity {sparsity} not reached even at lam={lam_hi:.3g}")


def _keep_mask(layer: ReluLayer, W, b, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` largest ``|W|``; zeros ranked by the misfit's gradient."""
    X, Y = layer.X, layer.Y
    Z = X @ W
    R = np.where(Z + b > 0, Z + b - Y, 0).astype(X.dtype)
    grad = np.abs(X.T @ R).astype(np.float64)
    mag = np.abs(W).astype(np.float64)
    score = np.where(mag > 0, mag + grad.max() + 1.0, grad).ravel()
    mask = np.zeros(W.size, dtype=np.bool_)
    if keep > 0:
        mask[np.argpartition(-score, keep - 1)[:keep]] = True
    return mask.reshape(W.shape)


def _least_squares(X, Y, intercept, dtype):
    """Least-squares start ``argmin ||X W + 1 b^T - Y||_F`` (minimum norm)."""
    quad = as_quadratic(X, Y, intercept=intercept)
    W = np.linalg.lstsq(quad.G, quad.C, rcond=None)[0]
    b = quad.intercept_for(W)
    b = np.zeros(Y.shape[1]) if b is None else b
    return W.astype(dtype), b.astype(dtype)
