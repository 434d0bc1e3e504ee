"""Sparse ReLU-layer fitting by DC programming (a FeTa-style convex-concave procedure).

Problem::

    min_{W, b}  F(W, b) = (1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1,   Y >= 0.

Expanding the square, ``F = g - h + ||Y||_F^2 / 2P`` with the convex

    g(W, b) = (1/2P) ||relu(X W + 1 b^T)||_F^2 + lam ||W||_1,
    h(W, b) = (1/P) <Y, relu(X W + 1 b^T)>      (convex because Y >= 0).

The convex-concave procedure replaces ``h`` by its linearization at the
current iterate, which majorizes ``F``; minimizing the majorizer (a convex
subproblem, :mod:`.subproblem`) can only decrease ``F``. The ``lam`` mode
runs that loop (:mod:`.ccp`); the sparsity mode searches the support by
majorize-minimize with quadratic majorizers (:mod:`.support`).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ..base.errors import ConvergenceWarning, ParameterError
from ..base.gram import as_quadratic
from ..base.interrupt import interruptible
from ..base.result import Result
from ..base.validation import check_choice, check_scalar, check_sparsity, check_weights, check_xy, exactly_one
from .ccp import ccp_fit, dc_value, relative_error
from .subproblem import check_bias, solve_subproblem
from .support import sparse_fit

__all__ = ["feta", "dc_objective", "solve_subproblem"]

INNER = ("fista", "svrg")
_DEFAULT_INNER_ITER = {"fista": 50, "svrg": 3}


def dc_objective(X, Y, W, b=None, lam: float = 0.0) -> float:
    """``(1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1`` (float64 accumulation)."""
    X, Y = check_xy(X, Y)
    W = check_weights(W, X.shape[1], Y.shape[1], dtype=X.dtype)
    b = check_bias(b, Y.shape[1], X.dtype, "b")
    return dc_value(X @ W, b, Y, W, lam)


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
    support_iter: int = 4,
    iht_iter: int = 100,
    polish_iter: int = 50,
    polish_tol: float = 1e-5,
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
    support_iter : int
        Sparsity mode: outer (majorize-minimize) iterations that may change
        the support; they stop early on a relative decrease ``<= tol``.
    iht_iter : int
        Sparsity mode: hard-thresholding steps (on the ``N x N`` Gram form)
        per support iteration.
    polish_iter : int
        Sparsity mode: at most this many fixed-support iterations.
    polish_tol : float
        Sparsity mode: the polish stops when one iteration lowers the squared
        relative error ``2 F / (||Y||_F^2 / P)`` by ``<= polish_tol`` (a
        ConvergenceWarning only if ``polish_iter`` iterations never got there).
    seed : int
        Seeds the SVRG sample order.

    Returns
    -------
    Result
        ``W, b`` in the input dtype; ``objective`` is ``F`` at the result
        (``lam = 0`` in sparsity mode); ``history["objective"]`` holds ``F``
        after each accepted outer iteration (non-increasing; in sparsity mode
        it starts at the first sparse iterate), ``history["inner_iterations"]``
        the inner work per outer iteration (``lam`` mode); ``info`` has
        ``lam``, ``sparsity``, ``relative_error = ||relu(XW + 1b^T) - Y||_F /
        ||Y||_F`` and, in sparsity mode, ``support_iterations``,
        ``polish_iterations`` and ``matmuls`` (products of the size of
        ``X W``, the one ``X^T X`` counted as ``N/M`` of them).

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

    Sparsity mode (no ``lam`` search): the same majorize-minimize idea with
    a quadratic majorizer, so that every subproblem is least squares in Gram
    form (:mod:`.support`). After the linearization of ``h`` at
    ``Z_k``, ``relu(z)^2`` is bounded by ``(z - t)^2`` with ``t = min(z_k, 0)``;
    the subproblem becomes ``(1/2P) ||X W + 1 b^T - T_k||_F^2`` with the
    targets ``T_k`` of :func:`~.kernels.majorizer_targets`. Default
    path, chosen as the best error per second on layer 1 of the reference
    MNIST network (``benchmarks/bench_feta.py``): start at ``W0`` (the
    first majorizer's targets are then the dense layer's pre-activations),
    ``support_iter = 4`` iterations of ``iht_iter = 100`` accelerated
    hard-thresholding steps on the majorizer (exact count; the support
    moves), then exact least squares on the frozen support until the squared
    relative error moves by ``<= polish_tol``. Cost: ``X^T X`` once plus two products
    with ``X`` per outer iteration (``info["matmuls"]``). A fixed-support
    polish by the tighter convex-concave subproblems (FISTA) lowered the
    error there by < 0.3 % relative at ~25 times the cost, so it is not used.
    """
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    dtype = X.dtype
    check_choice(activation, "activation", ("relu",))
    _check_targets(Y)
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
    support_iter = check_scalar(support_iter, "support_iter", low=1, integer=True)
    iht_iter = check_scalar(iht_iter, "iht_iter", low=1, integer=True)
    polish_iter = check_scalar(polish_iter, "polish_iter", low=1, integer=True)
    polish_tol = check_scalar(polish_tol, "polish_tol", low=0.0)

    W, b = _start(X, Y, W0, b0, intercept)
    # Center the inputs when an intercept is fitted: F is unchanged under
    # X -> X - 1 mu^T, b -> b + mu W, and the Lipschitz constant drops from
    # lambda_max([X 1]^T [X 1]) / P to max(lambda_max(Xc^T Xc) / P, 1), often
    # several-fold (MNIST pixels: about 7x), so every step is that much longer.
    x_mean = X.mean(axis=0, dtype=np.float64).astype(dtype) if intercept else None
    if intercept:
        X = X - x_mean
        b = (b + x_mean @ W).astype(dtype)
    with interruptible():
        if lam is not None:
            W, b, F, status, iterations, history, info = ccp_fit(
                X, Y, W, b, lam=lam, intercept=intercept, outer_iter=outer_iter, tol=tol, inner=inner,
                inner_iter=inner_iter, inner_tol=inner_tol, batch_size=batch_size, seed=seed,
            )
            stop_rule = f"{iterations} outer iterations with relative decrease above tol={tol:g}"
        else:
            W, b, F, status, iterations, history, info = _sparsity_fit(
                X, Y, W, b, sparsity=sparsity, intercept=intercept, support_iter=support_iter, iht_iter=iht_iter,
                tol=tol, polish_iter=polish_iter, polish_tol=polish_tol,
            )
        stop_rule = (f"polish_iter={polish_iter} polish iterations; the squared relative error still fell by "
                     f"more than polish_tol={polish_tol:g} per iteration")
    if status == "max_iter":
        warnings.warn(f"feta stopped after {stop_rule}", ConvergenceWarning, stacklevel=2)
    if intercept:
        b = (b - x_mean @ W).astype(dtype)
    info["sparsity"] = float(np.mean(W == 0))
    return Result(W=W, b=b if intercept else None, status=status, objective=float(F), iterations=iterations,
                  time=time.perf_counter() - start, history=history, info=info)


def _check_targets(Y):
    """Post-ReLU targets are nonnegative."""
    if np.any(Y < 0):
        raise ParameterError(
            f"Y must hold post-ReLU targets (>= 0); it has {int(np.sum(Y < 0))} negative entries. "
            "For a linear (pre-activation) layer the problem is a plain lasso: use lasso()"
        )


def _start(X, Y, W0, b0, intercept):
    """The given start, or the least-squares fit ``argmin ||X W + 1 b^T - Y||_F`` (minimum norm)."""
    dtype, N, M = X.dtype, X.shape[1], Y.shape[1]
    if W0 is None:
        quad = as_quadratic(X, Y, intercept=intercept)
        W = np.linalg.lstsq(quad.G, quad.C, rcond=None)[0]
        b = quad.intercept_for(W)
        W, b = W.astype(dtype), (np.zeros(M) if b is None else b).astype(dtype)
    else:
        W = check_weights(W0, N, M, "W0", dtype=dtype).copy()
        b = check_bias(b0, M, dtype, "b0").copy()
    return W, (b if intercept else np.zeros(M, dtype=dtype))


def _sparsity_fit(X, Y, W, b, **options):
    """Sparsity mode (:func:`~.support.sparse_fit`); returns ``(W, b, F, status, iterations, history, info)``."""
    W, b, Z, F, hist, status, counts = sparse_fit(X, Y, W, b, **options)
    history = {"objective": np.asarray(hist), "inner_iterations": np.asarray([], dtype=np.int64)}
    info = {"lam": 0.0, "target_sparsity": options["sparsity"], **counts, "relative_error": relative_error(Z, b, Y)}
    return W, b, F, status, len(hist), history, info
